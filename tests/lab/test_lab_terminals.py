"""Lab terminals for real: booted with systemd-nspawn, reached over SSH, stopped without a trace."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from ipm_tools.lab_procs import container_pids, nspawn_alive, nspawn_pid
from ipm_tools.lab_state import KNOWN_HOSTS, load_states

pytestmark = pytest.mark.lab

TERMINALS_DIR = Path("/var/lib/ipm-lab/terminals")


def _state(name: str) -> dict:
    return json.loads((TERMINALS_DIR / name / "terminal.json").read_text())


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def test_each_terminal_has_its_hostname_and_systemd_running(lab_terminals):
    for name in lab_terminals.names:
        # is-system-running exits 1 for "degraded", which a loaded machine can give: the state is checked below.
        result = lab_terminals.ssh(name, "hostname; cat /etc/hostname; systemctl is-system-running || true")
        lines = result.stdout.split()
        assert lines[:2] == [name, name]
        assert lines[2] in ("running", "degraded")


def test_sshd_listens_on_the_terminal_address_only(lab_terminals):
    for name in lab_terminals.names:
        address = lab_terminals.address(name)
        # Terminals share the host's network: `ss -p` names the owner only for this terminal's sockets.
        listening = lab_terminals.ssh(name, "ss -Htlnp 'sport = :22'").stdout.split("\n")
        own = {line.split()[3] for line in listening if '"sshd"' in line}
        assert own == {f"{address}:22"}


def test_host_keys_are_per_terminal_and_recorded(lab_terminals):
    recorded = {}
    for line in KNOWN_HOSTS.read_text().splitlines():
        address, key_type, key = line.split()[:3]
        recorded[address] = (key_type, key)
    keys = []
    for name in lab_terminals.names:
        served = lab_terminals.ssh(name, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2]
        assert recorded[lab_terminals.address(name)] == tuple(served)
        keys.append(served[1])
    assert len(set(keys)) == len(keys)


def test_hardware_identity_matches_the_inventory(lab_terminals):
    for name in lab_terminals.names:
        hardware = yaml.safe_load(lab_terminals.ssh(name, "cat /etc/ipm/hardware.yml").stdout)
        assert hardware == {
            "model": lab_terminals.hosts[name]["ipm_model"],
            "serial_number": lab_terminals.hosts[name]["ipm_serial_number"],
        }
        assert hardware["model"] in ("PS-200", "PS-300", "TK-110")


def test_peripherals_are_serial_devices_that_answer(lab_terminals):
    name = lab_terminals.names[0]
    interfaces = yaml.safe_load(lab_terminals.ssh(name, "cat /etc/ipm/interfaces.yml").stdout)["interfaces"]
    assert interfaces, "a terminal has peripherals"
    # On the terminal: for each device, its file type and its answer to STATUS, as JSON.
    probe = base64.b64encode(
        b"import json, os, stat, sys, time\n"
        b"report = {}\n"
        b"for device in sys.argv[1:]:\n"
        b"    fd = os.open(device, os.O_RDWR | os.O_NOCTTY)\n"
        b"    os.write(fd, b'STATUS\\r\\n')\n"
        b"    time.sleep(0.3)\n"
        b"    report[device] = [stat.S_ISCHR(os.stat(device).st_mode), os.read(fd, 200).decode().strip()]\n"
        b"    os.close(fd)\n"
        b"print(json.dumps(report))\n"
    ).decode()
    devices = [peripheral["device"] for peripheral in interfaces]
    report = json.loads(lab_terminals.ssh(name, f"echo {probe} | base64 -d | python3 - {' '.join(devices)}").stdout)
    for peripheral in interfaces:
        assert peripheral["device"] == f"/dev/ipm/{peripheral['name']}"
        is_char_device, answer = report[peripheral["device"]]
        assert is_char_device
        assert answer == f"{peripheral['type']} {peripheral['name']} OK"
    payment = [p for p in interfaces if p["type"] == "payment"]
    assert payment, "every lab model carries a payment module"
    config = yaml.safe_load(lab_terminals.ssh(name, f"cat {payment[0]['config']}").stdout)
    assert config["device"] == payment[0]["device"]


def test_baseline_application_is_healthy_on_its_address(lab_terminals):
    for name in lab_terminals.names:
        address = lab_terminals.address(name)
        with urllib.request.urlopen(f"http://{address}:8080/health", timeout=10) as response:
            health = json.loads(response.read())
        assert health["status"] == "ok"
        assert health["version"] == "2.3.1"
        current = lab_terminals.ssh(
            name, "readlink -f /opt/ipm/app/current; systemctl is-active ipm-app"
        ).stdout.split()
        assert current == ["/opt/ipm/app/releases/2.3.1", "active"]


def test_status_reports_state_and_app_health(lab_terminals, run_lab_command):
    rows = {
        row["terminal"]: row for row in json.loads(run_lab_command("status", "--json", *lab_terminals.names).stdout)
    }
    for name in lab_terminals.names:
        assert rows[name]["address"] == lab_terminals.address(name)
        assert rows[name]["state"] in ("running", "degraded")
        assert rows[name]["app"]["status"] == "ok"
    table = run_lab_command("status", *lab_terminals.names).stdout.splitlines()
    assert table[0].split() == ["TERMINAL", "ADDRESS", "STATE", "PID", "BOOTS", "APP"]
    assert all(rows[name]["boots"] == 1 for name in lab_terminals.names)
    assert {line.split()[0] for line in table[1:]} == set(lab_terminals.names)


def test_ansible_ping_over_real_ssh_with_host_key_checking(lab_terminals):
    result = lab_terminals.ansible("all", "-m", "ansible.builtin.ping", "-o")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in lab_terminals.names:
        assert f"{name} | SUCCESS" in result.stdout
    inventory = yaml.safe_load(lab_terminals.inventory.read_text())
    host = inventory["all"]["children"]["lab"]["hosts"][lab_terminals.names[0]]
    assert "StrictHostKeyChecking=yes" in host["ansible_ssh_common_args"]


def test_down_leaves_nothing_running_or_mounted(lab_factory):
    terminals = lab_factory(1)
    (name,) = terminals.names
    state = _state(name)
    upper = TERMINALS_DIR / name / "upper"
    inside = container_pids(upper)
    assert nspawn_alive(state) and inside, "the terminal runs before down"
    terminals.stop()
    assert not nspawn_alive(state)
    assert container_pids(upper) == []
    assert all(pid_gone(pid) for pid in inside)
    assert not (TERMINALS_DIR / name).exists()
    assert f"/var/lib/ipm-lab/terminals/{name}" not in Path("/proc/self/mountinfo").read_text()
    assert f"ipm-lab:{name}" not in KNOWN_HOSTS.read_text()
    # Another session may take the freed address at once; only if nobody has, it must be silent.
    if not any(other.get("address") == state["address"] for other in load_states().values()):
        assert not _port_open(state["address"], 22)


def pid_gone(pid: int) -> bool:
    """No such process, or a zombie (this machine's PID 1 does not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_up_after_a_crash_cleans_leftovers_first(lab_factory, run_lab_command):
    terminals = lab_factory(1)
    (name,) = terminals.names
    state = _state(name)
    upper = TERMINALS_DIR / name / "upper"
    # A crash: the terminal's supervisor and its nspawn killed hard, the container orphaned and
    # still running on the overlay.
    nspawn = nspawn_pid(state)
    os.kill(state["pid"], signal.SIGKILL)
    if nspawn and nspawn != state["pid"]:
        os.kill(nspawn, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (nspawn_alive(state) or nspawn_pid(state)) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = container_pids(upper)
    assert orphans, "the container's processes outlive a killed nspawn (else this test checks nothing)"
    # This `up` cleans the left-over (or another session's `up` did it first: both run the same cleanup).
    run_lab_command("up", name)
    new_state = _state(name)
    assert new_state["pid"] != state["pid"]
    assert all(pid_gone(pid) for pid in orphans)
    assert terminals.ssh(name, "hostname").stdout.strip() == name
    terminals.stop()
    assert container_pids(upper) == []


def test_up_from_an_inventory_boots_exactly_its_hosts(tmp_path, run_lab_command):
    suffix = uuid.uuid4().hex[:5]
    octet = int(suffix, 16) % 200 + 20
    hosts = {
        f"inv{suffix}-a": {
            "ansible_host": f"127.0.99.{octet}",
            "ipm_model": "TK-110",
            "ipm_serial_number": f"TK1-TEST-{suffix}",
            # The registry's shape: peripheral name -> settings, `device` naming the product.
            "ipm_interfaces": {"coin_acceptor": {"device": "nri-g13", "port": "/dev/ttyS1"}},
        },
        f"inv{suffix}-b": {"ansible_host": f"127.0.99.{octet + 1}", "ipm_model": "PS-200"},
    }
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"site_test": {"hosts": hosts}}}}))
    try:
        output = run_lab_command("up", "--inventory", str(inventory)).stdout
        assert "booting 2 terminal(s)" in output
        first, second = hosts
        hardware = yaml.safe_load(run_lab_command("ssh", first, "cat /etc/ipm/hardware.yml").stdout)
        assert hardware == {"model": "TK-110", "serial_number": f"TK1-TEST-{suffix}"}
        interfaces = yaml.safe_load(run_lab_command("ssh", first, "cat /etc/ipm/interfaces.yml").stdout)
        assert interfaces["interfaces"] == [
            {
                "name": "coin_acceptor",
                "type": "coin_acceptor",
                "device": "/dev/ipm/coin_acceptor",
                "product": "nri-g13",
                "port": "/dev/ttyS1",
            }
        ]
        kind = run_lab_command("ssh", first, "stat -L -c %F /dev/ipm/coin_acceptor").stdout.strip()
        assert kind == "character special file"
        assert run_lab_command("ssh", second, "hostname").stdout.strip() == second
        assert yaml.safe_load(run_lab_command("ssh", second, "cat /etc/ipm/hardware.yml").stdout)["model"] == "PS-200"
        # A second `up` of the same inventory finds them up and leaves them as they are.
        again = run_lab_command("up", "--inventory", str(inventory)).stdout
        assert f"{first}: already up on {hosts[first]['ansible_host']}" in again
    finally:
        run_lab_command("down", "--missing-ok", *hosts)
    assert not any((TERMINALS_DIR / name).exists() for name in hosts)
