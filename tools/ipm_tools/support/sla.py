"""SLA clocks of support tickets: the ticket store's events joined with the registry's contracts and sites.

The rule (coverage hours, zones, holidays, pauses, contract changes) is in
plugins/plugin_utils/sla_clock.py; this module only gathers its inputs. See docs/sla.md.

- response clock: from ``opened`` to the first ``first_response`` or ``job_started`` event;
- repair clock: from ``opened`` to the first ``resolved`` event;
- both paused from each ``waiting`` to the next ``resumed`` (or until now / the stop while still waiting).
Feature requests (REQ-n) have no severity and no SLA clock.
"""

from __future__ import annotations

import dataclasses
import datetime
import re

from ansible_collections.ipm.fleet.plugins.plugin_utils import sla_clock as sc
from ipm_tools.support.tickets import Event, Ticket, TicketError, TicketStore, parse_utc

RESPONSE_KINDS = ("first_response", "job_started")


@dataclasses.dataclass(frozen=True)
class TicketSla:
    ticket: Ticket
    timezone: str
    country: str
    region: str | None
    contract: sc.Contract
    response: sc.ClockResult
    repair: sc.ClockResult
    pauses: tuple[tuple[datetime.datetime, datetime.datetime | None], ...]


def stops(events: list[Event]) -> tuple[datetime.datetime | None, datetime.datetime | None, list]:
    """(first response, resolved, pauses [(waiting, resumed or None)]) from a ticket's events."""
    response = resolved = None
    pauses: list[list] = []
    for event in events:
        at = parse_utc(event.at_utc)
        if event.kind in RESPONSE_KINDS and response is None:
            response = at
        elif event.kind == "resolved" and resolved is None:
            resolved = at
        elif event.kind == "waiting" and (not pauses or pauses[-1][1] is not None):
            pauses.append([at, None])
        elif event.kind == "resumed" and pauses and pauses[-1][1] is None:
            pauses[-1][1] = at
    return response, resolved, [tuple(p) for p in pauses]


class Contracts:
    """Contracts and site calendars from the registry, built once per customer / site."""

    def __init__(self, fleet):
        self.fleet = fleet
        self._contracts: dict[str, sc.Contract] = {}
        self._holidays: dict[tuple[str, str | None], object] = {}

    def document(self, customer_id: str) -> dict:
        for document in self.fleet.customers:
            if document["customer"].get("id") == customer_id:
                return document
        raise TicketError(f"customer {customer_id!r}: not in the registry {self.fleet.registry_dir}")

    def contract(self, customer_id: str) -> sc.Contract:
        if customer_id not in self._contracts:
            document = self.document(customer_id)
            try:
                self._contracts[customer_id] = sc.Contract.from_registry(
                    document["customer"].get("contract"), "customer.contract"
                )
            except sc.SlaError as error:
                raise TicketError(f"{document['file']}: {error}; fix the contract (docs/sla.md)") from None
        return self._contracts[customer_id]

    def calendar(self, ticket: Ticket) -> tuple[sc.Calendar, str, str | None]:
        document = self.document(ticket.customer)
        customer = document["customer"]
        site = next((s for s in document["sites"] if s.get("id") == ticket.site), None) or {}
        timezone = site.get("timezone") or ticket.timezone or "UTC"
        country = site.get("country") or customer.get("country")
        region = sc.holiday_region(country, (site.get("address") or {}).get("region"))
        key = (country, region)
        if key not in self._holidays:
            try:
                self._holidays[key] = sc.holidays_for(country, region)
            except sc.SlaError as error:
                raise TicketError(f"{document['file']}: site {ticket.site}: {error}") from None
        try:
            return sc.Calendar(timezone, self._holidays[key]), country, region
        except sc.SlaError as error:
            raise TicketError(f"{document['file']}: site {ticket.site}: {error}") from None


