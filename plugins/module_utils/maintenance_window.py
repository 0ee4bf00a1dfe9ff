# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Maintenance windows in a site's own time zone.

A window is ``{days: [mon, ...], start: "HH:MM", duration_minutes: N}`` in the site's local time.
It opens on each listed day at ``start`` local wall-clock time and stays open for ``duration_minutes``
of real elapsed time, so a window may run past midnight into the next day.

Daylight saving, decided once here so every caller agrees:
- a start time that does not exist on a spring-forward day (02:30 in Europe/Paris on the last
  Sunday of March) opens at the first valid instant after the gap (03:00 local);
- a start time that happens twice on a fall-back day opens at its first occurrence;
- the duration is real elapsed time: a 120-minute window always lasts two hours.

Standard library only (``zoneinfo``): this module also runs on terminals.
"""

from __future__ import annotations

import datetime as _dt
import re

try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
except ImportError:  # pragma: no cover - Python < 3.9 has no zoneinfo
    ZoneInfo = None
    ZoneInfoNotFoundError = KeyError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_UTC = _dt.timezone.utc


class WindowError(ValueError):
    """A window or time zone that cannot be used; the message says what was expected."""


class Window:
    """One maintenance window, validated."""

    __slots__ = ("days", "duration", "start")

    def __init__(self, days, start, duration_minutes):
        self.days = days
        self.start = start
        self.duration = _dt.timedelta(minutes=duration_minutes)

    def describe(self):
        minutes = int(self.duration.total_seconds() // 60)
        return "%s %s for %d min" % (",".join(self.days), self.start.strftime("%H:%M"), minutes)


def parse_window(spec, where="window"):
    """Return a Window from its registry form, or raise WindowError naming ``where`` and the key."""
    if not isinstance(spec, dict):
        raise WindowError("%s: expected a mapping with days, start, duration_minutes; found %r" % (where, spec))
    days = spec.get("days")
    if not isinstance(days, list) or not days or any(day not in DAYS for day in days):
        raise WindowError("%s.days: expected a non-empty list of %s; found %r" % (where, ", ".join(DAYS), days))
    start = spec.get("start")
    match = _HHMM.match(start) if isinstance(start, str) else None
    if not match:
        raise WindowError("%s.start: expected HH:MM (00:00 to 23:59); found %r" % (where, start))
    duration = spec.get("duration_minutes")
    if isinstance(duration, bool) or not isinstance(duration, int) or not 1 <= duration <= 1440:
        raise WindowError("%s.duration_minutes: expected a whole number from 1 to 1440; found %r" % (where, duration))
    return Window(list(days), _dt.time(int(match.group(1)), int(match.group(2))), duration)


def site_zone(name):
    """Return the ZoneInfo of an IANA time zone name, or raise WindowError."""
    if ZoneInfo is None:  # pragma: no cover
        raise WindowError("time zones need Python 3.9 or later (zoneinfo)")
    if not isinstance(name, str) or not name:
        raise WindowError("time zone: expected an IANA name such as Europe/Paris; found %r" % (name,))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise WindowError("time zone: %r is not an IANA time zone (for example Europe/Paris)" % (name,)) from None


def _local_to_utc(day, start, zone):
    """The UTC instant of local wall time ``day start`` in ``zone``, with the DST rules of this module."""
    naive = _dt.datetime.combine(day, start)
    first = naive.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(_UTC)
    # A wall time inside a spring-forward gap does not survive the round trip: move to the gap's end.
    if instant.astimezone(zone).replace(tzinfo=None) != naive:
        gap_end = naive
        while True:
            gap_end += _dt.timedelta(minutes=1)
            candidate = gap_end.replace(tzinfo=zone, fold=0).astimezone(_UTC)
            if candidate.astimezone(zone).replace(tzinfo=None) == gap_end:
                return candidate
    return instant


def _occurrences(windows, zone, first_day, last_day):
    """Every (opens_utc, closes_utc, window) whose opening day lies in [first_day, last_day]."""
    day = first_day
    while day <= last_day:
        name = DAYS[day.weekday()]
        for window in windows:
            if name in window.days:
                opens = _local_to_utc(day, window.start, zone)
                yield opens, opens + window.duration, window
        day += _dt.timedelta(days=1)


def window_state(windows, timezone, now=None):
    """Where ``now`` (aware datetime, default: the current time) falls against a site's windows.

    Returns a dict: ``open`` (bool), ``window`` (description of the open one, or None),
    ``closes_at`` (UTC ISO of the open window's end, or None), ``next_opens_at`` (UTC ISO of the next
    opening after now, or None when there are no windows), ``local_time`` (now in the site's zone).
    """
    zone = site_zone(timezone)
    parsed = [w if isinstance(w, Window) else parse_window(w, "windows[%d]" % i) for i, w in enumerate(windows or [])]
    now = (now or _dt.datetime.now(_UTC)).astimezone(_UTC)
    local_today = now.astimezone(zone).date()
    state = {
        "open": False,
        "window": None,
        "closes_at": None,
        "next_opens_at": None,
        "local_time": now.astimezone(zone).isoformat(),
        "timezone": timezone,
    }
    # A window opened yesterday may still be open (it can run up to 24 h, past midnight).
    for opens, closes, window in sorted(
        _occurrences(parsed, zone, local_today - _dt.timedelta(days=2), local_today + _dt.timedelta(days=8)),
        key=lambda item: item[0],
    ):
        if opens <= now < closes and not state["open"]:
            state.update(open=True, window=window.describe(), closes_at=closes.isoformat())
        elif opens > now and state["next_opens_at"] is None:
            state["next_opens_at"] = opens.isoformat()
    return state


def is_open(windows, timezone, now=None):
    """True when one of the windows is open at ``now`` in the site's time zone."""
    return window_state(windows, timezone, now)["open"]
