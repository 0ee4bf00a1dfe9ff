"""ipm-change: four-eyes changes, requested by one person and approved by another ``it`` person.

  ipm-change request CHG-n --summary TEXT [--playbook rollout]   ask for a change (it or l2)
  ipm-change approve CHG-n [--comment TEXT]                       approve someone else's change (it only)
  ipm-change show CHG-n                                           the request, its approvals and the verdict

Requests and approvals are records of the audit chain (``change_requested``, ``change_approved``) that
rollout, parameters and patch check before going past their canary ring. Who you are is the OS user (or,
for the policy's service accounts, IPM_OPERATOR): there is no option to choose it. Exit codes: 0 done,
1 refused (the reason on stderr, and an ``authorization_denied`` record), 2 bad input or unusable files.
See docs/authorization.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import ipm_tools  # noqa: F401 - puts collections/ on sys.path
from ansible_collections.ipm.fleet.plugins.plugin_utils import authz, four_eyes
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import controller_host
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditLogError
from ipm_tools.authz_check import audit_files, registry_dir_of


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipm-change",
        description="Four-eyes changes: request, approve and show changes in the audit chain.",
        epilog="Policy: $IPM_POLICY_FILE, else policy.yml of --registry (default $IPM_REGISTRY, else the demo). "
        "Audit log: $IPM_AUDIT_LOG and $IPM_AUDIT_KEY_FILE, as for playbooks.",
    )
    parser.add_argument("--registry", help="registry directory or inventory whose policy.yml applies")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{request,approve,show}")
    request = sub.add_parser("request", help="ask for a change (role it or l2)")
    request.add_argument("change_id", metavar="CHG-n")
    request.add_argument("--summary", required=True, help="what the change does and why")
    request.add_argument("--playbook", help="the playbook the change is for (rollout, parameters, patch)")
    approve = sub.add_parser("approve", help="approve another person's change (role it)")
    approve.add_argument("change_id", metavar="CHG-n")
    approve.add_argument("--comment", default="", help="a note kept with the approval")
    show = sub.add_parser("show", help="the request, its approvals and whether a run may go past canary")
    show.add_argument("change_id", metavar="CHG-n")
    show.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _fail(message: str, code: int) -> int:
    print(f"ipm-change: {message}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if not four_eyes.CHANGE_ID.match(args.change_id):
        return _fail(f"change id {args.change_id!r} is malformed: expected CHG-<number> (e.g. CHG-1042)", 2)
    environ = os.environ
    path = authz.policy_path(None if environ.get(authz.POLICY_ENV) else registry_dir_of(args.registry, environ))
    policy, error = authz.load_or_deny(path)
    log_path, key_file = audit_files(environ)
    try:
        person, source = authz.trusted_identity(policy, {}, environ)
    except authz.IdentityError as exc:
        return _fail(str(exc), 1)
    try:
        records, problem = four_eyes.read_chain(log_path, key_file) if os.path.exists(log_path) else ([], None)
        if problem:
            return _fail(problem, 2)
        state = four_eyes.state_of(records, args.change_id)
        if args.command == "show":
            return _show(args, policy, error, state, log_path, key_file)
        if args.command == "request":
            why = error or four_eyes.refuse_request(policy, person, args.change_id, state)
            kind, data = (
                "change_requested",
                {
                    "change_id": args.change_id,
                    "requester": person,
                    "operator_source": source,
                    "summary": args.summary,
                    "playbook": args.playbook,
                    "controller": controller_host(),
                },
            )
        else:
            why = error or four_eyes.refuse_approval(policy, person, state)
            kind, data = (
                "change_approved",
                {
                    "change_id": args.change_id,
                    "approver": person,
                    "operator_source": source,
                    "requester": (state.requested or {}).get("requester"),
                    "role": four_eyes.APPROVER_ROLE,
                    "comment": args.comment,
                    "controller": controller_host(),
                },
            )
        if why:
            denied = {
                "operator": person,
                "operator_source": source,
                "action": f"change:{args.command}",
                "change_id": args.change_id,
                "policy": path,
                "reason": why,
            }
            authz.audit_append(log_path, key_file, [("authorization_denied", denied)])
            return _fail(f"DENIED: {why}", 1)
        authz.audit_append(log_path, key_file, [(kind, data)])
    except (AuditLogError, OSError) as exc:
        return _fail(f"cannot use the audit log: {exc}", 2)
    verb = "requested" if args.command == "request" else "approved"
    print(f"{args.change_id} {verb} by {person}")
    return 0


def _show(args, policy, error, state, log_path, key_file) -> int:
    if state.requested is None:
        return _fail(f"{args.change_id} was never requested in {log_path}", 1)
    playbook = state.requested.get("playbook") or "rollout"
    verdict = four_eyes.check(policy, error, args.change_id, playbook, log_path, key_file)
    if args.json:
        out = {
            "change_id": args.change_id,
            "requested": state.requested,
            "approvals": state.approvals,
            "approved": verdict.allowed,
            "verdict": verdict.reason,
        }
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    req = state.requested
    print(f"{args.change_id}: {req.get('summary')}")
    print(f"  requested by {req.get('requester')} at {req.get('time')} (playbook {req.get('playbook') or 'any'})")
    for approval in state.approvals:
        print(f"  approved by {approval.get('approver')} at {approval.get('time')} {approval.get('comment') or ''}")
    print(("  APPROVED: " if verdict.allowed else "  NOT APPROVED: ") + verdict.reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
