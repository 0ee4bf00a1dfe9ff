# Copyright: (c) 2026, ipm.fleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SLA clocks: business time counted inside a contract's coverage hours (pure rule, no I/O).

A ticket's clock counts the instants that lie inside a coverage window of the contract in force, in the
site's own time zone, on a day that is not a public holiday of the site's country (and region), and while
the ticket is not waiting on the customer. Everything is interval arithmetic on aware UTC datetimes; the
local wall clock is reached through the zone's UTC offsets piece by piece, so 23- and 25-hour days, windows
that cross midnight and nonexistent or repeated local times count exactly what a minute-by-minute walk of
the wall clock would count.

Rules (docs/sla.md):
- A coverage window opens on a covered day D at ``start`` (wall time) and closes at ``end``; when ``end`` is
  not after ``start`` the window runs past midnight into D+1 (22:00-06:00). 00:00-24:00 on every day is 24/7.
- A window belongs to the day it opens on: if D is a public holiday, the whole window is skipped.
- A contract change takes effect at the first instant whose local wall time is at or after its ``from`` date's
  00:00. Time already counted is kept; from then on the new coverage counts and the new targets apply.
- The deadline is the first instant at which the counted time reaches the target in force.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEVERITIES = ("critical", "major", "minor", "temporary")
COUNTED = "counted"
OUTSIDE = "outside coverage"
WAITING = "waiting on customer"
HOLIDAY_PREFIX = "holiday: "
_HHMM = re.compile(r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")
_TICK = dt.timedelta(microseconds=1)
_STEP = dt.timedelta(hours=6)  # zone offsets never change twice within 6 hours
_CHUNK = dt.timedelta(days=31)  # deadline search horizon grows by this much
_MAX_SEARCH = dt.timedelta(days=3 * 366)


class SlaError(ValueError):
    """Bad contract, calendar or ticket data; the message is one line naming where and what."""


# --------------------------------------------------------------------------------------------- contracts
@dataclasses.dataclass(frozen=True)
class Coverage:
    """Covered weekdays (0 = Monday) and the window's wall-clock start/end in minutes of the day."""

    days: frozenset[int]
    start: int
    end: int

    @property
    def length(self) -> int:
        """Length of one window in minutes (windows with end <= start run past midnight)."""
        return self.end - self.start if self.end > self.start else self.end + 1440 - self.start

    @property
    def always(self) -> bool:
        return len(self.days) == 7 and self.length == 1440

    def describe(self) -> str:
        if self.always:
            return "24/7"
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days))
        return f"{days} {_hhmm(self.start)}-{_hhmm(self.end)}"

    @classmethod
    def from_data(cls, data, where: str) -> Coverage:
        if not isinstance(data, Mapping):
            raise SlaError(f"{where}: expected a mapping {{days, start, end}}, got {type(data).__name__}")
        days = data.get("days")
        if not isinstance(days, list) or not days or any(d not in DAY_NAMES for d in days):
            raise SlaError(f"{where}.days: expected a non-empty list of {', '.join(DAY_NAMES)}, got {days!r}")
        bounds = []
        for key in ("start", "end"):
            value = data.get(key)
            if not isinstance(value, str) or not _HHMM.match(value) or (key == "start" and value == "24:00"):
                raise SlaError(f"{where}.{key}: expected HH:MM (end may be 24:00), got {value!r}")
            hours, minutes = value.split(":")
            bounds.append(int(hours) * 60 + int(minutes))
        return cls(frozenset(DAY_NAMES.index(d) for d in days), bounds[0], bounds[1])


@dataclasses.dataclass(frozen=True)
class Terms:
    """One phase of a contract: its coverage and targets (severity -> (response_hours, repair_hours))."""

    coverage: Coverage
    targets: Mapping[str, tuple[float, float]]
    label: str = "contract"

    def target(self, severity: str, clock: str) -> dt.timedelta:
        if severity not in self.targets:
            raise SlaError(f"{self.label}: no target for severity {severity!r} (one of {', '.join(self.targets)})")
        response, repair = self.targets[severity]
        return dt.timedelta(hours=response if clock == "response" else repair)


