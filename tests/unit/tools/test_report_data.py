"""report_data on audit logs written by the real AuditWriter: one pass, UTC periods, per customer."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import report_data
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import generate_key, load_key

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the shared log writer
from report_log import write_log

UTC = datetime.UTC


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    generate_key(str(base / "audit.key"))
    key = load_key(str(base / "audit.key"))
    path = base / "audit.jsonl"
    # December runs (outside the period) first, then January's.
    before = write_log(
        str(path), key, start=datetime.datetime(2026, 12, 30, 8, tzinfo=UTC), runs=8, terminals_per_run=2
    )
    extra = [
        # As `ipm-change request/approve` and the authorize action write them.
        ("change_requested", {"requester": "op1", "change_id": "CHG-900", "summary": "new tariff"}),
        ("change_approved", {"approver": "op2", "requester": "op1", "change_id": "CHG-900", "role": "approver"}),
        ("authorization_denied", {"operator": "op0", "change_id": "CHG-901", "reason": "not an approver"}),
        ("authorization_denied", {"operator": "op0", "change_id": "CHG-902", "customer": "metro-transit"}),
    ]
    january = write_log(
        str(path),
        key,
        start=datetime.datetime(2027, 1, 2, 8, tzinfo=UTC),
        runs=24,
        terminals_per_run=3,
        seed=2,
        extra=extra,
    )
    return path, before, january


def test_parse_period_month_year_days():
    month = report_data.parse_period("2027-12")
    assert (month.start, month.end) == (
        datetime.datetime(2027, 12, 1, tzinfo=UTC),
        datetime.datetime(2028, 1, 1, tzinfo=UTC),
    )
    days = report_data.parse_period("2027-01-01..2027-01-15")
    assert days.end == datetime.datetime(2027, 1, 16, tzinfo=UTC)
    assert days.contains("2027-01-15T23:59:59.999999Z") and not days.contains("2027-01-16T00:00:00.000000Z")
    assert report_data.parse_period("2027").end.year == 2028


@pytest.mark.parametrize("text", ["2027-13", "January", "2027-01-15..2027-01-01", ""])
def test_parse_period_refuses(text):
    with pytest.raises(report_data.PeriodError, match="expected a month YYYY-MM"):
        report_data.parse_period(text)


def test_customer_month_counts_match_what_was_written(log):
    path, before, january = log
    data = report_data.aggregate(report_data.read_log(str(path)), report_data.parse_period("2027-01"), "parkcite")
    expected = january["parkcite"]
    assert len(data["deliveries"]) == expected["release"]
    assert len(data["parameter_changes"]) == expected["parameters"]
    assert len(data["patches"]) == expected["patch"]
    assert len(data["backups"]) == expected["backups"]
    assert data["effort_total"]["operations"] == expected["runs"]
    assert data["effort_total"]["terminals"] == len(expected["terminals"])
    assert data["effort_total"]["hours"] == pytest.approx(expected["seconds"] / 3600, abs=0.001)
    assert sum(r["operations"] for r in data["effort"]) == expected["runs"]
    assert data["changes_by_operator"] == expected["changed"]
    assert sum(data["deliveries_per_week"].values()) == expected["release"]
    # Authorization records of the customer, and those naming no customer.
    assert data["authorization"] == {"authorization_denied": 1, "change_requested": 1, "change_approved": 1}
    assert [(e["kind"], e["operator"]) for e in data["authorization_events"]] == [
        ("change_requested", "op1"),
        ("change_approved", "op2"),
        ("authorization_denied", "op0"),
    ]
    assert all(row["time"].startswith("2027-01") for row in data["deliveries"] + data["backups"])
    assert before["parkcite"]["release"] > 0  # December's existed and were left out


def test_fleet_period_and_head(log):
    path, _before, january = log
    lines = path.read_bytes().splitlines()
    data = report_data.aggregate(report_data.read_log(str(path)), report_data.parse_period("2027-01"))
    assert data["records"] == len(lines)
    assert data["head"]["seq"] == len(lines) - 1
    assert data["head"]["hash"] in lines[-1].decode()
    assert len(data["deliveries"]) == sum(c["release"] for c in january.values())
    assert data["authorization"]["authorization_denied"] == 2


def test_december_only(log):
    path, before, _january = log
    data = report_data.aggregate(report_data.read_log(str(path)), report_data.parse_period("2026-12"), "metro-transit")
    assert len(data["deliveries"]) == before["metro-transit"]["release"]


def test_emergency_override_and_check_mode(tmp_path):
    from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditWriter

    path = str(tmp_path / "audit.jsonl")
    with AuditWriter(path) as writer:
        writer.append("run_start", {"run": "r1", "operator": "alice", "change_id": "CHG-7", "check_mode": False})
        base = {
            "run": "r1",
            "host": "t1",
            "terminal": "t1",
            "customer": "c",
            "site": "s",
            "site_timezone": "Europe/Paris",
        }
        writer.append(
            "task",
            dict(
                base,
                module="ansible.builtin.debug",
                status="ok",
                changed=False,
                ended=writer.clock(),
                msg="EMERGENCY: maintenance windows ignored for the OS patches of CHG-7: payment outage",
            ),
        )
        writer.append("run_start", {"run": "r2", "operator": "bob", "check_mode": True})
        writer.append(
            "task", dict(base, run="r2", module="ipm.fleet.backup", status="ok", changed=True, ended=writer.clock())
        )
    now = datetime.datetime.now(UTC)
    period = report_data.parse_period("%04d-%02d" % (now.year, now.month))
    data = report_data.aggregate(report_data.read_log(path), period)
    assert [e["justification"] for e in data["emergencies"]] == [
        "maintenance windows ignored for the OS patches of CHG-7: payment outage"
    ]
    assert data["emergencies"][0]["operator"] == "alice"
    assert data["backups"] == []  # a check-mode run backs nothing up
    assert data["changes_by_operator"] == {}


def test_drift_by_site():
    rows = [
        {"site": "a", "differences": []},
        {"site": "a", "differences": [{"aspect": "release"}]},
        {"site": "b", "differences": None},
    ]
    assert report_data.drift_by_site(rows) == {
        "a": {"terminals": 2, "drifted": 1, "no_snapshot": 0},
        "b": {"terminals": 1, "drifted": 0, "no_snapshot": 1},
    }
