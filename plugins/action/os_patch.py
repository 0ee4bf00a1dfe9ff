# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.os_patch: the site's window, the mirror's keyring, the module, the reboot decision - one task.

On the controller: the site's maintenance window (closed - the terminal is deferred and never contacted), the
mirror's keyring read from the controller and handed to the module as a string (the module writes it and the
deb822 source itself), then the module on the terminal, then the reboot decision against the window as it is
after the upgrade. The rules are plugins/module_utils/maintenance_window.py and os_patch_rules.py.
"""

from __future__ import annotations

import base64
import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.ipm.fleet.plugins.module_utils import os_patch_rules as rules
from ansible_collections.ipm.fleet.plugins.module_utils.maintenance_window import WindowError, window_state
from ansible_collections.ipm.fleet.plugins.plugin_utils.rollout_rules import deferral_reason

# Options of the action alone (the controller's side); the others go to the module.
_ACTION_ONLY = ("mirror_keyring", "site_windows", "site_timezone", "window", "reboot_budget", "window_justification")


def keyring_text(path):
    """The keyring file PATH on the controller as the module's mirror_key: armored text as is, else base64."""
    path = os.path.expanduser(str(path))
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise AnsibleActionFail(
            "ipm.fleet.os_patch: mirror_keyring %s cannot be read on the controller (%s): give the mirror's keyring, "
            "e.g. -e os_patch_mirror_keyring=/path/to/ipm-mirror.gpg" % (path, exc.strerror or exc)
        ) from None
    if data.lstrip().startswith(b"-----BEGIN PGP"):
        return data.decode("ascii", "replace")
    return base64.b64encode(data).decode("ascii")


def ledger_entry(result, scope=None, window_justification=""):
    """The ledger entry's result, reason and details of an os_patch RESULT when no reboot follows.

    The rules the role's filters use (patch_outcome, patch_details), here so that the role's ledger task reads
    values instead of loading the filter plugins in every terminal's worker; a terminal that reboots (or was not
    reached) gets its entry from the filters, with the reboot's outcome.
    """
    state = {"decision": result.get("reboot_decision") or {}}
    outcome = rules.patch_outcome(result, state)
    return {
        "result": outcome["result"],
        "reason": outcome["reason"],
        "details": rules.patch_details(result, state, scope or rules.DEFAULT_SCOPE, window_justification or ""),
    }


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        extra = {name: args.pop(name, None) for name in _ACTION_ONLY}
        mode = extra["window"] or "respect"
        if mode not in ("respect", "ignore"):
            raise AnsibleActionFail("ipm.fleet.os_patch: window: expected respect or ignore, found %r" % (mode,))
        windows = extra["site_windows"] or []
        timezone = extra["site_timezone"] or "UTC"
        checked = extra["site_windows"] is not None or mode == "ignore"
        try:
            budget = rules.check_seconds(
                rules.DEFAULT_REBOOT_BUDGET_S if extra["reboot_budget"] in (None, "") else extra["reboot_budget"],
                "reboot_budget",
            )
            opened = window_state(windows, timezone) if checked else {}
        except (WindowError, rules.PatchRuleError) as exc:
            raise AnsibleActionFail("ipm.fleet.os_patch: %s" % exc) from None
        if checked and mode != "ignore" and not opened.get("open"):
            result.update(
                changed=False,
                deferred=True,
                window=opened,
                reason=deferral_reason(opened, windows),
                msg="deferred: %s" % deferral_reason(opened, windows),
            )
            return self._with_ledger(result, extra)
        if extra["mirror_keyring"] and args.get("mirror_url"):
            args["mirror_key"] = keyring_text(extra["mirror_keyring"])
        result.update(self._execute_module(module_name="ipm.fleet.os_patch", module_args=args, task_vars=task_vars))
        if checked:
            try:
                now = window_state(windows, timezone)
            except WindowError as exc:
                raise AnsibleActionFail("ipm.fleet.os_patch: %s" % exc) from None
            result["window"] = opened
            result["window_ignored"] = mode == "ignore"
            result["reboot_decision"] = rules.reboot_after_patch(result, now, budget, window_ignored=mode == "ignore")
        return self._with_ledger(result, extra)

    def _with_ledger(self, result, extra):
        result["ledger"] = ledger_entry(result, self._task.args.get("scope"), extra["window_justification"])
        return result
