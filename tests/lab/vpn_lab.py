"""The VPN lab: a hub, a support controller and terminals of two customers, each in its own network namespace.

Made by the tests (and bench/vpn.py), removed by them, also on failure::

    support ns ──LAN (support prefix)── hub ns ──┐
        └───────────── underlay ────────────────┤ "internet" ns: a bridge
    terminal ns 1, 2 (customer A), 3 (B) ───────┘

- the underlay (10.2xx.yy.0/24, random) joins the hub, the support controller and the terminals
  through the bridge of the "internet" namespace; the terminals have no other route, so their VPN
  addresses (10.60.x.x / 10.61.x.x, only on their WireGuard interface) are reached through the
  tunnel alone;
- the support prefix (10.5x.y.0/24, random) is the LAN between the support controller and the hub;
  ansible-playbook runs in the support namespace (``ip netns exec``);
- the hub and the terminals are lab terminals booted into their namespaces (``ipm-lab``'s Python
  API ``boot_terminals``); nothing leaves the machine.

``python tests/lab/vpn_lab.py ping DST [INTERVAL]`` (run inside a namespace with ``ip netns exec``)
pings DST with ICMP every INTERVAL seconds until SIGTERM, then waits 3 s for late answers and
prints ``{"sent", "received", "lost", "lost_seqs", "max_rtt_s"}``: a packet WireGuard queued during
a key change counts as received, a packet dropped counts as lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LAB_KEY = "/var/lib/ipm-lab/ssh/id_ed25519"
LAB_KNOWN_HOSTS = Path("/var/lib/ipm-lab/ssh/known_hosts")
BIN = Path(sys.executable).parent
SUPERNET = "10.60.0.0/14"
CUSTOMERS = {
    # customer -> (its prefix, its site's prefix, its terminals' numbers)
    "a": ("10.60.0.0/20", "10.60.1.0/28", (1, 2)),
    "b": ("10.61.0.0/20", "10.61.1.0/28", (3,)),
}


# ------------------------------------------------------------------------------------------ ping


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping_until_stopped(destination: str, interval: float = 0.05, linger: float = 3.0) -> dict:
    """ICMP echo to DESTINATION every INTERVAL s until SIGTERM/SIGINT; count the answers (late ones too)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    sent: dict[int, float] = {}
    answered: dict[int, float] = {}
    stop = threading.Event()
    deadline = [0.0]

    def receive():
        while True:
            ready, _w, _x = select.select([sock], [], [], 0.2)
            if not ready:
                if stop.is_set() and time.monotonic() > deadline[0]:
                    return
                continue
            data, _address = sock.recvfrom(2048)
            header = (data[0] & 15) * 4
            kind, _code, _sum, who, seq = struct.unpack("!BBHHH", data[header : header + 8])
            if kind == 0 and who == ident and seq in sent and seq not in answered:
                answered[seq] = time.monotonic() - sent[seq]

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    signal.signal(signal.SIGTERM, lambda *_args: stop.set())
    signal.signal(signal.SIGINT, lambda *_args: stop.set())
    seq = 0
    while not stop.is_set() and seq < 65000:
        seq += 1
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"ipm-vpn-lab-ping"
        packet = struct.pack("!BBHHH", 8, 0, _checksum(body), ident, seq) + b"ipm-vpn-lab-ping"
        sent[seq] = time.monotonic()
        with contextlib.suppress(OSError):  # no route (yet): counted as lost
            sock.sendto(packet, (destination, 0))
        stop.wait(interval)
    deadline[0] = time.monotonic() + linger
    stop.set()
    thread.join()
    lost = sorted(set(sent) - set(answered))
    return {
        "sent": len(sent),
        "received": len(answered),
        "lost": len(lost),
        "lost_seqs": lost[:100],
        "max_rtt_s": round(max(answered.values()), 3) if answered else None,
    }


class ContinuousPing:
    """``with ContinuousPing(ns, dst) as ping: ...`` then ``ping.result``: pings DST from namespace NS meanwhile."""

    def __init__(self, netns: str, destination: str, interval: float = 0.05):
        self.argv = [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            str(Path(__file__)),
            "ping",
            destination,
            str(interval),
        ]
        self.process: subprocess.Popen | None = None
        self.result: dict = {}

    def __enter__(self):
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # a few answers before the change starts
        return self

    def __exit__(self, *exc):
        assert self.process is not None
        time.sleep(1.0)
        self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=30)
        self.result = json.loads(out) if out.strip() else {"error": err}
        return False


