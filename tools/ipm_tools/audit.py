"""ipm-audit: the auditors' tool for the ipm.fleet audit log.

  ipm-audit verify                 check chain, hashes, signed checkpoints and the head file
  ipm-audit list [filters]         one line per task result (who, what, where, when, result)
  ipm-audit show [filters]         full records as JSON
  ipm-audit export --format csv    filtered task results to CSV or JSON
  ipm-audit stats [filters]        counts by status, customer, site, operator, module
  ipm-audit keygen                 create a checkpoint key
  ipm-audit ship                   ship the segments killed jobs left on a node (segment mode)

Every command but keygen and ship reads one log (--log) or the merged trail of chain segments that AWX
jobs ship (--trail DIR, docs/audit.md "Segments and the merged trail").

Errors are one line on stderr naming the file and what to do; exit codes: 0 fine, 1 verification failed,
2 bad input.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ipm_tools  # noqa: F401 - puts collections/ on sys.path
from ansible_collections.ipm.fleet.plugins.plugin_utils import delivery_ledger
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import (
    AuditLogError,
    generate_key,
    iter_records,
    load_key,
    verify_log,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_segments import iter_trail, salvage, verify_trail
from ipm_tools import closed_output

DEFAULT_LOG = "~/.ipm/audit/audit.jsonl"
DEFAULT_KEY = "~/.ipm/audit.key"
CSV_COLUMNS = (
    "seq",
    "time",
    "site_time",
    "site_timezone",
    "operator",
    "change_id",
    "ticket_id",
    "maintenance_type",
    "customer",
    "site",
    "terminal",
    "host",
    "playbook",
    "play",
    "task",
    "module",
    "status",
    "changed",
    "check_mode",
    "duration_s",
    "msg",
    "args",
    "diff",
    "run",
)
RUN_FIELDS = ("operator", "change_id", "ticket_id", "maintenance_type", "playbook", "controller", "project_commit")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


# ----------------------------------------------------------------------------------------- records


def _trail_dir(trail: str) -> str:
    path = os.path.expanduser(trail)
    if not os.path.isdir(path):
        raise UsageError(f"--trail {path}: not a directory; pass the directory the segments are shipped to")
    return path


def _records(path: str, trail: bool) -> Iterator[tuple[str | None, dict]]:
    if trail:
        yield from iter_trail(path)
    else:
        for _line, record in iter_records(path):
            yield None, record


def flat_records(log: str, kinds: set[str] | None, trail: str | None = None) -> Iterator[dict]:
    """Records as flat dicts; task records carry their run's operator, change, ticket and playbook.

    ``trail``: a directory of shipped chain segments instead of ``log``: all records in time order, each
    with its ``segment``.
    """
    if trail:
        path = _trail_dir(trail)
    else:
        path = os.path.expanduser(log)
        if not os.path.exists(path):
            raise UsageError(f"{path}: no audit log there; pass --log or set IPM_AUDIT_LOG")
    runs: dict[str, dict] = {}
    try:
        for segment, record in _records(path, bool(trail)):
            data = record.get("data") if isinstance(record, dict) else None
            if not isinstance(data, dict):
                continue  # not a record this tool wrote (`ipm-audit verify` reports it)
            kind = record.get("kind")
            run_id = str(data.get("run"))
            if kind == "run_start":
                runs[run_id] = data
            flat = {"seq": record.get("seq"), "kind": kind, "time": record.get("time")}
            if segment is not None:
                flat["segment"] = segment
            run = runs.get(run_id) if kind in ("task", "run_end") else None
            if run is not None:
                for key in RUN_FIELDS:
                    flat[key] = run.get(key)
            flat.update(data)
            if kinds is None or kind in kinds:
                yield flat
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the audit log ({exc.strerror})") from None


def _parse_moment(text: str, option: str) -> datetime.datetime:
    try:
        if len(text) == 10:
            return datetime.datetime.strptime(text, "%Y-%m-%d")
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected a date YYYY-MM-DD or a time YYYY-MM-DDTHH:MM[:SS]") from None


def _zone(name: str) -> datetime.tzinfo:
    if name.upper() == "UTC":
        return datetime.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--tz {name!r}: not an IANA time zone (e.g. UTC, Europe/Paris) nor 'site'") from None


def build_filter(args):
    """A predicate over flat records from the command-line filters."""
    wanted = {
        "customer": args.customer,
        "site": args.site,
        "terminal": args.terminal,
        "host": args.host,
        "operator": args.operator,
        "change_id": args.change,
        "ticket_id": args.ticket,
        "module": args.module,
        "segment": args.segment,
    }
    wanted = {k: v for k, v in wanted.items() if v is not None}
    site_zone = args.tz == "site"
    zone = None if site_zone else _zone(args.tz)
    bounds: list[tuple[bool, datetime.datetime] | None] = []
    for text, option, end in ((args.since, "--since", False), (args.until, "--until", True)):
        if text is None:
            bounds.append(None)
            continue
        moment = _parse_moment(text, option)
        if end and len(text) == 10:
            moment += datetime.timedelta(days=1)  # --until 2026-11-28 includes that whole day
        if site_zone and moment.tzinfo is None:
            bounds.append((True, moment))  # compared with each record's site-local wall time
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
            bounds.append((False, moment.astimezone(datetime.UTC)))
    since, until = bounds

    def moment_of(record, local: bool) -> datetime.datetime:
        if local and record.get("site_time"):
            return datetime.datetime.fromisoformat(record["site_time"]).replace(tzinfo=None)
        stamp = record.get("ended") or record.get("time")
        moment = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
        return moment if local else moment.replace(tzinfo=datetime.UTC)

    def keep(record) -> bool:
        for key, value in wanted.items():
            if str(record.get(key)) != value:
                return False
        if args.changed and not record.get("changed"):
            return False
        if args.failed and record.get("status") not in ("failed", "unreachable"):
            return False
        try:
            if since is not None and moment_of(record, since[0]) < since[1]:
                return False
            return until is None or moment_of(record, until[0]) < until[1]
        except (TypeError, ValueError):
            return False  # a record without a readable time cannot be placed in the interval

    return keep


def selected(args, default_kinds=("task",)) -> list[dict]:
    kinds = None if args.kind == "all" else {args.kind} if args.kind else set(default_kinds)
    keep = build_filter(args)
    records = [r for r in flat_records(args.log, kinds, args.trail) if keep(r)]
    if args.query:
        try:
            import jmespath
            from jmespath.exceptions import JMESPathError
        except ImportError:
            raise UsageError("--query needs the jmespath package: pip install jmespath") from None
        try:
            result = jmespath.search(args.query, records)
        except JMESPathError as exc:
            raise UsageError(
                f"--query {args.query!r}: not a valid JMESPath expression ({' '.join(str(exc).split())})"
            ) from None
        return result if isinstance(result, list) else [result]
    return records


# ---------------------------------------------------------------------------------------- commands


def cmd_verify_trail(args, key) -> int:
    trail = _trail_dir(args.trail)
    report = verify_trail(trail, key, workers=args.workers)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not report.segments and report.ok:
        print(
            f"warning: {trail} holds no segment yet: is it the directory the jobs ship to (ship_to, "
            "IPM_AUDIT_SHIP_DIR)?",
            file=sys.stderr,
        )
    complete = sum(1 for s in report.segments if s.status == "complete")
    incomplete = sum(1 for s in report.segments if s.status == "incomplete")
    if not report.ok:
        for problem in report.problems:
            print(f"FAIL {trail}: {problem}")
        return 1
    print(
        f"OK {trail}: {len(report.segments)} segments ({complete} complete, {incomplete} incomplete), "
        f"{report.records} records, {report.checkpoints} signed records"
    )
    return 0


def cmd_verify(args) -> int:
    log = os.path.expanduser(args.log)
    if not args.trail and not os.path.exists(log):
        raise UsageError(f"{log}: no audit log there; pass --log or set IPM_AUDIT_LOG")
    key = None
    if not args.no_key:
        try:
            key = load_key(args.key_file)
        except AuditLogError as exc:
            raise UsageError(f"{exc} (or pass --no-key to check the chain only)") from None
    if args.trail:
        return cmd_verify_trail(args, key)
    report = verify_log(log, key, head=not args.no_head)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not report.ok:
        print(f"FAIL {log}: {report.problem}")
        return 1
    print(
        f"OK {log}: {report.records} records, {report.checkpoints} checkpoints, "
        f"last signed seq {report.last_signed_seq if report.last_signed_seq is not None else '-'}"
    )
    return 0


def _short(value, width):
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "~"


def cmd_list(args) -> int:
    records = selected(args)
    if args.query or args.json:
        print(json.dumps(records, indent=2, sort_keys=True))
        return 0
    out = sys.stdout
    for r in records:
        if r.get("kind") == "task":
            time = r.get("site_time") if args.tz == "site" else r.get("ended") or r.get("time")
            line = (
                f"{r.get('seq'):>7} {time}  {_short(r.get('operator'), 12):<12} "
                f"{_short(r.get('change_id') or r.get('ticket_id') or '-', 12):<12} "
                f"{_short(r.get('customer'), 10):<10} {_short(r.get('site'), 10):<10} "
                f"{_short(r.get('terminal') or r.get('host'), 12):<12} {r.get('status'):<11} "
                f"{'changed' if r.get('changed') else '-':<7} {_short(r.get('module'), 28):<28} {r.get('task')}"
            )
        else:
            line = f"{r.get('seq'):>7} {r.get('time')}  {r.get('kind')}  " + json.dumps(
                {k: v for k, v in r.items() if k not in ("seq", "time", "kind")}, sort_keys=True
            )
        out.write(line + "\n")
    print(f"{len(records)} record(s)", file=sys.stderr)
    return 0


def cmd_show(args) -> int:
    records = selected(args, default_kinds=("task", "run_start", "run_end"))
    if args.seq is not None:
        records = [r for r in records if isinstance(r, dict) and r.get("seq") == args.seq]
        if not records:
            raise UsageError(f"seq {args.seq}: no such record matches in {args.trail or args.log}")
    print(json.dumps(records, indent=2, sort_keys=True))
    return 0


def _csv_cell(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def cmd_export(args) -> int:
    records = selected(args)
    if args.format == "json":
        text = json.dumps(records, indent=2, sort_keys=True) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        columns = (*CSV_COLUMNS, "segment") if args.trail else CSV_COLUMNS
        writer.writerow(columns)
        for r in records:
            if isinstance(r, dict):
                writer.writerow([_csv_cell(r.get(col)) for col in columns])
        text = buffer.getvalue()
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        try:
            with open(args.output, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write the export ({exc.strerror})") from None
        print(f"{len(records)} record(s) written to {args.output}", file=sys.stderr)
    return 0


def cmd_stats(args) -> int:
    records = selected(args, default_kinds=("task", "run_start"))
    tasks = [r for r in records if isinstance(r, dict) and r.get("kind") == "task"]
    runs = {r.get("run") for r in records if isinstance(r, dict) and r.get("kind") in ("task", "run_start")}
    stats = {
        "runs": len(runs),
        "task_results": len(tasks),
        "changed": sum(1 for r in tasks if r.get("changed")),
        "by_status": dict(Counter(r.get("status") for r in tasks).most_common()),
        "by_customer": dict(Counter(str(r.get("customer")) for r in tasks).most_common()),
        "by_site": dict(Counter(str(r.get("site")) for r in tasks).most_common()),
        "by_operator": dict(Counter(str(r.get("operator")) for r in tasks).most_common()),
        "by_module": dict(Counter(str(r.get("module")) for r in tasks).most_common(20)),
        "first": min((r.get("ended") or r.get("time") for r in tasks), default=None),
        "last": max((r.get("ended") or r.get("time") for r in tasks), default=None),
    }
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    for key, value in stats.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for name, count in value.items():
                print(f"  {name}: {count}")
        else:
            print(f"{key}: {value}")
    return 0


def cmd_deliveries(args) -> int:
    """The delivery ledger: every attempt, or (--running) what each terminal runs, since when, by whom."""
    ledger = delivery_ledger.entries(flat_records(args.log, {"task", "run_start"}, args.trail))
    if args.running:
        running = delivery_ledger.running_releases(ledger)
        rows = [
            dict(state, terminal=terminal)
            for terminal, state in sorted(running.items())
            if delivery_ledger.matches(
                dict(state, terminal=terminal), args.customer, args.site, args.terminal, args.release
            )
        ]
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
            return 0
        for row in rows:
            since = row["since_local"] or row["since"] or "(before the log)"
            print(
                f"{row['terminal'] or '-':<16} {row['customer'] or '-':<18} {row['site'] or '-':<22} {row['release'] or '-':<8} since {since}  by {row['operator'] or '-'} ({row['change_id'] or '-'})"
            )
        print(f"{len(rows)} terminal(s)", file=sys.stderr)
        return 0
    rows = [
        e
        for e in ledger
        if delivery_ledger.matches(e, args.customer, args.site, args.terminal, args.release, args.result, args.kind)
    ]
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    for row in rows:
        when = row["site_time"] if args.local else row["time"]
        reason = f"  ({row['reason']})" if row["reason"] else ""
        print(
            f"{when or '-'}  {row['terminal'] or '-':<16} {row['customer'] or '-':<18} {row['site'] or '-':<22} "
            f"{row['from_version'] or '-'} -> {row['release'] or '-':<8} {row['kind'] or '-':<10} {row['result'] or '-':<16} {row['operator'] or '-'} {row['change_id'] or '-'}{reason}"
        )
    print(f"{len(rows)} delivery attempt(s)", file=sys.stderr)
    return 0


def cmd_ship(args) -> int:
    """Ship what dead jobs left in a node's segment directory (the callback does it at each job start)."""
    if not args.trail:
        raise UsageError("ship: pass --trail DIR, the directory segments are shipped to")
    segment_dir = os.path.expanduser(args.segment_dir)
    if not os.path.isdir(segment_dir):
        raise UsageError(f"--segment-dir {segment_dir}: not a directory (the callback's segment_dir)")
    try:
        shipped = salvage(segment_dir, os.path.expanduser(args.trail))
    except OSError as exc:
        raise UsageError(f"--trail {args.trail}: cannot ship there ({exc.strerror or exc})") from None
    for name in shipped:
        print(f"shipped {name}")
    print(f"{len(shipped)} segment(s) shipped from {segment_dir}", file=sys.stderr)
    return 0