def _targets(data, where: str) -> dict[str, tuple[float, float]]:
    if not isinstance(data, Mapping):
        raise SlaError(f"{where}: expected a mapping severity -> {{response_hours, repair_hours}}")
    out = {}
    for severity, target in data.items():
        if not isinstance(target, Mapping):
            raise SlaError(f"{where}.{severity}: expected {{response_hours, repair_hours}}")
        hours = []
        for key in ("response_hours", "repair_hours"):
            value = target.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise SlaError(f"{where}.{severity}.{key}: expected a number of hours >= 0, got {value!r}")
            hours.append(float(value))
        out[str(severity)] = (hours[0], hours[1])
    return out


@dataclasses.dataclass(frozen=True)
class Contract:
    """A contract's phases in order: (effective local date or None for the first, Terms)."""

    phases: tuple[tuple[dt.date | None, Terms], ...]

    @classmethod
    def simple(cls, coverage: Coverage, targets: Mapping[str, tuple[float, float]]) -> Contract:
        return cls(((None, Terms(coverage, dict(targets))),))

    @classmethod
    def from_registry(cls, contract, where: str = "customer.contract") -> Contract:
        """Build from a registry customer's ``contract`` (coverage, targets and optional ``changes``)."""
        if not isinstance(contract, Mapping):
            raise SlaError(f"{where}: expected a mapping, got {type(contract).__name__}")
        coverage = Coverage.from_data(contract.get("coverage"), f"{where}.coverage")
        targets = _targets(contract.get("targets"), f"{where}.targets")
        phases = [(None, Terms(coverage, targets, "contract"))]
        changes = contract.get("changes") or []
        if not isinstance(changes, list):
            raise SlaError(f"{where}.changes: expected a list of {{from, coverage, targets}}")
        previous = None
        for index, change in enumerate(changes):
            here = f"{where}.changes[{index}]"
            if not isinstance(change, Mapping):
                raise SlaError(f"{here}: expected a mapping {{from, coverage, targets}}")
            start = _date(change.get("from"), f"{here}.from")
            if previous is not None and start <= previous:
                raise SlaError(f"{here}.from: expected a date after {previous.isoformat()}, got {start.isoformat()}")
            if "coverage" not in change and "targets" not in change:
                raise SlaError(f"{here}: expected coverage and/or targets to change")
            if "coverage" in change:
                coverage = Coverage.from_data(change["coverage"], f"{here}.coverage")
            if "targets" in change:
                targets = {**targets, **_targets(change["targets"], f"{here}.targets")}
            phases.append((start, Terms(coverage, targets, f"change from {start.isoformat()}")))
            previous = start
        return cls(tuple(phases))


def _date(value, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise SlaError(f"{where}: expected a date YYYY-MM-DD, got {value!r}") from None


# --------------------------------------------------------------------------------------------- calendar
class Calendar:
    """A site's wall clock (IANA zone) and public holidays (callable date -> name or None)."""

    def __init__(self, timezone: str, holiday: Callable[[dt.date], str | None] | None = None):
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SlaError(f"unknown IANA time zone {timezone!r}") from None
        self.timezone = timezone
        self.holiday = holiday or (lambda day: None)

    def pieces(self, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime, dt.timedelta]]:
        """Split [start, end) (UTC) where the zone's UTC offset changes: [(a, b, offset)]."""
        out = []
        a = start
        offset = a.astimezone(self.zone).utcoffset()
        probe = a
        while probe < end:
            nxt = min(probe + _STEP, end)
            off = nxt.astimezone(self.zone).utcoffset()
            if off != offset:
                lo, hi = probe, nxt  # offset(lo) == offset, offset(hi) != offset: find the first changed instant
                while hi - lo > _TICK:
                    mid = lo + (hi - lo) / 2
                    if mid.astimezone(self.zone).utcoffset() == offset:
                        lo = mid
                    else:
                        hi = mid
                out.append((a, hi, offset))
                a, offset = hi, off
            probe = nxt
        out.append((a, end, offset))
        return [p for p in out if p[0] < p[1]]

    def first_at_or_after(self, wall: dt.datetime, around: dt.datetime) -> dt.datetime:
        """The first instant whose local wall time is at or after ``wall`` (naive), searched near ``around``."""
        best = None
        for a, b, offset in self.pieces(around - dt.timedelta(days=2), around + dt.timedelta(days=2)):
            t = max(a, (wall - offset).replace(tzinfo=UTC))
            if t < b and (best is None or t < best):
                best = t
        if best is None:
            raise SlaError(f"no instant at or after {wall.isoformat()} in {self.timezone}")  # pragma: no cover
        return best

    def local(self, instant: dt.datetime) -> dt.datetime:
        return instant.astimezone(self.zone)


