"""ipm-audit deliveries --kind: release and parameters entries of the ledger, on a log written by the real writer."""

from __future__ import annotations

import json

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditWriter, generate_key, load_key
from ipm_tools.audit import main


def write_log(tmp_path):
    key_file = tmp_path / "audit.key"
    generate_key(str(key_file))
    path = tmp_path / "audit.jsonl"
    with AuditWriter(str(path), key=load_key(str(key_file))) as writer:
        writer.append("run_start", {"run": "r1", "operator": "alice", "change_id": "CHG-1", "ticket_id": None})
        for ended, kind, result in (
            ("2026-11-27T23:30:00.000000Z", None, "delivered"),  # written before kinds existed: a release
            ("2026-11-28T23:30:00.000000Z", "parameters", "delivered"),
            ("2026-11-28T23:31:00.000000Z", "parameters", "rolled_back"),
        ):
            args = {"release": "2.4.0", "result": result, "from_version": "2.3.1" if kind is None else "2.4.0"}
            if kind:
                args["kind"] = kind
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
                    "args": args,
                },
            )
    return path


def test_deliveries_by_kind(tmp_path, capsys):
    path = write_log(tmp_path)
    assert main(["--log", str(path), "deliveries", "--kind", "parameters", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["result"]) for r in rows] == [("parameters", "delivered"), ("parameters", "rolled_back")]
    assert main(["--log", str(path), "deliveries", "--kind", "release", "--json"]) == 0
    assert [r["kind"] for r in json.loads(capsys.readouterr().out)] == ["release"]
    assert main(["--log", str(path), "deliveries"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "parameters" in lines[1] and "release" in lines[0]
    # a parameters rollback says nothing about what the terminal runs
    assert main(["--log", str(path), "deliveries", "--running", "--json"]) == 0
    (running,) = json.loads(capsys.readouterr().out)
    assert running["release"] == "2.4.0" and running["since"] == "2026-11-27T23:30:00.000000Z"