def cmd_keygen(args) -> int:
    try:
        ident = generate_key(args.key_file, force=args.force)
    except AuditLogError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{args.key_file}: cannot write the key ({exc.strerror})") from None
    print(f"key {ident} written to {os.path.expanduser(args.key_file)} (mode 0600); give auditors a copy")
    return 0


# ------------------------------------------------------------------------------------------- parser


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters")
    group.add_argument("--customer", help="customer id (ipm_customer_id)")
    group.add_argument("--site", help="site id (ipm_site_id)")
    group.add_argument("--terminal", help="terminal id (ipm_terminal_id)")
    group.add_argument("--host", help="inventory host name")
    group.add_argument("--operator", help="operator who ran the playbook")
    group.add_argument("--change", help="change id")
    group.add_argument("--ticket", help="ticket id")
    group.add_argument("--module", help="module, e.g. ansible.builtin.copy")
    group.add_argument("--segment", help="segment of a merged trail (--trail), e.g. j42_nnode1_r..._p0000")
    group.add_argument("--since", help="from this date/time (YYYY-MM-DD or YYYY-MM-DDTHH:MM), inclusive")
    group.add_argument("--until", help="up to this date/time, exclusive (a plain date includes that day)")
    group.add_argument(
        "--tz", default="UTC", help="zone of --since/--until: UTC (default), an IANA zone, or 'site' (each site's own)"
    )
    group.add_argument("--changed", action="store_true", help="only results that changed something")
    group.add_argument("--failed", action="store_true", help="only failed or unreachable results")
    group.add_argument(
        "--kind",
        choices=("task", "run_start", "run_end", "checkpoint", "recovered", "segment_start", "segment_end", "all"),
        help="record kind",
    )
    group.add_argument("--query", help="JMESPath expression applied to the filtered list (output is JSON)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipm-audit",
        description="Verify, search and export the ipm.fleet audit log (see docs/audit.md).",
    )
    parser.add_argument(
        "--log",
        default=os.environ.get("IPM_AUDIT_LOG", DEFAULT_LOG),
        help=f"audit log (default: $IPM_AUDIT_LOG or {DEFAULT_LOG})",
    )
    parser.add_argument(
        "--trail",
        default=os.environ.get("IPM_AUDIT_TRAIL"),
        help="merged trail instead of --log: the directory AWX jobs ship their segments to (default: $IPM_AUDIT_TRAIL)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --log and --trail are accepted after the command too (ipm-audit verify --log FILE).
    log_after = argparse.ArgumentParser(add_help=False)
    log_after.add_argument("--log", default=argparse.SUPPRESS, help="audit log (same as the global --log)")
    log_after.add_argument(
        "--trail", default=argparse.SUPPRESS, help="merged trail directory (same as the global --trail)"
    )

    p = sub.add_parser(
        "verify",
        parents=[log_after],
        help="check the chain, hashes, signed checkpoints and head; exit 1 naming the first bad record",
    )
    p.add_argument("--key-file", default=os.environ.get("IPM_AUDIT_KEY_FILE", DEFAULT_KEY), help="checkpoint key")
    p.add_argument("--no-key", action="store_true", help="check the chain only (a re-hashed forgery would pass)")
    p.add_argument("--no-head", action="store_true", help="do not require the head file (a cut tail would pass)")
    p.add_argument("--workers", type=int, default=1, help="with --trail: hash in this many processes (default 1)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("list", parents=[log_after], help="one line per task result")
    _add_filters(p)
    p.add_argument("--json", action="store_true", help="JSON instead of lines")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[log_after], help="full records (task results, run start and end) as JSON")
    _add_filters(p)
    p.add_argument("--seq", type=int, help="only the record with this sequence number")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("export", parents=[log_after], help="task results to CSV or JSON")
    _add_filters(p)
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--output", "-o", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", parents=[log_after], help="counts by status, customer, site, operator, module")
    _add_filters(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "deliveries",
        parents=[log_after],
        help="the delivery ledger: every attempt, or what each terminal runs (--running)",
    )
    p.add_argument("--customer", help="customer id")
    p.add_argument("--site", help="site id")
    p.add_argument("--terminal", help="terminal id")
    p.add_argument("--release", help="release version, e.g. 2.4.0")
    p.add_argument("--result", choices=delivery_ledger.RESULTS, help="only attempts with this result")
    p.add_argument(
        "--kind",
        choices=delivery_ledger.KINDS,
        help="only attempts of this kind: release (playbooks/rollout.yml), parameters (playbooks/parameters.yml) "
        "or patch (playbooks/patch.yml)",
    )
    p.add_argument("--running", action="store_true", help="what each terminal runs, since when, delivered by whom")
    p.add_argument("--local", action="store_true", help="times in each site's own time zone")
    p.add_argument("--json", action="store_true", help="JSON instead of lines")
    p.set_defaults(func=cmd_deliveries)

    p = sub.add_parser(
        "ship",
        parents=[log_after],
        help="ship the segments jobs killed before their end left in a segment directory to --trail",
    )
    p.add_argument("--segment-dir", required=True, help="the node's segment directory (the callback's segment_dir)")
    p.set_defaults(func=cmd_ship)

    p = sub.add_parser("keygen", help="create a checkpoint key file (mode 0600)")
    p.add_argument("--key-file", default=os.environ.get("IPM_AUDIT_KEY_FILE", DEFAULT_KEY))
    p.add_argument("--force", action="store_true", help="replace an existing key (old checkpoints then fail)")
    p.set_defaults(func=cmd_keygen)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"ipm-audit: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_output()


if __name__ == "__main__":
    sys.exit(main())
