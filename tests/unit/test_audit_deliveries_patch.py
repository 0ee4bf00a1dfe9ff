"""ipm-audit deliveries --kind patch: OS patch entries (reboot_pending included) never move what a terminal runs."""

from __future__ import annotations

import json

from ansible_collections.ipm.fleet.plugins.plugin_utils import delivery_ledger
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditWriter, generate_key, load_key
from ipm_tools.audit import main


def write_log(tmp_path):
    key_file = tmp_path / "audit.key"
    generate_key(str(key_file))
    path = tmp_path / "audit.jsonl"
    with AuditWriter(str(path), key=load_key(str(key_file))) as writer:
        writer.append("run_start", {"run": "r1", "operator": "alice", "change_id": "CHG-7", "ticket_id": None})
        for ended, kind, result, release in (
            ("2026-11-27T23:30:00.000000Z", "release", "delivered", "2.4.0"),
            ("2026-11-28T23:30:00.000000Z", "patch", "reboot_pending", "2.4.0"),
            ("2026-11-29T23:30:00.000000Z", "patch", "failed", "2.3.1"),
        ):
            writer.append(
                "task",
                {
                    "run": "r1",
                    "host": "par01-t1",
                    "terminal": "PAR01-T1",
                    "customer": "acme",
                    "site": "par01",
                    "site_timezone": "Europe/Paris",
                    "task": "Record",
                    "module": "ipm.fleet.delivery",
                    "status": "ok",
                    "changed": False,
                    "ended": ended,
                    "site_time": ended,
                    "args": {"release": release, "result": result, "kind": kind, "reason": "upgraded x 1 -> 2"},
                },
            )
    return path


def test_patch_entries_by_kind_and_result(tmp_path, capsys):
    assert "patch" in delivery_ledger.KINDS and "reboot_pending" in delivery_ledger.RESULTS
    path = write_log(tmp_path)
    assert main(["--log", str(path), "deliveries", "--kind", "patch", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["result"]) for r in rows] == [("patch", "reboot_pending"), ("patch", "failed")]
    assert main(["--log", str(path), "deliveries", "--kind", "patch", "--result", "reboot_pending", "--json"]) == 0
    (pending,) = json.loads(capsys.readouterr().out)
    assert pending["reason"] == "upgraded x 1 -> 2"
    assert main(["--log", str(path), "deliveries", "--running", "--json"]) == 0
    (running,) = json.loads(capsys.readouterr().out)
    assert running["release"] == "2.4.0"
