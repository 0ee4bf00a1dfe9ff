# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.registry_swap: the registry's serial number of a terminal changes, with a record of the swap."""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.ipm.fleet.plugins.plugin_utils import hardware_swap
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import resolve_operator
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_paths import resolve_registry_dir


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("serial_number", "ticket", "registry", "backup"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _validation, args = self.validate_argument_spec(
            argument_spec=dict(
                serial_number=dict(type="str", required=True),
                ticket=dict(type="str"),
                registry=dict(type="path"),
                backup=dict(type="str"),
            )
        )
        terminal = task_vars.get("ipm_terminal_id") or task_vars.get("inventory_hostname")
        registry = args.get("registry") or self._registry_of_inventory(task_vars)
        if registry is None:
            raise AnsibleActionFail(
                "ipm.fleet.registry_swap: %s: no registry among the inventory sources; pass registry= "
                "(-e registry=PATH)" % terminal
            )
        ticket = args.get("ticket") or task_vars.get("ticket_id") or task_vars.get("change_id")
        extra = {name: task_vars.get(name) for name in ("ipm_operator", "awx_user_name", "tower_user_name")}
        operator = resolve_operator({k: v for k, v in extra.items() if v})[0]
        try:
            record = hardware_swap.swap(
                registry,
                terminal,
                args["serial_number"],
                ticket,
                operator,
                backup=args.get("backup"),
                dry_run=bool(self._task.check_mode),
            )
        except (hardware_swap.SwapError, OSError) as exc:
            raise AnsibleActionFail("ipm.fleet.registry_swap: %s" % exc) from None
        result.update(
            changed=True,
            swap=record,
            path=os.path.join(resolve_registry_dir(registry), record["file"]),
            msg="%s %s: serial number %s -> %s in %s (ticket %s)"
            % (
                "would record the hardware swap of" if self._task.check_mode else "hardware swap of",
                terminal,
                record["old_serial_number"],
                record["new_serial_number"],
                record["file"],
                record["ticket"],
            ),
        )
        return result

    @staticmethod
    def _registry_of_inventory(task_vars):
        """The registry the inventory was read from: the first ``*.ipm_registry.yml`` source (or its directory)."""
        for source in task_vars.get("ansible_inventory_sources") or []:
            candidate = resolve_registry_dir(str(source))
            if os.path.isfile(os.path.join(candidate, "catalog.yml")):
                return candidate
        return None
