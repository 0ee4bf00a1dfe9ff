"""ipm-support: support work on the fleet, tied to tickets.

    ipm-support ticket new error --customer C (--site S | --terminal T) --severity SEV --symptoms TEXT --contact WHO
    ipm-support ticket new request --customer C --description TEXT --contact WHO
    ipm-support ticket list [--customer C] [--status S] [--json]
    ipm-support ticket show INC-n [--json]
    ipm-support ticket comment INC-n TEXT [--first-response]
    ipm-support ticket wait INC-n --reason TEXT | resume INC-n | resolve INC-n --resolution TEXT
    ipm-support ticket close INC-n [--resolution TEXT]
    ipm-support jobs [INC-n] [--json]   runbook jobs and their state (a job whose ipm-support died: interrupted)

The data lives in the support dir: ``--support-dir``, else $IPM_SUPPORT_DIR, else ~/.ipm/support. The
person recorded is the OS user running the tool. Exit codes: 0 done, 2 a mistake in what was asked
(a bad option value, an unknown customer, terminal or ticket, a change the ticket's state does not
allow), 1 a failure while doing it (an unusable ticket database or registry). See docs/support.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from ipm_tools import closed_output
from ipm_tools.support import jobs_cli, run_cli, runbooks_cli, sla_cli, tickets_cli
from ipm_tools.support.tickets import StoreError, TicketError, default_registry

DEFAULT_SUPPORT_DIR = "~/.ipm/support"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipm-support",
        description="Support work on the fleet: tickets, and runbooks run on terminals for a ticket.",
        epilog="Exit codes: 0 done, 2 a mistake in what was asked (unknown ticket, customer or terminal, "
        "a change the ticket's state refuses), 1 a failure while doing it (an unusable ticket database or "
        "registry). See docs/support.md.",
    )
    parser.add_argument(
        "--support-dir",
        default=os.environ.get("IPM_SUPPORT_DIR") or DEFAULT_SUPPORT_DIR,
        help="where tickets and job artifacts live (default: $IPM_SUPPORT_DIR, else %(default)s)",
    )
    parser.add_argument(
        "-r",
        "--registry",
        default=default_registry(),
        help="the fleet registry (directory, or an inventory naming it) tickets are checked against "
        "(default: $IPM_REGISTRY, else the demo inventory's)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Each command family registers itself (one import above, one line here).
    tickets_cli.register(subparsers)
    runbooks_cli.register(subparsers)
    run_cli.register(subparsers)
    jobs_cli.register(subparsers)
    sla_cli.register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.support_dir = os.path.expanduser(args.support_dir)
    try:
        return args.handler(args)
    except TicketError as error:
        print(f"ipm-support: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, StoreError) else 2
    except BrokenPipeError:
        return closed_output()
    except KeyboardInterrupt:
        print("ipm-support: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
