"""SLA clocks (plugins/plugin_utils/sla_clock.py) against a brute-force minute-by-minute oracle.

The oracle below is written independently of the interval arithmetic: it walks UTC minutes one by one,
looks at each minute's local wall time in the site's zone and decides whether it counts.
"""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ipm.fleet.plugins.plugin_utils import sla_clock as sc

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEK = list(DAYS)
WORKDAYS = list(DAYS[:5])


# ----------------------------------------------------------------------------------------------- oracle
def _minutes(hhmm):
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def oracle_covered_day(local, days, start, end):
    """The local date of the coverage window holding this local wall time, or None."""
    mod = local.hour * 60 + local.minute
    s, e = _minutes(start), _minutes(end)
    today, yesterday = local.date(), local.date() - dt.timedelta(days=1)
    if s < e:
        return today if DAYS[today.weekday()] in days and s <= mod < e else None
    if DAYS[today.weekday()] in days and mod >= s:
        return today
    if DAYS[yesterday.weekday()] in days and mod < e:
        return yesterday
    return None


def oracle(tz, phases, opened, clock, severity, pauses=(), holiday=lambda d: None, until=None, limit_days=120):
    """Walk minute by minute; return (deadline, counted minutes until ``until``).

    phases: [(from_date or None, coverage dict, targets dict)].
    """
    zone = ZoneInfo(tz)
    starts = []
    for effective, coverage, targets in phases:
        if effective is None:
            starts.append((opened - dt.timedelta(days=1), coverage, targets))
            continue
        midnight = dt.datetime.combine(effective, dt.time())
        m = opened - dt.timedelta(days=3)
        while m.astimezone(zone).replace(tzinfo=None) < midnight:
            m += MINUTE
        starts.append((m, coverage, targets))
    counted = 0
    due = None
    counted_until = None
    m = opened
    end = opened + dt.timedelta(days=limit_days)
    while m < end and (due is None or (until is not None and m < until)):
        if until is not None and m == until:
            counted_until = counted
        phase = [p for p in starts if p[0] <= m][-1]
        coverage, targets = phase[1], phase[2]
        target = targets[severity][0 if clock == "response" else 1] * 60
        if due is None and counted >= target:
            due = m
        paused = any(a <= m < b for a, b in pauses)
        day = oracle_covered_day(m.astimezone(zone), coverage["days"], coverage["start"], coverage["end"])
        if not paused and day is not None and not holiday(day):
            counted += 1
        m += MINUTE
    if until is not None and counted_until is None:
        counted_until = counted
    return due, counted_until


# ----------------------------------------------------------------------------------------------- helpers
def utc(text):
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def local(text, tz):
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def build(phases, tz, holiday=None):
    data = {"coverage": phases[0][1], "targets": _targets(phases[0][2])}
    if len(phases) > 1:
        data["changes"] = [
            {"from": effective.isoformat(), "coverage": coverage, "targets": _targets(targets)}
            for effective, coverage, targets in phases[1:]
        ]
    return sc.Calendar(tz, holiday), sc.Contract.from_registry(data)


def _targets(targets):
    return {sev: {"response_hours": r, "repair_hours": p} for sev, (r, p) in targets.items()}


def cov(days, start, end):
    return {"days": days, "start": start, "end": end}


def t(response, repair):
    return {"critical": (response, repair)}


FR = holidays.country_holidays("FR")
DE_BY = holidays.country_holidays("DE", subdiv="BY")
D = dt.date

