"""Maintenance windows in the site's own time: daylight saving, midnight crossings, southern hemisphere."""

from __future__ import annotations

import datetime as dt

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils.maintenance_window import (
    WindowError,
    is_open,
    parse_window,
    window_state,
)

UTC = dt.UTC


def utc(*args):
    return dt.datetime(*args, tzinfo=UTC)


NIGHTLY = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "02:30", "duration_minutes": 60}]
SATURDAY_NIGHT = [{"days": ["sat"], "start": "23:00", "duration_minutes": 180}]


@pytest.mark.parametrize(
    ("windows", "zone", "now", "expected"),
    [
        # Paris in winter is UTC+1: 02:30 local = 01:30 UTC.
        (NIGHTLY, "Europe/Paris", utc(2026, 1, 15, 1, 29), False),
        (NIGHTLY, "Europe/Paris", utc(2026, 1, 15, 1, 30), True),
        (NIGHTLY, "Europe/Paris", utc(2026, 1, 15, 2, 29), True),
        (NIGHTLY, "Europe/Paris", utc(2026, 1, 15, 2, 30), False),
        # Paris in summer is UTC+2: 02:30 local = 00:30 UTC.
        (NIGHTLY, "Europe/Paris", utc(2026, 7, 15, 0, 30), True),
        (NIGHTLY, "Europe/Paris", utc(2026, 7, 15, 1, 30), False),
        # Spring forward, Sunday 29 March 2026: 02:30 does not exist; the window opens at 03:00 CEST = 01:00 UTC.
        (NIGHTLY, "Europe/Paris", utc(2026, 3, 29, 0, 45), False),
        (NIGHTLY, "Europe/Paris", utc(2026, 3, 29, 1, 0), True),
        (NIGHTLY, "Europe/Paris", utc(2026, 3, 29, 1, 59), True),
        (NIGHTLY, "Europe/Paris", utc(2026, 3, 29, 2, 0), False),
        # Fall back, Sunday 25 October 2026: 02:30 happens twice; the window opens at the first (CEST, 00:30 UTC).
        (NIGHTLY, "Europe/Paris", utc(2026, 10, 25, 0, 30), True),
        (NIGHTLY, "Europe/Paris", utc(2026, 10, 25, 1, 29), True),
        (NIGHTLY, "Europe/Paris", utc(2026, 10, 25, 1, 30), False),
        # Sydney, southern hemisphere: summer time (UTC+11) in January, standard (UTC+10) in July.
        (NIGHTLY, "Australia/Sydney", utc(2026, 1, 14, 15, 30), True),
        (NIGHTLY, "Australia/Sydney", utc(2026, 1, 14, 16, 30), False),
        (NIGHTLY, "Australia/Sydney", utc(2026, 7, 14, 16, 30), True),
        (NIGHTLY, "Australia/Sydney", utc(2026, 7, 14, 15, 30), False),
        # Sydney springs forward on Sunday 4 October 2026 at 02:00 -> 03:00: 02:30 opens at 03:00 AEDT = 16:00 UTC.
        (NIGHTLY, "Australia/Sydney", utc(2026, 10, 3, 16, 0), True),
        (NIGHTLY, "Australia/Sydney", utc(2026, 10, 3, 15, 45), False),
        # Crossing midnight: Saturday 23:00 for 3 h is open early on Sunday, not on Sunday night.
        (SATURDAY_NIGHT, "America/New_York", utc(2026, 11, 29, 4, 0), True),  # Sat 23:00 EST
        (SATURDAY_NIGHT, "America/New_York", utc(2026, 11, 29, 6, 59), True),  # Sun 01:59 EST
        (SATURDAY_NIGHT, "America/New_York", utc(2026, 11, 29, 7, 0), False),  # Sun 02:00 EST
        (SATURDAY_NIGHT, "America/New_York", utc(2026, 11, 30, 4, 30), False),  # Sun 23:30 EST
        (SATURDAY_NIGHT, "America/New_York", utc(2026, 11, 28, 3, 59), False),  # Fri 22:59 EST
        # Santiago (southern hemisphere, DST in January: UTC-3).
        (SATURDAY_NIGHT, "America/Santiago", utc(2026, 1, 18, 2, 0), True),  # Sat 23:00 CLST
        # A time zone without DST.
        (SATURDAY_NIGHT, "Asia/Tokyo", utc(2026, 11, 28, 14, 0), True),  # Sat 23:00 JST
        (SATURDAY_NIGHT, "Asia/Tokyo", utc(2026, 11, 28, 13, 59), False),
        # No windows: never open.
        ([], "Europe/Paris", utc(2026, 1, 15, 1, 30), False),
    ],
)
def test_window_open_in_site_time(windows, zone, now, expected):
    assert is_open(windows, zone, now) is expected


def test_state_names_the_window_and_when_it_closes():
    state = window_state(SATURDAY_NIGHT, "America/New_York", utc(2026, 11, 29, 5, 0))
    assert state["open"] is True
    assert state["window"] == "sat 23:00 for 180 min"
    assert state["closes_at"] == "2026-11-29T07:00:00+00:00"
    assert state["local_time"].startswith("2026-11-29T00:00:00-05:00")


def test_next_opening_when_closed():
    state = window_state(SATURDAY_NIGHT, "Europe/Paris", utc(2026, 11, 25, 12, 0))  # a Wednesday
    assert state["open"] is False
    assert state["next_opens_at"] == "2026-11-28T22:00:00+00:00"  # Sat 23:00 CET


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"days": ["monday"], "start": "02:00", "duration_minutes": 60}, "days"),
        ({"days": [], "start": "02:00", "duration_minutes": 60}, "days"),
        ({"days": ["mon"], "start": "24:00", "duration_minutes": 60}, "start"),
        ({"days": ["mon"], "start": "2:00", "duration_minutes": 60}, "start"),
        ({"days": ["mon"], "start": "02:00", "duration_minutes": 0}, "duration_minutes"),
        ({"days": ["mon"], "start": "02:00", "duration_minutes": 1441}, "duration_minutes"),
        ({"days": ["mon"], "start": "02:00", "duration_minutes": True}, "duration_minutes"),
        ("mon 02:00", "expected a mapping"),
    ],
)
def test_bad_windows_say_what_was_expected(spec, message):
    with pytest.raises(WindowError, match=message):
        parse_window(spec)


def test_unknown_time_zone_is_a_clear_error():
    with pytest.raises(WindowError, match="not an IANA time zone"):
        is_open(NIGHTLY, "Europe/Pariss", utc(2026, 1, 1))
