"""ipm-support, ipm-change and the policy against hostile input and faults, as a first-day user and an attacker.

Every case is one clear line on stderr, the right exit code, never a traceback, and nothing lost or
half-written. Real SQLite files, the demo registry, real processes (a job's ipm-support is a real child
process holding the job's lock and killed with SIGKILL; a full disk is a real write limit, RLIMIT_FSIZE);
no root, no terminals.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import authz
from ipm_tools import PROJECT_ROOT
from ipm_tools.support import jobs
from ipm_tools.support.cli import build_parser, main
from ipm_tools.support.tickets import TicketStore

REGISTRY = str(PROJECT_ROOT / "inventories" / "demo")
BIN = Path(sys.executable).parent
CHILD_ENV = {"PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "collections"), str(PROJECT_ROOT / "tools")])}


@pytest.fixture
def run(tmp_path, capsys, monkeypatch):
    for name in ("IPM_SUPPORT_DIR", "IPM_SUPPORT_LOCK_TIMEOUT", "IPM_SUPPORT_KEEP_JOBS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IPM_AUDIT_LOG", str(tmp_path / "audit" / "audit.jsonl"))
    monkeypatch.setenv("IPM_AUDIT_KEY_FILE", str(tmp_path / "audit.key"))
    support = tmp_path / "support"

    def run(*argv, support_dir=None):
        code = main(["--support-dir", str(support_dir or support), "--registry", REGISTRY, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    run.support = support
    run.store = TicketStore(support, registry=REGISTRY)
    return run


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("ipm-support: error: "), err
    return err


def open_ticket(run, **changes) -> str:
    form = {"customer": "parkcite", "severity": "major", "symptoms": "barrier stuck", "contact": "Julien"}
    form.update(changes)
    argv = ["ticket", "new", "error", "--terminal", "fr-pgl-001", "--json"]
    for key, value in form.items():
        argv += [f"--{key}", value]
    code, out, err = run(*argv)
    assert (code, err) == (0, ""), err
    return json.loads(out)["id"]


# -- arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ticket",
    ["../x", "INC-0", "INC-99999999999999999999", "", "INC-1\nINC-2", "INC-1; DROP TABLE tickets", "INC-\u0661"],
)
@pytest.mark.parametrize("action", ["show", "comment"])
def test_bad_ticket_ids_are_one_line(run, ticket, action):
    open_ticket(run)
    argv = ["ticket", action, ticket, *(["hi"] if action == "comment" else [])]
    code, _out, err = run(*argv)
    assert code == 2
    assert "expected INC-<n>" in one_line(err)
    assert [t.id for t in run.store.list()] == ["INC-1"]  # nothing else happened


def test_unknown_but_well_formed_ticket(run):
    open_ticket(run)
    code, _out, err = run("ticket", "show", "INC-2")
    assert code == 2 and "ticket INC-2: unknown" in one_line(err)
    code, _out, err = run("jobs", "REQ-7")
    assert code == 2 and "ticket REQ-7: unknown" in one_line(err)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"customer": "../etc"}, "customer '../etc': not in the registry"),
        ({"customer": "park/cite"}, "customer 'park/cite': not in the registry"),
        ({"customer": "x' OR '1'='1"}, "not in the registry"),
        ({"symptoms": ""}, "symptoms: expected some text"),
        ({"symptoms": "a\x00b"}, "symptoms: control character '\\x00'"),
        ({"symptoms": "a\x1b[31mred"}, "symptoms: control character '\\x1b'"),
        ({"symptoms": "x" * 10_001}, "symptoms: 10001 characters, at most 10000"),
        ({"contact": "Julien\nEvil: yes"}, "contact: control character '\\n'"),
        ({"severity": "CRITICAL!"}, "severity 'CRITICAL!': expected one of"),
        ({"language": "xx"}, "language 'xx': expected an ISO 639-1 code"),
    ],
)
def test_hostile_forms_are_refused_whole(run, changes, message):
    form = {"customer": "parkcite", "severity": "major", "symptoms": "s", "contact": "c", **changes}
    argv = ["ticket", "new", "error", "--terminal", "fr-pgl-001"]
    for key, value in form.items():
        argv += [f"--{key}", value]
    code, _out, err = run(*argv)
    assert code == 2 and message in one_line(err)
    assert run.store.list() == []


def test_unicode_and_sql_text_is_kept_as_given(run):
    text = "caisse bloquée 🚫 ; DROP TABLE tickets; -- 'quoted' \"double\" 中文"
    ticket = open_ticket(run, symptoms=text)
    assert run("ticket", "comment", ticket, text)[0] == 0
    code, out, _err = run("ticket", "show", ticket, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["summary"] == text and shown["events"][-1]["text"] == text
    code, out, _err = run("ticket", "list", "--customer", "x' OR '1'='1")
    assert (code, out) == (0, "no tickets match\n")  # a parameter, never SQL


def test_site_path_traversal_is_not_a_site(run):
    code, _out, err = run(
        "ticket", "new", "error", "--customer", "parkcite", "--site", "../paris-gare-de-lyon",
        "--severity", "minor", "--symptoms", "s", "--contact", "c",
    )  # fmt: skip
    assert code == 2 and "site '../paris-gare-de-lyon': not a site of customer parkcite" in one_line(err)


def test_every_time_shown_is_utc_and_site_time(run):
    ticket = open_ticket(run)
    _code, out, _err = run("ticket", "show", ticket)
    opened = next(line for line in out.splitlines() if line.strip().startswith("opened:"))
    assert "Z (site " in opened and "Europe/Paris" in opened
    event = next(line for line in out.splitlines() if " opened " in line and "|" in line)
    assert "Z |" in event and ("+01:00" in event or "+02:00" in event)
    _code, out, _err = run("ticket", "list")
    assert "OPENED (UTC)" in out and "OPENED (SITE)" in out
    row = out.splitlines()[1]
    assert "Z " in row and ("+01:00" in row or "+02:00" in row)
    document = json.loads(run("ticket", "show", ticket, "--json")[1])
    assert document["opened_utc"].endswith("Z") and document["opened_site"][-6:] in ("+01:00", "+02:00")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--month", "2027-13"], "--month '2027-13': expected YYYY-MM"),
        (["--month", ""], "--month '': expected YYYY-MM"),
        (["--month", "2027-1"], "--month '2027-1': expected YYYY-MM"),
        (["--month", "../x"], "--month '../x': expected YYYY-MM"),
        (["--customer", "a/b"], "customer 'a/b': not in the registry"),
        (["--ticket", "../x"], "expected INC-<n>"),
        (["--now", "yesterday"], "--now 'yesterday': expected an ISO 8601 instant"),
        (["--now", "2027-01-15T12:00"], "give the UTC offset"),
    ],
)
def test_sla_bad_input(run, argv, message):
    open_ticket(run)
    code, _out, err = run("sla", *argv)
    assert code == 2 and message in one_line(err)


def test_sla_of_a_month_in_the_future_says_so(run):
    open_ticket(run)
    code, out, err = run("sla", "--month", "2999-01")
    assert (code, err) == (0, "")
    assert "no error reports match (--month 2999-01 is in the future" in out


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--keep-jobs", "0"], {}, "--keep-jobs 0: expected a whole number of job folders to keep, 1 or more"),
        (["--keep-jobs", "-3"], {}, "--keep-jobs -3: expected a whole number"),
        ([], {"IPM_SUPPORT_KEEP_JOBS": "lots"}, "IPM_SUPPORT_KEEP_JOBS 'lots': expected a whole number"),
    ],
)
def test_run_keep_jobs_is_checked_before_anything(run, monkeypatch, argv, env, message):
    ticket = open_ticket(run)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, _out, err = run("run", "health_check", "--terminal", "fr-pgl-001", "--ticket", ticket, *argv)
    assert code == 2 and message in one_line(err)
    assert not (run.support / "tickets" / ticket / "jobs").exists()


@pytest.mark.parametrize(
    ("runbook", "terminal", "ticket", "message"),
    [
        ("../../etc/passwd", "fr-pgl-001", "INC-1", "unknown runbook '../../etc/passwd'"),
        ("health_check", "../fr-pgl-001", "INC-1", "unknown terminal '../fr-pgl-001'"),
        ("health_check", "fr-pgl-001", "../INC-1", "expected INC-<n>"),
        ("health_check", "fr-pgl-001", "INC-99", "ticket INC-99: unknown"),
        ("health_check", "au-sdh-001", "INC-1", "customer parkcite's, terminal au-sdh-001 is customer"),
    ],
)
def test_run_bad_input_starts_nothing(run, runbook, terminal, ticket, message):
    open_ticket(run)
    code, _out, err = run("run", runbook, "--terminal", terminal, "--ticket", ticket)
    assert code == 2 and message in one_line(err)
    assert not (run.support / "tickets").exists() or not list((run.support / "tickets").rglob("job.json"))


def _commands(parser, prefix=()):
    yield prefix
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield from _commands(sub, (*prefix, name))


def test_help_of_every_subcommand(capsys):
    commands = list(_commands(build_parser()))
    assert ("ticket", "new", "error") in commands and ("jobs",) in commands and ("runbooks", "show") in commands
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*command, "--help"])
        out, err = capsys.readouterr()
        assert exited.value.code == 0 and out.startswith("usage: ipm-support") and err == "", command


# -- the store: corrupt, foreign, full, locked, not a directory -------------------------------------


def _corrupt_random(path: Path):
    path.write_bytes(os.urandom(8192))


def _corrupt_truncated(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _corrupt_foreign(path: Path):
    path.unlink()
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    connection.commit()
    connection.close()


def _corrupt_foreign_versioned(path: Path):
    path.unlink()
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE invoices (id INTEGER)")
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()


def _corrupt_newer(path: Path):
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.commit()
    connection.close()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (_corrupt_random, "not a usable ticket database"),
        (_corrupt_truncated, "tickets.sqlite"),
        (_corrupt_foreign, "an SQLite file holding other tables, not a ticket database"),
        (_corrupt_foreign_versioned, "not this tool's ticket database"),
        (_corrupt_newer, "schema version 99 is newer than this tool's"),
    ],
)
def test_an_unusable_store_is_one_line_and_left_as_it_is(run, corrupt, message):
    ticket = open_ticket(run)
    database = run.support / "tickets.sqlite"
    TicketStore(run.support, registry=REGISTRY)._read("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt(database)
    before = database.read_bytes()
    for argv in (
        ["ticket", "list"],
        ["ticket", "show", ticket],
        ["ticket", "comment", ticket, "hello"],
        ["sla"],
        ["jobs"],
        ["ticket", "new", "request", "--customer", "parkcite", "--description", "d", "--contact", "c"],
    ):
        code, _out, err = run(*argv)
        assert code == 1, (argv, err)
        assert message in one_line(err), argv
    assert database.read_bytes() == before


def test_support_dir_that_is_a_file(run, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    for support_dir in (blocker, blocker / "below"):
        code, _out, err = run(
            "ticket", "new", "request", "--customer", "parkcite", "--description", "d", "--contact", "c",
            support_dir=support_dir,
        )  # fmt: skip
        assert code == 1 and "support dir" in one_line(err) and str(blocker.name) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere: a read-only dir needs an ordinary user")
def test_read_only_support_dir(run):
    ticket = open_ticket(run)
    run.support.chmod(0o500)
    try:
        code, _out, err = run("ticket", "comment", ticket, "hello")
        assert code == 1 and "writable" in one_line(err)
        assert run("ticket", "show", ticket)[0] == 0
    finally:
        run.support.chmod(0o700)


def _limited(size):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


def test_full_disk_loses_nothing(run, tmp_path):
    """A file system that takes no more bytes (a real write limit on the process): one line, the store intact."""
    ticket = open_ticket(run)
    env = dict(os.environ, IPM_AUDIT_LOG=str(tmp_path / "a.jsonl"))
    argv = [str(BIN / "ipm-support"), "--support-dir", str(run.support), "--registry", REGISTRY]
    for command in (
        ["ticket", "new", "request", "--customer", "parkcite", "--description", "y" * 9000, "--contact", "c"],
        ["ticket", "comment", ticket, "z" * 9000],
    ):
        result = subprocess.run(
            [*argv, *command], capture_output=True, text=True, env=env, preexec_fn=_limited(4096), timeout=120
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert "free space" in one_line(result.stderr)
    assert [t.id for t in run.store.list()] == [ticket]
    assert [e.kind for e in run.store.events(ticket)] == ["opened"]
    fresh = tmp_path / "fresh-support"
    result = subprocess.run(
        [str(BIN / "ipm-support"), "--support-dir", str(fresh), "--registry", REGISTRY, "ticket", "list"],
        capture_output=True, text=True, env=env, preexec_fn=_limited(0), timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == "no tickets yet\n"  # reading needs no space


def test_store_locked_by_another_writer_for_long(run, monkeypatch):
    ticket = open_ticket(run)
    holder = sqlite3.connect(run.support / "tickets.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        monkeypatch.setenv("IPM_SUPPORT_LOCK_TIMEOUT", "0.5")
        started = time.monotonic()
        code, _out, err = run("ticket", "comment", ticket, "hello")
        assert time.monotonic() - started < 20
        assert code == 1 and "locked" in one_line(err) and "IPM_SUPPORT_LOCK_TIMEOUT" in err
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [e.kind for e in run.store.events(ticket)] == ["opened"]  # all or nothing
    monkeypatch.setenv("IPM_SUPPORT_LOCK_TIMEOUT", "soon")
    code, _out, err = run("ticket", "list")
    assert code == 1 and "IPM_SUPPORT_LOCK_TIMEOUT 'soon': expected seconds" in one_line(err)


# -- a job whose ipm-support died ------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ipm_tools.support import jobs
    from ipm_tools.support.tickets import TicketStore
    support, registry, ticket, ident = sys.argv[1:5]
    store = TicketStore(support, registry=registry)
    job_dir = store.folder(ticket) / "jobs" / ident
    job_dir.mkdir(parents=True)
    lock = jobs.hold(job_dir)
    import os
    info = {"ident": ident, "runbook": "health_check", "terminal": "fr-pgl-001", "ticket_id": ticket,
            "operator": "alice", "started_utc": "2026-12-01T10:00:00.000000Z", "status": "running",
            "pid": os.getpid(), "pid_start": jobs.process_start(os.getpid())}
    jobs.write_info(job_dir, info)
    store.note(ticket, "alice", "runbook health_check started on fr-pgl-001", kind="job_started",
               data={"ident": ident})
    events = job_dir / "artifacts" / ident / "job_events"
    events.mkdir(parents=True)
    (events / "1-a.json").write_text('{"event": "playbook_on_task_start", "event_data": {"task": "Restart"}}')
    (events / "2-b.json").write_text('{"event": "runner_on_ok", "event_data": {"task": "Restart"}}')
    print("ready", flush=True)
    time.sleep(600)
    """
)


