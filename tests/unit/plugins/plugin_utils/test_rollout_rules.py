"""The rollout's decisions: ring policy, delivery and bake outcomes, the ring gate, the summary."""

from __future__ import annotations

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import rollout_rules as rules


def gate(ring, outcomes, missing=(), threshold=None):
    return rules.ring_gate(ring, outcomes, missing, threshold)


def test_one_failure_of_four_pilot_terminals_halts_at_the_default_20_percent():
    verdict = gate("pilot", {"p1": "delivered", "p2": "baked", "p3": "rolled_back", "p4": "delivered"})
    assert verdict["halt"] is True
    assert verdict["failed"] == ["p3"] and verdict["counted"] == 4 and verdict["threshold"] == 20.0
    assert "ROLLOUT HALTED" in verdict["message"]


def test_one_failure_of_five_pilot_terminals_does_not_halt():
    outcomes = {"p1": "delivered", "p2": "baked", "p3": "failed", "p4": "delivered", "p5": "already_current"}
    verdict = gate("pilot", outcomes)
    assert verdict["halt"] is False and verdict["failed"] == ["p3"] and verdict["counted"] == 5


def test_broad_ring_has_the_same_default_threshold():
    assert gate("broad", dict.fromkeys(["b1", "b2", "b3", "b4"], "delivered") | {"b5": "not_reached"})["halt"] is False
    assert gate("broad", dict.fromkeys(["b1", "b2", "b3"], "delivered") | {"b4": "not_reached"})["halt"] is True


def test_one_failed_canary_halts():
    assert gate("canary", {"c1": "rolled_back"})["halt"] is True
    assert gate("canary", {"c1": "baked", "c2": "delivered", "c3": "failed"})["halt"] is True
    assert gate("canary", {"c1": "baked"})["halt"] is False


def test_deferred_and_incompatible_are_set_aside_and_missing_hosts_count_as_failed():
    verdict = gate("pilot", {"p1": "deferred", "p2": "incompatible", "p3": "delivered"}, missing=["p4"])
    assert verdict["counted"] == 2 and verdict["failed"] == ["p4"] and verdict["halt"] is True
    nothing = gate("pilot", {"p1": "deferred"})
    assert nothing["counted"] == 0 and nothing["halt"] is False


def test_ring_policy_defaults_and_overrides():
    assert rules.ring_policy("canary") == {
        "ring": "canary",
        "bake": True,
        "bake_s": 900.0,
        "bake_interval_s": 5.0,
        "max_fail_percentage": 0.0,
        "bake_wait": {"async_s": 1500, "pause_s": 900, "delay_s": 30, "retries": 21},
    }
    assert rules.ring_policy("pilot")["max_fail_percentage"] == 20.0
    settings = {"rollout_bake_s": "30", "rollout_bake_s_broad": 0, "rollout_max_fail_percentage": 50}
    assert rules.ring_policy("pilot", settings)["bake_s"] == 30.0
    assert rules.ring_policy("broad", settings)["bake_s"] == 0.0
    assert rules.ring_policy("broad", settings)["bake"] is False, "0 turns the bake off"
    assert rules.ring_policy("broad", settings)["max_fail_percentage"] == 50.0
    # the general threshold never loosens the canary: it has its own variable
    assert rules.ring_policy("canary", settings)["max_fail_percentage"] == 0.0
    assert rules.ring_policy("canary", {"rollout_max_fail_percentage_canary": 10})["max_fail_percentage"] == 10.0


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"rollout_max_fail_percentage": "abc"}, "rollout_max_fail_percentage must be a number, got 'abc'"),
        ({"rollout_max_fail_percentage": 120}, "between 0 and 100"),
        ({"rollout_bake_s": -1}, "rollout_bake_s must be at least 0"),
        ({"rollout_bake_s_pilot": True}, "rollout_bake_s_pilot must be a number"),
        ({"rollout_bake_interval_s": 0}, "rollout_bake_interval_s must be at least 0.1"),
    ],
)
def test_ring_policy_refuses_values_that_are_not_numbers_in_range(settings, words):
    with pytest.raises(rules.RolloutRuleError, match=words.replace("(", r"\(")):
        rules.ring_policy("pilot", settings)


def test_unknown_ring_is_refused():
    with pytest.raises(rules.RolloutRuleError, match="ring must be one of canary, pilot, broad"):
        rules.ring_policy("Ring canary")


