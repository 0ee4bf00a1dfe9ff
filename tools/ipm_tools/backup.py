"""ipm-backup: the controller's backup store (written by playbooks/backup.yml, read by playbooks/restore.yml).

  ipm-backup list [--customer C] [--site S] [--terminal T]   every backup, oldest first; partials and strays
  ipm-backup show TERMINAL [TIME]                             one backup's manifest (default: the newest)
  ipm-backup verify [TERMINAL...] [--subset 10%]              signature, sizes, sha256 of every file (or a share)
  ipm-backup prune --keep-daily 7 ... [--dry-run]             retention per terminal in the site's time zone

Store: --store, else $IPM_BACKUP_STORE, else ~/.ipm/backups. Key that signs manifests: --key-file, else
$IPM_BACKUP_KEY_FILE, else the audit checkpoint key ($IPM_AUDIT_KEY_FILE, else ~/.ipm/audit.key).
Errors are one line on stderr naming the path and what to do; exit codes: 0 fine, 1 verification found
problems, 2 bad input. See docs/backup-store.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ipm_tools  # noqa: F401 - puts collections/ on sys.path
from ansible_collections.ipm.fleet.plugins.plugin_utils import backup_retention as retention
from ansible_collections.ipm.fleet.plugins.plugin_utils import backup_store as bs
from ipm_tools import closed_output


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


# ------------------------------------------------------------------------------------------ helpers


def open_store(args) -> bs.BackupStore:
    store = bs.BackupStore(args.store)
    if not store.exists():
        raise UsageError(
            f"{store.root}: no backup store there; pass --store DIR or set {bs.STORE_ENV} "
            "(playbooks/backup.yml writes the backups there)"
        )
    return store


def _mib(size) -> str:
    """A byte count for people: 812 B, 4.9 KiB, 50.0 MiB, 1.2 GiB."""
    if not isinstance(size, int) or isinstance(size, bool):
        return "-"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _zone(name) -> datetime.tzinfo | None:
    if not isinstance(name, str):
        return None
    if name.upper() == "UTC":
        return datetime.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def summary(entry: bs.BackupEntry) -> dict:
    """What list prints of a backup; a damaged manifest gives ``manifest_error`` instead of the fields."""
    row = {
        "customer": entry.customer,
        "site": entry.site,
        "terminal": entry.terminal,
        "time": entry.time_iso,
        "name": entry.time_text,
        "path": entry.path,
    }
    try:
        manifest = entry.manifest()
    except bs.BackupStoreError as exc:
        row["manifest_error"] = str(exc)
        return row
    files = manifest.get("files") if isinstance(manifest.get("files"), list) else []
    zone = _zone(manifest.get("timezone"))
    row.update(
        {
            "timezone": manifest.get("timezone"),
            "time_site": entry.time.astimezone(zone).isoformat() if zone else None,
            "release": manifest.get("release"),
            "serial_number": manifest.get("serial_number"),
            "model": manifest.get("model"),
            "operator": manifest.get("operator"),
            "change_id": manifest.get("change_id") or manifest.get("ticket"),
            "files": len(files),
            "bytes": sum(f.get("size", 0) for f in files if isinstance(f, dict) and isinstance(f.get("size"), int)),
            "transferred_bytes": manifest.get("transferred_bytes"),
            "reused_bytes": manifest.get("reused_bytes"),
            "database": manifest.get("database"),
            "signed": os.path.exists(entry.signature_path),
        }
    )
    return row


def _partial_row(info: bs.PartialInfo) -> dict:
    return {
        "customer": info.customer,
        "site": info.site,
        "terminal": info.terminal,
        "path": info.path,
        "started": bs.iso_utc(info.started) if info.started else None,
        "state": "in progress" if info.active else "stale",
    }


def _report_leftovers(partials, strays, out) -> None:
    for info in partials:
        if info.active:
            out.write(f"partial {info.path}: a backup in progress (not a backup yet)\n")
        else:
            out.write(f"partial {info.path}: stale, left by a backup that stopped; `ipm-backup prune` removes it\n")
    for stray in strays:
        out.write(f"stray {stray.path}: {stray.reason}; move it out of the store\n")


def _filters(args) -> dict:
    return {"customer": args.customer, "site": args.site, "terminal": args.terminal}


def parse_subset(text: str | None) -> float | None:
    """``10%``, ``2.5%``, ``0.1`` or ``1/10`` -> a share in (0, 1]."""
    if text is None:
        return None
    value = None
    raw = text.strip()
    try:
        if raw.endswith("%"):
            value = float(raw[:-1]) / 100
        elif re.match(r"^[0-9]+/[0-9]+$", raw):
            num, den = (int(x) for x in raw.split("/"))
            value = num / den if den else None
        else:
            value = float(raw)
    except ValueError:
        value = None
    if value is None or not 0 < value <= 1:
        raise UsageError(
            f"--subset {text!r}: expected a share of the files such as 10%, 0.1 or 1/10 (above 0, at most 100%)"
        )
    return value


def load_key(args) -> bytes:
    return bs.load_signing_key(args.key_file)


# ----------------------------------------------------------------------------------------- commands


def cmd_list(args) -> int:
    store = open_store(args)
    entries, partials, strays = store.scan(**_filters(args))
    rows = [summary(e) for e in entries]
    if args.json:
        print(
            json.dumps(
                {
                    "store": store.root,
                    "backups": rows,
                    "partials": [_partial_row(p) for p in partials],
                    "strays": [{"path": s.path, "reason": s.reason} for s in strays],
                },
                indent=2,
                sort_keys=True,
            )
        )
        return 0
    out = sys.stdout
    for row in rows:
        where = f"{row['customer']}/{row['site']}"
        if "manifest_error" in row:
            out.write(f"{row['terminal']:<16} {row['time']}  {where:<28} damaged: {row['manifest_error']}\n")
            continue
        transferred = row["transferred_bytes"]
        out.write(
            f"{row['terminal']:<16} {row['time']}  {where:<28} {row['time_site'] or '-':<25} "
            f"release {row['release'] or '-':<8} {row['files']:>3} files {_mib(row['bytes']):>10} "
            f"sent {_mib(transferred):>10}  {row['operator'] or '-'} {row['change_id'] or '-'}"
            f"{'' if row['signed'] else '  UNSIGNED'}\n"
        )
    _report_leftovers(partials, strays, out)
    print(f"{len(rows)} backup(s) in {store.root}", file=sys.stderr)
    return 0


def cmd_show(args) -> int:
    store = open_store(args)
    entry = store.find(args.terminal, args.time)
    manifest = entry.manifest()
    try:
        sig = entry.signature()
    except bs.BackupStoreError:
        sig = None
    if args.json:
        print(
            json.dumps(
                {"path": entry.path, "time": entry.time_iso, "manifest": manifest, "signature": sig},
                indent=2,
                sort_keys=True,
            )
        )
        return 0
    row = summary(entry)
    fields = [
        ("backup", entry.name),
        ("path", entry.path),
        ("time", f"{entry.time_iso} (the store's clock)"),
        ("site time", f"{row.get('time_site') or '-'} ({row.get('timezone')})"),
        *((key, manifest.get(key)) for key in ("serial_number", "model", "release", "parameters_sha256", "operator")),
        ("change", manifest.get("change_id") or manifest.get("ticket") or "-"),
        ("database", json.dumps(manifest.get("database"), sort_keys=True)),
        (
            "bytes",
            f"{_mib(row.get('bytes'))} in {row.get('files')} files; sent {_mib(manifest.get('transferred_bytes'))}, "
            f"reused {_mib(manifest.get('reused_bytes'))}",
        ),
        ("signature", f"key {sig['key_id']} ({sig['algorithm']})" if sig else "NONE (unsigned)"),
    ]
    for label, value in fields:
        print(f"{label:<18} {value}")
    for item in manifest.get("files") or []:
        if isinstance(item, dict):
            print(f"  {item.get('sha256', '?')[:16]}  {item.get('size', '?'):>12}  {item.get('path')}")
    return 0


def cmd_verify(args) -> int:
    subset = parse_subset(args.subset)
    store = open_store(args)
    key = load_key(args)
    if args.terminals:
        entries, partials = [], []
        for terminal in args.terminals:
            found, left, _strays = store.scan(terminal=bs.check_id(terminal, "terminal"))
            if not found:
                raise UsageError(str(store.no_backup_error(terminal)))
            entries.extend(found[-1:] if args.latest else found)
            partials.extend(left)
    else:
        entries, partials, _strays = store.scan()
        if args.latest:
            newest = {}
            for entry in entries:
                newest[entry.terminal] = entry
            entries = sorted(newest.values(), key=lambda e: (e.time, e.path))
    seed = args.seed if args.seed is not None else bs.default_seed()
    reports = [bs.verify_report(entry, key, subset, seed) for entry in entries]
    bad = [r for r in reports if not r.ok]
    if args.json:
        print(
            json.dumps(
                {
                    "store": store.root,
                    "subset": subset,
                    "seed": seed if subset is not None else None,
                    "ok": not bad,
                    "partials": [_partial_row(p) for p in partials],
                    "backups": [
                        {
                            "backup": r.entry.name,
                            "path": r.entry.path,
                            "ok": r.ok,
                            "problems": r.problems,
                            "files": r.files,
                            "hashed": r.hashed,
                            "hashed_bytes": r.hashed_bytes,
                        }
                        for r in reports
                    ],
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        for r in reports:
            if r.ok:
                print(f"OK   {r.entry.name}: {r.files} files, {r.hashed} re-hashed ({_mib(r.hashed_bytes)})")
            else:
                print(f"FAIL {r.entry.name}: {'; '.join(r.problems)}")
        _report_leftovers(partials, [], sys.stderr)  # not backups: never verified, never restored
        share = f", re-hashing {subset * 100:g}% (seed {seed})" if subset is not None else ""
        print(f"{len(reports)} backup(s) checked{share}, {len(bad)} with problems", file=sys.stderr)
    if not reports:
        print(f"no backup in {store.root}", file=sys.stderr)
    return 1 if bad else 0


def _terminal_zone(entries: list[bs.BackupEntry], warnings: list[str]) -> object:
    """The site's zone of a terminal: from its newest readable manifest (UTC, with a warning, if none)."""
    for entry in reversed(entries):
        try:
            zone = entry.manifest().get("timezone")
        except bs.BackupStoreError:
            continue
        if _zone(zone) is not None:
            return _zone(zone)
    warnings.append(f"terminal {entries[-1].terminal}: no readable manifest names its time zone; days counted in UTC")
    return datetime.UTC


