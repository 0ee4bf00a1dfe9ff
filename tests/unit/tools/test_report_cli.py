"""ipm-report on real audit logs (AuditWriter), the demo registry, a real history store and ticket store."""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
import sys
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import config_history
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import generate_key, load_key
from ipm_tools import PROJECT_ROOT
from ipm_tools.report.cli import main

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: the shared log writer
from report_log import write_log

UTC = datetime.UTC
REGISTRY = str(PROJECT_ROOT / "registry" / "demo")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("report-cli")
    key_file = base / "audit.key"
    generate_key(str(key_file))
    log = base / "audit.jsonl"
    expected = write_log(
        str(log),
        load_key(str(key_file)),
        start=datetime.datetime(2027, 1, 4, 6, tzinfo=UTC),
        runs=12,
        terminals_per_run=2,
    )
    history = base / "history"
    # fr-pgl-001 (parkcite, paris-gare-de-lyon) as of January: the registry's release, one parameter off.
    config_history.write_snapshot(
        str(history),
        "fr-pgl-001",
        {
            "application": {"current": "2.3.1"},
            "parameters": {"values": {"idle_timeout_s": 30}},
            "os": {"id": "debian-12"},
        },
        taken_at="2027-01-10T10:00:00+00:00",
    )
    return {"base": base, "log": str(log), "key": str(key_file), "history": str(history), "expected": expected}


def run(env, *argv, capsys=None):
    common = ["--log", env["log"], "--key-file", env["key"], "--registry", REGISTRY, "--history", env["history"]]
    code = main([argv[0], *common, *argv[1:]])
    return code


def test_maintenance_json_counts(env, capsys):
    assert run(env, "maintenance", "--customer", "parkcite", "--period", "2027-01", "--format", "json") == 0
    payload = json.loads(capsys.readouterr().out)
    expected = env["expected"]["parkcite"]
    assert payload["language"] == "fr"  # parkcite's first language
    assert payload["status"]["ok"] is True
    assert len(payload["tables"]["deliveries"]["rows"]) == expected["release"]
    assert len(payload["tables"]["backups"]["rows"]) == expected["backups"]
    drift = {row["site"]: row for row in payload["tables"]["drift"]["rows"]}
    assert drift["paris-gare-de-lyon"]["drifted"] == 1
    assert sum(row["no_snapshot"] for row in drift.values()) == sum(row["terminals"] for row in drift.values()) - 1


def test_maintenance_csv_has_every_table(env, capsys):
    assert run(env, "maintenance", "--customer", "parkcite", "--period", "2027-01", "--format", "csv") == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    tables = {row[0] for row in rows if row[0] != "table"}
    assert {"deliveries", "parameter_changes", "patches", "backups", "drift", "effort"} <= tables
    assert sum(1 for row in rows if row[0] == "deliveries") == env["expected"]["parkcite"]["release"]


def test_no_support_directory_is_said(env, capsys, tmp_path):
    assert run(env, "maintenance", "--customer", "harbour-parking", "--period", "2027-01", "--lang", "en") == 0
    page = capsys.readouterr().out
    assert "No support data directory: incidents and SLA are not reported." in page
    assert page.count("<svg") == 2  # deliveries per week, drift by site
    for fetch in ("<script", "<link", "<img", "src=", 'href="http', "@import"):
        assert fetch not in page  # self-contained: nothing to load
    assert not re.search(r"url\((?!#)", page)  # only references inside the page


def test_incidents_from_the_ticket_store(env, capsys, tmp_path):
    tickets = pytest.importorskip("ipm_tools.support.tickets")
    pytest.importorskip("ipm_tools.support.sla")
    moment = {"now": datetime.datetime(2027, 1, 14, 6, 0, tzinfo=UTC)}  # Thu 17:00 in Sydney
    store = tickets.TicketStore(
        tmp_path / "support", registry=str(PROJECT_ROOT / "inventories" / "demo"), clock=lambda: moment["now"]
    )
    store.open_error(
        customer="harbour-parking", terminal="au-sdh-001", severity="critical", symptoms="card reader dead",
        contact="Olivia Nguyen", actor="lena",
    )  # fmt: skip
    moment["now"] = datetime.datetime(2027, 1, 20, 0, 0, tzinfo=UTC)
    store.resolve("INC-1", "lena", "reader replaced")
    code = run(
        env, "maintenance", "--customer", "harbour-parking", "--period", "2027-01", "--format", "json",
        "--support-dir", str(tmp_path / "support"),
    )  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)["tables"]["incidents"]["rows"]
    assert [(r["ticket"], r["terminal"], r["sla"]) for r in rows] == [("INC-1", "au-sdh-001", "breached")]


