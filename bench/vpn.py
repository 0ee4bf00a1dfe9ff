"""Benchmark: adding 100 peers to a VPN hub one by one, the role's way (wg syncconf) against restarting the interface.

    .venv/bin/python bench/vpn.py [--peers 100] [--interval 0.05]

As root. Makes two network namespaces of its own (``ipmvb-<random>-hub`` and ``-peer``, a veth
pair between them; removed at the end, also on failure): a hub running userspace wireguard-go
(the lab's kernel has no WireGuard module) and one existing terminal peer with a live tunnel.
While a continuous ping (ICMP every ``--interval`` s, tests/lab/vpn_lab.py) runs from the hub to
that terminal's tunnel address, N new peers are added one at a time:

- role: each addition is what the role ``ipm.fleet.vpn_hub`` does on the hub (module_utils
  ``wireguard.converge``: the wg-quick file written atomically, then ``wg syncconf`` of the running
  interface; the existing peer's session is untouched);
- restart: each addition writes the same file and restarts the interface (``wg-quick down`` then
  ``wg-quick up``), the naive way.

The hub is reset between the two. Prints each method's time and the pings it lost; last line
``vpn peers=<N> role_s=<s> restart_s=<s> ratio=<role/restart> loss_role=<n> loss_restart=<m>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from vpn_lab import ContinuousPing  # noqa: E402

from ansible_collections.ipm.fleet.plugins.module_utils import wireguard as wg  # noqa: E402

ENV = dict(
    os.environ, WG_QUICK_USERSPACE_IMPLEMENTATION="wireguard-go", WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1"
)
HUB_ADDRESS, PEER_ADDRESS, SUPERNET = "10.59.0.1", "10.60.1.2", "10.60.0.0/14"


def sh(*argv, input_text=None, check=True):
    result = subprocess.run(argv, capture_output=True, text=True, input=input_text, env=ENV, check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"bench/vpn.py: `{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def keypair() -> tuple[str, str]:
    private = sh("wg", "genkey").stdout.strip()
    return private, sh("wg", "pubkey", input_text=private).stdout.strip()


class Hub:
    def __init__(self, netns: str, directory: Path, peer_public: str, name: str):
        self.netns, self.directory = netns, directory
        # wireguard-go's control socket (/var/run/wireguard/<name>.sock) is shared by every namespace:
        # names of this run only.
        self.name = name
        self.path = str(directory / f"{self.name}.conf")
        self.key_file = str(directory / "hub.key")
        self.interface = {
            "address": [f"{HUB_ADDRESS}/32"],
            "listen_port": 51820,
            "key_file": self.key_file,
            "post_up": [f"ip route replace {SUPERNET} dev %i"],
            "post_down": [],
        }
        self.base = [
            wg.normalise_peer({"name": "terminal-1", "public_key": peer_public, "allowed_ips": [f"{PEER_ADDRESS}/32"]})
        ]

    def run(self, argv, data=None):
        result = subprocess.run(
            ["ip", "netns", "exec", self.netns, *argv], capture_output=True, text=True, input=data, env=ENV, check=False
        )
        return result.returncode, result.stdout, result.stderr

    def up(self, peers):
        wg.write_atomic(self.path, wg.render(self.interface, peers, who="bench/vpn.py"))
        rc, _out, err = self.run(["wg-quick", "up", self.path])
        if rc != 0:
            raise SystemExit(f"bench/vpn.py: wg-quick up failed: {err.strip()}")

    def down(self):
        self.run(["wg-quick", "down", self.path])

    def add_role(self, peers):
        # What the role's wg_hub module does on the hub (converge), run in the hub's namespace.
        rc, out, err = self.run(
            [sys.executable, "-c", CONVERGE, self.name, self.path, repr(self.interface), repr(peers)]
        )
        if rc != 0:
            raise SystemExit(f"bench/vpn.py: converge failed: {err.strip()} {out.strip()}")

    def add_restart(self, peers):
        self.down()
        self.up(peers)


CONVERGE = f"""
import ast, subprocess, sys
sys.path.insert(0, {str(ROOT / "collections")!r})
from ansible_collections.ipm.fleet.plugins.module_utils import wireguard as wg
def run(argv, data=None):
    r = subprocess.run(argv, capture_output=True, text=True, input=data, check=False)
    return r.returncode, r.stdout, r.stderr
