"""ipm-audit on a log written by the real writer (no Ansible run): verify, filters, time zones, exports."""

from __future__ import annotations

import csv
import io
import json

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditWriter, generate_key, load_key
from ipm_tools.audit import main


@pytest.fixture
def log(tmp_path):
    key_file = tmp_path / "audit.key"
    generate_key(str(key_file))
    path = tmp_path / "audit.jsonl"
    with AuditWriter(str(path), key=load_key(str(key_file)), checkpoint_interval=3) as writer:
        for run, operator, change in (("r1", "alice", "CHG-1"), ("r2", "bob", "CHG-2")):
            writer.append("run_start", {"run": run, "operator": operator, "change_id": change, "ticket_id": None})
            for terminal, site, zone, ended, site_time, status in (
                (
                    "PAR01-T1",
                    "par01",
                    "Europe/Paris",
                    "2026-11-27T23:30:00.000000Z",
                    "2026-11-28T00:30:00.000000+01:00",
                    "ok",
                ),
                (
                    "SYD01-T1",
                    "syd01",
                    "Australia/Sydney",
                    "2026-11-27T23:30:00.000000Z",
                    "2026-11-28T10:30:00.000000+11:00",
                    "failed",
                ),
            ):
                writer.append(
                    "task",
                    {
                        "run": run,
                        "host": terminal.lower(),
                        "terminal": terminal,
                        "customer": "acme",
                        "site": site,
                        "site_timezone": zone,
                        "task": "Write settings",
                        "module": "ansible.builtin.copy",
                        "status": status,
                        "changed": status == "ok",
                        "ended": ended,
                        "site_time": site_time,
                        "args": {"dest": "/etc/ipm/app.yml"},
                    },
                )
            writer.append("run_end", {"run": run}, checkpoint="run_end")
    return path, key_file


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_ok_and_log_option_after_the_command(log, capsys):
    path, key = log
    code, out, _ = run(capsys, "verify", "--log", path, "--key-file", key)
    assert code == 0 and out.startswith("OK ") and "checkpoints" in out


def test_verify_names_the_first_bad_record(log, capsys):
    path, key = log
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"PAR01-T1", b"PAR01-T9")
    path.write_bytes(b"".join(lines))
    code, out, _ = run(capsys, "--log", path, "verify", "--key-file", key)
    assert code == 1
    assert "line 2 (seq 1): hash does not match" in out


def test_filters_join_the_run_and_respect_time_zones(log, capsys):
    path, _ = log
    code, out, _ = run(capsys, "--log", path, "list", "--json", "--operator", "bob", "--failed")
    records = json.loads(out)
    assert code == 0 and [(r["terminal"], r["change_id"]) for r in records] == [("SYD01-T1", "CHG-2")]
    # 2026-11-27 in UTC holds all four results; in each site's own time they happened on the 28th.
    assert (
        len(
            json.loads(
                run(capsys, "--log", path, "list", "--json", "--since", "2026-11-27", "--until", "2026-11-27")[1]
            )
        )
        == 4
    )
    site_day = run(
        capsys, "--log", path, "list", "--json", "--tz", "site", "--since", "2026-11-28", "--until", "2026-11-28"
    )[1]
    assert len(json.loads(site_day)) == 4
    morning_in_paris = run(
        capsys,
        "--log",
        path,
        "list",
        "--json",
        "--tz",
        "site",
        "--since",
        "2026-11-28T00:00",
        "--until",
        "2026-11-28T01:00",
    )[1]
    assert {r["site"] for r in json.loads(morning_in_paris)} == {"par01"}
    sydney = run(
        capsys,
        "--log",
        path,
        "list",
        "--json",
        "--tz",
        "Australia/Sydney",
        "--since",
        "2026-11-28T10:00",
        "--until",
        "2026-11-28T11:00",
    )[1]
    assert len(json.loads(sydney)) == 4


def test_export_csv_and_stats(log, capsys, tmp_path):
    path, _ = log
    code, out, _ = run(capsys, "--log", path, "export", "--format", "csv", "--changed")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2 and {r["operator"] for r in rows} == {"alice", "bob"}
    assert json.loads(rows[0]["args"]) == {"dest": "/etc/ipm/app.yml"}
    stats = json.loads(run(capsys, "--log", path, "stats", "--json")[1])
    assert stats["runs"] == 2 and stats["by_status"] == {"ok": 2, "failed": 2}


def test_keygen_refuses_to_overwrite(tmp_path, capsys):
    key = tmp_path / "k"
    assert run(capsys, "keygen", "--key-file", key)[0] == 0
    code, _, err = run(capsys, "keygen", "--key-file", key)
    assert code == 2 and "already exists" in err and err.count("\n") == 1


def test_foreign_or_incomplete_lines_are_skipped_not_fatal(tmp_path, capsys):
    # A line that is not an object, a run id that is a list, a delivery without release or a readable time.
    path = tmp_path / "odd.jsonl"
    odd = {
        "kind": "task",
        "seq": 1,
        "data": {"run": ["x"], "module": "ipm.fleet.delivery", "status": "ok", "args": {"result": "delivered"}},
        "time": "not a time",
    }
    path.write_text("[1, 2]\n" + json.dumps(odd) + "\n")
    assert main(["--log", str(path), "list"]) == 0
    assert main(["--log", str(path), "deliveries"]) == 0
    assert main(["--log", str(path), "deliveries", "--running"]) == 0
    assert main(["--log", str(path), "list", "--since", "2026-01-01"]) == 0
    out, err = capsys.readouterr()
    assert "delivered" in out and "0 record(s)" in err