CASES = [
    # name, tz, phases, opened (site-local), pauses (site-local), holiday calendar
    ("paris-spring-forward-night", "Europe/Paris", [(None, cov(WEEK, "01:00", "04:00"), t(2, 4))],
     "2027-03-27T23:30", [], None),
    ("paris-spring-forward-daily", "Europe/Paris", [(None, cov(WEEK, "00:00", "24:00"), t(20, 30))],
     "2027-03-27T12:00", [], None),
    ("paris-fall-back-night", "Europe/Paris", [(None, cov(WEEK, "22:00", "06:00"), t(8, 10))],
     "2027-10-30T21:00", [], None),
    ("paris-fall-back-repeated-hour", "Europe/Paris", [(None, cov(["sun"], "02:00", "03:00"), t(1, 2))],
     "2027-10-31T00:00", [], None),
    ("sydney-dst-ends-25h", "Australia/Sydney", [(None, cov(["sun"], "00:00", "24:00"), t(24, 25))],
     "2027-04-03T20:00", [], None),
    ("sydney-dst-starts-23h", "Australia/Sydney", [(None, cov(["sun"], "00:00", "24:00"), t(22, 24))],
     "2027-10-02T20:00", [], None),
    ("sydney-dst-starts-window", "Australia/Sydney", [(None, cov(WEEK, "01:30", "03:30"), t(1.5, 3))],
     "2027-10-03T00:00", [], None),
    ("french-holiday-14-july", "Europe/Paris", [(None, cov(WORKDAYS, "09:00", "18:00"), t(4, 8))],
     "2027-07-13T16:00", [], FR.get),
    ("german-holiday-ascension", "Europe/Berlin", [(None, cov(WORKDAYS, "08:00", "17:00"), t(8, 16))],
     "2027-05-05T12:00", [], DE_BY.get),
    ("bavarian-epiphany", "Europe/Berlin", [(None, cov(WORKDAYS, "08:00", "17:00"), t(4, 12))],
     "2027-01-05T15:00", [], DE_BY.get),
    ("pause-over-weekend", "Europe/Paris", [(None, cov(WORKDAYS, "09:00", "18:00"), t(2, 8))],
     "2027-02-05T14:00", [("2027-02-05T15:00", "2027-02-08T11:00")], FR.get),
    ("24-7-new-york-dst", "America/New_York", [(None, cov(WEEK, "00:00", "24:00"), t(1, 12))],
     "2027-03-13T20:00", [("2027-03-13T22:00", "2027-03-14T01:30")], None),
    ("contract-change-wider", "Europe/Paris", [
        (None, cov(WORKDAYS, "09:00", "18:00"), t(4, 16)),
        (D(2027, 1, 15), cov(WEEK, "00:00", "24:00"), t(4, 16)),
    ], "2027-01-14T15:00", [], FR.get),
    ("contract-change-shorter-target", "Europe/Paris", [
        (None, cov(WORKDAYS, "09:00", "18:00"), t(4, 20)),
        (D(2027, 1, 15), cov(WORKDAYS, "08:00", "20:00"), t(2, 6)),
    ], "2027-01-14T10:00", [], FR.get),
    ("crossing-midnight-holiday-eve", "Europe/Paris", [(None, cov(WEEK, "22:00", "06:00"), t(6, 12))],
     "2027-07-13T20:00", [], FR.get),
    ("santiago-midnight-dst", "America/Santiago", [
        (None, cov(WEEK, "00:00", "06:00"), t(3, 10)),
        (D(2027, 9, 5), cov(WEEK, "20:00", "02:00"), t(3, 10)),
    ], "2027-09-03T12:00", [], None),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("clock", ["response", "repair"])
def test_clock_matches_oracle(case, clock):
    name, tz, phases, opened_local, pauses_local, holiday = case
    calendar, contract = build(phases, tz, holiday)
    opened = local(opened_local, tz)
    pauses = [(local(a, tz), local(b, tz)) for a, b in pauses_local]
    expected, _ = oracle(tz, phases, opened, clock, "critical", pauses, holiday or (lambda d: None))
    got, _target = sc.deadline(calendar, contract, opened, "critical", clock, pauses)
    assert expected is not None
    assert got == expected, f"{name}: {got.astimezone(ZoneInfo(tz))} != oracle {expected.astimezone(ZoneInfo(tz))}"
    until = opened + dt.timedelta(days=4, minutes=17)
    _, expected_counted = oracle(tz, phases, opened, clock, "critical", pauses, holiday or (lambda d: None), until)
    segments = sc.timeline(calendar, contract, opened, until, pauses)
    assert sc.counted_time(segments) == dt.timedelta(minutes=expected_counted)
    assert segments[0].start == opened and segments[-1].end == until
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))