name, path, interface, peers = sys.argv[1], sys.argv[2], ast.literal_eval(sys.argv[3]), ast.literal_eval(sys.argv[4])
result = wg.converge(name, path, interface, peers, run, who="bench/vpn.py")
assert result["applied"] and not result["restart_needed"], result
"""


def wait_for_tunnel(hub: Hub, peer_ns: str, peer_public: str, timeout: float = 30) -> None:
    """The existing peer (behind NAT: the hub does not know where it is) sends first, as a terminal does."""
    deadline = time.monotonic() + timeout
    nudge = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ({HUB_ADDRESS!r}, 9))"
    while time.monotonic() < deadline:
        subprocess.run(["ip", "netns", "exec", peer_ns, sys.executable, "-c", nudge], check=False)
        _rc, out, _err = hub.run(["wg", "show", hub.name, "latest-handshakes"])
        if any(line.split()[0] == peer_public and line.split()[1] != "0" for line in out.splitlines() if line.strip()):
            return
        time.sleep(0.5)
    raise SystemExit("bench/vpn.py: the existing peer got no handshake with the hub")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit(
            "bench/vpn.py: needs root (network namespaces, wireguard-go): sudo .venv/bin/python bench/vpn.py"
        )
    for tool in ("wg", "wg-quick", "wireguard-go", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/vpn.py: {tool} is missing: apt-get install wireguard-tools wireguard-go iproute2")
    tag = uuid.uuid4().hex[:4]
    hub_ns, peer_ns = f"ipmvb-{tag}-hub", f"ipmvb-{tag}-peer"
    directory = Path(tempfile.mkdtemp(prefix="bench-vpn-"))
    made = []
    try:
        for ns in (hub_ns, peer_ns):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh(
            "ip",
            "link",
            "add",
            f"vb{tag}h",
            "netns",
            hub_ns,
            "type",
            "veth",
            "peer",
            "name",
            f"vb{tag}p",
            "netns",
            peer_ns,
        )
        sh("ip", "-n", hub_ns, "addr", "add", "10.240.0.1/24", "dev", f"vb{tag}h")
        sh("ip", "-n", peer_ns, "addr", "add", "10.240.0.2/24", "dev", f"vb{tag}p")
        sh("ip", "-n", hub_ns, "link", "set", f"vb{tag}h", "up")
        sh("ip", "-n", peer_ns, "link", "set", f"vb{tag}p", "up")
        peer_if = f"vb{tag}p0"
        hub_private, hub_public = keypair()
        peer_private, peer_public = keypair()
        old = os.umask(0o077)
        (directory / "hub.key").write_text(hub_private + "\n")
        (directory / "peer.key").write_text(peer_private + "\n")
        os.umask(old)
        sh("ip", "netns", "exec", peer_ns, "wireguard-go", peer_if)
        sh("ip", "netns", "exec", peer_ns, "wg", "set", peer_if, "private-key", str(directory / "peer.key"), "peer", hub_public,
           "endpoint", "10.240.0.1:51820", "allowed-ips", f"{HUB_ADDRESS}/32", "persistent-keepalive", "25")  # fmt: skip
        sh("ip", "-n", peer_ns, "addr", "add", f"{PEER_ADDRESS}/32", "dev", peer_if)
        sh("ip", "-n", peer_ns, "link", "set", peer_if, "up")
        sh("ip", "-n", peer_ns, "route", "add", f"{HUB_ADDRESS}/32", "dev", peer_if)
        hub = Hub(hub_ns, directory, peer_public, f"vb{tag}h0")
        new_keys = [keypair()[1] for _index in range(args.peers)]
        new_peers = [
            wg.normalise_peer(
                {
                    "name": f"terminal-{index + 2:03d}",
                    "public_key": key,
                    "allowed_ips": [f"10.60.{2 + index // 250}.{2 + index % 250}/32"],
                }
            )
            for index, key in enumerate(new_keys)
        ]
        results = {}
        for method in ("role", "restart"):
            hub.down()
            hub.up(hub.base)
            wait_for_tunnel(hub, peer_ns, peer_public)
            with ContinuousPing(hub_ns, PEER_ADDRESS, args.interval) as ping:
                started = time.monotonic()
                for count in range(1, args.peers + 1):
                    peers = hub.base + new_peers[:count]
                    (hub.add_role if method == "role" else hub.add_restart)(peers)
                elapsed = time.monotonic() - started
            live = sh("ip", "netns", "exec", hub_ns, "wg", "show", hub.name, "peers").stdout.split()
            if len(live) != args.peers + 1:
                raise SystemExit(f"bench/vpn.py: {method}: the hub has {len(live)} peers, expected {args.peers + 1}")
            results[method] = (elapsed, ping.result)
            print(
                f"{method:8s} {args.peers} peers added one by one in {elapsed:.2f} s; ping to the existing peer: "
                f"sent {ping.result.get('sent')}, lost {ping.result.get('lost')}, slowest answer {ping.result.get('max_rtt_s')} s"
            )
        hub.down()
    finally:
        # Deleting a userspace WireGuard link ends its wireguard-go (a deleted namespace would not).
        for ns in made:
            for link in sh("ip", "-n", ns, "-o", "link", "show", check=False).stdout.splitlines():
                name = link.split(":")[1].strip().split("@")[0]
                if name.startswith(f"vb{tag}") and name[-2:] in ("h0", "p0"):
                    subprocess.run(["ip", "-n", ns, "link", "del", name], check=False)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(directory, ignore_errors=True)
    role_s, restart_s = results["role"][0], results["restart"][0]
    print(
        f"vpn peers={args.peers} role_s={role_s:.2f} restart_s={restart_s:.2f} ratio={role_s / restart_s:.3f} "
        f"loss_role={results['role'][1].get('lost')} loss_restart={results['restart'][1].get('lost')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
