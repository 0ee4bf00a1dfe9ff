"""The os_patch action's own ledger entry is the one the role's filters give for the same result, no reboot."""

from __future__ import annotations

import pytest

from ansible_collections.ipm.fleet.plugins.action.os_patch import ledger_entry
from ansible_collections.ipm.fleet.plugins.filter.patch import patch_details, patch_outcome

UPGRADED = [
    {"name": "ipm-base-tools", "from": "1.0", "to": "1.1", "security": False, "suites": ["bookworm-ipm-updates"]}
]
WINDOW = {"open": True, "window": "mon 00:00 for 1440 min"}
RESULTS = {
    "delivered": {"changed": True, "scope": "all", "upgraded": UPGRADED, "window": WINDOW, "reboot_decision": {}},
    "already_current": {"changed": False, "scope": "security", "upgraded": [], "reboot_decision": {}},
    "reboot_pending": {
        "changed": True,
        "scope": "all",
        "upgraded": UPGRADED,
        "reboot_required": True,
        "reboot_why": "/var/run/reboot-required (ipm-kernel-sim)",
        "reboot_decision": {"reboot": False, "pending": True, "reason": "reboot pending: the window closes in 60 s"},
    },
    "failed": {"failed": True, "msg": "dpkg: error processing package ipm-broken", "scope": "all", "upgraded": []},
    "deferred": {"changed": False, "deferred": True, "reason": "outside the maintenance window", "window": WINDOW},
}


@pytest.mark.parametrize("expected", sorted(RESULTS))
def test_ledger_entry_is_the_filters_entry(expected):
    result = RESULTS[expected]
    state = {"decision": result.get("reboot_decision") or {}}
    entry = ledger_entry(result, result.get("scope"), "emergency: barrier down")
    assert entry["result"] == expected
    assert {"result": entry["result"], "reason": entry["reason"]} == patch_outcome(result, state)
    assert entry["details"] == patch_details(
        result, state, result.get("scope") or "security", "emergency: barrier down"
    )
    if expected == "deferred":
        assert entry["details"] is None
    else:
        assert entry["details"]["scope"] == (result.get("scope") or "security")
