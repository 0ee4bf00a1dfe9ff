"""Retention (grandfather-father-son) against a brute-force oracle, across daylight-saving changes and year ends."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.ipm.fleet.plugins.plugin_utils.backup_retention import (
    Policy,
    RetentionError,
    bucket,
    decide,
)

UTC = datetime.UTC
ZONES = ("Europe/Paris", "Australia/Sydney", "America/Santiago", "UTC")

# Daylight-saving changes of 2026 (UTC instants) and year ends (ISO week 53 of 2026 / week 1 of 2027, 2020/2021).
ANCHORS = [
    datetime.datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Paris spring forward
    datetime.datetime(2026, 10, 25, 1, 0, tzinfo=UTC),  # Paris fall back
    datetime.datetime(2026, 4, 4, 16, 0, tzinfo=UTC),  # Sydney fall back (03:00 AEDT -> 02:00 AEST)
    datetime.datetime(2026, 10, 3, 16, 0, tzinfo=UTC),  # Sydney spring forward
    datetime.datetime(2026, 4, 5, 3, 0, tzinfo=UTC),  # Santiago fall back (24:00 -> 23:00)
    datetime.datetime(2026, 9, 6, 4, 0, tzinfo=UTC),  # Santiago spring forward (24:00 -> 01:00)
    datetime.datetime(2026, 12, 31, 23, 0, tzinfo=UTC),  # year end, 2026 has ISO week 53
    datetime.datetime(2027, 1, 3, 23, 0, tzinfo=UTC),  # Sunday of 2026-W53 / Monday 2027-W01 east of UTC
    datetime.datetime(2020, 12, 31, 12, 0, tzinfo=UTC),  # 2020-W53
    datetime.datetime(2027, 12, 31, 23, 30, tzinfo=UTC),  # 2027 ends in 2027-W52, 2028-01-01 is still W52
]

near_anchor = st.builds(
    lambda anchor, minutes: anchor + datetime.timedelta(minutes=minutes),
    st.sampled_from(ANCHORS),
    st.integers(min_value=-4 * 24 * 60, max_value=4 * 24 * 60),
)
anywhere = st.datetimes(
    min_value=datetime.datetime(2019, 1, 1), max_value=datetime.datetime(2029, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
moments = st.lists(st.one_of(near_anchor, near_anchor, anywhere), min_size=0, max_size=40, unique=True)
counts = st.one_of(st.just(0), st.integers(min_value=1, max_value=6), st.just(-1))
policies = st.builds(Policy, keep_last=counts, daily=counts, weekly=counts, monthly=counts, yearly=counts).filter(
    lambda p: not p.empty
)


def oracle(times: list[datetime.datetime], policy: Policy, zone_name: str) -> dict[datetime.datetime, set[str]]:
    """Brute force, written differently from the implementation: for each backup and rule, count."""
    zone = datetime.UTC if zone_name == "UTC" else ZoneInfo(zone_name)

    def key(rule, moment):
        local = moment.astimezone(zone)
        if rule == "daily":
            return (local.year, local.month, local.day)
        if rule == "weekly":
            iso = local.date().isocalendar()
            return (iso[0], iso[1])
        if rule == "monthly":
            return (local.year, local.month)
        return (local.year,)

    kept: dict[datetime.datetime, set[str]] = {t: set() for t in times}
    for t in times:
        newer = sum(1 for other in times if other > t)
        if policy.keep_last == -1 or newer < policy.keep_last:
            kept[t].add("keep_last")
        for rule in ("daily", "weekly", "monthly", "yearly"):
            n = getattr(policy, rule)
            if n == 0:
                continue
            mine = key(rule, t)
            if any(key(rule, other) == mine and other > t for other in times):
                continue  # not the newest of its bucket
            newer_buckets = {key(rule, other) for other in times if key(rule, other) > mine}
            if n == -1 or len(newer_buckets) < n:
                kept[t].add(rule)
    return kept


@settings(max_examples=400, deadline=None)
@given(times=moments, policy=policies, zone=st.sampled_from(ZONES))
def test_decide_matches_the_brute_force_oracle(times, policy, zone):
    decisions = decide(times, policy, zone)
    expected = oracle(times, policy, zone)
    assert [d.time for d in decisions] == sorted(times)
    for d in decisions:
        rules = {reason.split(" ")[0] for reason in d.reasons}
        assert rules == expected[d.time], (d.time.isoformat(), d.reasons)
        assert d.keep == bool(expected[d.time])
    if times:
        assert decisions[-1].keep  # any rule keeps the newest backup: prune never empties a terminal


@settings(max_examples=200, deadline=None)
@given(times=moments, policy=policies, zone=st.sampled_from(ZONES))
def test_decide_is_stable_on_its_own_output(times, policy, zone):
    """Pruning what was decided and deciding again keeps the same set (prune twice = prune once)."""
    kept = [d.time for d in decide(times, policy, zone) if d.keep]
    again = decide(kept, policy, zone)
    assert all(d.keep for d in again)


def t(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_buckets_are_in_the_sites_zone():
    moment = t("2026-12-01T23:30:00Z")
    assert bucket("daily", moment, ZoneInfo("Europe/Paris")) == "2026-12-02"
    assert bucket("daily", moment, ZoneInfo("Australia/Sydney")) == "2026-12-02"
    assert bucket("daily", moment, ZoneInfo("America/Santiago")) == "2026-12-01"
    assert bucket("weekly", t("2027-01-03T12:00:00Z"), ZoneInfo("Europe/Paris")) == "2026-W53"
    assert bucket("weekly", t("2027-01-03T14:00:00Z"), ZoneInfo("Australia/Sydney")) == "2027-W01"
    assert bucket("yearly", t("2026-12-31T13:00:00Z"), ZoneInfo("Australia/Sydney")) == "2027"
    assert bucket("monthly", t("2026-09-06T03:30:00Z"), ZoneInfo("America/Santiago")) == "2026-09"
    assert bucket("daily", t("2026-09-06T03:30:00Z"), ZoneInfo("America/Santiago")) == "2026-09-05"


def test_daily_in_paris_across_the_repeated_hour():
    # 2026-10-25: 02:00-03:00 happens twice in Paris; all four backups are that one day, the newest is kept.
    times = [t("2026-10-24T23:30:00Z"), t("2026-10-25T00:30:00Z"), t("2026-10-25T01:30:00Z"), t("2026-10-25T22:30:00Z")]
    times.append(t("2026-10-25T23:30:00Z"))  # 00:30 on the 26th in Paris
    decisions = decide(times, Policy(daily=2), "Europe/Paris")
    assert [d.reasons for d in decisions] == [(), (), (), ("daily 2026-10-25",), ("daily 2026-10-26",)]
    # The same backups in UTC days: 24th, 25th x3, 25th.
    decisions = decide(times, Policy(daily=2), "UTC")
    assert [d.reasons for d in decisions] == [("daily 2026-10-24",), (), (), (), ("daily 2026-10-25",)]


def test_reasons_name_every_rule_that_keeps_a_backup():
    times = [t(f"2026-11-{day:02d}T02:00:00Z") for day in range(1, 31)] + [t("2026-12-01T02:00:00Z")]
    decisions = decide(times, Policy(keep_last=2, daily=3, weekly=2, monthly=2), "Europe/Paris")
    by_time = {d.time.date().isoformat(): d for d in decisions}
    assert by_time["2026-12-01"].reasons == ("keep_last 1", "daily 2026-12-01", "weekly 2026-W49", "monthly 2026-12")
    assert by_time["2026-11-30"].reasons == ("keep_last 2", "daily 2026-11-30", "monthly 2026-11")
    assert by_time["2026-11-29"].reasons == ("daily 2026-11-29", "weekly 2026-W48")  # a Sunday; the 30th is W49
    assert not by_time["2026-11-28"].keep and by_time["2026-11-28"].reasons == ()
    assert sum(d.keep for d in decisions) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [({}, "no keep rule"), ({"daily": -2}, "daily -2"), ({"weekly": "3"}, "weekly '3'"), ({"yearly": True}, "yearly")],
)
def test_bad_policies(kwargs, message):
    with pytest.raises(RetentionError, match=message):
        decide([t("2026-12-01T00:00:00Z")], Policy(**kwargs))


def test_bad_zone_and_naive_time():
    with pytest.raises(RetentionError, match="not an IANA time zone"):
        decide([t("2026-12-01T00:00:00Z")], Policy(daily=1), "Mars/Olympus")
    with pytest.raises(RetentionError, match="not an aware datetime"):
        decide([datetime.datetime(2026, 12, 1)], Policy(daily=1), "UTC")