def test_known_figures():
    """A few figures worked out by hand (docs/sla.md uses the first one)."""
    calendar, contract = build([(None, cov(WORKDAYS, "09:00", "18:00"), t(4, 8))], "Europe/Paris", FR.get)
    opened = local("2027-07-13T16:00", "Europe/Paris")
    due, _ = sc.deadline(calendar, contract, opened, "critical", "repair")
    # 2h on the 13th, the 14th is Bastille Day, 6h on the 15th: 09:00 + 6h = 15:00 Paris (13:00 UTC)
    assert due == utc("2027-07-15T13:00:00+00:00")
    segments = sc.timeline(calendar, contract, opened, due)
    reasons = [s.reason for s in segments]
    assert reasons == ["counted", "outside coverage", "holiday: National Day", "outside coverage", "counted"]
    # Paris, 28 March 2027 is a 23-hour day: 24/7 counts 23 hours between the two midnights
    calendar, contract = build([(None, cov(WEEK, "00:00", "24:00"), t(1, 1))], "Europe/Paris")
    day = sc.timeline(
        calendar, contract, local("2027-03-28T00:00", "Europe/Paris"), local("2027-03-29T00:00", "Europe/Paris")
    )
    assert sc.counted_time(day) == dt.timedelta(hours=23)
    day = sc.timeline(
        calendar, contract, local("2027-10-31T00:00", "Europe/Paris"), local("2027-11-01T00:00", "Europe/Paris")
    )
    assert sc.counted_time(day) == dt.timedelta(hours=25)


@pytest.mark.parametrize(
    ("tz", "start", "end"),
    [
        ("Europe/Paris", "2027-03-28T00:00", "2027-03-28T04:00"),  # ends 1h after the change: 3h counted
        ("Europe/Paris", "2027-10-31T01:30", "2027-10-31T02:45"),  # ends inside the repeated hour
        ("Australia/Sydney", "2027-04-04T01:00", "2027-04-04T02:59"),
        ("America/Santiago", "2027-09-04T20:00", "2027-09-05T01:00"),
    ],
)
def test_short_spans_around_a_change(tz, start, end):
    """Spans that end shortly after a daylight-saving change count what the wall clock shows."""
    phases = [(None, cov(WEEK, "00:00", "24:00"), t(1, 1))]
    calendar, contract = build(phases, tz)
    zone = ZoneInfo(tz)
    a, b = local(start, tz), dt.datetime.fromisoformat(end).replace(tzinfo=zone, fold=1).astimezone(UTC)
    _, expected = oracle(tz, phases, a, "repair", "critical", until=b, limit_days=1)
    assert sc.counted_time(sc.timeline(calendar, contract, a, b)) == expected * MINUTE == b - a
    night = [(None, cov(WEEK, "01:00", "03:30"), t(1, 1))]
    calendar, contract = build(night, tz)
    _, expected = oracle(tz, night, a, "repair", "critical", until=b, limit_days=1)
    assert sc.counted_time(sc.timeline(calendar, contract, a, b)) == expected * MINUTE


def test_instants_with_microseconds():
    """Stored ticket times carry microseconds: the change is still found exactly."""
    calendar, contract = build([(None, cov(WEEK, "00:00", "24:00"), t(1, 30))], "Europe/Paris")
    opened = local("2027-03-27T22:10:03.123457", "Europe/Paris")
    end = local("2027-03-28T05:00:00", "Europe/Paris")
    assert sc.counted_time(sc.timeline(calendar, contract, opened, end)) == end - opened
    assert [p[2] for p in calendar.pieces(opened, end)] == [dt.timedelta(hours=1), dt.timedelta(hours=2)]
    assert calendar.pieces(opened, end)[0][1] == utc("2027-03-28T01:00:00+00:00")
    due, _ = sc.deadline(calendar, contract, opened, "critical", "repair")
    assert due == opened + dt.timedelta(hours=30)


