"""ipm.fleet.release on real lab terminals: delivery, idempotence, check mode, rollback, bad artifact, SSH drop."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RELEASES = PROJECT_ROOT / "build" / "releases"


def env() -> dict[str, str]:
    variables = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"))
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


@pytest.fixture(scope="module")
def built_releases():
    subprocess.run([str(BIN / "ipm-release"), "build"], check=True, capture_output=True, env=env())
    return {
        v: yaml.safe_load((RELEASES / f"ipm-app-{v}.manifest.yml").read_text()) for v in ("2.3.1", "2.4.0", "2.4.1")
    }


def playbook(tmp_path: Path, version: str, sha256: str, settle: float = 3, parameters: dict | None = None) -> Path:
    path = tmp_path / f"deliver-{version}.yml"
    task = {
        "name": "Deliver",
        "ipm.fleet.release": {
            "version": version,
            "sha256": sha256,
            "src": str(RELEASES / f"ipm-app-{version}.tar.gz"),
            "settle": settle,
            "parameters": parameters or {},
        },
    }
    path.write_text(
        yaml.safe_dump([{"name": "Deliver a release", "hosts": "all", "gather_facts": False, "tasks": [task]}])
    )
    return path


def deliver(terminals, path: Path, *options: str, limit: str | None = None) -> subprocess.CompletedProcess:
    command = [str(BIN / "ansible-playbook"), "-i", str(terminals.inventory), str(path), *options]
    if limit:
        command += ["-l", limit]
    return subprocess.run(
        command, capture_output=True, text=True, env=env(), cwd=PROJECT_ROOT, timeout=600, check=False
    )


def state(terminals, name: str) -> dict:
    script = (
        "import json, os, urllib.request, yaml; "
        "p = yaml.safe_load(open('/etc/ipm/app.yml')); a = p.get('listen_address', '127.0.0.1'); "
        "h = json.load(urllib.request.urlopen('http://%s:8080/health' % a, timeout=5)); "
        "print(json.dumps({'current': os.readlink('/opt/ipm/app/current'), 'releases': sorted(os.listdir('/opt/ipm/app/releases')), "
        "'health': h, 'parameters': p}))"
    )
    return json.loads(terminals.ssh(name, f'python3 -c "{script}"').stdout)


def data_checksum(terminals, name: str) -> str:
    """Checksum of the rows in the application's data store (its file changes with sqlite housekeeping)."""
    query = "import sqlite3; print(sqlite3.connect('/var/lib/ipm/app/transactions.sqlite3').execute('select * from transactions order by 1').fetchall())"
    rows = terminals.ssh(name, f'python3 -c "{query}"').stdout
    return hashlib.sha256(rows.encode()).hexdigest()


def test_delivery_check_mode_idempotence_and_rollback(lab_terminals, built_releases, tmp_path):
    name = lab_terminals.names[0]
    # Stop simulated transactions so the data store only changes if something touches it.
    lab_terminals.ssh(
        name,
        "sed -i '/^transaction_interval_s:/d' /etc/ipm/app.yml && echo 'transaction_interval_s: 0' >> /etc/ipm/app.yml && systemctl restart ipm-app",
    )
    time.sleep(2)
    before = state(lab_terminals, name)
    assert before["current"] == "releases/2.3.1"
    checksum = data_checksum(lab_terminals, name)

    upgrade = playbook(tmp_path, "2.4.0", built_releases["2.4.0"]["sha256"], parameters={"currency": "CHF"})
    checked = deliver(lab_terminals, upgrade, "--check", "-v", limit=name)
    assert checked.returncode == 0 and "changed=1" in checked.stdout, checked.stdout
    assert "timeout: renamed to idle_timeout_s" in checked.stdout
    assert state(lab_terminals, name)["current"] == "releases/2.3.1", "check mode changes nothing"

    done = deliver(lab_terminals, upgrade, limit=name)
    assert done.returncode == 0, done.stdout + done.stderr
    after = state(lab_terminals, name)
    assert after["current"] == "releases/2.4.0" and after["health"]["version"] == "2.4.0"
    assert after["parameters"]["currency"] == "CHF"
    assert after["parameters"]["idle_timeout_s"] == before["parameters"]["timeout"], "renamed parameter keeps its value"
    assert "timeout" not in after["parameters"] and "modem_port" not in after["parameters"]
    assert data_checksum(lab_terminals, name) == checksum, "application data untouched"

    again = deliver(lab_terminals, upgrade, limit=name)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout

    # 2.4.1 answers healthy for a few seconds after its start, then fails: the default settle period catches it.
    broken = deliver(
        lab_terminals, playbook(tmp_path, "2.4.1", built_releases["2.4.1"]["sha256"], settle=10), limit=name
    )
    assert broken.returncode != 0
    assert "delivery of 2.4.1 failed" in broken.stdout and "back on 2.4.0, healthy" in broken.stdout
    restored = state(lab_terminals, name)
    assert restored["current"] == "releases/2.4.0" and restored["health"]["version"] == "2.4.0"
    assert restored["parameters"] == after["parameters"]
    assert "2.4.1" not in restored["releases"], "the failed release does not stay installed"
    assert data_checksum(lab_terminals, name) == checksum


