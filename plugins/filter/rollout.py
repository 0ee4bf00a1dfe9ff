# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filters of the rollout's decisions (logic in plugin_utils/rollout_rules.py; docs beside, one .yml each)."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.plugin_utils import rollout_rules as rules
from ansible_collections.ipm.fleet.plugins.plugin_utils.filter_data import plain


def _entry(host_variables, name):
    registered = host_variables.get(name) if isinstance(host_variables, Mapping) else None
    entry = registered.get("delivery") if isinstance(registered, Mapping) else None
    return plain(entry) if isinstance(entry, Mapping) else None


def _entries(hosts, hostvars):
    found = {}
    for host in hosts or []:
        try:
            variables = hostvars[host]
        except KeyError:
            variables = {}
        found[host] = {"delivery": _entry(variables, "rollout_delivery"), "bake": _entry(variables, "rollout_bake")}
    return found


def ring_policy(ring, settings=None):
    """The bake period and failure threshold of RING from the rollout's variables (a mapping)."""
    try:
        return rules.ring_policy(ring, plain(settings or {}))
    except rules.RolloutRuleError as exc:
        raise AnsibleFilterError("ipm.fleet.ring_policy: %s" % exc) from None


def delivery_outcome(result):
    """The ledger entry (result, from_version, reason) of one registered ipm.fleet.release result."""
    return rules.delivery_outcome(plain(result) if isinstance(result, Mapping) else {})


def bake_outcome(result, delivered_from=None):
    """The ledger entry (result, from_version, reason) of one registered ipm.fleet.bake result."""
    return rules.bake_outcome(plain(result) if isinstance(result, Mapping) else {}, delivered_from)


def ring_gate(hosts, hostvars, active_hosts, policy):
    """Whether the ring's outcomes so far (delivery, or bake when there was one) halt the rollout."""
    if not isinstance(policy, Mapping) or "ring" not in policy:
        raise AnsibleFilterError(
            "ipm.fleet.ring_gate: policy must be the ring's ipm.fleet.ring_policy, got %r" % (policy,)
        )
    entries = _entries(hosts, hostvars)
    outcomes = {}
    for host, recorded in entries.items():
        latest = rules.latest_outcome(recorded["delivery"], recorded["bake"])
        if latest is not None:
            outcomes[host] = latest["result"]
    active = set(active_hosts or [])
    missing = [host for host in hosts or [] if host not in active]
    try:
        return rules.ring_gate(policy["ring"], outcomes, missing, policy.get("max_fail_percentage"))
    except rules.RolloutRuleError as exc:
        raise AnsibleFilterError("ipm.fleet.ring_gate: %s" % exc) from None


def rollout_summary(rings, hostvars):
    """One line per terminal of the rollout, ring by ring, and the terminals that failed."""
    rings = plain(rings or {})
    hosts = [host for members in rings.values() for host in members or []]
    return rules.summary(rings, _entries(hosts, hostvars))


def ring_delivered(hosts, hostvars):
    """The terminals of HOSTS whose delivery in this rollout changed them (the ones a bake watches)."""
    return rules.delivered_terminals(_entries(hosts, hostvars))


def deferral_reason(window_state, windows):
    """Why a terminal is deferred, from its site's ipm.fleet.window state and its windows."""
    return rules.deferral_reason(plain(window_state or {}), plain(windows or []))


class FilterModule:
    """ipm.fleet rollout filters."""

    def filters(self):
        return {
            "ring_policy": ring_policy,
            "delivery_outcome": delivery_outcome,
            "bake_outcome": bake_outcome,
            "ring_gate": ring_gate,
            "rollout_summary": rollout_summary,
            "deferral_reason": deferral_reason,
            "ring_delivered": ring_delivered,
        }
