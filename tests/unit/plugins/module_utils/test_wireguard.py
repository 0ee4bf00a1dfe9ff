"""Pure rules of module_utils/wireguard.py: key files, wg-quick files, peer checks, the hub's peers, rotation."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.ipm.fleet.plugins.filter.wireguard import vpn_hub_terminals
from ansible_collections.ipm.fleet.plugins.module_utils import wireguard as wg

KEY_A = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_B = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
KEY_C = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
INTERFACE = {
    "address": ["10.59.0.1/32"],
    "listen_port": 51820,
    "key_file": "/etc/wireguard/ipm-hub.key",
    "post_up": [],
    "post_down": [],
}


def run(argv, data=None):
    result = subprocess.run(argv, capture_output=True, text=True, input=data, check=False)
    return result.returncode, result.stdout, result.stderr


def test_public_key_shape():
    assert wg.is_public_key(KEY_A)
    assert not wg.is_public_key(KEY_A[:-2] + "==")
    assert not wg.is_public_key("not a key")
    assert not wg.is_public_key(None)


def test_key_file_with_loose_permissions_is_refused_naming_file_and_fix(tmp_path):
    path = tmp_path / "ipm0.key"
    assert wg.key_file_problem(str(path)) is None  # missing: generated later
    path.write_text("x\n")
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        assert wg.key_file_problem(str(path)) is None
    os.chmod(path, 0o644)
    problem = wg.key_file_problem(str(path))
    assert str(path) in problem and "0644" in problem and "vpn_rotate=true" in problem and "chmod 0600" in problem
    (tmp_path / "dir.key").mkdir()
    assert "regular file" in wg.key_file_problem(str(tmp_path / "dir.key"))


@pytest.mark.skipif(shutil.which("wg") is None, reason="needs wireguard-tools")
def test_generated_key_is_0600_and_only_public_key_returned(tmp_path):
    path = str(tmp_path / "sub" / "ipm0.key")
    wg.generate_key(path, run)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    public = wg.public_key(path, run)
    with open(path) as stream:
        private = stream.read().strip()
    assert wg.is_public_key(public) and public != private
    # Rotation: stage, switch (previous kept), revert, commit.
    paths = wg.key_paths(path)
    wg.generate_key(paths["next"], run)
    staged = wg.public_key(paths["next"], run)
    assert wg.switch_key(path, "ipmnotthere0", run)
    assert wg.public_key(path, run) == staged and wg.public_key(paths["previous"], run) == public
    assert not wg.switch_key(path, "ipmnotthere0", run)
    assert wg.revert_key(path, "ipmnotthere0", run)
    assert wg.public_key(path, run) == public and not os.path.exists(paths["previous"])
    with open(path, "w") as stream:
        stream.write("garbage\n")
    with pytest.raises(wg.WireGuardError, match="not a WireGuard private key"):
        wg.public_key(path, run)


def test_render_never_holds_a_private_key_and_parses_back():
    peers = [wg.normalise_peer({"name": "t-2", "public_key": KEY_B, "allowed_ips": "10.60.1.3/32", "note": "customer=a"}),
             wg.normalise_peer({"name": "t-1", "public_key": KEY_A, "allowed_ips": ["10.60.1.2"], "persistent_keepalive": 25})]  # fmt: skip
    text = wg.render(INTERFACE, peers, who="role vpn_hub")
    assert "PrivateKey" not in text and "PostUp = wg set %i private-key /etc/wireguard/ipm-hub.key" in text
    assert text.index("t-1") < text.index("t-2")  # sorted: the file does not depend on the order of the terminals
    interface, parsed = wg.parse(text)
    assert interface["Address"] == ["10.59.0.1/32"]
    assert [(p["name"], p["public_key"], p["allowed_ips"]) for p in parsed] == [
        ("t-1", KEY_A, ["10.60.1.2/32"]),
        ("t-2", KEY_B, ["10.60.1.3/32"]),
    ]
    assert not wg.interface_changed(text, INTERFACE)
    assert wg.interface_changed(text, dict(INTERFACE, address=["10.59.0.2/32"]))


@pytest.mark.skipif(shutil.which("wg-quick") is None, reason="needs wireguard-tools")
def test_sync_input_is_what_wg_quick_strip_makes(tmp_path):
    peers = [
        wg.normalise_peer(
            {"name": "t-1", "public_key": KEY_A, "allowed_ips": ["10.60.1.2/32"], "persistent_keepalive": 25}
        )
    ]
    path = tmp_path / "ipmtest0.conf"
    path.write_text(wg.render(dict(INTERFACE, post_up=["ip route replace 10.60.0.0/14 dev %i"]), peers))
    stripped = run(["wg-quick", "strip", str(path)])
    assert stripped[0] == 0, stripped[2]
    ours, _carried = wg.sync_input(INTERFACE, peers, {})
    # wg-quick strip keeps comments; wg ignores them.
    kept = [line for line in stripped[1].splitlines() if line.strip() and not line.startswith("#")]
    assert kept == [line for line in ours.splitlines() if line.strip()]


def test_peer_problems_name_the_peers():
    peers = [
        wg.normalise_peer({"name": "t-1", "public_key": KEY_A, "allowed_ips": ["10.60.1.2/32"]}),
        wg.normalise_peer({"name": "t-2", "public_key": KEY_A, "allowed_ips": ["10.60.1.2/32"]}),
        wg.normalise_peer({"name": "t-3", "public_key": "nope", "allowed_ips": []}),
    ]
    problems = wg.peer_problems(peers)
    assert any("used by both t-1 and t-2" in line for line in problems)
    assert any("peers t-1 and t-2 both claim 10.60.1.2/32" in line for line in problems)
    assert any("t-3: public_key 'nope'" in line for line in problems)
    assert any("t-3 has no address" in line for line in problems)
    with pytest.raises(wg.WireGuardError, match="expected an IP address"):
        wg.normalise_peer({"name": "t-4", "public_key": KEY_C, "allowed_ips": ["10.60.1.999/32"]})


def test_hub_peers_keep_known_keys_remove_revoked_retired_and_gone():
    current = [
        {"name": "t-1", "public_key": KEY_A, "allowed_ips": ["10.60.1.2/32"]},
        {"name": "t-2", "public_key": KEY_B, "allowed_ips": ["10.60.1.3/32"]},
        {"name": "t-gone", "public_key": KEY_C, "allowed_ips": ["10.60.1.9/32"]},
    ]
    new_key = "0" * 43 + "="
    terminals = [
        {"name": "t-1", "address": "10.60.1.2", "public_key": "", "customer": "a"},  # not in this run: key kept
        {"name": "t-2", "address": "10.60.1.3", "status": "retired"},
        {"name": "t-3", "address": "10.61.1.2", "public_key": new_key, "customer": "b"},
        {"name": "t-4", "address": "10.61.1.3"},  # no key yet
        {"name": "t-5", "address": "10.61.1.4", "public_key": ""},
    ]
    plan = wg.hub_peers(terminals, current, revoked=["t-5"])
    assert plan["problems"] == []
    assert [(p["name"], p["public_key"], p["allowed_ips"]) for p in plan["peers"]] == [
        ("t-1", KEY_A, ["10.60.1.2/32"]),
        ("t-3", new_key, ["10.61.1.2/32"]),
    ]
    assert plan["added"] == ["t-3"] and plan["pending"] == ["t-4"]
    assert plan["removed"] == {"t-2": "retired", "t-gone": "not in the inventory any more"}
    rotated = wg.hub_peers([{"name": "t-1", "address": "10.60.1.2", "public_key": KEY_C}], current[:1])
    assert rotated["rotated"] == ["t-1"]


def test_hub_peers_refuse_duplicate_key_and_missing_address():
    current = [{"name": "t-1", "public_key": KEY_A, "allowed_ips": ["10.60.1.2/32"]}]
    duplicate = wg.hub_peers(
        [{"name": "t-1", "address": "10.60.1.2"}, {"name": "t-2", "address": "10.60.1.3", "public_key": KEY_A}], current
    )
    assert any("used by both t-1 and t-2" in line for line in duplicate["problems"])
    missing = wg.hub_peers([{"name": "t-9", "address": "", "public_key": KEY_B}], [])
    assert missing["problems"] == [
        "terminal t-9 has a public key but no address in the VPN plan: run `ipm-registry addresses --assign` and "
        "commit vpn-plan.yml (or revoke it with vpn_revoked)"
    ]


def test_rotated_peer_gets_the_old_endpoint_and_live_drift_is_seen():
    live = {
        KEY_A: {
            "public_key": KEY_A,
            "endpoint": "203.0.113.7:40001",
            "allowed_ips": ["10.60.1.2/32"],
            "persistent_keepalive": None,
        },
        KEY_B: {"public_key": KEY_B, "endpoint": None, "allowed_ips": ["10.60.1.3/32"], "persistent_keepalive": None},
    }
    peers = [
        wg.normalise_peer({"name": "t-1", "public_key": KEY_C, "allowed_ips": ["10.60.1.2/32"]}),
        wg.normalise_peer({"name": "t-2", "public_key": KEY_B, "allowed_ips": ["10.60.1.3/32"]}),
    ]
    text, carried = wg.sync_input(INTERFACE, peers, live)
    assert carried == {KEY_C: "203.0.113.7:40001"}
    assert "Endpoint = 203.0.113.7:40001" in text and text.count("Endpoint") == 1
    assert wg.live_differs(peers, live)
    same = [wg.normalise_peer({"name": "t-1", "public_key": KEY_A, "allowed_ips": ["10.60.1.2/32"]}), peers[1]]
    assert not wg.live_differs(same, live)


def test_filter_gathers_terminals_only():
    hostvars = {
        "hub": {"ansible_host": "10.59.0.1"},
        "t-1": {
            "ipm_terminal_id": "t-1",
            "ipm_vpn_address": "10.60.1.2",
            "ipm_status": "active",
            "ipm_customer_id": "a",
            "vpn_terminal_public_key": KEY_A,
        },
        "t-2": {"ipm_terminal_id": "t-2", "ipm_vpn_address": None},
    }
    assert vpn_hub_terminals(["hub", "t-1", "t-2"], hostvars) == [
        {"name": "t-1", "address": "10.60.1.2", "public_key": KEY_A, "status": "active", "customer": "a"},
        {"name": "t-2", "address": "", "public_key": "", "status": "active", "customer": ""},
    ]
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match="expected a list of host names"):
        vpn_hub_terminals("all", hostvars)
