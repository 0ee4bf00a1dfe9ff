# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.authorize: the authorization policy, the contract and four-eyes, before any change."""

from __future__ import annotations

import datetime
import os
import re

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.vars import load_extra_vars

from ansible_collections.ipm.fleet.plugins.plugin_utils import authz, four_eyes
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import os_user
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_paths import resolve_registry_dir

_UNSAFE = re.compile(r"[^a-z0-9_]")  # as registry_inventory.sanitize names customer groups


def _configured(name: str):
    """A setting of the audit callback from ansible.cfg (None when its definitions are not loaded)."""
    try:
        return C.config.get_config_value(name, plugin_type="callback", plugin_name="ipm.fleet.audit")
    except Exception:
        return None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("action", "maintenance_type", "hosts", "four_eyes", "change_id", "justification"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _validation, args = self.validate_argument_spec(
            argument_spec=dict(
                action=dict(type="str", required=True),
                maintenance_type=dict(type="str"),
                hosts=dict(type="raw"),
                four_eyes=dict(type="bool", default=False),
                change_id=dict(type="str"),
                justification=dict(type="str"),
            )
        )
        extra_vars = load_extra_vars(self._loader)
        action = args["action"] if ":" in args["action"] else "playbook:" + args["action"]
        log_path, key_file = authz.audit_files(configured=_configured)
        path = os.environ.get(authz.POLICY_ENV) or self._policy_of_inventory(task_vars)
        policy, error = authz.load_or_deny(path)
        try:
            person, source = authz.trusted_identity(policy, extra_vars)
        except authz.IdentityError as exc:
            # An unusable policy is the reason to report (it also knows no service accounts).
            person, source, error = os_user(), "os_user", error or str(exc)
            policy = None
        inventory = task_vars["hostvars"]._inventory if "hostvars" in task_vars else None
        hosts = self._hosts(args.get("hosts"), task_vars, inventory)
        if policy is None:  # no usable policy or a refused identity: one record, one line, whatever the terminals
            names = sorted(h.get_name() for h in hosts)
            data = {"operator": person, "operator_source": source, "action": action, "policy": path}
            data.update(terminals=names, reason=error, change_id=_text(extra_vars.get("change_id")))
            try:
                authz.audit_append(log_path, key_file, [("authorization_denied", data)])
            except (authz.AuditLogError, OSError) as exc:
                raise AnsibleActionFail(f"ipm.fleet.authorize: cannot write the audit log: {exc}") from None
            raise AnsibleActionFail(f"DENIED: {person} may not run {action} on {len(names)} terminal(s): {error}")
        base = {
            "operator": person,
            "operator_source": source,
            "action": action,
            "policy": path,
            "change_id": _text(extra_vars.get("change_id")),
            "ticket_id": _text(extra_vars.get("ticket_id")),
        }
        if args["four_eyes"]:
            return self._four_eyes(result, args, policy, error, person, action, hosts, base, log_path, key_file)
        maintenance_type = _text(extra_vars.get("maintenance_type")) or args.get("maintenance_type")
        justification = args.get("justification") or _text(extra_vars.get("justification"))
        today = datetime.datetime.now(datetime.timezone.utc).date()
        by_customer: dict[str | None, list[str]] = {}
        for host in hosts:
            by_customer.setdefault(self._customer_of(host, inventory), []).append(host.get_name())
        if not by_customer:
            by_customer[None] = []
        records, denied, on_demand = [], [], []
        for customer, names in by_customer.items():
            contract = self._contract_of(customer, inventory) if customer else None
            decision = authz.decide(
                policy,
                person,
                action,
                customer=customer,
                maintenance_type=maintenance_type if customer else None,
                contract=contract,
                today=today,
                justification=justification,
                policy_error=error,
            )
            data = dict(base, customer=customer, terminals=sorted(names), reason=decision.reason)
            data["maintenance_type"] = maintenance_type
            if not decision.allowed:
                denied.append((customer, names, decision.reason))
                records.append(("authorization_denied", data))
            elif decision.on_demand:
                on_demand.append(customer)
                records.append(("authorized", dict(data, on_demand=True, justification=justification)))
        if not denied and not on_demand:
            records.append(
                (
                    "authorized",
                    dict(base, customers=sorted(c for c in by_customer if c), terminals=len(hosts), on_demand=False),
                )
            )
        try:
            authz.audit_append(log_path, key_file, records)
        except (authz.AuditLogError, OSError) as exc:
            raise AnsibleActionFail(f"ipm.fleet.authorize: cannot write the audit log: {exc}") from None
        if denied:
            customer, names, reason = denied[0]
            shown = ", ".join(sorted(names)[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            more = f" (and {len(denied) - 1} more customer(s) denied)" if len(denied) > 1 else ""
            where = f"terminal(s) {shown}" if names else "no terminal"
            raise AnsibleActionFail(f"DENIED: {person} may not run {action} on {where}: {reason}{more}")
        result.update(
            changed=False,
            operator=person,
            operator_source=source,
            on_demand=bool(on_demand),
            customers=sorted(c for c in by_customer if c),
            terminals=len(hosts),
            msg=f"{person} may run {action} on {len(hosts)} terminal(s)"
            + (f"; on demand for {', '.join(sorted(on_demand))}" if on_demand else ""),
        )
        return result

    def _four_eyes(self, result, args, policy, error, person, action, hosts, base, log_path, key_file):
        name = action.partition(":")[2]
        if not hosts or (policy is not None and name not in policy.four_eyes):
            result.update(changed=False, msg="four-eyes: nothing past the canary ring needs an approved change")
            return result
        change_id = args.get("change_id") or base["change_id"]
        verdict = four_eyes.check(policy, error, change_id, name, log_path, key_file)
        data = dict(base, terminals=sorted(h.get_name() for h in hosts), reason=verdict.reason, stage="past_canary")
        if verdict.allowed:
            data.update(approved_by=verdict.approver, change_id=change_id)
        try:
            authz.audit_append(
                log_path, key_file, [("authorized" if verdict.allowed else "authorization_denied", data)]
            )
        except (authz.AuditLogError, OSError) as exc:
            raise AnsibleActionFail(f"ipm.fleet.authorize: cannot write the audit log: {exc}") from None
        if verdict.allowed:
            result.update(changed=False, approved_by=verdict.approver, msg=verdict.reason)
            return result
        raise AnsibleActionFail(
            f"DENIED: {person} may not take {action} past the canary ring on {len(hosts)} terminal(s): {verdict.reason}"
        )

    def _hosts(self, pattern, task_vars, inventory):
        if pattern is None:
            names = task_vars.get("ansible_play_hosts_all") or []
            return [inventory.get_host(n) for n in names if inventory.get_host(n) is not None] if inventory else []
        if inventory is None:
            return []
        patterns = pattern if isinstance(pattern, list) else [pattern]
        return [h for h in inventory.get_hosts(patterns) if h.name != "localhost"]

    @staticmethod
    def _customer_of(host, inventory):
        customer = host.vars.get("ipm_customer_id")
        return str(customer) if customer else None

    @staticmethod
    def _contract_of(customer, inventory):
        if inventory is None:
            return None
        group = inventory.groups.get("customer_" + _UNSAFE.sub("_", customer.lower()))
        return group.vars.get("ipm_contract") if group is not None else None

    @staticmethod
    def _policy_of_inventory(task_vars):
        for source in task_vars.get("ansible_inventory_sources") or []:
            candidate = resolve_registry_dir(str(source))
            if os.path.isfile(os.path.join(candidate, "catalog.yml")):
                return authz.policy_path(candidate, environ={})
        return None


def _text(value):
    return str(value).strip() if value not in (None, "") else None