def holidays_for(country: str, region: str | None = None) -> Callable[[dt.date], str | None]:
    """Public holidays of a country (and region, a subdivision code of the ``holidays`` package)."""
    import holidays as holidays_lib  # only the SLA needs it

    try:
        days = holidays_lib.country_holidays(country, subdiv=region)
    except NotImplementedError:
        raise SlaError(f"no public holiday calendar for country {country!r}") from None

    def holiday(day: dt.date) -> str | None:
        return days.get(day)

    return holiday


def holiday_region(country: str, region: str | None) -> str | None:
    """``region`` when it is a subdivision code of the country's holiday calendar, else None."""
    if not region:
        return None
    import holidays as holidays_lib

    try:
        subdivisions = holidays_lib.list_supported_countries().get(country, [])
    except Exception:  # pragma: no cover - defensive
        return None
    return region if region in subdivisions else None


# --------------------------------------------------------------------------------------------- clocks
@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of the timeline: why it counted or not, under which contract phase."""

    start: dt.datetime
    end: dt.datetime
    reason: str
    contract: str

    @property
    def counted(self) -> bool:
        return self.reason == COUNTED

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start


def _utc(value: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise SlaError(f"{what}: expected an aware datetime, got {value!r}")
    return value.astimezone(UTC)


def phase_spans(calendar: Calendar, contract: Contract, start: dt.datetime, end: dt.datetime):
    """[(a, b, Terms)] covering [start, end): where each contract phase is in force."""
    bounds = []
    for effective, terms in contract.phases:
        if effective is None:
            bounds.append((None, terms))
            continue
        wall = dt.datetime.combine(effective, dt.time())
        guess = (wall - calendar.local(start).utcoffset()).replace(tzinfo=UTC)
        bounds.append((calendar.first_at_or_after(wall, guess), terms))
    out = []
    for index, (at, terms) in enumerate(bounds):
        a = start if at is None else max(start, at)
        b = bounds[index + 1][0] if index + 1 < len(bounds) else end
        b = min(b, end)
        if a < b:
            out.append((a, b, terms))
    return out


def windows(calendar: Calendar, coverage: Coverage, start: dt.datetime, end: dt.datetime):
    """Coverage windows within [start, end) as sorted [(a, b, opening local date)] in UTC."""
    out = []
    length = dt.timedelta(minutes=coverage.length)
    for a, b, offset in calendar.pieces(start, end):
        first = (a + offset).date() - dt.timedelta(days=1)
        last = (b + offset).date()
        day = first
        while day <= last:
            if day.weekday() in coverage.days:
                wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=coverage.start)
                wa = (wall - offset).replace(tzinfo=UTC)
                wb = wa + length
                lo, hi = max(wa, a), min(wb, b)
                if lo < hi:
                    out.append((lo, hi, day))
            day += dt.timedelta(days=1)
    out.sort()
    return out


def timeline(
    calendar: Calendar,
    contract: Contract,
    start: dt.datetime,
    end: dt.datetime,
    pauses: Iterable[tuple[dt.datetime, dt.datetime | None]] = (),
) -> list[Segment]:
    """Explain [start, end): consecutive segments with their reason and contract phase."""
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        return []
    spans = []
    for pa, pb in pauses:
        pa = _utc(pa, "pause start")
        pb = end if pb is None else _utc(pb, "pause end")
        lo, hi = max(pa, start), min(pb, end)
        if lo < hi:
            spans.append((lo, hi, WAITING, None))
    covered = []
    for a, b, terms in phase_spans(calendar, contract, start, end):
        spans.append((a, b, None, terms.label))
        for wa, wb, day in windows(calendar, terms.coverage, a, b):
            name = calendar.holiday(day)
            covered.append((wa, wb, HOLIDAY_PREFIX + name if name else COUNTED))
    points = sorted({start, end, *(p for s in spans for p in s[:2]), *(p for c in covered for p in c[:2])})
    phases = [(a, b, label) for a, b, reason, label in spans if label]
    waits = sorted(s[:2] for s in spans if s[2] == WAITING)
    segments: list[Segment] = []
    ci = pi = wi = 0
    for lo, hi in itertools.pairwise(points):
        while pi + 1 < len(phases) and phases[pi][1] <= lo:
            pi += 1
        while ci < len(covered) and covered[ci][1] <= lo:
            ci += 1
        while wi < len(waits) and waits[wi][1] <= lo:
            wi += 1
        if wi < len(waits) and waits[wi][0] <= lo:
            reason = WAITING
        elif ci < len(covered) and covered[ci][0] <= lo:
            reason = covered[ci][2]
        else:
            reason = OUTSIDE
        label = phases[pi][2]
        if segments and segments[-1].reason == reason and segments[-1].contract == label:
            segments[-1] = dataclasses.replace(segments[-1], end=hi)
        else:
            segments.append(Segment(lo, hi, reason, label))
    return segments


@dataclasses.dataclass(frozen=True)
class ClockResult:
    """One clock (response or repair) of a ticket at ``now``."""

    clock: str
    target: dt.timedelta | None  # target in force at the deadline (or now)
    deadline: dt.datetime | None  # None: not reached within the search horizon
    stopped: dt.datetime | None  # when the clock stopped (responded / resolved), None if still running
    counted: dt.timedelta  # business time counted until stopped (or now)
    met: bool | None  # True/False once stopped or breached; None while running within target
    left: dt.timedelta | None  # business time left while running (negative: overdue)
    segments: list[Segment]

    @property
    def state(self) -> str:
        if self.stopped is not None:
            return "met" if self.met else "breached"
        return "breached" if self.met is False else "running"


def counted_time(segments: Iterable[Segment]) -> dt.timedelta:
    return sum((s.duration for s in segments if s.counted), dt.timedelta())


def deadline(
    calendar: Calendar,
    contract: Contract,
    opened: dt.datetime,
    severity: str,
    clock: str,
    pauses: Iterable[tuple[dt.datetime, dt.datetime | None]] = (),
) -> tuple[dt.datetime | None, dt.timedelta | None]:
    """The first instant at which the counted time reaches the target in force, and that target.

    Open pauses (end None) stop the clock for good: the deadline is then None (not reached).
    """
    opened = _utc(opened, "opened")
    pauses = list(pauses)
    horizon = opened + _CHUNK
    while True:
        counted = dt.timedelta()
        for a, b, terms in phase_spans(calendar, contract, opened, horizon):
            target = terms.target(severity, clock)
            if counted >= target:
                return a, target
            for seg in timeline(calendar, Contract(((None, terms),)), a, b, pauses):
                if seg.counted:
                    reached = counted + seg.duration
                    # reached exactly at the phase's end: that instant belongs to the next phase (its target)
                    if reached > target or (reached == target and seg.end < b):
                        return seg.start + (target - counted), target
                    counted += seg.duration
        if horizon - opened >= _MAX_SEARCH:
            return None, None
        horizon += _CHUNK


def evaluate(
    calendar: Calendar,
    contract: Contract,
    opened: dt.datetime,
    severity: str,
    clock: str,
    stopped: dt.datetime | None,
    now: dt.datetime,
    pauses: Iterable[tuple[dt.datetime, dt.datetime | None]] = (),
) -> ClockResult:
    """State of one clock: deadline, counted time, met/breached or time left, and the timeline up to the stop."""
    opened, now = _utc(opened, "opened"), _utc(now, "now")
    pauses = list(pauses)
    due, target = deadline(calendar, contract, opened, severity, clock, pauses)
    until = _utc(stopped, "stopped") if stopped is not None else max(now, opened)
    segments = timeline(calendar, contract, opened, until, pauses)
    counted = counted_time(segments)
    if stopped is not None:
        met = due is None or until <= due
        left = None
    else:
        met = False if due is not None and now >= due else None
        if target is None:
            spans = phase_spans(calendar, contract, opened, until + dt.timedelta(seconds=1))
            target = spans[-1][2].target(severity, clock)
        left = target - counted
    return ClockResult(clock, target, due, stopped, counted, met, left, segments)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def format_hours(delta: dt.timedelta | None) -> str:
    """'3h05' style; negative for overdue."""
    if delta is None:
        return "-"
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    return f"{sign}{seconds // 3600}h{(seconds % 3600) // 60:02d}"


__all__ = [
    "COUNTED",
    "HOLIDAY_PREFIX",
    "OUTSIDE",
    "WAITING",
    "Calendar",
    "ClockResult",
    "Contract",
    "Coverage",
    "Segment",
    "SlaError",
    "Terms",
    "counted_time",
    "deadline",
    "evaluate",
    "format_hours",
    "holiday_region",
    "holidays_for",
    "timeline",
    "windows",
]
