"""Compatibility rules: one case per rule, and unknown facts never count as compatible."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils.compat import check_compatibility
from ansible_collections.ipm.fleet.plugins.module_utils.release_manifest import version_tuple

MANIFEST = {
    "version": "3.0.0",
    "compatibility": {
        "models": ["PS-300", "TK-110"],
        "os": ["debian-12"],
        "upgrades_from": "2.4.0",
        "interfaces": ["payment", "printer"],
        "min_free_disk_mib": 128,
    },
}
FACTS = {
    "hardware": {"model": "PS-300", "serial_number": "PS3-0001", "disk_free_mib": 2048},
    "os": {"id": "debian-12"},
    "application": {"current": "2.4.0"},
    "interfaces": {
        "devices": {
            "payment": {"type": "serial", "device": "/dev/ipm/payment", "present": True},
            "printer": {"type": "serial", "device": "/dev/ipm/printer", "present": True},
        }
    },
}


def facts_with(path, value):
    facts = copy.deepcopy(FACTS)
    node = facts
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return facts


def test_compatible_terminal():
    assert check_compatibility(MANIFEST, FACTS) == {"compatible": True, "reasons": []}


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (facts_with(("hardware", "model"), "PS-200"), "hardware model PS-200 is not supported by release 3.0.0"),
        (facts_with(("hardware", "model"), None), "hardware model unknown"),
        (facts_with(("os", "id"), "debian-11"), "OS debian-11 is not supported"),
        (facts_with(("os",), {"unknown": "no /etc/os-release"}), "OS unknown (no /etc/os-release)"),
        (facts_with(("hardware", "disk_free_mib"), 100), "free disk 100 MiB is less than the 128 MiB"),
        (facts_with(("hardware", "disk_free_mib"), KeyError), "free disk unknown"),
        (facts_with(("application", "current"), "2.3.1"), "older than 2.4.0, the oldest release 3.0.0 upgrades from"),
        (facts_with(("application", "current"), "3.1.0"), "a downgrade needs allow_downgrade"),
        (facts_with(("application", "current"), "latest"), "is not a version X.Y.Z"),
        (facts_with(("interfaces", "devices", "printer"), KeyError), "interface printer is not configured"),
        (
            facts_with(("interfaces", "devices", "payment", "present"), False),
            "interface payment is configured but its device /dev/ipm/payment is not present",
        ),
        (
            facts_with(("interfaces",), {"unknown": "interfaces.yml unreadable"}),
            "interfaces unknown (interfaces.yml unreadable)",
        ),
    ],
)
def test_each_rule_gives_its_reason(facts, reason):
    result = check_compatibility(MANIFEST, facts)
    assert result["compatible"] is False
    assert any(reason in r for r in result["reasons"]), result["reasons"]


def test_every_failed_rule_is_reported_at_once():
    facts = facts_with(("hardware", "model"), "PS-200")
    facts["os"]["id"] = "debian-11"
    facts["hardware"]["disk_free_mib"] = 1
    assert len(check_compatibility(MANIFEST, facts)["reasons"]) == 3


def test_fresh_terminal_without_application_may_install():
    assert check_compatibility(MANIFEST, facts_with(("application", "current"), None))["compatible"] is True


def test_downgrade_allowed_on_request():
    facts = facts_with(("application", "current"), "3.1.0")
    assert check_compatibility(MANIFEST, facts, allow_downgrade=True)["compatible"] is True


@pytest.mark.parametrize("manifest", [None, {}, {"version": "three"}, "3.0.0"])
def test_malformed_manifest_is_reported_not_raised(manifest):
    result = check_compatibility(manifest, FACTS)
    assert result["compatible"] is False
    assert "release manifest" in result["reasons"][0]


def test_versions_compare_numerically():
    assert version_tuple("2.10.0") > version_tuple("2.9.9")
    assert version_tuple("2.4") is None