def test_delivery_outcomes():
    assert rules.delivery_outcome({"changed": True, "from_version": "2.3.1"})["result"] == "delivered"
    assert rules.delivery_outcome({"changed": False})["result"] == "already_current"
    incompatible = rules.delivery_outcome({"incompatible": True, "reasons": ["model PS-200", "disk"]})
    assert incompatible == {"result": "incompatible", "from_version": None, "reason": "model PS-200; disk"}
    rolled = rules.delivery_outcome({"failed": True, "rolled_back": True, "msg": "delivery of 2.4.1\nfailed"})
    assert rolled["result"] == "rolled_back" and rolled["reason"] == "delivery of 2.4.1 failed"
    assert rules.delivery_outcome({"failed": True, "msg": "sha256 mismatch"})["result"] == "failed"
    unrestored = {"failed": True, "rolled_back": True, "rollback": {"healthy": False}, "msg": "ROLLBACK DID NOT"}
    assert rules.delivery_outcome(unrestored)["result"] == "failed"
    lost = rules.delivery_outcome({"unreachable": True, "msg": "ssh: connect refused"})
    assert lost["result"] == "not_reached" and lost["reason"].startswith("unreachable: ssh: connect refused")


def test_bake_outcomes():
    passed = rules.bake_outcome({"healthy": True, "probes": 7, "watched_s": 30.0}, "2.3.1")
    assert passed["result"] == "baked" and passed["from_version"] == "2.3.1" and "7 probes" in passed["reason"]
    failed = rules.bake_outcome(
        {
            "failed": True,
            "healthy": False,
            "reason": "health answered 503",
            "rolled_back": True,
            "rolled_back_to": "2.4.0",
        }
    )
    assert failed["result"] == "rolled_back" and failed["from_version"] == "2.4.0"
    assert failed["reason"] == "failed during bake: health answered 503; back on 2.4.0"
    stuck = rules.bake_outcome({"failed": True, "healthy": False, "reason": "503", "rolled_back": False}, "2.4.0")
    assert stuck["result"] == "failed" and stuck["reason"].startswith("failed during bake: 503; NOT rolled back")
    assert rules.bake_outcome({"unreachable": True, "msg": "timeout"})["result"] == "not_reached"
    broken = rules.bake_outcome(
        {
            "failed": True,
            "reason": "503",
            "rolled_back": True,
            "rolled_back_to": "2.4.0",
            "rollback": {"to": "2.4.0", "healthy": False, "error": "2.4.0 did not answer"},
        }
    )
    assert (
        broken["result"] == "failed" and "did NOT restore a healthy terminal: 2.4.0 did not answer" in broken["reason"]
    )


def test_latest_outcome_prefers_the_bake():
    delivery = {"result": "delivered", "release": "2.4.0"}
    bake = {"result": "rolled_back", "release": "2.4.0"}
    assert rules.latest_outcome(delivery, bake) is bake
    assert rules.latest_outcome(delivery, {"skipped": True}) is delivery
    assert rules.latest_outcome(None, None) is None


def test_summary_shows_bake_outcomes_and_failures():
    rings = {"canary": ["c1"], "pilot": ["p1", "p2"]}
    entries = {
        "c1": {
            "delivery": {"result": "delivered", "release": "2.4.2", "from_version": "2.4.0", "reason": ""},
            "bake": {"result": "rolled_back", "release": "2.4.2", "reason": "failed during bake: 503; back on 2.4.0"},
        },
        "p1": {"delivery": None, "bake": None},
    }
    result = rules.summary(rings, entries)
    assert result["failed"] == ["c1"] and result["targeted"] == 3
    assert "rolled_back" in result["lines"][0] and "2.4.0 -> 2.4.2" in result["lines"][0]
    assert "failed during bake" in result["lines"][0]
    assert result["lines"][1].split() == ["pilot", "p1", "untouched"]


def test_deferral_reason():
    assert rules.deferral_reason({}, []) == "no maintenance window defined for the site"
    state = {
        "local_time": "2026-12-02T10:00:00+01:00",
        "timezone": "Europe/Paris",
        "next_opens_at": "2026-12-02T22:00Z",
    }
    reason = rules.deferral_reason(state, [{"days": ["mon"]}])
    assert reason == "site window closed at 2026-12-02T10:00:00+01:00 (Europe/Paris); next opens 2026-12-02T22:00Z UTC"


def test_delivered_terminals():
    entries = {
        "a": {"delivery": {"result": "delivered"}, "bake": None},
        "b": {"delivery": {"result": "deferred"}, "bake": None},
        "c": {"delivery": None, "bake": None},
    }
    assert rules.delivered_terminals(entries) == ["a"]
    assert rules.ring_policy("pilot", {"rollout_bake_s": 5})["bake_wait"] == {
        "async_s": 605,
        "pause_s": 5,
        "delay_s": 2,
        "retries": 301,
    }
