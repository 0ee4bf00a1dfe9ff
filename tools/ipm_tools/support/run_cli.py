"""``ipm-support run RUNBOOK --terminal T --ticket INC-n``: a runbook on one terminal, through ansible-runner.

Exit codes: 0 the runbook succeeded, 1 a task failed, 2 bad input or denied (nothing started),
3 the terminal did not answer, 4 the job was killed or crashed (see ``runner.py``).
"""

from __future__ import annotations

import json
import sys

from .runner import EXIT_BAD_INPUT, RunError, run_runbook


def _key_value(text: str) -> tuple[str, str]:
    import argparse

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"-e {text!r}: expected KEY=VALUE")
    return key.strip(), value


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a runbook on one terminal for a ticket (ansible-runner)",
        description="Run a runbook of playbooks/runbooks/ on one terminal for a ticket, through ansible-runner. "
        "The job's artifacts are kept in the ticket's folder; the ticket notes the job's start and end.",
        epilog="Exit codes: 0 ok, 1 a task failed, 2 bad input or denied (nothing started), 3 the terminal did not "
        "answer, 4 the job was killed or crashed. See docs/support.md.",
    )
    parser.add_argument("runbook", metavar="RUNBOOK", help="a runbook name (ipm-support runbooks lists them)")
    parser.add_argument("--terminal", required=True, help="the terminal id (registry)")
    parser.add_argument("--ticket", required=True, help="the ticket the job is for (INC-n or REQ-n)")
    parser.add_argument("--justification", help="why, when the runbook needs one (reboot outside the window); audited")
    parser.add_argument(
        "-e",
        "--extra-var",
        dest="extra_vars",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="an extra variable for the runbook (no secrets: it is kept in the job)",
    )
    parser.add_argument("-i", "--inventory", help="the registry inventory (default: the --registry option)")
    parser.add_argument("--vault-password-file", help="the vault password of the registry's secrets (kept where it is)")
    parser.add_argument("--operator", help="the person recorded (default: the OS user)")
    parser.add_argument(
        "--keep-jobs", type=int, help="job folders kept per ticket (default: $IPM_SUPPORT_KEEP_JOBS or 20)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    parser.set_defaults(handler=_run)


def _run(args) -> int:
    def progress(line: str) -> None:
        print(line, flush=True)

    try:
        result = run_runbook(
            args.runbook,
            args.terminal,
            args.ticket,
            support_dir=args.support_dir,
            inventory=args.inventory or getattr(args, "registry", None),
            operator=args.operator,
            justification=args.justification,
            extra_vars=dict(args.extra_vars),
            vault_password_file=args.vault_password_file,
            progress=None if args.json else progress,
            keep_jobs=args.keep_jobs,
        )
    except RunError as error:
        print(f"ipm-support: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(result.summary())
    return result.exit_code
