# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the maintenance and audit reports count, from the audit log: one pass, periods in UTC.

:func:`aggregate` reads records (``(seq, kind, time, hash, data)`` as :func:`read_log` yields them, or any
iterable of audit records) once, joins each task result with its run (operator, change, maintenance
type), keeps those of the period (by the task's end time in UTC) and of the customer if one is given,
and returns plain tables (lists of dicts) and counts. Deliveries, parameter changes and patches are
the delivery ledger's entries (:mod:`delivery_ledger` decides what an entry is); presentation
(languages, charts, HTML) is the report tool's.

Standard library only; no Ansible runtime state.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections import Counter, defaultdict

from ansible_collections.ipm.fleet.plugins.plugin_utils import delivery_ledger
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_segments import iter_trail

UTC = datetime.timezone.utc
BACKUP_MODULES = ("ipm.fleet.backup",)
EMERGENCY_PREFIX = "EMERGENCY:"
# Records another part of the fleet writes for the four-eyes rule: counted by kind.
AUTHORIZATION_KINDS = ("authorization_denied", "change_requested", "change_approved")
UNSPECIFIED = "unspecified"
_PERIOD = re.compile(r"^(\d{4})-(\d{2})$|^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$|^(\d{4})$")


class PeriodError(ValueError):
    """A period that cannot be read; the message says what was expected."""


class Period:
    """A half-open UTC interval [start, end) with the text it was given as."""

    def __init__(self, text: str, start: datetime.datetime, end: datetime.datetime):
        self.text, self.start, self.end = text, start, end
        self.start_s = start.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        self.end_s = end.strftime("%Y-%m-%dT%H:%M:%S.000000Z")

    def contains(self, stamp: str | None) -> bool:
        # Record times are fixed-width UTC (``YYYY-MM-DDTHH:MM:SS.ffffffZ``): text order is time order.
        return stamp is not None and self.start_s <= stamp < self.end_s

    def as_dict(self) -> dict:
        return {"period": self.text, "start": self.start.isoformat(), "end": self.end.isoformat()}


def parse_period(text: str) -> Period:
    """``2027-01`` (a month), ``2027`` (a year) or ``2027-01-01..2027-01-15`` (days, end included), in UTC."""
    match = _PERIOD.match(text or "")
    try:
        if match and match.group(1):
            year, month = int(match.group(1)), int(match.group(2))
            start = datetime.datetime(year, month, 1, tzinfo=UTC)
            end = datetime.datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
        elif match and match.group(3):
            start = datetime.datetime.combine(datetime.date.fromisoformat(match.group(3)), datetime.time(), UTC)
            end = datetime.datetime.combine(datetime.date.fromisoformat(match.group(4)), datetime.time(), UTC)
            end += datetime.timedelta(days=1)
            if end <= start:
                raise ValueError("end before start")
        elif match and match.group(5):
            start = datetime.datetime(int(match.group(5)), 1, 1, tzinfo=UTC)
            end = datetime.datetime(int(match.group(5)) + 1, 1, 1, tzinfo=UTC)
        else:
            raise ValueError("no match")
    except ValueError:
        raise PeriodError(
            "period %r: expected a month YYYY-MM (2027-01), a year YYYY or days YYYY-MM-DD..YYYY-MM-DD" % (text,)
        ) from None
    return Period(text, start, end)


def read_log(path: str, progress=None, every: int = 50000):
    """Yield ``(seq, kind, time, hash, data)`` for each complete record line of the log at PATH.

    PROGRESS, when given, is called with the bytes read so far every EVERY lines. PATH may also be the
    directory of a merged trail of chain segments (AWX, :mod:`audit_segments`): its records in time order.
    """
    if os.path.isdir(path):
        for _segment, record in iter_trail(path):
            yield record.get("seq"), record.get("kind"), record.get("time"), record.get("hash"), record.get("data")
        return
    loads = json.loads
    with open(path, "rb") as handle:
        for count, line in enumerate(handle, 1):
            if not line.endswith(b"\n"):
                return
            if progress is not None and count % every == 0:
                progress(handle.tell())
            try:
                record = loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record.get("seq"), record.get("kind"), record.get("time"), record.get("hash"), record.get("data")


def _week(stamp: str) -> str:
    year, week, _day = datetime.date(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10])).isocalendar()
    return "%d-W%02d" % (year, week)


class _Effort:
    __slots__ = ("runs", "seconds", "tasks", "terminals")

    def __init__(self):
        self.runs, self.terminals, self.tasks, self.seconds = set(), set(), 0, 0.0

    def as_dict(self, name):
        return {
            "maintenance_type": name,
            "operations": len(self.runs),
            "terminals": len(self.terminals),
            "tasks": self.tasks,
            "hours": round(self.seconds / 3600.0, 3),
        }


