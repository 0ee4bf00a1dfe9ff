# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.delivery: one delivery-ledger entry per terminal and attempt, on the controller."""

from __future__ import annotations

import datetime

from ansible.plugins.action import ActionBase

from ansible_collections.ipm.fleet.plugins.module_utils.maintenance_window import WindowError, site_zone
from ansible_collections.ipm.fleet.plugins.plugin_utils.delivery_ledger import DEFAULT_KIND, KINDS, RESULTS


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("release", "result", "from_version", "reason", "details", "kind"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _validation, args = self.validate_argument_spec(
            argument_spec=dict(
                release=dict(type="str", required=True),
                result=dict(type="str", required=True, choices=list(RESULTS)),
                from_version=dict(type="str"),
                reason=dict(type="str", default=""),
                details=dict(type="dict"),
                kind=dict(type="str", default=DEFAULT_KIND, choices=list(KINDS)),
            )
        )
        now = datetime.datetime.now(datetime.timezone.utc)
        zone_name = task_vars.get("ipm_site_timezone") or "UTC"
        try:
            local = now.astimezone(site_zone(zone_name)).isoformat()
        except WindowError:
            local = None
        entry = {
            "terminal": task_vars.get("ipm_terminal_id") or task_vars.get("inventory_hostname"),
            "customer": task_vars.get("ipm_customer_id"),
            "site": task_vars.get("ipm_site_id"),
            "release": str(args["release"]),
            "from_version": args.get("from_version"),
            "result": args["result"],
            "kind": args.get("kind") or DEFAULT_KIND,
            "reason": args.get("reason") or "",
            "change_id": task_vars.get("change_id"),
            "ticket_id": task_vars.get("ticket_id"),
            "time_utc": now.isoformat(),
            "time_local": local,
            "timezone": zone_name,
        }
        if args.get("details"):
            entry["details"] = args["details"]
        entry["host"] = task_vars.get("inventory_hostname")
        result.update(changed=False, delivery=entry)
        return result
