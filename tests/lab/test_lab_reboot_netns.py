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


def test_poweroff_ends_the_terminal_as_before():
    """Any exit but 133 ends the supervisor: the terminal is stale, `down` cleans it."""
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    name = f"lb-{uuid.uuid4().hex[:6]}"
    try:
        run_lab("up", name)
        state = _state(name)
        _ssh(name, "systemctl poweroff", check=False)
        _wait_for("the supervisor ends", lambda: not nspawn_alive(state), timeout=120)
        assert nspawn_pid(state) is None
        record = json.loads((TERMINALS_DIR / name / "boots.json").read_text())
        assert record["boots"] == 1 and record["exits"] == [0]
        row = json.loads(run_lab("status", "--json", name).stdout)[0]
        assert row["state"].startswith("stale")
        run_lab("down", name)
        assert not (TERMINALS_DIR / name).exists()
    finally:
        run_lab("down", "--missing-ok", name, check=False)


# --- network namespaces ------------------------------------------------------------------------


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=30)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[dict]:
    """Two network namespaces of our own joined by a veth pair (never the host's namespace).

    ``terminal`` (the terminal's, address .2) and ``controller`` (.1) on a random 10.x.y.0/24.
    Deleted at the end, also on failure (a veth goes with its namespace).
    """
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    suffix = uuid.uuid4().hex[:6]
    octets = int(suffix, 16)
    net = f"10.{200 + octets % 50}.{(octets >> 8) % 256}"
    names = {"terminal": f"lbns-{suffix}-t", "controller": f"lbns-{suffix}-c"}
    created = []
    try:
        for name in names.values():
            _ip("netns", "add", name)
            created.append(name)
        _ip("link", "add", f"lbv{suffix}t", "netns", names["terminal"], "type", "veth", "peer", "name", f"lbv{suffix}c",
            "netns", names["controller"])  # fmt: skip
        for role, end, host in (("terminal", "t", 2), ("controller", "c", 1)):
            _ip("-n", names[role], "addr", "add", f"{net}.{host}/24", "dev", f"lbv{suffix}{end}")
            _ip("-n", names[role], "link", "set", f"lbv{suffix}{end}", "up")
            _ip("-n", names[role], "link", "set", "lo", "up")
        yield {**names, "address": f"{net}.2", "controller_address": f"{net}.1", "veth": f"lbv{suffix}"}
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def test_up_in_a_namespace_refuses_bad_input_with_one_line(namespaces):
    name = f"lb-{uuid.uuid4().hex[:6]}"
    missing = f"lbns-{uuid.uuid4().hex[:6]}-missing"
    cases = [
        (["--netns", missing, "--address", "10.1.2.3"], f"network namespace {missing} does not exist: create it with `ip netns add {missing}`"),
        (["--netns", namespaces["terminal"]], "needs its address there: --address ADDR"),
        (["--netns", namespaces["terminal"], "--address", "10.254.254.254"], f"address 10.254.254.254 is not on any interface of network namespace {namespaces['terminal']}"),
        (["--netns", namespaces["terminal"], "--address", "not-an-ip"], "is not an IPv4 address"),
        (["--address", "10.1.2.3"], "boot it into a network namespace with --netns NS"),
        (["--netns", "bad/name", "--address", namespaces["address"]], "is not a network namespace name"),
    ]  # fmt: skip
    for options, expected in cases:
        result = run_lab("up", name, *options, check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ipm-lab: error: "), result.stderr
        assert expected in lines[0]
        assert "Traceback" not in result.stderr
        assert not (TERMINALS_DIR / name).exists()
    two = run_lab(
        "up", name, f"{name}-2", "--netns", namespaces["terminal"], "--address", namespaces["address"], check=False
    )
    assert two.returncode == 1 and "boots one terminal per call" in two.stderr


def _ssh_from(netns: str, address: str, command: str) -> subprocess.CompletedProcess:
    """Real SSH from inside NETNS with the lab key and its known hosts (host key checked)."""
    argv = ["ip", "netns", "exec", netns, "ssh", "-F", "/dev/null", "-i", str(LAB_KEY), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5", f"root@{address}", command]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_terminal_in_a_namespace_is_reached_from_its_neighbour_only(namespaces, tmp_path):
    name = f"lb-{uuid.uuid4().hex[:6]}"
    netns, address, controller = namespaces["terminal"], namespaces["address"], namespaces["controller"]
    try:
        run_lab("up", name, "--netns", netns, "--address", address)
        state = _state(name)
        assert state["netns"] == netns and state["address"] == address
        # From the other namespace over the veth: real SSH, host key checked.
        result = _ssh_from(controller, address, "hostname; ip -j addr show")
        assert result.returncode == 0, result.stderr
        hostname, addresses = result.stdout.split("\n", 1)
        assert hostname == name
        assert address in {info["local"] for link in json.loads(addresses) for info in link["addr_info"]}
        # sshd and the application listen on the terminal's address in its namespace.
        listening = _ssh_from(controller, address, "ss -Htln").stdout
        assert f"{address}:22" in listening and f"{address}:8080" in listening
        # ipm-lab ssh and status work inside the namespace too.
        assert run_lab("ssh", name, "hostname").stdout.strip() == name
        row = json.loads(run_lab("status", "--json", name).stdout)[0]
        assert row["netns"] == netns and row["state"] in ("running", "degraded")
        _wait_for(
            "ipm-app healthy in the namespace", lambda: json.loads(run_lab("status", "--json", name).stdout)[0]["app"]
        )
        # The inventory names the namespace; Ansible run inside the neighbour reaches the terminal.
        document = json.loads(run_lab("inventory", name).stdout)
        host = document["all"]["children"]["lab"]["hosts"][name]
        assert host["ansible_host"] == address and host["ipm_lab_netns"] == netns
        inventory = tmp_path / "inventory.yml"
        inventory.write_text(yaml.safe_dump(document, sort_keys=False))
        ansible = [
            str(Path(sys.executable).with_name("ansible")),
            "-i",
            str(inventory),
            "all",
            "-m",
            "ansible.builtin.ping",
            "-o",
        ]
        pinged = subprocess.run(
            ["ip", "netns", "exec", controller, *ansible],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=300,
            check=False,
        )
        assert pinged.returncode == 0 and f"{name} | SUCCESS" in pinged.stdout, pinged.stdout + pinged.stderr
        # The host's namespace has no route of its own to the terminal: the address is on no host
        # interface, the veth ends are not in the host's namespace, and the host's route to the
        # address (if any: a default route) goes through none of our interfaces. No packet is sent.
        host_addresses = json.loads(_ip("-j", "addr", "show").stdout)
        assert address not in {info.get("local") for link in host_addresses for info in link.get("addr_info", [])}
        assert not any(link["ifname"].startswith(namespaces["veth"]) for link in host_addresses)
        route = subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True, check=False)
        if route.returncode == 0:
            assert not any(hop.get("dev", "").startswith(namespaces["veth"]) for hop in json.loads(route.stdout))
        # WireGuard in userspace and nftables work inside (CAP_NET_ADMIN, /dev/net/tun in the namespace).
        _ssh_from(controller, address, "ip link add wgt type wireguard")  # no kernel module needed: may fail
        wireguard = _ssh_from(
            controller,
            address,
            "ip link del wgt 2>/dev/null; WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go wgt >/dev/null 2>&1; "
            "umask 077; wg genkey > /root/wg.key && wg set wgt private-key /root/wg.key listen-port 51820 && "
            "ip addr add 10.99.0.2/24 dev wgt && ip link set wgt up && wg show wgt && ip -br addr show wgt",
        )
        assert wireguard.returncode == 0, wireguard.stdout + wireguard.stderr
        assert "interface: wgt" in wireguard.stdout and "listening port: 51820" in wireguard.stdout
        assert "10.99.0.2/24" in wireguard.stdout
        firewall = _ssh_from(controller, address, "nft add table inet lbtest && nft list ruleset")
        assert firewall.returncode == 0, firewall.stderr
        assert "table inet lbtest" in firewall.stdout
        # nftables acted on the terminal's namespace, not on the host's.
        assert (
            "lbtest"
            not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
        )
    finally:
        run_lab("down", "--missing-ok", name, check=False)
    assert not (TERMINALS_DIR / name).exists()
    assert _ssh_from(controller, address, "true").returncode == 255, "nothing answers after down"


def test_python_api_boots_into_a_namespace_and_stops(namespaces):
    """The API the VPN tests use: boot_terminals([TerminalSpec(..., netns=NS)]) and stop_terminals_named."""
    from ipm_tools.lab import TerminalSpec, boot_terminals, spec_for, stop_terminals_named

    name = f"lb-{uuid.uuid4().hex[:6]}"
    netns, controller = namespaces["terminal"], namespaces["controller"]
    address = namespaces["address"].rsplit(".", 1)[0] + ".3"
    _ip("-n", netns, "addr", "add", f"{address}/24", "dev", f"{namespaces['veth']}t")
    messages: list[str] = []
    try:
        spec = spec_for(name, address, netns=netns)
        assert spec.netns == netns and spec.interfaces and spec.serial_number
        (state,) = boot_terminals([spec], timeout=180, progress=messages.append)
        assert state["terminal_id"] == name and state["netns"] == netns and state["address"] == address
        assert any(message.startswith(f"{name}: ready on {address}") for message in messages)
        assert _ssh_from(controller, address, "hostname").stdout.strip() == name
        # Again: already up, left as it is.
        (again,) = boot_terminals([TerminalSpec(name, address, netns=netns)], progress=messages.append)
        assert again["pid"] == state["pid"]
    finally:
        stop_terminals_named([name], progress=messages.append)
    assert not (TERMINALS_DIR / name).exists()
    assert not nspawn_alive(state)


def test_up_from_an_inventory_with_ipm_lab_netns(namespaces, tmp_path):
    """`ipm-lab up --inventory` boots a host with ipm_lab_netns into that namespace (as `inventory` writes it)."""
    name = f"lb-{uuid.uuid4().hex[:6]}"
    netns, controller = namespaces["terminal"], namespaces["controller"]
    address = namespaces["address"].rsplit(".", 1)[0] + ".4"
    _ip("-n", netns, "addr", "add", f"{address}/24", "dev", f"{namespaces['veth']}t")
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(
        yaml.safe_dump(
            {"all": {"hosts": {name: {"ansible_host": address, "ipm_lab_netns": netns, "ipm_model": "PS-200"}}}}
        )
    )
    try:
        run_lab("up", "--inventory", str(inventory))
        assert _state(name)["netns"] == netns
        hardware = yaml.safe_load(_ssh_from(controller, address, "cat /etc/ipm/hardware.yml").stdout)
        assert hardware["model"] == "PS-200"
    finally:
        run_lab("down", "--missing-ok", name, check=False)
    assert not (TERMINALS_DIR / name).exists()