def _start_holder(run, ticket, ident="INC-1-20261201T100000000000Z"):
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run.support), REGISTRY, ticket, ident],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, **CHILD_ENV),
    )  # fmt: skip
    assert child.stdout.readline().strip() == "ready"
    return child, run.support / "tickets" / ticket / "jobs" / ident


def test_a_killed_job_process_is_found_interrupted_and_noted_once(run):
    ticket = open_ticket(run)
    child, job_dir = _start_holder(run, ticket)
    try:
        code, out, _err = run("jobs", ticket, "--json")
        assert code == 0 and [j["status"] for j in json.loads(out)] == ["running"]  # its process lives
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert json.loads((job_dir / "job.json").read_text())["status"] == "running"  # nobody wrote the end
    # Several readers at once (separate processes): one note, one interrupted job.json.
    readers = [
        subprocess.Popen(
            [str(BIN / "ipm-support"), "--support-dir", str(run.support), "--registry", REGISTRY, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in (["jobs"], ["ticket", "show", ticket], ["jobs", ticket], ["ticket", "show", ticket, "--json"])
    ]
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0 and err == "", err
    info = json.loads((job_dir / "job.json").read_text())
    assert info["status"] == "interrupted" and info["exit_code"] == 4
    assert info["artifacts"] == {"events": 2, "task_results": 1, "last_task": "Restart"}
    finished = [e for e in run.store.events(ticket) if e.kind == "job_finished"]
    assert len(finished) == 1 and finished[0].data["status"] == "interrupted"
    assert finished[0].actor == "alice"  # the job's operator; who noticed is in the data
    code, out, _err = run("ticket", "show", ticket)
    assert "jobs:" in out and "interrupted (2 event(s), 1 task result(s), last task 'Restart')" in out
    assert len([e for e in run.store.events(ticket) if e.kind == "job_finished"]) == 1


def test_a_reused_pid_does_not_keep_a_dead_job_running(run):
    """job.json names a live process (this one, as if the pid was reused) but nobody holds the job's lock."""
    ticket = open_ticket(run)
    job_dir = run.store.folder(ticket) / "jobs" / "INC-1-20261201T090000000000Z"
    job_dir.mkdir(parents=True)
    jobs.release(jobs.hold(job_dir))  # the lock file exists; its holder is gone
    info = {"ident": job_dir.name, "runbook": "reboot", "terminal": "fr-pgl-001", "status": "running",
            "operator": "bob", "pid": os.getpid(), "pid_start": jobs.process_start(os.getpid())}  # fmt: skip
    jobs.write_info(job_dir, info)
    (view,) = jobs.reconcile(run.store, ticket, "carol")
    assert view.status == "interrupted" and view.persisted
    assert [e.data.get("detected_by") for e in run.store.events(ticket) if e.kind == "job_finished"] == ["carol"]


def test_a_job_held_in_this_process_is_running_and_never_pruned(run):
    ticket = open_ticket(run)
    jobs_dir = run.store.folder(ticket) / "jobs"
    held = jobs_dir / "INC-1-20261201T080000000000Z"
    held.mkdir(parents=True)
    lock = jobs.hold(held)
    try:
        jobs.write_info(held, {"ident": held.name, "status": "running", "runbook": "reboot"})
        assert [v.status for v in jobs.reconcile(run.store, ticket, "carol")] == ["running"]
        from ipm_tools.support.runner import _prune

        newer = jobs_dir / "INC-1-20261201T090000000000Z"
        newer.mkdir()
        _prune(jobs_dir, 1, newer)  # keep one: the running one stays anyway
        assert held.is_dir()
    finally:
        jobs.release(lock)
    assert not [e for e in run.store.events(ticket) if e.kind == "job_finished"]


def test_end_written_but_not_noted_is_noted_with_its_own_status(run):
    """The tool died between writing job.json's end and noting it on the ticket."""
    ticket = open_ticket(run)
    job_dir = run.store.folder(ticket) / "jobs" / "INC-1-20261201T070000000000Z"
    job_dir.mkdir(parents=True)
    jobs.release(jobs.hold(job_dir))
    jobs.write_info(job_dir, {"ident": job_dir.name, "status": "successful", "rc": 0, "exit_code": 0})
    (view,) = jobs.reconcile(run.store, ticket, "carol")
    assert view.status == "successful"
    jobs.reconcile(run.store, ticket, "carol")
    assert [e.data["status"] for e in run.store.events(ticket) if e.kind == "job_finished"] == ["successful"]


def test_unreadable_job_json_is_reported_not_fatal(run):
    ticket = open_ticket(run)
    job_dir = run.store.folder(ticket) / "jobs" / "INC-1-20261201T060000000000Z"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_bytes(b"\x00{not json")
    code, out, err = run("jobs", ticket)
    assert (code, err) == (0, "") and "unknown" in out


# -- the policy and the contract -------------------------------------------------------------------


def _policy(tmp_path, text: str) -> str:
    path = tmp_path / "policy.yml"
    path.write_text(text)
    return str(path)


GOOD_PEOPLE = "people:\n  alice: {name: A, roles: [it], customers: all, vendor: true}\n"
ROLES_OK = 'version: 1\nroles:\n  it: {runbooks: ["*"], playbooks: ["*"]}\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nroles: {it: [\n", "YAML syntax error"),
        ("- just\n- a list\n", "wrong type"),
        ("version: 1\nroles: []\npeople: 'x'\n", "wrong type"),
        ("version: 2\n" + ROLES_OK[11:] + GOOD_PEOPLE, "unknown policy version"),
        (ROLES_OK + "people:\n  alice: {name: A, roles: [god], customers: all, vendor: true}\n", "unknown role"),
        (ROLES_OK + GOOD_PEOPLE + "  alice: {name: B, roles: [it], customers: all, vendor: true}\n", "duplicate key"),
        (ROLES_OK + "  it: {runbooks: [], playbooks: []}\n" + GOOD_PEOPLE, "duplicate key"),
        (ROLES_OK + "people:\n  alice: {name: A, roles: it, customers: 7, vendor: yes-please}\n", "people.alice"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{c}: &{c} [{', '.join(['*' + chr(ord(c) - 1)] * 10)}]\n" for c in "bcdefgh")
            + ROLES_OK
            + GOOD_PEOPLE,
            "aliases expand",
        ),
        ("", "wrong type"),
        ("\xff\xfe garbage \x00", "policy.yml"),
    ],
)
def test_a_malformed_policy_denies_everything(tmp_path, text, message):
    path = _policy(tmp_path, text)
    policy, reason = authz.load_or_deny(path)
    assert policy is None and message in reason and "policy.yml" in reason, reason
    decision = authz.decide(policy, "alice", "runbook:health_check", customer="parkcite", policy_error=reason)
    assert not decision.allowed and message in decision.reason


