"""The VPN on real parts: a hub, a support controller and terminals of two customers in network namespaces.

One lab for the module (tests/lab/vpn_lab.py): the hub and three lab terminals (customer A: 1 and
2, customer B: 3) booted into their own namespaces, joined by veth pairs through an "internet"
bridge; ansible-playbook runs in the support controller's namespace. The tests run in order:
onboarding of 1 and 2, tunnel checks, a second run, the probe matrix, adding 3 while 1 is
pinged, key rotation while pinged, faults, revocation. Everything is removed at the end, also on
failure.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from vpn_lab import BIN, SUPERNET, recap, start_lab, stop_lab

pytestmark = pytest.mark.lab
KEY_LINE = re.compile(r"^[A-Za-z0-9+/]{43}=$")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the VPN lab needs root (network namespaces, lab terminals): run the lab tests as root")
    vpn = start_lab(tmp_path_factory.mktemp("vpn"))
    try:
        first = vpn.playbook("-l", f"all:!{vpn.terminals[3]}")
        vpn.first_run = first
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
        yield vpn
    finally:
        stop_lab(vpn)


def _private_key(lab, name: str) -> str:
    key = lab.on(
        name, "cat /etc/wireguard/ipm0.key" if name != lab.hub else "cat /etc/wireguard/ipm-hub.key"
    ).stdout.strip()
    assert KEY_LINE.match(key), key
    return key


def _hub_peers(lab) -> dict[str, str]:
    """Allowed address -> public key of the hub's running peers."""
    out = lab.on(lab.hub, "wg show ipm-hub allowed-ips").stdout
    peers = {}
    for line in out.splitlines():
        key, *allowed = line.split()
        for item in allowed:
            peers[item] = key
    return peers


def test_ping_ssh_and_ansible_through_the_tunnel(lab):
    for number in (1, 2):
        address = lab.vpn_address(number)
        assert address.startswith("10.60.1."), address
        with lab.pinger(address, interval=0.1) as ping:
            pass
        assert ping.result["sent"] >= 15 and ping.result["lost"] == 0, ping.result
        ssh = lab.ssh(address, "hostname; ip -4 -br addr show ipm0")
        assert ssh.returncode == 0, ssh.stderr
        assert ssh.stdout.split()[0] == lab.terminals[number] and address in ssh.stdout
    # The VPN addresses exist only on the terminals' WireGuard interfaces: the tunnel is the only path.
    route = lab.in_support("ip", "-4", "route", "get", lab.vpn_address(1))
    assert lab.network.hub_address in route.stdout, route.stdout
    # The project's inventory with connect_via: vpn - ansible_host is the planned address.
    limit = f"all:!vpn_hub:!{lab.terminals[3]}"
    ping = lab.ansible(limit, "-m", "ansible.builtin.ping", "-o")
    assert ping.returncode == 0 and ping.stdout.count("SUCCESS") == 2, ping.stdout + ping.stderr
    hosts = lab.in_support(str(BIN / "ansible-inventory"), "-i", str(lab.inventory("vpn")), "--list")
    hostvars = json.loads(hosts.stdout)["_meta"]["hostvars"]
    assert hostvars[lab.terminals[1]]["ansible_host"] == lab.vpn_address(1)
    store = lab.directory / "history"
    snapshot = lab.playbook(
        "-l", limit, "-e", f"ipm_history_store={store}", via="vpn", playbook="playbooks/snapshot.yml"
    )
    assert snapshot.returncode == 0, snapshot.stdout[-4000:]
    assert {path.name for path in store.iterdir()} >= {lab.terminals[1], lab.terminals[2]}


def test_keys_born_on_the_terminal_never_leave_it(lab):
    run_output = lab.first_run.stdout + lab.first_run.stderr
    audit = lab.audit_log.read_text()
    for name in (lab.terminals[1], lab.terminals[2], lab.hub):
        path = "/etc/wireguard/ipm-hub.key" if name == lab.hub else "/etc/wireguard/ipm0.key"
        mode = lab.on(name, f"stat -c '%a %U' {path}").stdout.split()
        assert mode == ["600", "root"], (name, mode)
        private = _private_key(lab, name)
        public = lab.on(name, f"wg pubkey < {path}").stdout.strip()
        assert private not in run_output and private not in audit, f"{name}: private key in the output or audit log"
        for file in lab.directory.rglob("*"):
            if file.is_file() and file.stat().st_size < 5_000_000:
                assert private not in file.read_text(errors="replace"), f"{name}: private key in {file}"
        assert private not in lab.on(name, "cat /etc/wireguard/*.conf").stdout
        assert public in audit, f"{name}: the public key is not in the audit log"