# ------------------------------------------------------------------------------------------ namespaces


def sh(*argv: str, check: bool = True, timeout: float = 60, env: dict | None = None, input_text: str | None = None):
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env, input=input_text
    )
    if check and result.returncode != 0:
        raise AssertionError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result


@dataclass
class Network:
    """The namespaces and links of one VPN lab; :meth:`remove` deletes all of them (idempotent)."""

    tag: str
    underlay: str  # "10.2xx.yy" (a /24)
    support: str  # "10.5x.y" (a /24, the support prefix)
    terminals: list[int]
    namespaces: dict[str, str] = field(default_factory=dict)

    @property
    def hub_underlay(self) -> str:
        return f"{self.underlay}.1"

    @property
    def hub_address(self) -> str:
        return f"{self.support}.1"

    @property
    def support_address(self) -> str:
        return f"{self.support}.10"

    @property
    def support_prefix(self) -> str:
        return f"{self.support}.0/24"

    def terminal_underlay(self, number: int) -> str:
        return f"{self.underlay}.{10 + number}"

    def ns(self, role: str) -> str:
        return self.namespaces[role]

    def create(self) -> None:
        tag = self.tag
        roles = ["inet", "hub", "sup", *[f"t{number}" for number in self.terminals]]
        for role in roles:
            name = f"ipmvp-{tag}-{role}"
            sh("ip", "netns", "add", name)
            self.namespaces[role] = name
            sh("ip", "-n", name, "link", "set", "lo", "up")
        inet = self.ns("inet")
        bridge = f"vp{tag}br"
        sh("ip", "-n", inet, "link", "add", bridge, "type", "bridge")
        sh("ip", "-n", inet, "link", "set", bridge, "up")

        def veth(ns_a, name_a, ns_b, name_b):
            sh("ip", "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
            sh("ip", "-n", ns_a, "link", "set", name_a, "up")
            sh("ip", "-n", ns_b, "link", "set", name_b, "up")

        def to_bridge(role, local, address):
            veth(self.ns(role), local, inet, local + "b")
            sh("ip", "-n", inet, "link", "set", local + "b", "master", bridge)
            sh("ip", "-n", self.ns(role), "addr", "add", f"{address}/24", "dev", local)

        to_bridge("hub", f"vp{tag}hu", self.hub_underlay)
        to_bridge("sup", f"vp{tag}su", f"{self.underlay}.2")
        for number in self.terminals:
            to_bridge(f"t{number}", f"vp{tag}t{number}", self.terminal_underlay(number))
        veth(self.ns("hub"), f"vp{tag}hl", self.ns("sup"), f"vp{tag}sl")
        sh("ip", "-n", self.ns("hub"), "addr", "add", f"{self.hub_address}/24", "dev", f"vp{tag}hl")
        sh("ip", "-n", self.ns("sup"), "addr", "add", f"{self.support_address}/24", "dev", f"vp{tag}sl")
        sh("ip", "-n", self.ns("sup"), "route", "add", SUPERNET, "via", self.hub_address)
        # The hub routes; a lab terminal's /proc/sys is read-only, so its host sets this (the role checks it).
        sh("ip", "netns", "exec", self.ns("hub"), "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    def remove(self) -> None:
        for name in list(self.namespaces.values()):
            sh("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


def new_network(terminals=(1, 2, 3)) -> Network:
    tag = uuid.uuid4().hex[:4]
    return Network(
        tag=tag,
        underlay=f"10.{random.randint(200, 249)}.{random.randint(0, 255)}",
        support=f"10.{random.randint(50, 58)}.{random.randint(0, 255)}",
        terminals=list(terminals),
    )


# ------------------------------------------------------------------------------------------ the lab


@dataclass
class VpnLab:
    """A running VPN lab: network, lab terminals (hub + terminals), a registry and its two inventories."""

    network: Network
    directory: Path
    hub: str
    terminals: dict[int, str]  # number -> terminal id
    customers: dict[str, str]  # customer letter -> customer id
    booted: list[str] = field(default_factory=list)

    # --- where things are
    @property
    def registry(self) -> Path:
        return self.directory / "registry"

    def inventory(self, via: str = "address") -> Path:
        return self.directory / f"inventory-{via}"

    @property
    def audit_log(self) -> Path:
        return self.directory / "audit" / "audit.jsonl"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    def plan(self) -> dict:
        import yaml

        return yaml.safe_load((self.registry / "vpn-plan.yml").read_text())

    def vpn_address(self, number: int) -> str:
        return self.plan()["terminals"][self.terminals[number]]["address"]

    def customer_of(self, number: int) -> str:
        return next(letter for letter, (_p, _s, members) in CUSTOMERS.items() if number in members)

    # --- running things
    def env(self) -> dict:
        env = dict(os.environ)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["ANSIBLE_CONFIG"] = str(PROJECT_ROOT / "ansible.cfg")
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "tools"), str(PROJECT_ROOT / "collections")])
        env["IPM_AUDIT_LOG"] = str(self.audit_log)
        env["IPM_AUDIT_KEY_FILE"] = str(self.directory / "audit.key")
        env["ANSIBLE_LOCAL_TEMP"] = str(self.directory / "ansible-tmp")
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(self.directory / "cp")
        env["ANSIBLE_FORCE_COLOR"] = "0"
        return env

    def in_support(self, *argv: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
        """Run ARGV in the support controller's namespace (where the support prefix lives)."""
        return sh("ip", "netns", "exec", self.network.ns("sup"), *argv, timeout=timeout, check=check, env=self.env())

    def playbook(self, *args: str, via: str = "address", playbook: str = "playbooks/vpn.yml", timeout: float = 600):
        return self.in_support(
            str(BIN / "ansible-playbook"),
            "-i",
            str(self.inventory(via)),
            str(PROJECT_ROOT / playbook),
            *args,
            timeout=timeout,
        )

    def ansible(self, *args: str, via: str = "vpn", timeout: float = 300):
        return self.in_support(str(BIN / "ansible"), "-i", str(self.inventory(via)), *args, timeout=timeout)

    def ssh(self, address: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Real SSH from the support namespace to ADDRESS (lab key, host key checked)."""
        return self.in_support(
            "ssh",
            "-i",
            LAB_KEY,
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"root@{address}",
            command,
            timeout=timeout,
        )

    def on(self, name: str, command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """COMMAND on lab terminal NAME (the hub or a terminal) through ``ipm-lab ssh`` (its underlay/LAN address)."""
        result = sh(
            sys.executable, "-m", "ipm_tools.lab", "ssh", name, command, check=False, timeout=timeout, env=self.env()
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{name}: `{command}` failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result

    def pinger(self, destination: str, netns: str | None = None, interval: float = 0.05) -> ContinuousPing:
        return ContinuousPing(netns or self.network.ns("sup"), destination, interval)

    def write_known_hosts(self) -> None:
        """The lab's recorded host keys, plus each terminal's key under its VPN address too."""
        lines = LAB_KNOWN_HOSTS.read_text().splitlines()
        by_address = {line.split()[0]: line.split(None, 1)[1] for line in lines if line.strip()}
        out = [line for line in lines if line.strip()]
        plan = self.plan()["terminals"]
        for number, name in self.terminals.items():
            key = by_address.get(self.network.terminal_underlay(number))
            if key and name in plan:
                out.append(f"{plan[name]['address']} {key}")
        self.known_hosts.write_text("\n".join(out) + "\n")


def write_registry(lab: VpnLab) -> None:
    """The lab's own registry (catalog vpn: section, two customers) and its plan, with two inventories."""
    import yaml

    net = lab.network
    registry = lab.registry
    (registry / "customers").mkdir(parents=True)
    catalog = yaml.safe_load((PROJECT_ROOT / "registry" / "demo" / "catalog.yml").read_text())
    catalog["releases_dir"] = str(PROJECT_ROOT / "app" / "releases")
    catalog["vpn"] = {
        "supernet": SUPERNET,
        "support_prefix": net.support_prefix,
        "hub_address": net.hub_address,
        "hub_endpoint": f"{net.hub_underlay}:51820",
        "listen_port": 51820,
        "keepalive_s": 25,
        "customer_prefix_length": 20,
        "site_prefix_length": 28,
        "address_hold_days": 90,
    }
    (registry / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    targets = {s: {"response_hours": 4, "repair_hours": 24} for s in ("critical", "major", "minor", "temporary")}
    for letter, (prefix, subnet, members) in CUSTOMERS.items():
        customer_id = lab.customers[letter]
        terminals = []
        for number in members:
            if number not in lab.terminals:
                continue
            address = net.terminal_underlay(number)
            terminals.append(
                {
                    "id": lab.terminals[number],
                    "serial_number": f"PS3-{lab.network.tag}-{number:03d}",
                    "model": "PS-300",
                    "ring": "canary",
                    "address": address,
                    "interfaces": {"payment": {"device": "ingenico-self-5000"}, "printer": {"device": "custom-vkp80"}},
                    "parameters": {"listen_address": address},
                }
            )
        document = {
            "customer": {
                "id": customer_id,
                "name": f"Customer {letter.upper()}",
                "country": "FR",
                "languages": ["fr"],
                "release": "2.3.1",
                "vpn_prefix": prefix,
                "contract": {
                    "sla_tier": "gold",
                    "coverage": {"days": days, "start": "00:00", "end": "24:00"},
                    "maintenance_types": ["preventive", "corrective"],
                    "targets": targets,
                },
            },
            "sites": [
                {
                    "id": f"{customer_id}-site",
                    "name": f"Site {letter.upper()}",
                    "city": "Lyon",
                    "timezone": "Europe/Paris",
                    "windows": [{"days": days, "start": "00:00", "duration_minutes": 1440}],
                    "network": {"uplink": "4g", "vpn_subnet": subnet},
                    "terminals": terminals,
                }
            ],
        }
        (registry / "customers" / f"{customer_id}.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    assign = sh(str(BIN / "ipm-registry"), "addresses", "--assign", "-r", str(registry), check=False, env=lab.env())
    if assign.returncode not in (0, 3):
        raise AssertionError(f"ipm-registry addresses --assign failed: {assign.stdout}{assign.stderr}")
    connection = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": LAB_KEY,
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes",
    }
    for via in ("address", "vpn"):
        inventory = lab.inventory(via)
        (inventory / "group_vars").mkdir(parents=True)
        (inventory / "fleet.ipm_registry.yml").write_text(
            yaml.safe_dump({"plugin": "ipm.fleet.registry", "registry": str(registry), "connect_via": via})
        )
        (inventory / "group_vars" / "all.yml").write_text(yaml.safe_dump(connection))
        (inventory / "hub.yml").write_text(
            yaml.safe_dump({"vpn_hub": {"hosts": {lab.hub: {"ansible_host": net.hub_address}}}}, sort_keys=False)
        )


def start_lab(directory: Path, terminals=(1, 2, 3), progress=print) -> VpnLab:
    """Make the namespaces, boot the hub and the terminals into them, write the registry. Caller: stop_lab."""
    sys.path.insert(0, str(PROJECT_ROOT / "tools"))
    from ipm_tools.lab import TerminalSpec, boot_terminals

    network = new_network(terminals)
    lab = VpnLab(
        network=network,
        directory=directory,
        hub=f"vp-{network.tag}-hub",
        terminals={number: f"vp-{network.tag}-{number}" for number in terminals},
        customers={letter: f"vp{network.tag}-cust-{letter}" for letter in CUSTOMERS},
    )
    try:
        (directory / "audit").mkdir(parents=True, exist_ok=True)
        network.create()
        specs = [TerminalSpec(lab.hub, network.hub_address, netns=network.ns("hub"))]
        specs += [
            TerminalSpec(name, network.terminal_underlay(number), netns=network.ns(f"t{number}"))
            for number, name in lab.terminals.items()
        ]
        lab.booted = [spec.terminal_id for spec in specs]
        boot_terminals(specs, progress=progress)
        write_registry(lab)
        lab.write_known_hosts()
    except BaseException:
        stop_lab(lab)
        raise
    return lab


def stop_lab(lab: VpnLab) -> None:
    """Stop the lab's terminals and delete its namespaces (and with them every veth and the bridge)."""
    try:
        if lab.booted:
            sys.path.insert(0, str(PROJECT_ROOT / "tools"))
            from ipm_tools.lab import stop_terminals_named

            stop_terminals_named(lab.booted, progress=lambda *_a: None)
    finally:
        lab.network.remove()


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of an ansible-playbook run: host -> {ok, changed, failed, unreachable, ...}."""
    hosts = {}
    seen = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            seen = True
            continue
        if seen and ":" in line and "=" in line:
            host, _sep, rest = line.partition(":")
            hosts[host.strip()] = {key: int(value) for key, value in (item.split("=") for item in rest.split())}
    return hosts


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "ping":
        print(json.dumps(ping_until_stopped(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.05)))
    else:
        sys.exit("usage: vpn_lab.py ping DESTINATION [INTERVAL]")