def ticket_sla(ticket: Ticket, events: list[Event], contracts: Contracts, now: datetime.datetime) -> TicketSla | None:
    """Both clocks of one error report at ``now`` (None for a feature request)."""
    if ticket.kind != "error" or not ticket.severity:
        return None
    contract = contracts.contract(ticket.customer)
    calendar, country, region = contracts.calendar(ticket)
    opened = parse_utc(ticket.opened_utc)
    response_at, resolved_at, pauses = stops(events)

    def closed(stop):
        # a pause still open when the clock stopped (resolved while waiting) ends there
        return [(a, b if b is not None or stop is None else max(a, stop)) for a, b in pauses]

    try:
        response = sc.evaluate(
            calendar, contract, opened, ticket.severity, "response", response_at, now, closed(response_at)
        )
        repair = sc.evaluate(
            calendar, contract, opened, ticket.severity, "repair", resolved_at, now, closed(resolved_at)
        )
    except sc.SlaError as error:
        raise TicketError(f"ticket {ticket.id}: {error}") from None
    return TicketSla(ticket, calendar.timezone, country, region, contract, response, repair, tuple(pauses))


def month_bounds(month: str) -> tuple[datetime.datetime, datetime.datetime]:
    """'2027-01' -> [first instant, first instant of the next month) in UTC."""
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}", str(month)):
            raise ValueError(month)
        start = datetime.datetime.strptime(month, "%Y-%m").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise TicketError(f"--month {month!r}: expected YYYY-MM, e.g. 2027-01") from None
    following = (start + datetime.timedelta(days=32)).replace(day=1)
    return start, following


def report(
    store: TicketStore,
    *,
    customer: str | None = None,
    month: str | None = None,
    ticket_id: str | None = None,
    now: datetime.datetime | None = None,
) -> list[TicketSla]:
    """The SLA of the store's error reports (one ticket, or filtered by customer and month opened)."""
    now = now or store.clock()
    contracts = Contracts(store.fleet())
    if ticket_id:
        tickets = [store.get(ticket_id)]
    else:
        if customer:
            contracts.document(customer)  # an unknown customer is a mistake, not an empty report
        tickets = store.list(customer=customer)
    if month is not None:
        start, end = month_bounds(month)
        tickets = [t for t in tickets if start <= parse_utc(t.opened_utc) < end]
    out = []
    for ticket in tickets:
        sla = ticket_sla(ticket, store.events(ticket.id), contracts, now)
        if sla is not None:
            out.append(sla)
    return out


def summary(slas: list[TicketSla]) -> dict[str, dict[str, dict[str, int]]]:
    """customer -> clock -> {met, breached, running} counts."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for sla in slas:
        per = out.setdefault(sla.ticket.customer, {})
        for clock in (sla.response, sla.repair):
            counts = per.setdefault(clock.clock, {"met": 0, "breached": 0, "running": 0})
            counts[clock.state] += 1
    return out


def iso(moment: datetime.datetime | None, zone: sc.Calendar | None = None) -> str | None:
    if moment is None:
        return None
    if zone is None:
        return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    return zone.local(moment).isoformat()


def _hours(delta: datetime.timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds() / 3600, 4)


def clock_json(clock: sc.ClockResult, calendar: sc.Calendar) -> dict:
    return {
        "state": clock.state,
        "target_hours": _hours(clock.target),
        "due_utc": iso(clock.deadline),
        "due_site": iso(clock.deadline, calendar),
        "at_utc": iso(clock.stopped),
        "at_site": iso(clock.stopped, calendar),
        "met": clock.met,
        "counted_hours": _hours(clock.counted),
        "left_hours": _hours(clock.left),
        "timeline": [
            {
                "from_utc": iso(s.start),
                "to_utc": iso(s.end),
                "from_site": iso(s.start, calendar),
                "to_site": iso(s.end, calendar),
                "hours": _hours(s.duration),
                "reason": s.reason,
                "contract": s.contract,
            }
            for s in clock.segments
        ],
    }


def as_json(sla: TicketSla) -> dict:
    calendar = sc.Calendar(sla.timezone)
    return {
        "ticket": sla.ticket.id,
        "customer": sla.ticket.customer,
        "site": sla.ticket.site,
        "terminal": sla.ticket.terminal,
        "severity": sla.ticket.severity,
        "status": sla.ticket.status,
        "timezone": sla.timezone,
        "holidays": {"country": sla.country, "region": sla.region},
        "opened_utc": iso(parse_utc(sla.ticket.opened_utc)),
        "opened_site": iso(parse_utc(sla.ticket.opened_utc), calendar),
        "pauses": [{"from_utc": iso(a), "to_utc": iso(b)} for a, b in sla.pauses],
        "response": clock_json(sla.response, calendar),
        "repair": clock_json(sla.repair, calendar),
    }
