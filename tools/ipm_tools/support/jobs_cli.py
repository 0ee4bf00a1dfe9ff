"""``ipm-support jobs [TICKET] [--json]``: the runbook jobs kept in the ticket folders, with their state.

A job whose ``ipm-support run`` died (SIGKILL, a crash) is found here and shown ``interrupted``; its
``job.json`` and the ticket are updated once (see ipm_tools.support.jobs).
"""

from __future__ import annotations

import json

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import os_user

from . import jobs
from .tickets_cli import _when, store_for


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="the runbook jobs of one ticket or of all, with their state (running, successful, interrupted, ...)",
        description="List the runbook jobs kept in the ticket folders. A job whose ipm-support process died "
        "is shown interrupted, with what its artifacts hold, and the ticket notes it.",
        epilog="Exit codes: 0 done, 2 unknown ticket, 1 an unusable ticket database. See docs/support.md.",
    )
    parser.add_argument("ticket", metavar="TICKET", nargs="?", help="only this ticket's jobs (INC-n or REQ-n)")
    parser.add_argument("--json", action="store_true", help="JSON")
    parser.set_defaults(handler=_jobs)


def _jobs(args) -> int:
    store = store_for(args)
    found = jobs.all_jobs(store, os_user(), args.ticket)
    if args.json:
        print(json.dumps([dict(view.as_dict(), ticket_id=tid) for tid, view in found], indent=2, ensure_ascii=False))
        return 0
    if not found:
        print("no jobs" + (f" for {args.ticket.strip().upper()}" if args.ticket else " yet"))
        return 0
    zones: dict[str, str | None] = {}
    for ticket_id, view in found:
        if ticket_id not in zones:
            zones[ticket_id] = store.get(ticket_id).timezone
        started = _when(view.started_utc, zones[ticket_id]) if view.started_utc else "-"
        print(f"{ticket_id}  {view.line()}  started {started}")
        if view.status == jobs.INTERRUPTED and not view.persisted:
            print("    (not recorded: the support dir is not writable)")
    return 0
