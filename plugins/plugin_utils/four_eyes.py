# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Four-eyes changes: a change is requested by one person and approved by another ``it`` person.

Requests and approvals are records of the audit chain (``change_requested``, ``change_approved``), written by
``ipm-change``; a rollout, parameters or patch run goes past its canary ring only when :func:`check` finds,
in a chain that verifies, an approval of its change by an ``it`` person other than the requester.
The rule lives here once: :func:`refuse_request`, :func:`refuse_approval` and :func:`state_of`.

Standard library only (plus the policy of ``authz``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import head_path, iter_records, load_key, verify_log

CHANGE_ID = re.compile(r"^CHG-[0-9A-Za-z-]+\Z")  # \Z: no trailing newline (a $ would let one through)
REQUESTER_ROLES = ("it", "l2")
APPROVER_ROLE = "it"


@dataclass
class ChangeState:
    change_id: str
    requested: dict | None = None
    approvals: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    approver: str | None = None


def state_of(records, change_id: str) -> ChangeState:
    """The request and approvals of one change from ``(line, record)`` pairs of the chain."""
    state = ChangeState(change_id)
    for _line, record in records:
        kind = record.get("kind")
        if kind not in ("change_requested", "change_approved"):
            continue
        data = record.get("data") or {}
        if data.get("change_id") != change_id:
            continue
        if kind == "change_requested" and state.requested is None:
            state.requested = dict(data, time=record.get("time"), seq=record.get("seq"))
        elif kind == "change_approved":
            state.approvals.append(dict(data, time=record.get("time"), seq=record.get("seq")))
    return state


def refuse_request(policy, person: str, change_id: str, state: ChangeState) -> str | None:
    """Why ``person`` may not request ``change_id``, or None."""
    if not CHANGE_ID.match(change_id or ""):
        return f"change id {change_id!r} is malformed: expected CHG-<number>"
    if policy is None:
        return "no usable authorization policy: everything is denied"
    if not any(policy.has_role(person, role) for role in REQUESTER_ROLES):
        return f"{person} may not request changes: requesters need the role it or l2 in the policy"
    if state.requested is not None:
        return (
            f"{change_id} was already requested by {state.requested.get('requester')} at {state.requested.get('time')}"
        )
    return None


def refuse_approval(policy, person: str, state: ChangeState) -> str | None:
    """Why ``person`` may not approve the change, or None (the four-eyes rule)."""
    if policy is None:
        return "no usable authorization policy: everything is denied"
    if state.requested is None:
        return f"{state.change_id} was never requested: request it first with `ipm-change request {state.change_id}`"
    requester = state.requested.get("requester")
    if person == requester:
        return f"{person} requested {state.change_id} and may not approve it: another it person must approve"
    if not policy.has_role(person, APPROVER_ROLE):
        who = policy.person(person)
        roles = ", ".join(who.roles) if who else "no role in the policy"
        return f"{person} ({roles}) may not approve changes: approvers need the role it"
    return None


def valid_approval(policy, state: ChangeState) -> dict | None:
    """The first approval that satisfies the rule under the current policy, or None."""
    for approval in state.approvals:
        person = approval.get("approver")
        if person and refuse_approval(policy, person, state) is None:
            return approval
    return None


def read_chain(log_path: str, key_file: str | None) -> tuple[list, str | None]:
    """The chain's records after verifying it, or ``([], reason)`` when it does not verify."""
    if not os.path.exists(log_path):
        return [], f"the audit log {log_path} does not exist: no change was requested there"
    key = None
    if key_file and os.path.exists(os.path.expanduser(key_file)):
        key = load_key(key_file)
    # The head file proves the end of the signed part; a log no checkpoint has signed yet has none.
    head = key is not None and os.access(head_path(log_path), os.R_OK)
    report = verify_log(log_path, key, head=head)
    if not report.ok:
        return [], f"the audit log {log_path} does not verify ({report.problem}): approvals in it cannot be trusted"
    return list(iter_records(log_path)), None


def check(policy, policy_error: str | None, change_id: str | None, playbook: str, log_path: str, key_file) -> Verdict:
    """May a run of ``playbook`` under ``change_id`` go past its canary ring?"""
    if policy is None:
        return Verdict(False, policy_error or "no usable authorization policy: everything is denied")
    if not change_id:
        return Verdict(False, "no change id: past the canary ring a run needs an approved change (-e change_id=CHG-n)")
    records, problem = read_chain(log_path, key_file)
    if problem:
        return Verdict(False, problem)
    state = state_of(records, change_id)
    if state.requested is None:
        return Verdict(
            False, f"{change_id} was never requested: `ipm-change request {change_id} --summary ...`, then approval"
        )
    wanted = state.requested.get("playbook")
    if wanted and wanted != playbook:
        return Verdict(False, f"{change_id} was requested for playbook {wanted}, not {playbook}")
    approval = valid_approval(policy, state)
    if approval is None:
        return Verdict(
            False,
            f"{change_id} (requested by {state.requested.get('requester')}) has no approval by another it person: "
            f"`ipm-change approve {change_id}`",
        )
    return Verdict(
        True, f"{change_id} approved by {approval['approver']} at {approval.get('time')}", approval["approver"]
    )