def test_second_run_changes_nothing(lab):
    # `systemctl reload` (wg syncconf of a file that holds no private key) keeps the key: the role's helper.
    name = lab.terminals[1]
    lab.on(name, "systemctl reload wg-quick@ipm0")
    assert lab.on(name, "wg show ipm0 public-key").stdout == lab.on(name, "wg pubkey < /etc/wireguard/ipm0.key").stdout
    again = lab.playbook("-l", f"all:!{lab.terminals[3]}")
    assert again.returncode == 0, again.stdout[-4000:]
    counts = recap(again.stdout)
    assert counts and all(item["changed"] == 0 for item in counts.values()), counts
    check = lab.playbook("-l", f"all:!{lab.terminals[3]}", "--check", "--diff")
    assert check.returncode == 0 and all(item["changed"] == 0 for item in recap(check.stdout).values()), check.stdout[
        -3000:
    ]


def test_adding_a_peer_keeps_another_tunnel_up(lab):
    before = _hub_peers(lab)
    with lab.pinger(lab.vpn_address(1)) as ping:
        added = lab.playbook("-l", f"{lab.terminals[3]}:vpn_hub")
    assert added.returncode == 0, added.stdout[-5000:]
    assert ping.result["sent"] > 50 and ping.result["lost"] == 0, ping.result
    after = _hub_peers(lab)
    assert after[f"{lab.vpn_address(3)}/32"] and {k: v for k, v in after.items() if k in before} == before
    assert lab.ssh(lab.vpn_address(3), "hostname").stdout.strip() == lab.terminals[3]


def test_probe_matrix_no_path_across_customers_support_reaches_all(lab):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))
    from ansible_collections.ipm.fleet.plugins.plugin_utils.vpn_plan import isolation_rules, may_reach

    catalog = yaml.safe_load((lab.registry / "catalog.yml").read_text())["vpn"]
    ipm_vpn = dict(catalog, customers={})
    for path in (lab.registry / "customers").glob("*.yml"):
        customer = yaml.safe_load(path.read_text())["customer"]
        ipm_vpn["customers"][customer["id"]] = {"prefix": customer["vpn_prefix"]}
    rules = isolation_rules(ipm_vpn)
    numbers = sorted(lab.terminals)
    # The support prefix reaches every terminal.
    for number in numbers:
        assert may_reach(rules, lab.network.support_address, lab.vpn_address(number))
        assert lab.ssh(lab.vpn_address(number), "true").returncode == 0
    hub_key = lab.on(lab.hub, "wg show ipm-hub public-key").stdout.strip()
    allowed = f"{lab.network.support_prefix},{lab.network.hub_address}/32"
    paths = {}
    for source in numbers:
        name = lab.terminals[source]
        # A terminal tampered with to send every VPN address into the tunnel: the hub's policy still decides.
        lab.on(
            name, f"wg set ipm0 peer {hub_key} allowed-ips {allowed},{SUPERNET} && ip route replace {SUPERNET} dev ipm0"
        )
        try:
            for target in numbers:
                if target == source:
                    continue
                probe = lab.on(name, f"ping -c 2 -W 1 -i 0.3 {lab.vpn_address(target)}", check=False)
                paths[(source, target)] = probe.returncode == 0
                expected = may_reach(rules, lab.vpn_address(source), lab.vpn_address(target))
                assert paths[(source, target)] == expected, (source, target, probe.stdout)
        finally:
            lab.on(
                name, f"ip route del {SUPERNET} dev ipm0; wg set ipm0 peer {hub_key} allowed-ips {allowed}", check=False
            )
    across = [pair for pair, ok in paths.items() if ok and lab.customer_of(pair[0]) != lab.customer_of(pair[1])]
    assert across == [], f"paths across customers: {across}"
    counters = lab.on(lab.hub, "nft list chain inet ipm_vpn forward").stdout
    assert re.search(r"counter packets [1-9]", counters), counters


def test_rotation_without_loss(lab):
    old_public = lab.on(lab.terminals[1], "wg show ipm0 public-key").stdout.strip()
    old_private = _private_key(lab, lab.terminals[1])
    with lab.pinger(lab.vpn_address(1)) as ping:
        rotated = lab.playbook("-l", f"{lab.terminals[1]}:vpn_hub", "-e", "vpn_rotate=true")
    assert rotated.returncode == 0, rotated.stdout[-5000:]
    assert ping.result["sent"] > 50 and ping.result["lost"] == 0, ping.result
    new_public = lab.on(lab.terminals[1], "wg show ipm0 public-key").stdout.strip()
    assert new_public != old_public
    assert _hub_peers(lab)[f"{lab.vpn_address(1)}/32"] == new_public
    assert old_public not in lab.on(lab.hub, "wg show ipm-hub peers").stdout
    left = lab.on(lab.terminals[1], "ls /etc/wireguard").stdout.split()
    assert sorted(left) == ["ipm0.conf", "ipm0.key"], left
    assert old_private not in (rotated.stdout + lab.audit_log.read_text())
    assert lab.ssh(lab.vpn_address(1), "true").returncode == 0
    again = lab.playbook("-l", f"{lab.terminals[1]}:vpn_hub")
    assert all(item["changed"] == 0 for item in recap(again.stdout).values()), again.stdout[-3000:]


