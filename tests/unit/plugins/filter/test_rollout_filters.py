"""The rollout filters read host variables as Ansible hands them and raise AnsibleFilterError on bad input."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.filter.parameters import terminal_parameters
from ansible_collections.ipm.fleet.plugins.filter.rollout import ring_gate, ring_policy, rollout_summary


def hostvars_of(**hosts):
    return {
        name: {
            "rollout_delivery": {"delivery": {"result": delivery, "release": "2.4.0", "from_version": "2.3.1"}},
            **({"rollout_bake": {"delivery": {"result": bake, "release": "2.4.0"}}} if bake else {}),
        }
        for name, (delivery, bake) in hosts.items()
    }


def test_ring_gate_counts_the_bake_over_the_delivery():
    hostvars = hostvars_of(p1=("delivered", "baked"), p2=("delivered", "rolled_back"), p3=("delivered", None))
    hostvars["p4"] = {"rollout_bake": {"skipped": True}}  # a later wave: no outcome yet
    policy = ring_policy("pilot", {"rollout_bake_s": 0})
    verdict = ring_gate(["p1", "p2", "p3", "p4"], hostvars, ["p1", "p2", "p3", "p4"], policy)
    assert verdict["failed"] == ["p2"] and verdict["counted"] == 3 and verdict["halt"] is True


def test_ring_gate_needs_a_policy():
    with pytest.raises(AnsibleFilterError, match=r"policy must be the ring.s ipm\.fleet\.ring_policy"):
        ring_gate([], {}, [], "canary")


def test_ring_policy_error_is_a_filter_error():
    with pytest.raises(AnsibleFilterError, match="rollout_max_fail_percentage must be a number"):
        ring_policy("broad", {"rollout_max_fail_percentage": "twenty"})


def test_summary_reads_hostvars():
    result = rollout_summary({"canary": ["c1"]}, hostvars_of(c1=("delivered", "baked")))
    assert result["failed"] == [] and result["lines"][0].split()[:3] == ["canary", "c1", "baked"]


def test_terminal_parameters_filter_stages_and_lists_secrets():
    manifest = {
        "version": "2.4.0",
        "parameters": {
            "currency": {"type": "str", "default": "EUR"},
            "payment_api_token": {"type": "str", "default": "", "secret": True},
        },
    }
    result = terminal_parameters(manifest, {"tariff_zone": "B"}, None, {"currency": "AUD"})
    assert result["registry_values"] == {"currency": "AUD"}
    assert result["effective"] == {"currency": "AUD", "payment_api_token": ""}
    assert result["staged"] == [{"name": "tariff_zone", "layer": "customer"}]
    assert result["secret_names"] == ["payment_api_token"]
    with pytest.raises(AnsibleFilterError, match="site parameters must be a mapping"):
        terminal_parameters(manifest, {}, "oops")


def test_filters_hand_untagged_plain_values_to_the_rules():
    # A decrypted vault value reaches a filter as a tagged str; written back by to_nice_yaml it would
    # come out as "!vault" ciphertext, which ipm-app cannot read.
    from ansible._internal._datatag._tags import Origin
    from ansible.module_utils._internal._datatag import AnsibleTagHelper

    from ansible_collections.ipm.fleet.plugins.plugin_utils.filter_data import plain

    tagged = Origin(path="/registry/customers/x.yml").tag("token-value")
    assert AnsibleTagHelper.tags(tagged)
    result = plain({"payment_api_token": tagged, "timeout": Origin(path="/x").tag(30), "flags": [True, None, 1.5]})
    assert result == {"payment_api_token": "token-value", "timeout": 30, "flags": [True, None, 1.5]}
    assert type(result["payment_api_token"]) is str and type(result["timeout"]) is int
    assert not AnsibleTagHelper.tags(result["payment_api_token"])
