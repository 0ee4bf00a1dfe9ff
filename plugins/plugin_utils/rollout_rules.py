# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rollout's decisions, in one place: ring policy, the outcome of a delivery and of a bake, the ring gate.

``playbooks/rollout.yml`` and the ``ipm.fleet.rollout`` role only wire these together, through the
filters of ``plugins/filter/rollout.py``:

* :func:`ring_policy` - the bake period and the failure threshold of a ring (canary 0 %, pilot and
  broad 20 % by default; the bake minutes long by default, set low in tests);
* :func:`delivery_outcome` - the ledger result of one ``ipm.fleet.release`` run;
* :func:`bake_outcome` - the ledger result of one ``ipm.fleet.bake`` run on a delivered terminal;
* :func:`ring_gate` - whether a ring's outcomes so far halt the rollout.

Controller-side, no Ansible runtime state: unit-tested directly.
"""

from __future__ import annotations

import math

RINGS = ("canary", "pilot", "broad")
DEFAULT_MAX_FAIL_PERCENTAGE = {"canary": 0.0, "pilot": 20.0, "broad": 20.0}
# Real-world bake periods: long enough for a release that fails some minutes after its start to
# show it on the canary before the pilot ring is touched.
DEFAULT_BAKE_S = {"canary": 900.0, "pilot": 600.0, "broad": 300.0}
DEFAULT_BAKE_INTERVAL_S = 5.0
# Beyond the bake itself, time a bake's rollback may take (restart and health wait of the previous
# release), before the controller stops waiting for the terminal's answer.
BAKE_MARGIN_S = 600.0

# Ledger results (plugins/plugin_utils/delivery_ledger.py RESULTS) as the gate sees them.
FAILING = ("failed", "rolled_back", "not_reached")
SET_ASIDE = ("deferred", "incompatible")
BAKE_PREFIX = "failed during bake: "


class RolloutRuleError(ValueError):
    """A rollout setting is not usable; the message names the variable and what it takes."""


def _number(value, name, low=0.0, high=None):
    if isinstance(value, bool):
        raise RolloutRuleError("%s must be a number, got %r" % (name, value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RolloutRuleError("%s must be a number, got %r" % (name, value)) from None
    if math.isnan(number) or number < low or (high is not None and number > high):
        bounds = "between %g and %g" % (low, high) if high is not None else "at least %g" % low
        raise RolloutRuleError("%s must be %s, got %r" % (name, bounds, value))
    return number


def _given(value):
    return value is not None and value != ""


def ring_policy(ring, settings=None):
    """The policy of RING from the rollout's variables SETTINGS (a mapping; missing ones take defaults).

    Variables read (a ring-specific one wins over the general one, which wins over the default):

    * ``rollout_bake_s_<ring>``, ``rollout_bake_s``: seconds every terminal the ring delivered is
      watched after the ring's last wave (0 turns the bake off: the delivery's own settle period
      is then the last look at the terminal);
    * ``rollout_bake_interval_s``: seconds between two probes during the bake;
    * ``rollout_max_fail_percentage_<ring>``, and for pilot and broad ``rollout_max_fail_percentage``:
      the share of the ring's counted terminals that may fail before the rollout halts.

    Returns ``{ring, bake, bake_s, bake_interval_s, max_fail_percentage, bake_wait}``, ``bake``
    telling whether the ring is baked at all, ``bake_wait`` saying how the controller waits for
    the terminals' bakes, which all run at once in the background (``async_s``: their time limit;
    ``pause_s``: the controller's sleep through the bake; then ``retries`` asks every ``delay_s``); RolloutRuleError for an unknown ring or a value that
    is not a number in range.
    """
    if ring not in RINGS:
        raise RolloutRuleError("ring must be one of %s, got %r" % (", ".join(RINGS), ring))
    settings = settings if isinstance(settings, dict) else {}

    def pick(*names):
        for name in names:
            if name and _given(settings.get(name)):
                return name, settings[name]
        return None, None

    name, value = pick("rollout_bake_s_" + ring, "rollout_bake_s")
    bake_s = _number(value, name) if name else DEFAULT_BAKE_S[ring]
    name, value = pick("rollout_bake_interval_s")
    interval = _number(value, name, low=0.1) if name else DEFAULT_BAKE_INTERVAL_S
    general = None if ring == "canary" else "rollout_max_fail_percentage"
    name, value = pick("rollout_max_fail_percentage_" + ring, general)
    threshold = _number(value, name, high=100.0) if name else DEFAULT_MAX_FAIL_PERCENTAGE[ring]
    async_s = int(bake_s + BAKE_MARGIN_S)
    # The controller sleeps through the bake, then asks each terminal for its outcome: every ask is
    # a module run on every terminal of the ring, so ask seldom (a bake of 900 s every 30 s).
    delay_s = int(min(30.0, max(2.0, bake_s / 30.0)))
    return {
        "ring": ring,
        "bake": bake_s > 0,
        "bake_s": bake_s,
        "bake_interval_s": interval,
        "max_fail_percentage": threshold,
        "bake_wait": {
            "async_s": async_s,
            "pause_s": max(1, math.ceil(bake_s)),
            "delay_s": delay_s,
            "retries": int(BAKE_MARGIN_S) // delay_s + 1,
        },
    }


def _one_line(text):
    return " ".join(str(text or "").split())


def delivery_outcome(result, unreachable=None):
    """The ledger entry of one ``ipm.fleet.release`` run: ``{result, from_version, reason}``.

    RESULT is the registered task result. An unreachable terminal is ``not_reached``; a terminal the
    release does not fit is ``incompatible`` (nothing changed); a failed run is ``rolled_back`` when
    the module switched back, else ``failed``; a change is ``delivered``, no change
    ``already_current``.
    """
    result = result if isinstance(result, dict) else {}
    if unreachable is None:
        unreachable = bool(result.get("unreachable"))
    outcome = {"from_version": result.get("from_version"), "reason": ""}
    if unreachable:
        outcome["result"] = "not_reached"
        outcome["reason"] = (
            "unreachable: %s (a delivery already started on the terminal completes or rolls back by itself: "
            "check it before the next attempt)" % (_one_line(result.get("msg")) or "no answer")
        )
    elif result.get("incompatible"):
        outcome["result"] = "incompatible"
        outcome["reason"] = "; ".join(str(reason) for reason in result.get("reasons") or [])
    elif result.get("failed"):
        rollback = result.get("rollback") if isinstance(result.get("rollback"), dict) else {}
        # A rollback that did not bring the previous release back healthy leaves a broken terminal.
        restored = result.get("rolled_back") and rollback.get("healthy") is not False
        outcome["result"] = "rolled_back" if restored else "failed"
        outcome["reason"] = _one_line(result.get("msg")) or "delivery failed"
    else:
        outcome["result"] = "delivered" if result.get("changed") else "already_current"
    return outcome


def bake_outcome(result, delivered_from=None):
    """The ledger entry of one ``ipm.fleet.bake`` run on a terminal the ring delivered.

    A terminal that stayed healthy is ``baked``; one that turned unhealthy is ``rolled_back`` with
    the reason ``failed during bake: ...`` when the bake put the previous release back, else
    ``failed`` (it still runs the bad release: the reason says so). An unreachable terminal during
    the bake is ``not_reached``. DELIVERED_FROM is the release the delivery came from.
    """
    result = result if isinstance(result, dict) else {}
    outcome = {"from_version": result.get("rolled_back_to") or delivered_from, "reason": ""}
    reason = _one_line(result.get("reason") or result.get("msg")) or "unhealthy"
    if result.get("unreachable"):
        outcome["result"] = "not_reached"
        outcome["reason"] = (
            BAKE_PREFIX + "unreachable during the bake: " + (_one_line(result.get("msg")) or "no answer")
        )
    elif result.get("failed") or result.get("healthy") is False:
        rollback = result.get("rollback") if isinstance(result.get("rollback"), dict) else {}
        if result.get("rolled_back") and rollback.get("healthy") is False:
            outcome["result"] = "failed"
            outcome["reason"] = (
                BAKE_PREFIX
                + reason
                + "; the rollback to %s did NOT restore a healthy terminal: %s"
                % (
                    result.get("rolled_back_to") or rollback.get("to") or "?",
                    _one_line(rollback.get("error")) or "unknown error",
                )
            )
        elif result.get("rolled_back"):
            outcome["result"] = "rolled_back"
            outcome["reason"] = BAKE_PREFIX + reason + "; back on %s" % (result.get("rolled_back_to") or "?")
        else:
            outcome["result"] = "failed"
            outcome["reason"] = BAKE_PREFIX + reason + "; NOT rolled back: the terminal may still run the release"
    else:
        outcome["result"] = "baked"
        outcome["reason"] = "healthy for %ss (%s probes)" % (result.get("watched_s", 0), result.get("probes", 0))
    return outcome


def ring_gate(ring, outcomes, missing=(), max_fail_percentage=None):
    """Whether RING's outcomes so far halt the rollout.

    OUTCOMES maps each terminal of the ring that has an outcome to its latest ledger result (a bake
    outcome replaces the delivery's); MISSING lists terminals that left the play without one (they
    count as failed). Deferred and incompatible terminals are set aside; ``baked``, ``delivered``
    and ``already_current`` count as good. The rollout halts when the failed share of the counted
    terminals is above MAX_FAIL_PERCENTAGE (default: the ring's).

    Returns ``{ring, failed: [terminals], counted, threshold, halt, message}``.
    """
    threshold = (
        DEFAULT_MAX_FAIL_PERCENTAGE.get(ring, 0.0)
        if max_fail_percentage is None
        else _number(max_fail_percentage, "max_fail_percentage", high=100.0)
    )
    outcomes = dict(outcomes or {})
    failed = sorted({host for host, result in outcomes.items() if result in FAILING} | set(missing or ()))
    counted = sorted({host for host, result in outcomes.items() if result not in SET_ASIDE} | set(missing or ()))
    halt = bool(counted) and len(failed) * 100.0 > threshold * len(counted)
    if halt:
        message = (
            "ROLLOUT HALTED in ring %s: %d of %d terminal(s) failed (%s), above the threshold of %g%%. "
            "Later waves and rings untouched." % (ring, len(failed), len(counted), ", ".join(failed), threshold)
        )
    else:
        message = "ring %s: %d of %d terminal(s) failed%s, threshold %g%%: going on" % (
            ring,
            len(failed),
            len(counted),
            " (%s)" % ", ".join(failed) if failed else "",
            threshold,
        )
    return {
        "ring": ring,
        "failed": failed,
        "counted": len(counted),
        "threshold": threshold,
        "halt": halt,
        "message": message,
    }


def deferral_reason(window_state, windows):
    """Why a terminal is deferred, from its site's window state (``ipm.fleet.window``) and windows."""
    if not windows:
        return "no maintenance window defined for the site"
    state = window_state if isinstance(window_state, dict) else {}
    return "site window closed at %s (%s); next opens %s UTC" % (
        state.get("local_time"),
        state.get("timezone"),
        state.get("next_opens_at"),
    )


def delivered_terminals(entries):
    """The terminals whose latest delivery in this rollout is ``delivered`` (ENTRIES: terminal -> {delivery, bake})."""
    return sorted(
        host
        for host, recorded in (entries or {}).items()
        if isinstance(recorded.get("delivery"), dict) and recorded["delivery"].get("result") == "delivered"
    )


def latest_outcome(delivery=None, bake=None):
    """A terminal's latest ledger entry in this rollout: its bake's when it was baked, else its delivery's."""
    for entry in (bake, delivery):
        if isinstance(entry, dict) and isinstance(entry.get("result"), str):
            return entry
    return None


def summary(rings, entries):
    """The rollout's end: one line per terminal, ring by ring, and who failed.

    RINGS maps each ring to its terminals; ENTRIES maps a terminal to ``{"delivery": entry,
    "bake": entry}`` (either may be missing). Returns ``{lines, failed, targeted}``; a terminal
    without any entry is shown ``untouched``.
    """
    lines, failed = [], []
    for ring, hosts in (rings or {}).items():
        for host in sorted(hosts or []):
            recorded = (entries or {}).get(host) or {}
            delivery, bake = recorded.get("delivery"), recorded.get("bake")
            latest = latest_outcome(delivery, bake)
            if latest is None:
                # No outcome: a later wave the halt left alone, or a terminal that left the play
                # before its delivery (the ring gate counted that one as failed).
                lines.append("%-7s %-16s %-15s" % (ring, host, "untouched"))
                continue
            first = delivery if isinstance(delivery, dict) else latest
            line = "%-7s %-16s %-15s %s -> %s" % (
                ring,
                host,
                latest["result"],
                first.get("from_version") or "-",
                first.get("release") or latest.get("release") or "-",
            )
            reasons = [
                entry.get("reason") for entry in (delivery, bake) if isinstance(entry, dict) and entry.get("reason")
            ]
            if reasons:
                line += " (%s)" % "; ".join(reasons)
            lines.append(line)
            if latest["result"] in FAILING:
                failed.append(host)
    return {"lines": lines, "failed": failed, "targeted": sum(len(hosts or []) for hosts in (rings or {}).values())}