def test_audit_report_of_a_tampered_log_says_so_first(env, capsys, tmp_path):
    bad = tmp_path / "audit.jsonl"
    data = Path(env["log"]).read_bytes().replace(b'"operator":"op1"', b'"operator":"op9"', 1)
    bad.write_bytes(data)
    Path(str(bad) + ".head").write_bytes(Path(env["log"] + ".head").read_bytes())
    code = main(["audit", "--log", str(bad), "--key-file", env["key"], "--period", "2027-01", "--lang", "es"])
    captured = capsys.readouterr()
    assert code == 1
    assert "FAILED verification" in captured.err
    status = captured.out.index('id="status"')
    assert "FALLÓ LA VERIFICACIÓN DEL REGISTRO DE AUDITORÍA" in captured.out[status : status + 400]
    assert status < captured.out.index("<section")
    assert "record altered" in captured.out


def test_site_report_as_of_a_date(env, capsys):
    assert (
        run(env, "site", "--site", "paris-gare-de-lyon", "--date", "2027-01-31", "--format", "json", "--lang", "de")
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    terminals = {row["terminal"]: row for row in payload["tables"]["terminals"]["rows"]}
    assert terminals["fr-pgl-001"]["release"] == "2.3.1"
    assert payload["tables"]["parameters"]["rows"] == [
        {"terminal": "fr-pgl-001", "parameter": "idle_timeout_s", "value": 30}
    ]
    assert run(env, "site", "--site", "paris-gare-de-lyon", "--date", "2027-01-09", "--format", "json") == 0
    payload = json.loads(capsys.readouterr().out)
    assert all(row["snapshot"] is None for row in payload["tables"]["terminals"]["rows"])


def test_progress_only_when_asked(env, capsys, tmp_path):
    out = tmp_path / "r.html"
    assert run(env, "audit", "--period", "2027-01", "-o", str(out)) == 0
    assert "ipm-report: reading" not in capsys.readouterr().err and "verifying" not in capsys.readouterr().err
    assert run(env, "audit", "--period", "2027-01", "-o", str(out), "--progress") == 0
    assert "ipm-report: done" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["maintenance", "--customer", "parkcite", "--period", "2027-13"],
            "--period: period '2027-13': expected a month",
        ),
        (["maintenance", "--customer", "nobody", "--period", "2027-01"], "--customer 'nobody': not in the registry"),
        (["audit", "--period", "2027-01", "--lang", "ja"], "--lang 'ja': no report catalog for it"),
        (["site", "--site", "atlantis"], "--site 'atlantis': no such site"),
    ],
)
def test_bad_input_one_line(env, capsys, argv, message):
    assert run(env, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_log(env, capsys, tmp_path):
    assert main(["audit", "--log", str(tmp_path / "none.jsonl"), "--period", "2027-01"]) == 2
    assert "no audit log there" in capsys.readouterr().err


def test_pdf_of_the_same_document(env, capsys, tmp_path):
    out = tmp_path / "report.pdf"
    assert (
        run(env, "maintenance", "--customer", "parkcite", "--period", "2027-01", "--format", "pdf", "-o", str(out)) == 0
    )
    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pages = re.search(rb"/Type /Pages\s*/Kids \[[^\]]*\]\s*/Count (\d+)", data) or re.search(rb"/Count (\d+)", data)
    assert pages is not None and int(pages.group(1)) >= 2  # eight sections with tables and charts
    capsys.readouterr()
    assert run(env, "audit", "--period", "2027-01", "--format", "pdf") == 2
    assert "--format pdf: give the file to write with --output FILE.pdf" in capsys.readouterr().err
