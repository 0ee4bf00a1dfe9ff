# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.snapshot: stores a terminal's facts in the controller's history store."""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.ipm.fleet.plugins.plugin_utils.config_history import (
    HistoryError,
    write_snapshot,
)

CONTEXT_VARS = {"customer": "ipm_customer_id", "site": "ipm_site_id", "model": "ipm_model"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("store", "facts", "taken_at", "context"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _validation, args = self.validate_argument_spec(
            argument_spec=dict(
                store=dict(type="path", required=True),
                facts=dict(type="dict"),
                taken_at=dict(type="str"),
                context=dict(type="dict"),
            )
        )
        store = args["store"]
        facts = args["facts"] if args.get("facts") is not None else task_vars.get("ipm_terminal")
        if not isinstance(facts, dict):
            raise AnsibleActionFail(
                "ipm.fleet.snapshot: no facts for %s: run ipm.fleet.terminal_facts first or pass facts"
                % task_vars.get("inventory_hostname")
            )
        terminal = task_vars.get("ipm_terminal_id") or task_vars.get("inventory_hostname")
        context = {key: task_vars.get(var) for key, var in CONTEXT_VARS.items() if task_vars.get(var) is not None}
        extra = task_vars.get("change_id") or task_vars.get("ticket_id")
        if extra:
            context["change"] = extra
        context.update(args.get("context") or {})
        check = bool(self._task.check_mode)
        try:
            path, changes = write_snapshot(store, terminal, facts, args.get("taken_at"), context, dry_run=check)
        except (HistoryError, OSError) as exc:
            raise AnsibleActionFail("ipm.fleet.snapshot: %s" % exc) from None
        result.update(changed=path is not None, path=None if check else path, changes=changes, terminal=terminal)
        if self._task.diff and changes:
            result["diff"] = {
                "before_header": "%s (previous snapshot)" % terminal,
                "after_header": "%s (now)" % terminal,
                "before": "".join("%s: %s\n" % (c["path"], c["before"]) for c in changes if c["change"] != "added"),
                "after": "".join("%s: %s\n" % (c["path"], c["after"]) for c in changes if c["change"] != "removed"),
            }
        return result
