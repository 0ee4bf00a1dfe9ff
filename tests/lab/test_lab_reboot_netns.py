"""Lab terminals reboot like real ones (same layer, address, name, host key; fresh /run), and boot into network namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ipm_tools.lab_procs import container_init, container_pids, nspawn_alive, nspawn_pid, proc_state
from ipm_tools.lab_state import KNOWN_HOSTS, LAB_KEY

pytestmark = pytest.mark.lab

TERMINALS_DIR = Path("/var/lib/ipm-lab/terminals")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
LAB_COMMAND = [sys.executable, "-m", "ipm_tools.lab"]


def _env() -> dict[str, str]:
    """The project's tools and Ansible config first (as tests/conftest.py's lab_env)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(PROJECT_ROOT / "ansible.cfg")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "tools"), str(PROJECT_ROOT / "collections")])
    return env


def run_lab(*args: str, check: bool = True, timeout: float = 600, prefix: tuple = ()) -> subprocess.CompletedProcess:
    """``ipm-lab ARGS`` (the real tool), optionally run under PREFIX (``ip netns exec NS``)."""
    result = subprocess.run(
        [*prefix, *LAB_COMMAND, *args], capture_output=True, text=True, env=_env(), timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ipm-lab {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def _state(name: str) -> dict:
    return json.loads((TERMINALS_DIR / name / "terminal.json").read_text())


def _ssh(name: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = run_lab("ssh", name, command, check=False, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{name}: `{command}` failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result


def _boot_id(name: str) -> str:
    return _ssh(name, "cat /proc/sys/kernel/random/boot_id").stdout.strip()


def _wait_for(what: str, condition, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def _health(address: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/health", timeout=3) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def terminal() -> Iterator[str]:
    """One lab terminal of this module (prefix lb-), stopped at the end, also on failure."""
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root (systemd-nspawn, overlay mounts): run the lab tests as root")
    name = f"lb-{uuid.uuid4().hex[:6]}"
    try:
        run_lab("up", name)
        yield name
    finally:
        run_lab("down", "--missing-ok", name, check=False)


def test_reboot_keeps_the_layer_and_renews_the_boot(terminal):
    state = _state(terminal)
    address = state["address"]
    host_key = _ssh(terminal, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
    first_nspawn = nspawn_pid(state)
    before = _boot_id(terminal)
    _ssh(terminal, "echo kept > /root/before-reboot; echo gone > /run/ipm-marker")
    _ssh(terminal, "systemctl reboot", check=False)  # the connection may drop as sshd stops

    def rebooted() -> str | None:
        result = run_lab("ssh", terminal, "cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
        boot_id = result.stdout.strip()
        return boot_id if result.returncode == 0 and boot_id and boot_id != before else None

    after = _wait_for("the terminal answers SSH with a new boot id", rebooted)
    assert after != before
    assert _ssh(terminal, "cat /root/before-reboot").stdout.strip() == "kept"
    assert _ssh(terminal, "test -e /run/ipm-marker && echo there || echo absent").stdout.strip() == "absent"
    assert _ssh(terminal, "hostname").stdout.strip() == terminal
    # Same host key (known_hosts unchanged, StrictHostKeyChecking passed above), same address, same pid.
    assert _ssh(terminal, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2] == host_key
    new_state = _state(terminal)
    assert new_state["address"] == address and new_state["pid"] == state["pid"]
    assert nspawn_alive(new_state)
    assert nspawn_pid(new_state) not in (None, first_nspawn)
    assert container_init(new_state) is not None
    health = _wait_for("ipm-app healthy again", lambda: _health(address), timeout=120)
    assert health["status"] == "ok"
    assert _ssh(terminal, "systemctl is-active ipm-app").stdout.strip() == "active"
    row = json.loads(run_lab("status", "--json", terminal).stdout)[0]
    assert row["boots"] == 2
    assert row["state"] in ("running", "degraded", "starting")
    table = run_lab("status", terminal).stdout.splitlines()
    assert table[0].split() == ["TERMINAL", "ADDRESS", "STATE", "PID", "BOOTS", "APP"]
    assert table[1].split()[0] == terminal and "2" in table[1].split()


def test_ansible_reboot_module_against_a_lab_terminal(terminal, tmp_path):
    document = json.loads(run_lab("inventory", terminal).stdout)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))
    playbook = tmp_path / "reboot.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Reboot a lab terminal",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Reboot",
                            "ansible.builtin.reboot": {"reboot_timeout": 120, "connect_timeout": 5},
                            "register": "rebooted",
                        },
                        {
                            "name": "Tell",
                            "ansible.builtin.debug": {"msg": "rebooted={{ rebooted.rebooted }}"},
                        },
                    ],
                }
            ]
        )
    )
    boots = json.loads(run_lab("status", "--json", terminal).stdout)[0]["boots"]
    before = _boot_id(terminal)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rebooted=True" in result.stdout
    assert _boot_id(terminal) != before
    assert json.loads(run_lab("status", "--json", terminal).stdout)[0]["boots"] == boots + 1


def test_down_during_a_reboot_leaves_nothing_running(terminal):
    """Last test of the module's terminal: it stops it in the middle of a reboot."""
    state = _state(terminal)
    upper = TERMINALS_DIR / terminal / "upper"
    nspawn = nspawn_pid(state)
    inside = container_pids(upper)
    _ssh(terminal, "systemctl reboot", check=False)
    # Down as soon as the first boot's nspawn is gone or the supervisor counts the next boot.
    _wait_for(
        "the reboot starts",
        lambda: proc_state(nspawn) is None or json.loads(run_lab("status", "--json", terminal).stdout)[0]["boots"] > 2,
        timeout=60,
    )
    run_lab("down", terminal)
    assert not nspawn_alive(state)
    assert proc_state(state["pid"]) is None, "the supervisor is gone"
    assert nspawn_pid(state) is None
    assert container_pids(upper) == []
    assert all(proc_state(pid) is None for pid in inside)
    assert not (TERMINALS_DIR / terminal).exists()
    assert f"ipm-lab:{terminal}" not in KNOWN_HOSTS.read_text()
    assert LAB_KEY.exists()
