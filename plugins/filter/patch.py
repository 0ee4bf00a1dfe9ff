# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filters of OS patching (logic in module_utils/os_patch_rules.py; docs beside, one .yml each)."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.module_utils import os_patch_rules as rules
from ansible_collections.ipm.fleet.plugins.module_utils.maintenance_window import WindowError, window_state
from ansible_collections.ipm.fleet.plugins.plugin_utils.filter_data import plain


def _mapping(value):
    return plain(value) if isinstance(value, Mapping) else {}


def patch_request(settings):
    """The patch run's settings (scope, reboot budget, timeouts) from the playbook's patch_* variables."""
    try:
        return rules.patch_request(_mapping(settings))
    except rules.PatchRuleError as exc:
        raise AnsibleFilterError("ipm.fleet.patch_request: %s" % exc) from None


def patch_reboot(result, windows, timezone, budget_s=rules.DEFAULT_REBOOT_BUDGET_S, window="respect", now=None):
    """Reboot now or leave it pending: the os_patch RESULT's reboot need against the site's window at NOW."""
    result = _mapping(result)
    try:
        state = window_state(plain(windows or []), timezone or "UTC", None)
        return rules.reboot_after_patch(result, state, budget_s, window_ignored=window == "ignore", now=now)
    except (WindowError, rules.PatchRuleError) as exc:
        raise AnsibleFilterError("ipm.fleet.patch_reboot: %s" % exc) from None


def patch_outcome(result, reboot=None):
    """The ledger entry (result, reason) of one terminal's patch run and what it did about a reboot."""
    return rules.patch_outcome(_mapping(result), _mapping(reboot))


def patch_details(result, reboot=None, scope=rules.DEFAULT_SCOPE, window_justification=""):
    """The details of one terminal's patch ledger entry (packages, holds, reboot, window); None when deferred."""
    return rules.patch_details(_mapping(result), _mapping(reboot), scope, window_justification)


def patch_bake_outcome(result):
    """The ledger entry (result, reason) of the ring bake after patching (OS patches are not rolled back)."""
    return rules.patch_bake_outcome(_mapping(result))


class FilterModule:
    """ipm.fleet OS patch filters."""

    def filters(self):
        return {
            "patch_request": patch_request,
            "patch_reboot": patch_reboot,
            "patch_outcome": patch_outcome,
            "patch_details": patch_details,
            "patch_bake_outcome": patch_bake_outcome,
        }
