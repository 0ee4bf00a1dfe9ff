# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention of backups: grandfather-father-son rules per terminal, in the site's own time zone.

Rules (as restic's ``forget --keep-*``):

* ``keep_last N``: the N newest backups.
* ``daily N``, ``weekly N``, ``monthly N``, ``yearly N``: the newest backup of each of the N most recent days,
  ISO weeks, months, years that hold a backup. The calendar is the site's (``zoneinfo``): a backup at
  2026-12-01T23:30Z is on 2 December in Paris and Sydney, on 1 December in Santiago. Weeks are ISO weeks
  (``2026-W53``, ``2027-W01``; the ISO year, not the calendar year).
* N = -1 means every bucket. A backup is kept if any rule keeps it; every rule that keeps it is named.

The times are the store's own (the directory names, UTC, from the controller's clock), never a terminal's.
Backups are grouped into buckets explicitly (not read as a newest-first stream), so the hour a fall-back
repeats (02:00-03:00 twice in Paris and Sydney, 23:00-24:00 twice in Santiago) stays in its one day and
the newest backup of each bucket is kept whatever the local wall clock did. Standard library only.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

RULES = ("keep_last", "daily", "weekly", "monthly", "yearly")
CALENDAR_RULES = RULES[1:]


class RetentionError(ValueError):
    """A retention policy that cannot be applied (message names the rule and what is expected)."""


@dataclass(frozen=True)
class Policy:
    """How many of each to keep; 0 = the rule is off, -1 = every one."""

    keep_last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    def __post_init__(self):
        for rule in RULES:
            value = getattr(self, rule)
            if isinstance(value, bool) or not isinstance(value, int) or value < -1:
                raise RetentionError(f"{rule} {value!r}: expected a whole number >= 0 (or -1 for all)")

    @property
    def empty(self) -> bool:
        return all(getattr(self, rule) == 0 for rule in RULES)

    def describe(self) -> str:
        parts = [f"{rule} {'all' if getattr(self, rule) == -1 else getattr(self, rule)}" for rule in RULES]
        return ", ".join(p for p, rule in zip(parts, RULES, strict=True) if getattr(self, rule))


@dataclass(frozen=True)
class Decision:
    """What happens to one backup: kept (by which rules) or forgotten."""

    item: object
    time: datetime.datetime
    keep: bool
    reasons: tuple[str, ...]


def zone_of(name) -> datetime.tzinfo:
    """A time zone from an IANA name (``UTC`` included) or a tzinfo; RetentionError if unknown."""
    if isinstance(name, datetime.tzinfo):
        return name
    if isinstance(name, str) and name.upper() == "UTC":
        return datetime.timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise RetentionError(f"time zone {name!r}: not an IANA time zone (e.g. Europe/Paris)") from None


def bucket(rule: str, moment: datetime.datetime, zone: datetime.tzinfo) -> str:
    """The calendar bucket of ``moment`` in ``zone`` for a calendar rule: 2026-12-01, 2026-W49, 2026-12, 2026.

    Labels of one rule sort in calendar order."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise RetentionError(f"backup time {moment.isoformat()}: not an aware datetime (the store's times are UTC)")
    local = moment.astimezone(zone)
    if rule == "daily":
        return local.strftime("%Y-%m-%d")
    if rule == "weekly":
        year, week, _weekday = local.isocalendar()
        return f"{year:04d}-W{week:02d}"
    if rule == "monthly":
        return local.strftime("%Y-%m")
    if rule == "yearly":
        return f"{local.year:04d}"
    raise RetentionError(f"rule {rule!r}: expected one of {', '.join(CALENDAR_RULES)}")


def decide(
    items: Iterable,
    policy: Policy,
    zone="UTC",
    time_of: Callable[[object], datetime.datetime] | None = None,
) -> list[Decision]:
    """Keep or forget each of one terminal's backups (oldest first in the result).

    ``items`` are datetimes or objects with a time (``time_of(item)``, default ``item.time`` or the item itself).
    A policy with no rule at all is refused: it would forget everything."""
    if policy.empty:
        raise RetentionError(
            "no keep rule: give at least one of keep_last, daily, weekly, monthly, yearly (nothing would be kept)"
        )
    tz = zone_of(zone)

    def moment(item) -> datetime.datetime:
        if time_of is not None:
            value = time_of(item)
        else:
            value = item if isinstance(item, datetime.datetime) else getattr(item, "time", item)
        if not isinstance(value, datetime.datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise RetentionError(f"backup time {value!r}: not an aware datetime")
        return value

    ordered = sorted(((moment(item), index, item) for index, item in enumerate(items)), key=lambda t: (t[0], t[1]))
    reasons: dict[int, list[str]] = {index: [] for _time, index, _item in ordered}
    newest_first = list(reversed(ordered))
    if policy.keep_last:
        count = len(newest_first) if policy.keep_last == -1 else policy.keep_last
        for position, (_time, index, _item) in enumerate(newest_first[:count], start=1):
            reasons[index].append(f"keep_last {position}")
    for rule in CALENDAR_RULES:
        wanted = getattr(policy, rule)
        if not wanted:
            continue
        newest_of: dict[str, int] = {}
        for when, index, _item in newest_first:
            newest_of.setdefault(bucket(rule, when, tz), index)  # first seen newest-first = newest of its bucket
        labels = sorted(newest_of, reverse=True)
        for label in labels if wanted == -1 else labels[:wanted]:
            reasons[newest_of[label]].append(f"{rule} {label}")
    return [Decision(item, when, bool(reasons[index]), tuple(reasons[index])) for when, index, item in ordered]


def decide_per_terminal(
    entries: Iterable,
    policy: Policy,
    zone_for: Callable[[str, list], object],
) -> list[Decision]:
    """Apply ``policy`` to each terminal's backups separately (``entry.terminal``); ``zone_for(terminal,
    entries)`` gives that terminal's site zone. Result sorted by terminal then time."""
    by_terminal: dict[str, list] = {}
    for entry in entries:
        by_terminal.setdefault(entry.terminal, []).append(entry)
    result: list[Decision] = []
    for terminal in sorted(by_terminal):
        result.extend(decide(by_terminal[terminal], policy, zone_for(terminal, by_terminal[terminal])))
    return result
