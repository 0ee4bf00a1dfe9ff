"""``ipm-support sla``: response and repair clocks of support tickets against their contract (docs/sla.md)."""

from __future__ import annotations

import datetime
import json

from ansible_collections.ipm.fleet.plugins.plugin_utils import sla_clock as sc
from ipm_tools.support import sla as sla_mod
from ipm_tools.support.tickets import TicketError, parse_utc
from ipm_tools.support.tickets_cli import store_for

STATE_WORDS = {"met": "met", "breached": "BREACHED", "running": "running"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sla",
        help="response and repair clocks of tickets against their contract",
        description="Response and repair clocks of error reports, counted only inside the contract's coverage "
        "hours in the site's time zone, skipping its public holidays and the time a ticket waits on the "
        "customer. Shows each ticket's deadlines, when they were met or breached (or the time left), and the "
        "counts per customer; with --ticket, the timeline of which hours counted and why. See docs/sla.md.",
    )
    parser.add_argument("--customer", metavar="ID", help="only this customer's tickets")
    parser.add_argument("--month", metavar="YYYY-MM", help="only tickets opened in this month (UTC)")
    parser.add_argument("--ticket", metavar="INC-n", help="one ticket, with its timeline")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--now",
        metavar="UTC",
        help="evaluate the clocks as of this instant (ISO 8601, e.g. 2027-01-15T12:00Z; default: now)",
    )
    parser.set_defaults(handler=handle)


def _now(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TicketError(f"--now {text!r}: expected an ISO 8601 instant, e.g. 2027-01-15T12:00Z") from None
    if moment.tzinfo is None:
        raise TicketError(f"--now {text!r}: give the UTC offset (Z or +HH:MM)")
    return moment.astimezone(datetime.UTC)


def handle(args) -> int:
    store = store_for(args)
    now = _now(args.now) or store.clock()
    slas = sla_mod.report(store, customer=args.customer, month=args.month, ticket_id=args.ticket, now=now)
    summary = sla_mod.summary(slas)
    if args.json:
        document = {
            "now_utc": sla_mod.iso(now),
            "tickets": [sla_mod.as_json(s) for s in slas],
            "customers": summary,
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    if args.ticket and not slas:
        ticket = store.get(args.ticket)
        print(f"{ticket.id}: a {ticket.kind} ticket has no SLA clock (only error reports with a severity)")
        return 0
    if not slas:
        future = ""
        if args.month and sla_mod.month_bounds(args.month)[0] > now:
            future = f" (--month {args.month} is in the future: it is {now:%Y-%m} now, UTC)"
        print("no error reports match" + future)
        return 0
    for sla in slas:
        print(_ticket_text(sla))
        if args.ticket:
            for clock in (sla.response, sla.repair):
                print(_timeline_text(clock, sla.timezone))
    print()
    for customer, clocks in sorted(summary.items()):
        parts = [f"{name} met {c['met']} breached {c['breached']} running {c['running']}" for name, c in clocks.items()]
        print(f"customer {customer}: " + "; ".join(parts))
    return 0


def _short(moment: datetime.datetime | None, calendar: sc.Calendar | None = None) -> str:
    if moment is None:
        return "-"
    if calendar is None:
        return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%MZ")
    return calendar.local(moment).strftime("%Y-%m-%d %H:%M%z")


def _clock_text(clock: sc.ClockResult, calendar: sc.Calendar) -> str:
    if clock.deadline:
        due = f"due {_short(clock.deadline)} (site {_short(clock.deadline, calendar)})"
    else:
        due = "due - (paused: waiting on customer)"
    if clock.stopped is not None:
        tail = f"at {_short(clock.stopped)} {STATE_WORDS[clock.state]}"
    else:
        tail = f"{STATE_WORDS[clock.state]}, left {sc.format_hours(clock.left)}"
    target = sc.format_hours(clock.target)
    return f"  {clock.clock:<8} {due}  {tail}  (counted {sc.format_hours(clock.counted)} of {target})"


def _ticket_text(sla: sla_mod.TicketSla) -> str:
    calendar = sc.Calendar(sla.timezone)
    opened = parse_utc(sla.ticket.opened_utc)
    place = sla.ticket.terminal or sla.ticket.site or "-"
    waiting = " (waiting on customer)" if sla.ticket.status == "waiting" else ""
    head = (
        f"{sla.ticket.id} {sla.ticket.customer} {place} {sla.ticket.severity} {sla.ticket.status}{waiting}, "
        f"opened {_short(opened)} (site {_short(opened, calendar)} {sla.timezone})"
    )
    return "\n".join([head, _clock_text(sla.response, calendar), _clock_text(sla.repair, calendar)])


def _timeline_text(clock: sc.ClockResult, timezone: str) -> str:
    calendar = sc.Calendar(timezone)
    lines = [f"  {clock.clock} timeline (site time {timezone}):"]
    for segment in clock.segments:
        lines.append(
            f"    {_short(segment.start, calendar)} -> {_short(segment.end, calendar)}  "
            f"{sc.format_hours(segment.duration):>7}  {segment.reason}  [{segment.contract}]"
        )
    return "\n".join(lines)