def test_evaluate_states():
    calendar, contract = build([(None, cov(WORKDAYS, "09:00", "18:00"), t(2, 8))], "Europe/Paris")
    opened = local("2027-02-01T09:00", "Europe/Paris")
    met = sc.evaluate(calendar, contract, opened, "critical", "response", opened + dt.timedelta(hours=1), opened)
    assert (met.state, met.met, met.counted) == ("met", True, dt.timedelta(hours=1))
    late = sc.evaluate(calendar, contract, opened, "critical", "response", opened + dt.timedelta(hours=3), opened)
    assert (late.state, late.met) == ("breached", False)
    running = sc.evaluate(calendar, contract, opened, "critical", "repair", None, opened + dt.timedelta(hours=5))
    assert (running.state, running.left) == ("running", dt.timedelta(hours=3))
    overdue = sc.evaluate(calendar, contract, opened, "critical", "repair", None, opened + dt.timedelta(days=1))
    assert overdue.state == "breached" and overdue.left == -dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"coverage": cov([], "09:00", "18:00"), "targets": {}}, "contract.coverage.days: expected a non-empty"),
        ({"coverage": cov(WEEK, "9:00", "18:00"), "targets": {}}, "contract.coverage.start: expected HH:MM"),
        (
            {"coverage": cov(WEEK, "09:00", "18:00"), "targets": {"major": {"response_hours": -1}}},
            "major.response_hours",
        ),
        (
            {
                "coverage": cov(WEEK, "09:00", "18:00"),
                "targets": {},
                "changes": [{"from": "2027-13-01", "targets": {}}],
            },
            "contract.changes[0].from: expected a date",
        ),
        (
            {
                "coverage": cov(WEEK, "09:00", "18:00"),
                "targets": {},
                "changes": [{"from": "2027-02-01", "targets": {}}, {"from": "2027-01-01", "targets": {}}],
            },
            "contract.changes[1].from: expected a date after 2027-02-01",
        ),
        (
            {"coverage": cov(WEEK, "09:00", "18:00"), "targets": {}, "changes": [{"from": "2027-02-01"}]},
            "expected coverage and/or targets",
        ),
    ],
)
def test_bad_contracts(data, message):
    with pytest.raises(sc.SlaError, match=None) as error:
        sc.Contract.from_registry(data)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_zone_and_country():
    with pytest.raises(sc.SlaError, match="unknown IANA time zone 'Europe/Pariss'"):
        sc.Calendar("Europe/Pariss")
    with pytest.raises(sc.SlaError, match="no public holiday calendar for country 'XX'"):
        sc.holidays_for("XX")
    assert sc.holiday_region("AU", "NSW") == "NSW"
    assert sc.holiday_region("FR", "Île-de-France") is None


# ----------------------------------------------------------------------------------------------- properties
ZONES = ["Europe/Paris", "Australia/Sydney", "America/New_York", "America/Santiago", "Asia/Tokyo"]
# days near the 2027 daylight-saving changes of those zones, so random tickets cross them often
BASES = [D(2027, 3, 26), D(2027, 10, 29), D(2027, 4, 2), D(2027, 10, 1), D(2027, 3, 12), D(2027, 9, 3), D(2027, 6, 1)]
HHMM = st.integers(0, 47).map(lambda h: f"{h // 2:02d}:{(h % 2) * 30:02d}")


@st.composite
def coverages(draw):
    days = draw(st.lists(st.sampled_from(DAYS), min_size=3, max_size=7, unique=True))
    start = draw(HHMM)
    end = draw(HHMM.filter(lambda e: e != start) | st.just("24:00"))
    return cov(days, start, end)


@st.composite
def tickets(draw):
    tz = draw(st.sampled_from(ZONES))
    base = draw(st.sampled_from(BASES))
    opened = dt.datetime.combine(base, dt.time(), UTC) + draw(st.integers(0, 4 * 1440)) * MINUTE
    first = (None, draw(coverages()), t(draw(st.integers(0, 8)) / 2, draw(st.integers(0, 12)) / 2))
    phases = [first]
    if draw(st.booleans()):
        change = opened.date() + dt.timedelta(days=draw(st.integers(-1, 3)))
        phases.append((change, draw(coverages()), t(draw(st.integers(0, 8)) / 2, draw(st.integers(0, 12)) / 2)))
    pauses = []
    for _ in range(draw(st.integers(0, 2))):
        a = opened + draw(st.integers(-60, 3 * 1440)) * MINUTE
        pauses.append((a, a + draw(st.integers(1, 2 * 1440)) * MINUTE))
    holiday_days = {base + dt.timedelta(days=n) for n in draw(st.lists(st.integers(0, 6), max_size=2))}
    return tz, phases, opened, pauses, holiday_days


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tickets(), st.sampled_from(["response", "repair"]), st.integers(1, 3 * 1440))
def test_random_tickets_match_oracle(ticket, clock, span):
    tz, phases, opened, pauses, holiday_days = ticket

    def holiday(day):
        return "test day" if day in holiday_days else None

    calendar, contract = build(phases, tz, holiday)
    until = opened + span * MINUTE
    expected, expected_counted = oracle(tz, phases, opened, clock, "critical", pauses, holiday, until, limit_days=40)
    got, _ = sc.deadline(calendar, contract, opened, "critical", clock, pauses)
    assert got == expected
    assert sc.counted_time(sc.timeline(calendar, contract, opened, until, pauses)) == expected_counted * MINUTE
