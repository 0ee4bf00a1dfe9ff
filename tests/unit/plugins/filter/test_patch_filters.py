"""The OS patch filters: settings checked with the variable's name, the reboot decided against a real window."""

from __future__ import annotations

import datetime

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.filter.patch import FilterModule, patch_outcome, patch_reboot, patch_request

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def window_closing_in(minutes):
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=60)  # noqa: UP017
    return [{"days": [DAYS[start.weekday()]], "start": start.strftime("%H:%M"), "duration_minutes": 60 + minutes}]


def test_filters_are_registered():
    assert set(FilterModule().filters()) == {
        "patch_request",
        "patch_reboot",
        "patch_outcome",
        "patch_details",
        "patch_bake_outcome",
    }


def test_request_errors_name_the_variable():
    assert patch_request({"patch_scope": "all"})["scope"] == "all"
    with pytest.raises(
        AnsibleFilterError, match=r"ipm.fleet.patch_request: patch_scope: expected one of security, all"
    ):
        patch_request({"patch_scope": "kernel"})


def test_reboot_inside_the_window_only_with_the_budget_left():
    needed = {"reboot_required": True, "reboot_why": "/var/run/reboot-required"}
    assert patch_reboot(needed, window_closing_in(120), "UTC", 600)["reboot"] is True
    late = patch_reboot(needed, window_closing_in(5), "UTC", 600)
    assert late["reboot"] is False and late["pending"] is True
    assert patch_reboot(needed, [], "UTC", 600)["pending"] is True  # no window: never now
    assert patch_reboot(needed, [], "UTC", 600, "ignore")["reboot"] is True
    assert patch_reboot(dict(needed, failed=True), window_closing_in(120), "UTC", 600)["reboot"] is False
    with pytest.raises(AnsibleFilterError, match="patch_reboot_budget_s"):
        patch_reboot(needed, window_closing_in(120), "UTC", "soon")
    with pytest.raises(AnsibleFilterError, match="time zone"):
        patch_reboot(needed, window_closing_in(120), "Mars/Olympus", 600)


def test_outcome_of_a_pending_reboot():
    upgraded = [{"name": "ipm-kernel-sim", "from": "1.0", "to": "1.1"}]
    decision = patch_reboot({"reboot_required": True}, window_closing_in(5), "UTC", 600)
    outcome = patch_outcome({"changed": True, "upgraded": upgraded}, {"decision": decision})
    assert outcome["result"] == "reboot_pending"
    assert outcome["reason"].startswith("upgraded ipm-kernel-sim 1.0 -> 1.1; reboot pending: the window closes in")