def test_wrong_checksum_changes_nothing(lab_terminals, built_releases, tmp_path):
    name = lab_terminals.names[1]
    before = state(lab_terminals, name)
    result = deliver(lab_terminals, playbook(tmp_path, "2.4.0", "0" * 64), limit=name)
    assert result.returncode != 0
    assert "does not match the manifest's 0000" in result.stdout and "nothing changed" in result.stdout
    after = state(lab_terminals, name)
    assert after["current"] == before["current"] and after["releases"] == before["releases"]


def test_delivery_completes_when_the_ssh_session_drops(lab_terminals, built_releases, tmp_path):
    name = lab_terminals.names[1]
    path = playbook(tmp_path, "2.4.0", built_releases["2.4.0"]["sha256"], settle=6)
    command = [str(BIN / "ansible-playbook"), "-i", str(lab_terminals.inventory), str(path), "-l", name]
    runner = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
        cwd=PROJECT_ROOT,
        start_new_session=True,
    )
    # Wait until the new release is being watched (switched, settling), then cut the controller side.
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            probe = lab_terminals.ssh(name, "readlink /opt/ipm/app/current", check=False).stdout.strip()
            if probe == "releases/2.4.0":
                break
            time.sleep(0.5)
        else:
            pytest.fail("the delivery never switched to 2.4.0")
    finally:
        os.killpg(runner.pid, signal.SIGKILL)  # ansible-playbook and its ssh, all of its session
        runner.wait(timeout=30)
    # The transaction goes on by itself on the terminal and leaves its result behind.
    deadline = time.monotonic() + 120
    result = None
    while time.monotonic() < deadline:
        answer = lab_terminals.ssh(name, "cat /var/lib/ipm/delivery/delivery-2.4.0.json", check=False)
        if answer.returncode == 0 and answer.stdout.strip():
            result = json.loads(answer.stdout)
            break
        time.sleep(1)
    assert result is not None, "no delivery result on the terminal"
    assert result["msg"] == "delivered 2.4.0 (from 2.3.1)"
    final = state(lab_terminals, name)
    assert final["current"] == "releases/2.4.0" and final["health"]["status"] == "ok"


def bake(terminals, name: str, tree: Path, **arguments) -> tuple[int, dict]:
    """Run ipm.fleet.bake on terminal NAME (ad hoc, as root): the exit code of ``ansible`` and the module's result."""
    result = terminals.ansible(name, "-m", "ipm.fleet.bake", "-a", json.dumps(arguments), "--tree", str(tree))
    answer = tree / name
    assert answer.exists(), result.stdout + result.stderr
    return result.returncode, json.loads(answer.read_text())


def test_bake_passes_a_healthy_release_and_rolls_back_one_that_turns_unhealthy(lab_terminals, built_releases, tmp_path):
    name = lab_terminals.names[0]
    done = deliver(lab_terminals, playbook(tmp_path, "2.4.0", built_releases["2.4.0"]["sha256"], settle=1), limit=name)
    assert done.returncode == 0, done.stdout + done.stderr
    on_240 = state(lab_terminals, name)
    assert on_240["current"] == "releases/2.4.0"

    code, healthy = bake(lab_terminals, name, tmp_path / "bake-2.4.0", version="2.4.0", duration=4, interval=1)
    assert code == 0 and healthy["healthy"] is True and healthy["changed"] is False, healthy
    assert healthy["probes"] == 5 and healthy["rolled_back"] is False

    # 2.4.1 answers healthy for 5 s after its start: a 1 s settle period lets the delivery pass, the bake catches it.
    broken = deliver(
        lab_terminals, playbook(tmp_path, "2.4.1", built_releases["2.4.1"]["sha256"], settle=1), limit=name
    )
    assert broken.returncode == 0, broken.stdout + broken.stderr
    assert state(lab_terminals, name)["current"] == "releases/2.4.1"
    record = json.loads(lab_terminals.ssh(name, "cat /var/lib/ipm/delivery/previous.json").stdout)
    assert record["version"] == "2.4.1" and record["previous_version"] == "2.4.0"
    mode = lab_terminals.ssh(name, "stat -c %a /var/lib/ipm/delivery/previous.json").stdout.strip()
    assert mode == "600", "the previous parameters may hold secrets"

    code, baked = bake(lab_terminals, name, tmp_path / "bake-2.4.1", version="2.4.1", duration=12, interval=1)
    assert code == 2 and baked["healthy"] is False, "an unhealthy terminal fails the task: %s" % baked
    assert baked["msg"].startswith("health answered 503 status failing after "), baked["msg"]
    assert baked["msg"].startswith(baked["reason"]) and baked["healthy_for_s"] < 12
    assert baked["changed"] is True and baked["rolled_back"] is True and baked["rolled_back_to"] == "2.4.0"
    assert baked["rollback"] == {"to": "2.4.0", "healthy": True, "error": None}

    restored = state(lab_terminals, name)
    assert restored["current"] == "releases/2.4.0" and restored["health"]["version"] == "2.4.0"
    assert restored["health"]["status"] == "ok" and restored["parameters"] == on_240["parameters"]
    assert "2.4.1" not in restored["releases"]
    left = lab_terminals.ssh(name, "cat /var/lib/ipm/delivery/previous.json", check=False)
    assert left.returncode != 0 or json.loads(left.stdout)["version"] != "2.4.1", "no record claims 2.4.1 any more"
