"""The runbook catalog (metadata checks with clear errors), ``ipm-support runbooks`` and the refusals of
``ipm-support run`` that happen before any job starts (no terminal needed: nothing is started)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from ipm_tools.support import CatalogError, RunError, TicketStore, load_catalog, run_runbook
from ipm_tools.support.cli import main
from ipm_tools.support.runbooks import REQUIRED, RUNBOOKS_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEMO = PROJECT_ROOT / "inventories" / "demo"
EXPECTED = {
    "clear_spool",
    "diagnostics",
    "health_check",
    "reapply_parameters",
    "reboot",
    "restart_app",
    "rollback_release",
}
META = {
    "purpose": "Do one thing.",
    "symptoms": ["it is broken"],
    "prerequisites": ["the terminal answers over SSH"],
    "skill": "l1",
    "maintenance_type": "corrective",
    "changes_terminal": False,
    "risk": "low",
}


def test_the_catalog_holds_every_runbook_with_valid_metadata():
    catalog = load_catalog()
    assert set(catalog) >= EXPECTED
    for name, runbook in catalog.items():
        assert runbook.path == (RUNBOOKS_DIR / f"{name}.yml").resolve()
        assert runbook.skill in ("l1", "l2") and runbook.risk in ("low", "medium", "high")
        assert runbook.purpose and runbook.symptoms and runbook.prerequisites
    assert not catalog["health_check"].changes_terminal and not catalog["diagnostics"].changes_terminal
    assert catalog["rollback_release"].risk == "high" and catalog["rollback_release"].skill == "l2"


def test_every_runbook_starts_with_the_authorization():
    for runbook in load_catalog().values():
        play = yaml.safe_load(runbook.path.read_text())[0]
        first = play["tasks"][0]
        assert first["ipm.fleet.authorize"]["action"] == f"runbook:{runbook.name}", runbook.name


def _write(directory: Path, meta, name="broken") -> Path:
    play = {"name": "A runbook", "hosts": "all", "gather_facts": False, "tasks": []}
    if meta is not None:
        play["vars"] = {"ipm_runbook": meta}
    (directory / f"{name}.yml").write_text(yaml.safe_dump([play]))
    return directory


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"skill": "l3"}, "ipm_runbook.skill: expected one of l1, l2, found 'l3' (str)"),
        ({"risk": "extreme"}, "ipm_runbook.risk: expected one of low, medium, high"),
        ({"changes_terminal": "yes"}, "ipm_runbook.changes_terminal: expected true or false, found 'yes' (str)"),
        ({"symptoms": []}, "ipm_runbook.symptoms: expected a non-empty list of sentences"),
        ({"maintenance_type": "cosmetic"}, "ipm_runbook.maintenance_type: expected one of corrective"),
        ({"purpose": ""}, "ipm_runbook.purpose: expected one sentence"),
        ({"colour": "red"}, "ipm_runbook: unknown key(s) colour"),
    ],
)
def test_bad_metadata_is_named_with_file_and_key(tmp_path, change, message):
    _write(tmp_path, {**META, **change})
    with pytest.raises(CatalogError) as error:
        load_catalog(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'broken.yml'}: ")
    assert message in str(error.value)


def test_missing_metadata_and_bad_yaml(tmp_path):
    _write(tmp_path, None)
    with pytest.raises(CatalogError, match=r"broken.yml: \[0\].vars.ipm_runbook: missing"):
        load_catalog(tmp_path)
    _write(tmp_path, {k: v for k, v in META.items() if k != "risk"})
    with pytest.raises(CatalogError, match=r"missing key\(s\) risk"):
        load_catalog(tmp_path)
    (tmp_path / "broken.yml").write_text("- name: [unclosed\n")
    with pytest.raises(CatalogError, match=r"broken.yml: line \d+: not valid YAML"):
        load_catalog(tmp_path)
    (tmp_path / "broken.yml").unlink()
    with pytest.raises(CatalogError, match="no runbook"):
        load_catalog(tmp_path)
    assert set(REQUIRED) == set(META)


def test_runbooks_command_lists_searches_and_shows(capsys):
    assert main(["runbooks"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in EXPECTED)
    assert main(["runbooks", "--search", "PRINTER", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [rb["name"] for rb in found] == ["clear_spool"]
    assert main(["runbooks", "show", "reboot"]) == 0
    shown = capsys.readouterr().out
    assert "skill l2" in shown and "justification" in shown and "ipm-support run reboot" in shown
    assert main(["runbooks", "show", "nope"]) == 2
    assert "unknown runbook 'nope': known runbooks are clear_spool" in capsys.readouterr().err


@pytest.fixture
def store(tmp_path):
    store = TicketStore(tmp_path / "support", registry=DEMO)
    store.open_error("parkcite", "major", "frozen", "Jean", terminal="fr-pgl-001", actor="desk")  # INC-1
    store.open_error("metro-transit", "minor", "slow", "Ann", terminal="us-nyp-001", actor="desk")  # INC-2
    return store


@pytest.mark.parametrize(
    ("runbook", "terminal", "ticket", "message"),
    [
        ("nope", "fr-pgl-001", "INC-1", "unknown runbook 'nope'"),
        ("health_check", "xx-000", "INC-1", "unknown terminal 'xx-000': not in the registry"),
        ("health_check", "fr-pgl-001", "INC-99", "INC-99"),
        ("health_check", "us-nyp-001", "INC-1", "ticket INC-1 is customer parkcite's, terminal us-nyp-001 is customer"),
    ],
)
def test_run_refuses_bad_input_before_starting_anything(store, capsys, runbook, terminal, ticket, message):
    with pytest.raises(RunError, match=re.escape(message)):
        run_runbook(runbook, terminal, ticket, support_dir=store.support_dir, inventory=DEMO)
    argv = ["--support-dir", str(store.support_dir), "--registry", str(DEMO), "run", runbook]
    assert main([*argv, "--terminal", terminal, "--ticket", ticket]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipm-support: error: ") and message in err and err.count("\n") == 1
    assert not list((store.support_dir / "tickets").glob("*/jobs/*"))  # nothing started
    assert [e.kind for e in store.events("INC-1")] == ["opened"]


def test_run_refuses_an_inventory_that_is_no_registry(store, tmp_path):
    with pytest.raises(RunError, match=r"no ipm\.fleet\.registry configuration"):
        run_runbook("health_check", "fr-pgl-001", "INC-1", support_dir=store.support_dir, inventory=tmp_path)


def test_run_denied_by_the_policy_is_recorded_and_starts_nothing(store, tmp_path, monkeypatch, capsys):
    from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import iter_records

    log = tmp_path / "audit" / "audit.jsonl"
    monkeypatch.setenv("IPM_AUDIT_LOG", str(log))
    monkeypatch.setenv("IPM_AUDIT_KEY_FILE", str(tmp_path / "audit.key"))
    monkeypatch.delenv("IPM_POLICY_FILE", raising=False)
    # Claiming someone else's identity without being a service account of the policy: denied.
    argv = ["--support-dir", str(store.support_dir), "--registry", str(DEMO), "run", "reboot"]
    assert main([*argv, "--terminal", "fr-pgl-001", "--ticket", "INC-1", "--operator", "partner-andes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipm-support: error: DENIED: ") and "may not run runbook reboot on fr-pgl-001" in err
    denied = [r["data"] for _n, r in iter_records(str(log)) if r["kind"] == "authorization_denied"]
    assert [(d["ticket_id"], d["action"], d["terminals"]) for d in denied] == [
        ("INC-1", "runbook:reboot", ["fr-pgl-001"])
    ]
    assert not list((store.support_dir / "tickets").glob("*/jobs/*"))
    assert [e.kind for e in store.events("INC-1")] == ["opened"]


def test_outcome_of_a_job_from_its_events(tmp_path):
    from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_redact import Redactor
    from ipm_tools.support.runner import _Job, _outcome

    def job(*events):
        collected = _Job("INC-1-x", tmp_path / "artifacts", Redactor(), None, 0.0)
        for counter, (name, data) in enumerate(events, 1):
            assert (
                collected.handle({"event": name, "counter": counter, "uuid": f"u{counter}", "event_data": data})
                is False
            )
        collected.close()
        return collected

    task = {"task": "Restart ipm-app", "host": "t1", "res": {"msg": "boom", "password": "hunter2-secret"}}
    assert _outcome(job(("runner_on_ok", task)), "t1", -9)[0] == "killed"
    failed = job(("runner_on_failed", task), ("playbook_on_stats", {"failures": {"t1": 1}, "dark": {}}))
    assert _outcome(failed, "t1", 2) == ("failed", "Restart ipm-app: boom")
    dark = job(("runner_on_unreachable", task), ("playbook_on_stats", {"failures": {}, "dark": {"t1": 1}}))
    assert _outcome(dark, "t1", 4) == ("unreachable", "t1 did not answer: boom")
    ok = job(("runner_on_ok", task), ("playbook_on_stats", {"failures": {}, "dark": {}}))
    assert _outcome(ok, "t1", 0) == ("successful", "")
    written = "".join(p.read_text() for p in (tmp_path / "artifacts" / "job_events").glob("*.json"))
    assert "hunter2-secret" not in written and "********" in written  # events are written redacted


@pytest.mark.parametrize(
    ("playbook", "limit", "rc", "error"),
    [
        ("- hosts: all\n  gather_facts: false\n  tasks:\n    - ping:\n", "no-such-terminal", 1, "no hosts to target"),
        ("- hosts: all\n  tasks:\n    - ping: [\n", "t1", 4, "YAML parsing failed"),
    ],
)
def test_a_playbook_that_stops_before_its_first_task_failed_and_was_not_killed(tmp_path, playbook, limit, rc, error):
    """A real ansible-runner job: ansible-playbook's own error line is the outcome, not "killed"."""
    import ansible_runner

    from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_redact import Redactor
    from ipm_tools.support.runner import _Job, _outcome

    (tmp_path / "book.yml").write_text(playbook)
    (tmp_path / "inventory").write_text("t1 ansible_connection=local\n")
    (tmp_path / "job").mkdir()
    job = _Job("INC-1-x", tmp_path / "job" / "artifacts" / "INC-1-x", Redactor(), None, 0.0)
    runner = ansible_runner.run(
        private_data_dir=str(tmp_path / "job"),
        ident="INC-1-x",
        playbook=str(tmp_path / "book.yml"),
        inventory=str(tmp_path / "inventory"),
        limit=limit,
        envvars={
            "ANSIBLE_NOCOLOR": "1",
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ["PATH"])),
        },
        event_handler=job.handle,
        suppress_output_file=True,
        quiet=True,
    )
    job.close()
    assert runner.rc == rc and job.stats is None and job.first_task_s is None
    status, message = _outcome(job, "t1", runner.rc)
    assert status == "failed", message
    assert message.startswith(f"ansible-playbook stopped before its first task (exit {rc}): [ERROR]")
    assert error in message and "\x1b" not in message


def test_old_job_folders_are_pruned(tmp_path):
    from ipm_tools.support.runner import _prune

    jobs = tmp_path / "jobs"
    for n in range(6):
        (jobs / f"INC-1-2026120{n}T000000000000Z").mkdir(parents=True)
    current = jobs / "INC-1-20261209T000000000000Z"
    current.mkdir()
    _prune(jobs, 3, current)
    assert sorted(p.name for p in jobs.iterdir()) == [
        "INC-1-20261204T000000000000Z",
        "INC-1-20261205T000000000000Z",
        "INC-1-20261209T000000000000Z",
    ]
