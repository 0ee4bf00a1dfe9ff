# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who may do what on which customer's terminals: the authorization policy and its one decision.

:func:`load_policy` reads and validates a policy file (every fault located by file, line and key, as
the registry's checker does; unknown keys refused) and raises :class:`PolicyError`; :func:`decide` is
the rule every entry point applies (the ``ipm.fleet.authorize`` action plugin at the start of each
playbook, ``ipm_tools.authz_check.authorize_run`` before a support job); :func:`trusted_identity` is
the identity those decisions are about. A policy that cannot be loaded denies everything
(:func:`load_or_deny`). The format is described in docs/authorization.md.

Standard library and PyYAML only; no Ansible runtime state.
"""

from __future__ import annotations

import datetime
import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import os_user, resolve_operator
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditLogError, AuditWriter, load_key
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import (
    Problem,
    describe,
    display_path,
    suggest,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import MAINTENANCE_TYPES
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_yaml import compose_file, load_file

ROLES = ("l1", "l2", "it", "auditor")
# Roles only the vendor's own staff hold (L2 is remote at the vendor, IT runs the fleet).
VENDOR_ROLES = frozenset(("l2", "it"))
# Playbooks that only read terminals: the only ones an auditor may be granted.
READ_ONLY_PLAYBOOKS = frozenset(("compat_report", "snapshot"))
# Playbooks whose runs past the canary ring need a change approved by a second `it` person.
FOUR_EYES_DEFAULT = ("rollout", "parameters", "patch")
POLICY_ENV = "IPM_POLICY_FILE"
MAX_POLICY_BYTES = 1024 * 1024  # a bigger file is refused before it is parsed (time, memory)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
_PATTERN = re.compile(r"^[a-z0-9_*?\[\]-]+$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")

_TOP_KEYS = {
    "version": "policy format version: 1",
    "service_accounts": "OS users that may run on behalf of another identity (AWX, the support tool)",
    "roles": "role -> runbooks and playbooks it may run",
    "people": "person -> roles and customers",
    "four_eyes": "which playbooks need an approved change past the canary ring",
}
_ROLE_KEYS = {"runbooks": "names or glob patterns", "playbooks": "names or glob patterns"}
_PERSON_KEYS = {
    "roles": "a list of l1, l2, it, auditor",
    "customers": "a list of customer ids, or all (vendor staff only)",
    "vendor": "true for the vendor's own staff",
    "name": "full name (for people reading the policy)",
}
_FOUR_EYES_KEYS = {"playbooks": "playbook names"}


class PolicyError(Exception):
    """A policy file that cannot be used; the message names file, line, key, what was expected and what to do."""

    def __init__(self, problems: list[Problem] | str):
        self.problems = list(problems) if isinstance(problems, (list, tuple)) else [problems]
        text = "; ".join(str(p) for p in self.problems[:5])
        if len(self.problems) > 5:
            text += f"; and {len(self.problems) - 5} more"
        super().__init__(text)


class IdentityError(Exception):
    """A claimed operator identity the policy does not let the OS user claim (one clear line)."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    on_demand: bool = False


@dataclass(frozen=True)
class Person:
    name: str
    roles: tuple[str, ...]
    customers: frozenset | None  # None: all customers
    vendor: bool


@dataclass
class Policy:
    file: str
    people: dict[str, Person] = field(default_factory=dict)
    roles: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    service_accounts: frozenset = frozenset()
    four_eyes: tuple[str, ...] = FOUR_EYES_DEFAULT

    def person(self, name: str) -> Person | None:
        return self.people.get(name)

    def has_role(self, name: str, role: str) -> bool:
        person = self.people.get(name)
        return person is not None and role in person.roles


# ------------------------------------------------------------------------------------------- loading


def policy_path(registry_dir: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The policy file: env ``IPM_POLICY_FILE``, else ``<registry dir>/policy.yml``, else None."""
    environ = os.environ if environ is None else environ
    configured = environ.get(POLICY_ENV)
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    if registry_dir:
        return os.path.join(os.path.abspath(registry_dir), "policy.yml")
    return None


_CACHE: dict[str, tuple[tuple, Policy]] = {}


def load_policy(path: str) -> Policy:
    """Read and validate a policy file; raises :class:`PolicyError` (file, line, key, expected, fix)."""
    rel = display_path(path)
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise PolicyError(
            Problem(
                rel,
                (),
                f"cannot read the policy file ({exc.strerror}); everything is denied",
                f"a policy file (docs/authorization.md), or set {POLICY_ENV} to one",
            )
        ) from None
    stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    cached = _CACHE.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    problems: list[Problem] = []
    if stat.st_size > MAX_POLICY_BYTES:
        raise PolicyError(
            Problem(
                rel,
                (),
                f"the policy file is {stat.st_size:,} bytes, more than {MAX_POLICY_BYTES:,}; everything is denied",
                "a policy of people and roles (10,000 people fit in about 1 MB); check it is the right file",
            )
        )
    data, ok, _shared = load_file(path, rel, problems)
    if not ok:
        raise PolicyError(problems)
    _duplicate_keys(path, rel, problems)
    policy = _build(path, rel, data, problems)
    if problems:
        _locate(path, problems)
        raise PolicyError(problems)
    _CACHE[path] = (stamp, policy)
    return policy


def load_or_deny(path: str | None) -> tuple[Policy | None, str | None]:
    """``(policy, None)``, or ``(None, reason)`` when there is no usable policy (then everything is denied)."""
    if not path:
        return None, (
            f"no authorization policy: name one with {POLICY_ENV} or put policy.yml in the registry directory"
        )
    try:
        return load_policy(path), None
    except PolicyError as exc:
        return None, str(exc)  # every problem names the policy file, line and key


def _build(path, rel, data, problems) -> Policy:
    def report(keys, message, expected="", found=""):
        problems.append(Problem(rel, keys, message, expected, found))

    policy = Policy(file=path)
    if not isinstance(data, dict):
        report((), "wrong type", "a mapping with people: and roles:", describe(data))
        return policy
    _unknown(data, _TOP_KEYS, (), report)
    if data.get("version", 1) != 1:
        report(("version",), "unknown policy version", "1", describe(data.get("version")))
    for key in ("roles", "people"):
        if key not in data:
            report((key,), "missing required key", _TOP_KEYS[key], "nothing")
    accounts = data.get("service_accounts", [])
    if _names(accounts, ("service_accounts",), report):
        policy.service_accounts = frozenset(accounts)
    roles = data.get("roles")
    if isinstance(roles, dict):
        for role, grants in roles.items():
            keys = ("roles", role)
            if role not in ROLES:
                report(keys, "unknown role" + suggest(role, ROLES), "one of " + ", ".join(ROLES), describe(role))
                continue
            if not isinstance(grants, dict):
                report(keys, "wrong type", "a mapping with runbooks: and playbooks:", describe(grants))
                continue
            _unknown(grants, _ROLE_KEYS, keys, report)
            entry = {}
            for kind in _ROLE_KEYS:
                patterns = grants.get(kind, [])
                if not isinstance(patterns, list) or not all(
                    isinstance(p, str) and _PATTERN.match(p) for p in patterns
                ):
                    report(
                        (*keys, kind),
                        "malformed list",
                        "a list of names or glob patterns (e.g. restart_*)",
                        describe(patterns),
                    )
                    continue
                entry[kind] = tuple(patterns)
            if role == "auditor":
                for pattern in entry.get("playbooks", ()):
                    changing = sorted(p for p in _KNOWN_CHANGING if fnmatch.fnmatchcase(p, pattern))
                    if changing:
                        report(
                            (*keys, "playbooks"),
                            f"auditors run nothing that changes terminals, but {pattern!r} grants {', '.join(changing)}",
                            "only " + ", ".join(sorted(READ_ONLY_PLAYBOOKS)),
                            repr(pattern),
                        )
            policy.roles[role] = entry
    elif roles is not None:
        report(("roles",), "wrong type", "a mapping of role -> runbooks/playbooks", describe(roles))
    people = data.get("people")
    if isinstance(people, dict):
        for name, spec in people.items():
            person = _person(name, spec, policy, report)
            if person is not None:
                policy.people[name] = person
    elif people is not None:
        report(("people",), "wrong type", "a mapping of person -> roles and customers", describe(people))
    four = data.get("four_eyes")
    if four is not None:
        if not isinstance(four, dict):
            report(("four_eyes",), "wrong type", "a mapping with playbooks:", describe(four))
        else:
            _unknown(four, _FOUR_EYES_KEYS, ("four_eyes",), report)
            listed = four.get("playbooks", list(FOUR_EYES_DEFAULT))
            if _names(listed, ("four_eyes", "playbooks"), report):
                policy.four_eyes = tuple(listed)
    return policy


# Playbooks of the collection that change terminals (an auditor's grant may not match them).
_KNOWN_CHANGING = frozenset(("rollout", "parameters", "patch", "backup", "restore", "vpn"))


def _unknown(value, spec, keys, report):
    for key in value:
        if key not in spec:
            report(
                (*keys, key),
                "unknown key" + suggest(key, spec),
                "one of " + ", ".join(spec),
                describe(key),
            )


def _names(value, keys, report) -> bool:
    if isinstance(value, list) and all(isinstance(v, str) and _NAME.match(v) for v in value):
        return True
    report(keys, "malformed list", "a list of names (letters, digits, . _ @ -)", describe(value))
    return False


def _person(name, spec, policy, report) -> Person | None:
    keys = ("people", name)
    if not isinstance(name, str) or not _NAME.match(name):
        report(keys, "malformed person name", "an OS or AWX user name (letters, digits, . _ @ -)", describe(name))
        return None
    if not isinstance(spec, dict):
        report(keys, "wrong type", "a mapping with roles: and customers:", describe(spec))
        return None
    _unknown(spec, _PERSON_KEYS, keys, report)
    roles = spec.get("roles")
    clean = True
    if not isinstance(roles, list) or not roles:
        report((*keys, "roles"), "missing or empty roles", "a list of l1, l2, it, auditor", describe(roles))
        return None
    for index, role in enumerate(roles):
        if role not in ROLES:
            report(
                (*keys, "roles", index),
                "unknown role" + suggest(role, ROLES),
                "one of " + ", ".join(ROLES),
                describe(role),
            )
            clean = False
    vendor = spec.get("vendor", False)
    if not isinstance(vendor, bool):
        report((*keys, "vendor"), "wrong type", "true or false", describe(vendor))
        clean = False
        vendor = False
    for role in roles:
        if role in VENDOR_ROLES and not vendor:
            report(
                (*keys, "roles"),
                f"role {role} is for the vendor's own staff",
                "vendor: true on this person, or the role l1 (local partners)",
                "no vendor: true",
            )
            clean = False
            break
    customers = spec.get("customers")
    if customers == "all":
        if not vendor:
            report(
                (*keys, "customers"),
                "customers: all is for the vendor's own staff only",
                "the list of this person's customer ids (or vendor: true)",
                "all",
            )
            clean = False
        allowed = None
    elif isinstance(customers, list) and customers and all(isinstance(c, str) and c for c in customers):
        allowed = frozenset(customers)
    else:
        report(
            (*keys, "customers"),
            "missing or malformed customers",
            "a list of customer ids, or all",
            describe(customers),
        )
        return None
    if not clean:
        return None
    return Person(name, tuple(roles), allowed, vendor)


def _duplicate_keys(path, rel, problems) -> None:
    """A key given twice in one mapping (YAML keeps the last one silently): a second entry for a person or a
    role would change what they may do unseen, so the policy is refused."""
    try:
        root = compose_file(path)
    except Exception:  # load_file read it already: the same limits apply
        return
    seen_nodes: set[int] = set()

    def walk(node, keys):
        if node is None or id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None:
                    if key in lines:
                        problems.append(
                            Problem(
                                rel,
                                (*keys, key),
                                "duplicate key (YAML would keep the last one only)",
                                "each person, role and key once",
                                f"also on line {lines[key]}",
                                key_node.start_mark.line + 1,
                            )
                        )
                    lines.setdefault(key, key_node.start_mark.line + 1)
                walk(value_node, (*keys, key if key is not None else "?"))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*keys, index))

    walk(root, ())


def _locate(path, problems):
    """Add line numbers from the YAML node graph (as the registry does)."""
    try:
        root = compose_file(path)
    except Exception:
        return
    for problem in problems:
        if problem.line is None:
            problem.line = _node_line(root, problem.keys)


def _node_line(node, keys):
    line = node.start_mark.line + 1 if node is not None else None
    for key in keys:
        found = None
        if getattr(node, "id", "") == "mapping":
            for key_node, value_node in node.value:
                if key_node.value == str(key):
                    found = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif getattr(node, "id", "") == "sequence" and isinstance(key, int) and key < len(node.value):
            found = node.value[key]
            line = found.start_mark.line + 1
        if found is None:
            break
        node = found
    return line


# ------------------------------------------------------------------------------------------ identity


def trusted_identity(
    policy: Policy | None,
    extra_vars: Mapping,
    environ: Mapping[str, str] | None = None,
    user: str | None = None,
) -> tuple[str, str]:
    """The identity authorization trusts, and where it came from; :class:`IdentityError` for a refused claim.

    The OS user running the controller is trusted. A different identity claimed through ``ipm_operator``,
    ``IPM_OPERATOR`` or AWX's ``awx_user_name`` is honoured only when the policy lists that OS user under
    ``service_accounts`` (AWX's account, the support tool's); anyone else claiming to be someone else is refused.
    """
    user = user or os_user()
    claimed, source = resolve_operator(extra_vars, environ)
    if source == "os_user" or claimed == user:
        return user, "os_user"
    if policy is not None and user in policy.service_accounts:
        return claimed, source
    raise IdentityError(
        f"OS user {user!r} claims to be {claimed!r} through {source}, but only the policy's "
        f"service_accounts may act for someone else: run as yourself (drop {source.rsplit(':', maxsplit=1)[-1]}), or run it "
        "through AWX or the support tool"
    )


# ------------------------------------------------------------------------------------------ decision


def _parse_date(value) -> datetime.date | None:
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str) and _DATE.match(value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def contract_status(contract: Mapping | None, maintenance_type: str | None, today: datetime.date) -> str | None:
    """Why a run is outside the customer's contract, or None when the contract covers it."""
    if not isinstance(contract, Mapping) or not contract:
        return "the customer has no contract in the registry"
    start, end = _parse_date(contract.get("start")), _parse_date(contract.get("end"))
    for key, parsed in (("start", start), ("end", end)):
        if contract.get(key) not in (None, "") and parsed is None:  # never read as "open-ended" by accident
            return f"the contract's {key} {contract.get(key)!r} is not a day YYYY-MM-DD: fix the registry"
    if start is not None and end is not None and end < start:
        return f"the contract ends ({end.isoformat()}) before it starts ({start.isoformat()}): fix the registry"
    if start is not None and today < start:
        return f"the contract starts on {start.isoformat()}"
    if end is not None and today > end:
        return f"the contract ended on {end.isoformat()}"
    types = contract.get("maintenance_types") or []
    if maintenance_type and maintenance_type not in types:
        return f"the contract does not include {maintenance_type} maintenance (it has {', '.join(types) or 'none'})"
    return None


def _granted(policy: Policy, person: Person, kind: str, name: str) -> str | None:
    for role in person.roles:
        for pattern in policy.roles.get(role, {}).get(kind + "s", ()):
            if fnmatch.fnmatchcase(name, pattern):
                return role
    return None


def decide(
    policy: Policy | None,
    person: str,
    action: str,
    *,
    customer: str | None,
    maintenance_type: str | None = None,
    contract: Mapping | None = None,
    today: datetime.date | None = None,
    justification: str | None = None,
    changes_terminal: bool | None = None,
    policy_error: str | None = None,
) -> Decision:
    """May ``person`` run ``action`` (``runbook:<name>`` / ``playbook:<name>``) on ``customer``'s terminals?

    ``customer`` None: an action that targets no terminal (only the role is checked). ``contract``: the
    customer's registry contract (``maintenance_types``, ``start``, ``end``); outside it (a type it does not
    include, before its start, after its end) the run is refused unless a ``justification`` makes it an
    on-demand intervention (l2 and it only), marked ``on_demand``. ``changes_terminal`` False lets an
    auditor run a read-only runbook; auditors are refused anything else that changes terminals.
    """
    if policy is None:
        return Decision(False, policy_error or "no usable authorization policy: everything is denied")
    kind, _sep, name = action.partition(":")
    if kind not in ("runbook", "playbook") or not name:
        return Decision(False, f"unknown action {action!r} (expected runbook:<name> or playbook:<name>)")
    who = policy.person(person)
    if who is None:
        return Decision(False, f"{person} is not in the authorization policy {display_path(policy.file)}")
    role = _granted(policy, who, kind, name)
    if role is None:
        return Decision(False, f"no role of {person} ({', '.join(who.roles)}) may run {kind} {name}")
    if role == "auditor" and (
        (kind == "playbook" and name not in READ_ONLY_PLAYBOOKS)
        or (kind == "runbook" and changes_terminal is not False)
    ):
        return Decision(False, f"{person} is an auditor: auditors run nothing that changes terminals")
    if customer is None:
        return Decision(True, f"{person} ({role}) may run {kind} {name}")
    if who.customers is not None and customer not in who.customers:
        return Decision(
            False, f"{person} may not act on customer {customer} (allowed: {', '.join(sorted(who.customers))})"
        )
    if maintenance_type is not None and maintenance_type not in MAINTENANCE_TYPES:
        return Decision(False, f"maintenance type {maintenance_type!r} is not one of {', '.join(MAINTENANCE_TYPES)}")
    outside = contract_status(contract, maintenance_type, today or datetime.date.today())
    if outside is None:
        return Decision(True, f"{person} ({role}) may run {kind} {name} on customer {customer}")
    if not (justification and justification.strip()):
        return Decision(
            False,
            f"customer {customer}: {outside}; an on-demand intervention needs -e justification='...'",
        )
    if not any(r in VENDOR_ROLES for r in who.roles):
        return Decision(False, f"customer {customer}: {outside}; on-demand interventions are for l2 or it")
    return Decision(True, f"on-demand for customer {customer} ({outside}): {justification.strip()}", on_demand=True)


# ------------------------------------------------------------------------------------------ audit


DEFAULT_AUDIT_LOG = "~/.ipm/audit/audit.jsonl"
DEFAULT_AUDIT_KEY = "~/.ipm/audit.key"


def audit_files(environ: Mapping[str, str] | None = None, configured=None) -> tuple[str, str]:
    """The audit log and key file the audit callback writes: environment, else ``configured(name)``, else defaults."""
    environ = os.environ if environ is None else environ
    found = []
    for name, variable, default in (
        ("log_path", "IPM_AUDIT_LOG", DEFAULT_AUDIT_LOG),
        ("key_file", "IPM_AUDIT_KEY_FILE", DEFAULT_AUDIT_KEY),
    ):
        value = environ.get(variable) or (configured(name) if configured else None) or default
        found.append(os.path.expanduser(value))
    return found[0], found[1]


def audit_append(log_path: str, key_file: str | None, records: list[tuple[str, dict]]) -> None:
    """Append ``(kind, data)`` records to the audit chain (the callback's log); :class:`AuditLogError` when it cannot."""
    if not records:
        return
    key = None
    if key_file and os.path.exists(os.path.expanduser(key_file)):
        key = load_key(key_file)
    with AuditWriter(log_path, key=key) as writer:
        for kind, data in records:
            writer.append(kind, data)


__all__ = [
    "AuditLogError",
    "Decision",
    "IdentityError",
    "Policy",
    "PolicyError",
    "audit_append",
    "audit_files",
    "contract_status",
    "decide",
    "load_or_deny",
    "load_policy",
    "policy_path",
    "trusted_identity",
]