def test_key_file_with_wrong_permissions_is_refused(lab):
    name = lab.terminals[2]
    before = lab.on(name, "wg show ipm0 public-key").stdout.strip()
    lab.on(name, "chmod 0644 /etc/wireguard/ipm0.key")
    try:
        run = lab.playbook("-l", f"{name}:vpn_hub")
        assert run.returncode != 0
        assert "/etc/wireguard/ipm0.key" in run.stdout and "0644" in run.stdout and "vpn_rotate=true" in run.stdout, (
            run.stdout[-3000:]
        )
        assert "Traceback" not in run.stdout + run.stderr
        assert lab.on(name, "wg show ipm0 public-key").stdout.strip() == before
    finally:
        lab.on(name, "chmod 0600 /etc/wireguard/ipm0.key")


def test_duplicate_key_and_missing_address_refused_nothing_applied(lab):
    config_before = lab.on(lab.hub, "cat /etc/wireguard/ipm-hub.conf").stdout
    live_before = _hub_peers(lab)
    key_1 = live_before[f"{lab.vpn_address(1)}/32"]
    cases = {
        "duplicate": (
            [
                {"name": lab.terminals[1], "address": lab.vpn_address(1)},
                {"name": lab.terminals[2], "address": lab.vpn_address(2), "public_key": key_1},
            ],
            [f"used by both {lab.terminals[1]} and {lab.terminals[2]}"],
        ),
        "no address": (
            [
                {"name": lab.terminals[1], "address": lab.vpn_address(1)},
                {"name": "vp-new-9", "public_key": "x" * 43 + "="},
            ],
            ["vp-new-9 has a public key but no address", "ipm-registry addresses"],
        ),
    }
    for terminals, expected in cases.values():
        args = json.dumps({"address": [f"{lab.network.hub_address}/32"], "post_up": [], "terminals": terminals})
        result = lab.ansible("vpn_hub", "-m", "ipm.fleet.wg_hub", "-a", args, via="address")
        assert result.returncode != 0, result.stdout
        for words in expected:
            assert words in result.stdout, result.stdout
        assert "nothing applied" in result.stdout
        assert lab.on(lab.hub, "cat /etc/wireguard/ipm-hub.conf").stdout == config_before
        assert _hub_peers(lab) == live_before


def test_terminal_without_address_and_unreachable_hub(lab):
    plan_file = lab.registry / "vpn-plan.yml"
    plan_text = plan_file.read_text()
    plan = yaml.safe_load(plan_text)
    hub_inventory = lab.inventory("address") / "hub.yml"
    hub_text = hub_inventory.read_text()
    try:
        del plan["terminals"][lab.terminals[2]]
        plan_file.write_text(yaml.safe_dump(plan))
        run = lab.playbook("-l", f"{lab.terminals[2]}:vpn_hub")
        assert run.returncode != 0
        assert lab.terminals[2] in run.stdout and "ipm-registry addresses --assign" in run.stdout, run.stdout[-3000:]
        assert "Traceback" not in run.stdout + run.stderr
    finally:
        plan_file.write_text(plan_text)
    try:
        hub_inventory.write_text(hub_text.replace(lab.network.hub_address, f"{lab.network.support}.99"))
        run = lab.playbook("-l", f"{lab.terminals[1]}:vpn_hub", timeout=300)
        assert run.returncode != 0
        assert f"hub {lab.hub}" in run.stdout and "cannot be reached" in run.stdout, run.stdout[-3000:]
    finally:
        hub_inventory.write_text(hub_text)
    assert lab.ssh(lab.vpn_address(1), "true").returncode == 0


def test_revoked_terminal_loses_the_tunnel(lab):
    revoked = lab.terminals[2]
    with lab.pinger(lab.vpn_address(1)) as ping:
        run = lab.playbook("-e", json.dumps({"vpn_revoked": [revoked]}))
    assert run.returncode == 0, run.stdout[-5000:]
    assert ping.result["lost"] == 0, ping.result
    assert f"{lab.vpn_address(2)}/32" not in _hub_peers(lab)
    assert revoked not in lab.on(lab.hub, "cat /etc/wireguard/ipm-hub.conf").stdout
    with lab.pinger(lab.vpn_address(2), interval=0.2) as gone:
        pass
    assert gone.result["received"] == 0, gone.result
    assert lab.on(revoked, f"ping -c 2 -W 1 {lab.network.hub_address}", check=False).returncode != 0
    assert lab.ssh(lab.vpn_address(3), "true").returncode == 0
