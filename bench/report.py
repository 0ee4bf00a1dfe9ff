"""Benchmark of ipm-report: a month's maintenance report of a 10,000-terminal fleet from 1,000,000 records.

    .venv/bin/python bench/report.py             # 1,000,000 records, 10,000 terminals, 3 interleaved repetitions
    .venv/bin/python bench/report.py --quick     # 100,000 records, 1 repetition

The log is written once with the collection's AuditWriter (records shaped as the audit callback writes
them: run_start, task results, ipm.fleet.delivery and ipm.fleet.backup results, run_end with a signed
checkpoint) into build/bench-cache/report-<parameters>/, and reused while the parameters stay the same.
The month's report (`ipm-report maintenance --format html`: it verifies the chain and signatures, reads
every record once and renders the page with its charts) is timed beside the floor, `ipm-audit export
--format json` of the same month (reading the records and writing them out). Both run as commands, one
after the other, repetitions interleaved; the ratio uses the medians.

The last line is ``report records=<n> report_s=<s> export_s=<s> ratio=<r>``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))
sys.path.insert(0, str(ROOT / "tests" / "unit" / "tools"))

from report_log import write_log  # noqa: E402

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import generate_key, load_key  # noqa: E402

CACHE = ROOT / "build" / "bench-cache"
BIN = Path(sys.executable).parent
START = datetime.datetime(2027, 1, 2, tzinfo=datetime.UTC)
ZONES = ("Europe/Paris", "Europe/Berlin", "Europe/Madrid", "America/Chicago", "Australia/Sydney")


def ensure_log(records: int, terminals: int) -> tuple[Path, Path, int]:
    """The cached log of about RECORDS records over TERMINALS terminals (written when missing)."""
    terminals_per_site, terminals_per_run = 100, 100
    sites = [("parkcite", "site-%03d" % n, ZONES[n % len(ZONES)]) for n in range(terminals // terminals_per_site)]
    per_run = terminals_per_run * (3 + 2) + terminals_per_run // 3 + 2  # tasks, delivery, backups, start and end
    runs = max(1, records // per_run)
    params = {"records": records, "terminals": terminals, "runs": runs, "version": 1}
    directory = CACHE / ("report-" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12])
    log, key_file = directory / "audit.jsonl", directory / "audit.key"
    done = directory / "complete.json"
    if not done.exists():
        directory.mkdir(parents=True, exist_ok=True)
        for stale in (log, Path(str(log) + ".head"), key_file):
            if stale.exists():
                stale.unlink()
        generate_key(str(key_file))
        print(f"writing {runs} runs (about {records:,} records) with AuditWriter into {log} ...", flush=True)
        began = time.monotonic()
        write_log(
            str(log),
            load_key(str(key_file)),
            start=START,
            runs=runs,
            terminals_per_run=terminals_per_run,
            sites=sites,
            run_gap=datetime.timedelta(minutes=10),
            terminals_per_site=terminals_per_site,
            expect=False,
        )
        print(f"  written in {time.monotonic() - began:.1f} s", flush=True)
        done.write_text(json.dumps(params))
    with open(log, "rb") as handle:
        count = sum(1 for _ in handle)
    return log, key_file, count


def timed(command: list[str]) -> float:
    began = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - began
    if result.returncode != 0:
        sys.exit(f"bench/report.py: {' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 records, one repetition")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args()
    records = 100_000 if args.quick else 1_000_000
    repeat = args.repeat or (1 if args.quick else 3)
    log, key_file, count = ensure_log(records, 10_000)
    out = log.parent
    report = [
        str(BIN / "ipm-report"), "maintenance", "--customer", "parkcite", "--period", "2027-01",
        "--log", str(log), "--key-file", str(key_file), "--history", str(out / "no-history"),
        "--format", "html", "-o", str(out / "report.html"),
    ]  # fmt: skip
    export = [
        str(BIN / "ipm-audit"), "--log", str(log), "export", "--format", "json",
        "--since", "2027-01-01", "--until", "2027-01-31", "-o", str(out / "export.json"),
    ]  # fmt: skip
    load = os.getloadavg()
    print(
        f"{count:,} records in {log} ({log.stat().st_size / 2**20:.0f} MiB); load {load[0]:.2f} on {os.cpu_count()} CPU(s)"
    )
    report_times, export_times = [], []
    for number in range(repeat):
        export_times.append(timed(export))
        report_times.append(timed(report))
        print(
            f"  repetition {number + 1}: report {report_times[-1]:.2f} s, export {export_times[-1]:.2f} s", flush=True
        )
    report_s, export_s = statistics.median(report_times), statistics.median(export_times)
    print(f"report records={count} report_s={report_s:.2f} export_s={export_s:.2f} ratio={report_s / export_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
