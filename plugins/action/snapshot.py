# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.snapshot: stores a terminal's facts in the controller's history store."""

from __future__ import annotations

import os

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
        args = self._task.args
        store = args.get("store")
        if not store or not isinstance(store, str):
            raise AnsibleActionFail(
                "ipm.fleet.snapshot: store must be the path of the history directory on the controller"
            )
        facts = args.get("facts", task_vars.get("ipm_terminal"))
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
        store = os.path.expanduser(store)
        try:
            if self._task.check_mode:
                from ansible_collections.ipm.fleet.plugins.plugin_utils.config_history import (
                    diff_facts,
                    list_snapshots,
                    read_snapshot,
                )

                existing = list_snapshots(store, terminal)
                previous = read_snapshot(existing[-1][1])["facts"] if existing else {}
                path, changes = None, diff_facts(previous, facts)
            else:
                path, changes = write_snapshot(store, terminal, facts, args.get("taken_at"), context)
        except (HistoryError, OSError) as exc:
            raise AnsibleActionFail("ipm.fleet.snapshot: %s" % exc) from None
        result.update(changed=bool(changes), path=path, changes=changes, terminal=terminal)
        if self._task.diff and changes:
            result["diff"] = {
                "before_header": "%s (previous snapshot)" % terminal,
                "after_header": "%s (now)" % terminal,
                "before": "".join("%s: %s\n" % (c["path"], c["before"]) for c in changes if c["change"] != "added"),
                "after": "".join("%s: %s\n" % (c["path"], c["after"]) for c in changes if c["change"] != "removed"),
            }
        return result