def aggregate(records, period: Period, customer: str | None = None) -> dict:
    """One pass over RECORDS: the tables of the maintenance and the audit reports for PERIOD.

    CUSTOMER limits task results (deliveries, backups, effort, changes) to that customer's terminals;
    authorization records and emergency overrides are counted for the fleet when no customer is given.
    """
    runs: dict = {}
    contains = period.contains
    ledger_rows = []
    backups = []
    effort: dict = defaultdict(_Effort)
    total = _Effort()
    per_terminal: dict = defaultdict(float)
    changes_by_operator: Counter = Counter()
    authorization: Counter = Counter()
    authorization_rows = []
    emergencies = []
    failed = 0
    tasks_in_period = 0
    count = 0
    last = (None, None)
    for seq, kind, time, digest, data in records:
        count += 1
        last = (seq, digest)
        if not isinstance(data, dict):
            continue
        if kind == "task":
            stamp = data.get("ended") or time
            if not contains(stamp):
                continue
            if customer is not None and data.get("customer") != customer:
                continue
            run = runs.get(data.get("run")) or {}
            tasks_in_period += 1
            module = data.get("module")
            status = data.get("status")
            check = data.get("check_mode") or run.get("check_mode")
            terminal = data.get("terminal") or data.get("host")
            if status in ("failed", "unreachable") and not data.get("ignore_errors"):
                failed += 1
            if not check:
                mtype = run.get("maintenance_type") or UNSPECIFIED
                for bucket in (effort[mtype], total):
                    bucket.runs.add(data.get("run"))
                    bucket.tasks += 1
                    if terminal and data.get("delegate_to") is None:
                        bucket.terminals.add(terminal)
                    bucket.seconds += data.get("duration_s") or 0.0
                if terminal and data.get("delegate_to") is None:
                    per_terminal[terminal] += data.get("duration_s") or 0.0
                if data.get("changed"):
                    changes_by_operator[run.get("operator") or "?"] += 1
            if module == delivery_ledger.LEDGER_MODULE:
                flat = dict(data, kind="task")
                for key in ("operator", "change_id", "ticket_id"):
                    flat[key] = run.get(key)
                ledger_rows.extend(delivery_ledger.entries((flat,)))
            elif module in BACKUP_MODULES and not check and status in ("ok", "failed"):
                backups.append(
                    {
                        "time": stamp,
                        "site_time": data.get("site_time"),
                        "timezone": data.get("site_timezone"),
                        "terminal": terminal,
                        "site": data.get("site"),
                        "result": "ok" if status == "ok" else "failed",
                        "operator": run.get("operator"),
                        "change_id": run.get("change_id"),
                    }
                )
            msg = data.get("msg")
            if isinstance(msg, str) and msg.startswith(EMERGENCY_PREFIX):
                emergencies.append(
                    {
                        "time": stamp,
                        "site_time": data.get("site_time"),
                        "timezone": data.get("site_timezone"),
                        "terminal": terminal,
                        "operator": run.get("operator"),
                        "change_id": run.get("change_id"),
                        "justification": msg[len(EMERGENCY_PREFIX) :].strip(),
                    }
                )
        elif kind == "run_start":
            runs[data.get("run")] = data
        elif kind in AUTHORIZATION_KINDS:
            if not contains(time):
                continue
            if customer is not None and data.get("customer") not in (None, customer):
                continue
            authorization[kind] += 1
            authorization_rows.append(
                {
                    "time": time,
                    "kind": kind,
                    # Denials name the operator, requests the requester, approvals the approver.
                    "operator": data.get("operator") or data.get("approver") or data.get("requester"),
                    "change_id": data.get("change_id"),
                    "reason": data.get("reason") or data.get("why") or "",
                }
            )
    by_kind = {kind: [] for kind in delivery_ledger.KINDS}
    for row in ledger_rows:
        by_kind.setdefault(row["kind"], []).append(row)
    weeks = Counter(_week(row["time"]) for row in by_kind["release"] if row.get("time"))
    results = {kind: dict(Counter(row["result"] for row in rows)) for kind, rows in by_kind.items()}
    return {
        "period": period.as_dict(),
        "customer": customer,
        "records": count,
        "head": {"seq": last[0], "hash": last[1]},
        "tasks": tasks_in_period,
        "failed_tasks": failed,
        "deliveries": by_kind["release"],
        "parameter_changes": by_kind["parameters"],
        "patches": by_kind["patch"],
        "results": results,
        "deliveries_per_week": dict(sorted(weeks.items())),
        "backups": backups,
        "effort": [effort[name].as_dict(name) for name in sorted(effort)],
        "effort_total": total.as_dict("total"),
        "terminal_hours": {t: round(s / 3600.0, 3) for t, s in sorted(per_terminal.items())},
        "changes_by_operator": dict(sorted(changes_by_operator.items(), key=lambda kv: (-kv[1], kv[0]))),
        "authorization": {kind: authorization.get(kind, 0) for kind in AUTHORIZATION_KINDS},
        "authorization_events": authorization_rows,
        "emergencies": emergencies,
    }


def drift_by_site(rows) -> dict:
    """{site: {"terminals": n, "drifted": d, "no_snapshot": s}} from per-terminal drift rows."""
    sites: dict = {}
    for row in rows:
        counts = sites.setdefault(row["site"], {"terminals": 0, "drifted": 0, "no_snapshot": 0})
        counts["terminals"] += 1
        if row["differences"] is None:
            counts["no_snapshot"] += 1
        elif row["differences"]:
            counts["drifted"] += 1
    return dict(sorted(sites.items()))