def test_a_huge_policy_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "policy.yml"
    with path.open("w") as handle:
        handle.write(ROLES_OK + "people:\n")
        for number in range(60_000):
            handle.write(f"  p{number}: {{name: P, roles: [it], customers: all, vendor: true}}\n")
    started = time.monotonic()
    policy, reason = authz.load_or_deny(str(path))
    assert time.monotonic() - started < 5
    assert policy is None and "more than 1,048,576" in reason


def test_a_good_policy_still_allows(tmp_path):
    policy, reason = authz.load_or_deny(_policy(tmp_path, ROLES_OK + GOOD_PEOPLE))
    assert reason is None and authz.decide(policy, "alice", "runbook:health_check", customer=None).allowed


@pytest.mark.parametrize(
    ("contract", "message"),
    [
        ({"maintenance_types": ["corrective"], "start": "2026-06-01", "end": "2026-01-01"}, "ends (2026-01-01) before"),
        ({"maintenance_types": ["corrective"], "start": "2026-02-30"}, "start '2026-02-30' is not a day"),
        ({"maintenance_types": ["corrective"], "end": "next year"}, "end 'next year' is not a day"),
        ({"maintenance_types": ["corrective"], "end": 2030}, "end 2030 is not a day"),
        ({}, "no contract"),
        ({"maintenance_types": ["corrective"], "end": "2026-01-31"}, "the contract ended on 2026-01-31"),
    ],
)
def test_a_contract_with_bad_dates_covers_nothing(contract, message):
    why = authz.contract_status(contract, "corrective", datetime.date(2026, 3, 1))
    assert why is not None and message in why


def test_a_contract_with_no_dates_is_open_ended():
    assert authz.contract_status({"maintenance_types": ["corrective"]}, "corrective", datetime.date(2026, 3, 1)) is None


@pytest.mark.parametrize("change_id", ["CHG-../x", "CHG-", "../CHG-1", "CHG-1\n", "CHG-1; rm -rf /", ""])
def test_ipm_change_bad_ids(tmp_path, monkeypatch, capsys, change_id):
    from ipm_tools import change

    monkeypatch.setenv("IPM_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("IPM_AUDIT_KEY_FILE", str(tmp_path / "k"))
    for command in (["show", change_id], ["approve", change_id], ["request", change_id, "--summary", "s"]):
        assert change.main(command) == 2
        err = capsys.readouterr().err
        assert "expected CHG-<number>" in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "audit.jsonl").exists()
