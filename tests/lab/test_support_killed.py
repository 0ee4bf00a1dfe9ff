"""A killed ``ipm-support run`` (SIGKILL of the tool itself, mid-task) is found dead by the next reader.

One lab terminal ``sh-01`` (127.0.84.1; the fleet of test_support_runbooks.py with the prefix ``sh``).
Its application is stopped so that the health task of ``health_check`` retries; while it retries, the
``ipm-support`` process (not its ansible-playbook) is killed with SIGKILL: nothing of the tool's own
ending runs. Then ``job.json`` still says ``running``; ``ipm-support jobs`` and ``ticket show`` (the
readers) see the job's lock free and report it ``interrupted`` with what its artifacts hold, the ticket
notes it once, the audit chain verifies, and a new run on the same ticket works. The playbook does not go
on unwatched: it gets SIGTERM when its ipm-support dies (support/shim/ansible-playbook). A job that ends
normally runs first, so that the audit log has a signed checkpoint before the killed job, as a real log has.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_support_runbooks import (
    BIN,
    audit_verify,
    boot,
    on_terminal,
    stop,
    support_env,
    write_support_fleet,
)

pytestmark = pytest.mark.lab
TERMINAL = "sh-01"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("support-killed")
    password = tmp_path_factory.mktemp("support-killed-secrets") / "vault-password"
    password.write_text(f"pw-{uuid.uuid4()}\n")
    password.chmod(0o600)
    inventory = write_support_fleet(directory, password, f"canary-{uuid.uuid4()}", prefix="sh")
    from ipm_tools.support.tickets import TicketStore

    store = TicketStore(directory / "support", registry=inventory)
    ticket = store.open_error("srco", "major", "no answer", "Jean", terminal=TERMINAL, actor="l1-desk").id
    state = {"directory": directory, "env": support_env(directory), "store": store, "ticket": ticket}
    try:
        boot([TERMINAL])
        yield state
    finally:
        stop([TERMINAL])


def support(lab, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ipm-support"), *args], capture_output=True, text=True, env=lab["env"], timeout=300, check=False
    )


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def _playbook_pids(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ansible-playbook" in cmdline and marker.encode() in cmdline:
                pids.append(int(proc.name))
    return pids


def test_killed_tool_leaves_an_interrupted_job_noted_once(lab):
    ticket = lab["ticket"]
    jobs_dir = lab["directory"] / "support" / "tickets" / ticket / "jobs"
    # A job that ends first: the audit log has a signed checkpoint (and head) before the killed one.
    first = support(lab, "run", "health_check", "--terminal", TERMINAL, "--ticket", ticket)
    assert first.returncode == 0, first.stdout + first.stderr
    before = set(jobs_dir.iterdir())
    on_terminal(TERMINAL, "systemctl stop ipm-app")
    try:
        tool = subprocess.Popen(
            [str(BIN / "ipm-support"), "run", "health_check", "--terminal", TERMINAL, "--ticket", ticket,
             "-e", "runbook_health_retries=200"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=lab["env"],
        )  # fmt: skip
        deadline = time.monotonic() + 120
        retrying = False
        while time.monotonic() < deadline and tool.poll() is None and not retrying:
            folders = sorted(set(jobs_dir.iterdir()) - before)
            events = list(folders[-1].glob("artifacts/*/job_events/*.json")) if folders else []
            retrying = any("Ask the application for its health" in p.read_text() for p in events)
            time.sleep(0.3)
        assert retrying, "the job never reached the health task"
        time.sleep(2)  # the worst moment: a task is running, the tool has written nothing of its end
        tool.send_signal(signal.SIGKILL)  # the tool itself, not its ansible-playbook
        output, _ = tool.communicate(timeout=60)
        assert tool.returncode == -signal.SIGKILL, output
        job_dir = sorted(jobs_dir.iterdir())[-1]
        assert json.loads((job_dir / "job.json").read_text())["status"] == "running"  # nobody wrote the end
        # The playbook lost its controlling process (its pty closed): it ends on its own.
        deadline = time.monotonic() + 60
        while _playbook_pids(str(job_dir)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [p for p in _playbook_pids(str(job_dir)) if _alive(p)], "ansible-playbook outlived the tool"
    finally:
        on_terminal(TERMINAL, "systemctl start ipm-app")

    listed = support(lab, "jobs", ticket, "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    earlier, job = json.loads(listed.stdout)
    assert earlier["status"] == "successful"
    assert job["status"] == "interrupted" and job["persisted"], job
    assert job["events"] > 0 and job["task_results"] > 0
    assert job["last_task"] == "Ask the application for its health"
    info = json.loads((job_dir / "job.json").read_text())
    assert info["status"] == "interrupted" and info["exit_code"] == 4 and "killed or crashed" in info["message"]

    shown = support(lab, "ticket", "show", ticket)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "interrupted" in shown.stdout and "jobs:" in shown.stdout
    document = json.loads(support(lab, "ticket", "show", ticket, "--json").stdout)
    finished = [e for e in document["events"] if e["kind"] == "job_finished"]
    assert [e["data"]["status"] for e in finished] == ["successful", "interrupted"], finished  # noted once
    assert finished[1]["data"]["ident"] == info["ident"]

    verified = audit_verify({"env": lab["env"]})
    assert verified.returncode == 0, verified.stdout + verified.stderr

    again = support(lab, "run", "health_check", "--terminal", TERMINAL, "--ticket", ticket)
    assert again.returncode == 0, again.stdout + again.stderr
    after = [e for e in lab["store"].events(ticket) if e.kind == "job_finished"]
    assert [e.data["status"] for e in after] == ["successful", "interrupted", "successful"]
    listed = [j["status"] for j in json.loads(support(lab, "jobs", ticket, "--json").stdout)]
    assert listed == ["successful", "interrupted", "successful"]
