"""Authorization for tools that start jobs themselves (``ipm-support run``): the playbooks' rule, from Python.

:func:`authorize_run` applies :func:`~ansible_collections.ipm.fleet.plugins.plugin_utils.authz.decide` (the
one rule) before a job starts and writes the same audit records as the ``ipm.fleet.authorize`` action plugin:
``authorization_denied`` when refused, ``authorized`` (with ``on_demand`` and the justification) when allowed.
See docs/authorization.md.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import ipm_tools  # noqa: F401 - puts collections/ on sys.path
from ansible_collections.ipm.fleet.plugins.plugin_utils import authz
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry import load_fleet
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_paths import resolve_registry_dir
from ipm_tools import PROJECT_ROOT


@dataclass(frozen=True)
class RunAuthorization:
    allowed: bool
    reason: str
    on_demand: bool
    operator: str
    operator_source: str
    policy: str | None


def audit_files(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The audit log and key file the playbooks' callback uses (environment, else the defaults)."""
    return authz.audit_files(environ)


def registry_dir_of(registry: str | os.PathLike | None, environ: Mapping[str, str]) -> str:
    """The registry directory: ``registry`` (directory, catalog or inventory), else ``IPM_REGISTRY``, else the demo."""
    source = registry or environ.get("IPM_REGISTRY") or PROJECT_ROOT / "inventories" / "demo"
    return resolve_registry_dir(str(source))


def _contract_of(registry_dir: str, customer: str) -> Mapping | None:
    fleet, _problems = load_fleet(registry_dir)
    for document in fleet.customers:
        if document["customer"].get("id") == customer:
            return document["customer"].get("contract") or {}
    return None


def _changes_terminal(action: str) -> bool | None:
    kind, _, name = action.partition(":")
    if kind != "runbook":
        return None
    try:
        from ipm_tools.support.runbooks import load_catalog
    except ImportError:
        return None
    try:
        book = load_catalog(PROJECT_ROOT / "playbooks" / "runbooks").get(name)
    except Exception:
        return None
    return None if book is None else book.changes_terminal


def authorize_run(
    operator: str | None,
    action: str,
    *,
    customer: str | None,
    maintenance_type: str | None = None,
    justification: str | None = None,
    ticket_id: str | None = None,
    terminals: list[str] | None = None,
    contract: Mapping | None = None,
    changes_terminal: bool | None = None,
    registry: str | os.PathLike | None = None,
    policy_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    today: datetime.date | None = None,
    record: bool = True,
) -> RunAuthorization:
    """Decide whether ``operator`` may run ``action`` for ``customer``, and record the decision in the audit chain.

    ``operator`` is the identity the caller claims (None: the OS user); it is trusted only when it is the OS
    user or the OS user is one of the policy's ``service_accounts``. ``contract`` defaults to the customer's
    contract in the registry. Never raises for a refusal: ``allowed`` is False with one clear ``reason``.
    """
    environ = os.environ if environ is None else environ
    registry_dir = None
    if policy_file is None and not environ.get(authz.POLICY_ENV):
        registry_dir = registry_dir_of(registry, environ)
    path = policy_file or authz.policy_path(registry_dir, environ)
    policy, error = authz.load_or_deny(path)
    claimed = {"ipm_operator": operator} if operator else {}
    try:
        person, source = authz.trusted_identity(policy, claimed, environ={})
    except authz.IdentityError as exc:
        person, source = authz.os_user(), "os_user"
        policy, error = None, str(exc)
    if contract is None and customer and policy is not None:
        contract = _contract_of(registry_dir or registry_dir_of(registry, environ), customer)
    if changes_terminal is None:
        changes_terminal = _changes_terminal(action)
    decision = authz.decide(
        policy,
        person,
        action,
        customer=customer,
        maintenance_type=maintenance_type,
        contract=contract,
        today=today,
        justification=justification,
        changes_terminal=changes_terminal,
        policy_error=error,
    )
    if record:
        data = {
            "operator": person,
            "operator_source": source,
            "action": action,
            "policy": path,
            "customer": customer,
            "terminals": sorted(terminals or []),
            "ticket_id": ticket_id,
            "maintenance_type": maintenance_type,
            "reason": decision.reason,
            "on_demand": decision.on_demand,
        }
        if decision.on_demand:
            data["justification"] = justification
        log_path, key_file = audit_files(environ)
        authz.audit_append(log_path, key_file, [("authorized" if decision.allowed else "authorization_denied", data)])
    return RunAuthorization(decision.allowed, decision.reason, decision.on_demand, person, source, path)