def cmd_prune(args) -> int:
    policy = retention.Policy(
        keep_last=args.keep_last,
        daily=args.keep_daily,
        weekly=args.keep_weekly,
        monthly=args.keep_monthly,
        yearly=args.keep_yearly,
    )
    if policy.empty:
        raise UsageError(
            "prune: no keep rule; give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly, "
            "--keep-yearly (with none, every backup would go)"
        )
    store = open_store(args)
    entries, partials, strays = store.scan(**_filters(args))
    warnings: list[str] = []
    decisions = retention.decide_per_terminal(entries, policy, lambda _t, group: _terminal_zone(group, warnings))
    stale = [p for p in partials if p.stale()]
    verb = "would remove" if args.dry_run else "remove"
    if not args.json:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for d in decisions:
            if d.keep:
                print(f"keep          {d.item.name}  ({', '.join(d.reasons)})")
            else:
                print(f"{verb:<13} {d.item.name}  (no rule keeps it)")
        for info in stale:
            print(f"{verb:<13} {info.path}  (stale partial: a backup that never completed)")
        for info in partials:
            if not info.stale():
                print(f"skip          {info.path}  (a backup in progress)")
        for stray in strays:
            print(f"leave         {stray.path}  ({stray.reason})")
    removed = 0
    if not args.dry_run:
        for d in decisions:
            if not d.keep:
                store.remove(d.item)
                removed += 1
        for info in stale:
            store.remove(info)
    kept = sum(1 for d in decisions if d.keep)
    forgotten = len(decisions) - kept
    if args.json:
        print(
            json.dumps(
                {
                    "store": store.root,
                    "dry_run": args.dry_run,
                    "policy": {rule: getattr(policy, rule) for rule in retention.RULES},
                    "backups": [
                        {"backup": d.item.name, "path": d.item.path, "keep": d.keep, "reasons": list(d.reasons)}
                        for d in decisions
                    ],
                    "stale_partials": [p.path for p in stale],
                    "warnings": warnings,
                },
                indent=2,
                sort_keys=True,
            )
        )
    else:
        done = f"{forgotten} would go" if args.dry_run else f"{removed} removed"
        print(f"{kept} kept, {done}, {len(stale)} stale partial(s) ({policy.describe()})", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipm-backup",
        description="List, show, verify and prune the terminal backups on the controller (see docs/backup-store.md).",
    )
    store_help = f"backup store (default: ${bs.STORE_ENV} or {bs.DEFAULT_STORE})"
    key_help = (
        f"key that signs manifests (default: ${bs.KEY_ENV}, else ${bs.AUDIT_KEY_ENV}, else {bs.DEFAULT_KEY_FILE})"
    )
    parser.add_argument("--store", default=None, help=store_help)
    parser.add_argument("--key-file", default=None, help=key_help)
    # --store/--key-file are accepted after the command too (ipm-backup verify --store DIR).
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--store", default=argparse.SUPPRESS, help=store_help)
    after.add_argument("--key-file", default=argparse.SUPPRESS, help=key_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def filters(p):
        p.add_argument("--customer", help="only this customer id")
        p.add_argument("--site", help="only this site id")
        p.add_argument("--terminal", help="only this terminal id")

    p = sub.add_parser("list", parents=[after], help="every backup (oldest first), partials and strays")
    filters(p)
    p.add_argument("--json", action="store_true", help="JSON instead of lines")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[after], help="one backup's manifest")
    p.add_argument("terminal", metavar="TERMINAL", help="terminal id")
    p.add_argument("time", metavar="TIME", nargs="?", help="20261202T071500Z or 2026-12-02T07:15:00Z (default: newest)")
    p.add_argument("--json", action="store_true", help="the manifest and signature as JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "verify",
        parents=[after],
        help="check signatures, sizes and sha256 (exit 1 naming each bad backup)",
        description="Check every backup (or those of TERMINAL...): the manifest's signature, that it is this "
        "terminal's, every file present with its size and no extra one, and the sha256 of every file (or, with "
        "--subset, of a share that rotates from day to day so that successive runs read everything).",
    )
    p.add_argument("terminals", metavar="TERMINAL", nargs="*", help="terminal ids (default: every terminal)")
    p.add_argument("--subset", help="re-hash only this share of the files, e.g. 10%% (sizes and signatures: always)")
    p.add_argument("--seed", type=int, help="which share --subset reads (default: today's day number)")
    p.add_argument("--latest", action="store_true", help="only the newest backup of each terminal")
    p.add_argument("--json", action="store_true", help="JSON instead of lines")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "prune",
        parents=[after],
        help="remove backups no keep rule keeps (per terminal, days in the site's zone)",
        description="Apply grandfather-father-son retention to each terminal's backups: a backup stays if any "
        "rule keeps it (the newest of each of the last N days, ISO weeks, months, years in the site's time zone, "
        "or one of the last N). -1 keeps every bucket. Stale partials are removed too. With no keep rule at all "
        "prune refuses to run.",
    )
    filters(p)
    for rule, name in (
        ("last", "the N newest backups"),
        ("daily", "the newest backup of each of the last N days"),
        ("weekly", "... of each of the last N ISO weeks"),
        ("monthly", "... of each of the last N months"),
        ("yearly", "... of each of the last N years"),
    ):
        p.add_argument(f"--keep-{rule}", type=int, default=0, metavar="N", help=name)
    p.add_argument("--dry-run", action="store_true", help="say what would be kept and removed, remove nothing")
    p.add_argument("--json", action="store_true", help="the decisions as JSON")
    p.set_defaults(func=cmd_prune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, bs.BackupStoreError, retention.RetentionError) as exc:
        print(f"ipm-backup: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_output()
    except OSError as exc:
        where = exc.filename or (args.store or bs.default_store())
        print(f"ipm-backup: {where}: {exc.strerror or exc}; check the store's permissions", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
