"""ipm-support ticket ...: the commands on a real ticket store and the demo registry; exit codes, one-line
errors, the OS user as actor, UTC and site time in the output."""

from __future__ import annotations

import datetime
import getpass
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ipm_tools import PROJECT_ROOT
from ipm_tools.support.cli import main
from ipm_tools.support.tickets import TicketStore

REGISTRY = str(PROJECT_ROOT / "inventories" / "demo")


@pytest.fixture
def run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("IPM_SUPPORT_DIR", raising=False)
    support = tmp_path / "support"

    def run(*argv):
        code = main(["--support-dir", str(support), "--registry", REGISTRY, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    run.support = support
    return run


def _open(run, *extra):
    return run(
        "ticket",
        "new",
        "error",
        "--customer",
        "parkcite",
        "--terminal",
        "fr-pgl-001",
        "--severity",
        "critical",
        "--symptoms",
        "barrier stays closed",
        "--contact",
        "Julien Petit",
        *extra,
    )


def test_open_show_and_move_a_ticket(run):
    code, out, err = _open(run)
    assert (code, err) == (0, "")
    assert out.startswith("INC-1: opened (error report, critical, parkcite / fr-pgl-001 at paris-gare-de-lyon")
    assert "Europe/Paris" in out
    assert run("ticket", "comment", "INC-1", "on my way", "--first-response")[0] == 0
    assert run("ticket", "wait", "INC-1", "--reason", "site closed until 14:00")[0] == 0
    code, out, _ = run("ticket", "list", "--status", "waiting")
    assert code == 0 and "INC-1" in out and "waiting" in out
    assert run("ticket", "resume", "INC-1", "--comment", "site open")[0] == 0
    code, out, _ = run("ticket", "close", "INC-1", "--resolution", "motor fuse replaced")
    assert code == 0 and out.startswith("INC-1: closed (event 6)")
    code, out, _ = run("ticket", "show", "INC-1")
    assert code == 0
    assert "status: closed" in out and "motor fuse replaced" in out
    for kind in ("opened", "first_response", "waiting", "resumed", "resolved", "closed"):
        assert f"  {kind}" in out
    assert f"by {getpass.getuser()}" in out  # the OS user, never an option


def test_show_json_gives_utc_and_site_time_of_each_event(run):
    _open(run)
    code, out, _ = run("ticket", "show", "INC-1", "--json")
    document = json.loads(out)
    assert code == 0 and document["id"] == "INC-1" and document["timezone"] == "Europe/Paris"
    event = document["events"][0]
    assert event["kind"] == "opened" and event["actor"] == getpass.getuser()
    assert event["at_utc"].endswith("Z") and event["at_site"][-6:] in ("+01:00", "+02:00")
    assert document["opened_site"] == event["at_site"]


def test_request_form_and_list_filters(run):
    _open(run)
    code, out, _ = run(
        "ticket", "new", "request", "--customer", "andes-parking", "--description", "QR payments", "--contact", "C"
    )
    assert code == 0 and out.startswith("REQ-1: opened (feature request, evolutive, andes-parking, language es)")
    code, out, _ = run("ticket", "list", "--customer", "andes-parking", "--json")
    assert [t["id"] for t in json.loads(out)] == ["REQ-1"]
    code, out, _ = run("ticket", "list", "--customer", "nobody")
    assert (code, out) == (0, "no tickets match\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("ticket", "show", "INC-9"), "ticket INC-9: unknown in"),
        (("ticket", "close", "INC-9", "--resolution", "x"), "ticket INC-9: unknown in"),
        (("ticket", "resume", "INC-1"), "ticket INC-1 is not waiting (it is open)"),
        (("ticket", "show", "bogus"), "ticket id 'bogus': expected INC-<n>"),
        (("ticket", "list", "--status", "done"), "status 'done': expected one of open, waiting, resolved, closed"),
        (("ticket", "comment", "INC-1", "a\x1bb"), "comment: control character '\\x1b'"),
    ],
)
def test_mistakes_are_one_line_and_exit_2(run, argv, message):
    _open(run)
    code, out, err = run(*argv)
    assert code == 2 and out == ""
    assert err.startswith("ipm-support: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_unknown_customer_and_terminal_of_another_customer(run):
    code, _, err = _open(run, "--language", "de")
    assert code == 0
    code, _, err = run(
        "ticket", "new", "error", "--customer", "harbour-parking", "--terminal", "fr-pgl-001", "--severity", "minor",
        "--symptoms", "s", "--contact", "c",
    )  # fmt: skip
    assert code == 2 and "belongs to another customer" in err
    code, _, err = run(
        "ticket", "new", "request", "--customer", "acme", "--description", "d", "--contact", "c"
    )  # fmt: skip
    assert code == 2 and "customer 'acme': not in the registry" in err
    assert [t.id for t in TicketStore(run.support, registry=REGISTRY).list()] == ["INC-1"]


def test_a_corrupt_store_is_one_line_exit_1_and_untouched(run):
    run.support.mkdir()
    (run.support / "tickets.sqlite").write_bytes(b"\x00garbage" * 100)
    code, out, err = run("ticket", "list")
    assert code == 1 and out == "" and "not a usable ticket database" in err and err.count("\n") == 1
    assert (run.support / "tickets.sqlite").read_bytes() == b"\x00garbage" * 100


def test_site_and_terminal_are_exclusive_and_required(run):
    with pytest.raises(SystemExit) as caught:
        run(
            "ticket",
            "new",
            "error",
            "--customer",
            "parkcite",
            "--severity",
            "minor",
            "--symptoms",
            "s",
            "--contact",
            "c",
        )
    assert caught.value.code == 2


def test_the_console_script_has_help_everywhere(tmp_path):
    script = Path(sys.executable).parent / "ipm-support"
    for argv in ([], ["ticket"], ["ticket", "new"], ["ticket", "new", "error"], ["ticket", "close"]):
        result = subprocess.run([str(script), *argv, "--help"], capture_output=True, text=True, check=False)
        assert result.returncode == 0 and result.stdout.startswith("usage: ipm-support"), (argv, result.stderr)
    result = subprocess.run(
        [str(script), "--support-dir", str(tmp_path), "ticket", "show", "INC-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and result.stderr.startswith("ipm-support: error: ticket INC-1: unknown")


def test_show_prints_utc_and_site_time_on_both_sides_of_a_dst_change(run):
    moments = iter(
        datetime.datetime(2027, 10, 31, hour, 30, tzinfo=datetime.UTC) for hour in (0, 1, 2)
    )  # Europe/Paris goes back from +02:00 to +01:00 at 01:00 UTC on 31 October 2027
    store = TicketStore(run.support, registry=REGISTRY, clock=lambda: next(moments))
    ticket = store.open_error("parkcite", "minor", "ticket printer faint", "Claire", terminal="fr-pgl-001", actor="a")
    store.comment(ticket.id, "a", "before the change", first_response=True)
    store.comment(ticket.id, "a", "after the change")
    code, out, _ = run("ticket", "show", ticket.id)
    assert code == 0
    assert "2027-10-31 00:30:00Z | 2027-10-31 02:30:00+02:00  opened" in out
    assert "2027-10-31 01:30:00Z | 2027-10-31 02:30:00+01:00  first_response" in out  # the same wall clock
    assert "2027-10-31 02:30:00Z | 2027-10-31 03:30:00+01:00  comment" in out
