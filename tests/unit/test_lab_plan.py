"""Pure logic of the lab: terminal ids, address plan, inventory reading, terminal files."""

from __future__ import annotations

import json

import pytest
import yaml

from ipm_tools.lab_files import interfaces_document, sshd_config, terminal_files
from ipm_tools.lab_plan import (
    PLAN_CAPACITY,
    LabError,
    TerminalSpec,
    allocate_addresses,
    base_recipe,
    check_specs,
    count_names,
    in_netns,
    netns_addresses,
    netns_loopback_up,
    normalize_interfaces,
    recipe_hash,
    spec_for,
    specs_from_inventory,
    validate_address,
    validate_netns,
    validate_netns_address,
    validate_terminal_id,
)


@pytest.mark.parametrize("name", ["lab-01", "t1", "PS300-0042", "term.site-a", "a" * 63])
def test_valid_terminal_ids(name):
    assert validate_terminal_id(name) == name


@pytest.mark.parametrize("name", ["", "-lab", "lab-", "lab_01", "lab 01", "lab..01", "é1", "a" * 65, None])
def test_invalid_terminal_ids_fail_with_one_line(name):
    with pytest.raises(LabError) as error:
        validate_terminal_id(name)
    assert "\n" not in str(error.value)
    assert "hostname" in str(error.value)


def test_count_names_are_numbered_and_validated():
    assert count_names(3) == ["lab-01", "lab-02", "lab-03"]
    assert count_names(2, "ci-") == ["ci-01", "ci-02"]
    assert count_names(120)[-1] == "lab-120"
    with pytest.raises(LabError, match="not a valid hostname"):
        count_names(1, "bad_prefix-")


def test_count_beyond_the_plan_is_refused():
    with pytest.raises(LabError, match=f"holds {PLAN_CAPACITY}"):
        count_names(PLAN_CAPACITY + 1)
    with pytest.raises(LabError, match="at least 1"):
        count_names(0)


def test_allocate_skips_used_addresses_and_reports_exhaustion():
    assert allocate_addresses(2, {"127.0.100.1"}) == ["127.0.100.2", "127.0.100.3"]
    addresses = allocate_addresses(PLAN_CAPACITY, set())
    assert len(set(addresses)) == PLAN_CAPACITY
    assert all(a.startswith("127.0.") and not a.endswith((".0", ".255")) for a in addresses)
    with pytest.raises(LabError, match="free of"):
        allocate_addresses(2, addresses[1:])


@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.1", "128.0.0.1"])
def test_addresses_outside_loopback_are_refused(address):
    with pytest.raises(LabError, match=r"outside 127\.0\.0\.0/8"):
        validate_address(address, "inv.yml: host t1: ansible_host")


@pytest.mark.parametrize("address", ["127.0.0.1", "not-an-address", "::1"])
def test_reserved_or_malformed_addresses_are_refused(address):
    with pytest.raises(LabError):
        validate_address(address, "x")


def test_specs_from_inventory_reads_identity_and_interfaces():
    data = {
        "_meta": {
            "hostvars": {
                "t2": {"ansible_host": "127.0.50.2", "ipm_model": "TK-110", "ipm_serial_number": "TK-9"},
                "t1": {
                    "ansible_host": "127.0.50.1",
                    "ipm_interfaces": [{"name": "pay", "type": "payment"}, "printer"],
                },
            }
        },
        "all": {"children": ["ungrouped", "site_x"]},
        "site_x": {"hosts": ["t1", "t2"]},
    }
    specs = specs_from_inventory(data, "inv")
    assert [s.terminal_id for s in specs] == ["t1", "t2"]
    assert specs[1].model == "TK-110" and specs[1].serial_number == "TK-9"
    assert [i["name"] for i in specs[0].interfaces] == ["pay", "printer"]
    assert specs[0].serial_number  # a default serial number when the inventory has none


@pytest.mark.parametrize(
    ("hostvars", "message"),
    [
        ({"t1": {}}, "no ansible_host"),
        ({"t1": {"ansible_host": "10.1.2.3"}}, "outside 127.0.0.0/8"),
        ({"t_1": {"ansible_host": "127.0.50.1"}}, "not a valid hostname"),
        ({"t1": {"ansible_host": "127.0.50.1"}, "t2": {"ansible_host": "127.0.50.1"}}, "also the address of t1"),
        ({"t1": {"ansible_host": "127.0.50.1", "ipm_interfaces": 5}}, "ipm_interfaces"),
        ({}, "no hosts"),
    ],
)
def test_bad_inventories_name_host_and_key(hostvars, message):
    with pytest.raises(LabError, match=message) as error:
        specs_from_inventory({"_meta": {"hostvars": hostvars}}, "inventories/x.yml")
    assert str(error.value).startswith("inventories/x.yml")


def test_interfaces_accept_mapping_shape():
    interfaces = normalize_interfaces({"pay": "payment", "gate": {"type": "barrier", "baud": 9600}}, "w")
    assert interfaces == ({"name": "pay", "type": "payment"}, {"name": "gate", "type": "barrier", "baud": 9600})
    with pytest.raises(LabError, match="twice"):
        normalize_interfaces(["printer", "printer"], "w")
    with pytest.raises(LabError, match="/dev/ipm"):
        normalize_interfaces(["bad/name"], "w")
    assert normalize_interfaces(["barcode_reader"], "w")[0]["name"] == "barcode_reader"


def test_registry_device_becomes_product_and_settings_are_kept():
    spec = spec_for(
        "t1", "127.0.50.1", 0, {"ipm_interfaces": {"payment": {"device": "verifone-p400", "port": "/dev/ttyUSB0"}}}
    )
    (entry,) = interfaces_document(spec)["interfaces"]
    assert entry["device"] == "/dev/ipm/payment"
    assert entry["product"] == "verifone-p400"
    assert entry["port"] == "/dev/ttyUSB0"
    assert entry["type"] == "payment"


def test_check_specs_refuses_clashes_with_running_terminals():
    a = TerminalSpec("a", "127.0.100.1")
    b = TerminalSpec("b", "127.0.100.2")
    check_specs([a, b], {"a": "127.0.100.1"})
    with pytest.raises(LabError, match="in use by running terminal c"):
        check_specs([a, b], {"c": "127.0.100.2"})
    with pytest.raises(LabError, match="already runs on"):
        check_specs([a], {"a": "127.0.100.9"})
    with pytest.raises(LabError, match="requested twice"):
        check_specs([a, a], {})


def test_recipe_hash_changes_with_the_recipe():
    recipe = base_recipe()
    changed = {**recipe, "packages": [*recipe["packages"], "vim"]}
    assert recipe_hash(recipe) == recipe_hash(base_recipe())
    assert recipe_hash(recipe) != recipe_hash(changed)


def test_terminal_files_carry_identity_address_and_peripherals():
    spec = spec_for("t1", "127.0.100.7", 0, {"ipm_model": "PS-200", "ipm_serial_number": "PS200-1"})
    files = {f.path: f for f in terminal_files(spec, "ssh-ed25519 AAAA lab", "0" * 32)}
    assert files["/etc/hostname"].content == "t1\n"
    assert yaml.safe_load(files["/etc/ipm/hardware.yml"].content) == {"model": "PS-200", "serial_number": "PS200-1"}
    assert "ListenAddress 127.0.100.7:22" in files["/etc/ssh/sshd_config.d/ipm-lab.conf"].content
    assert "PasswordAuthentication no" in sshd_config("127.0.100.7")
    assert files["/root/.ssh/authorized_keys"].mode == 0o600
    devices = [i["device"] for i in interfaces_document(spec)["interfaces"]]
    assert devices == ["/dev/ipm/payment", "/dev/ipm/printer", "/dev/ipm/barrier"]
    assert "/etc/ipm/payment-module.yml" in files


def test_base_has_the_vpn_firewall_and_apt_tools():
    packages = base_recipe()["packages"]
    for package in ("wireguard-go", "wireguard-tools", "nftables", "iputils-ping", "gpgv"):
        assert package in packages
    assert len(set(packages)) == len(packages)


# --- network namespaces ------------------------------------------------------------------------

IP_ADDR_JSON = json.dumps(
    [
        {
            "ifname": "lo",
            "flags": ["LOOPBACK", "UP", "LOWER_UP"],
            "addr_info": [{"family": "inet", "local": "127.0.0.1"}],
        },
        {
            "ifname": "veth0",
            "flags": ["BROADCAST", "UP"],
            "addr_info": [{"family": "inet", "local": "10.20.0.2"}, {"family": "inet6", "local": "fe80::1"}],
        },
    ]
)


def test_spec_keeps_its_network_namespace():
    spec = TerminalSpec("lb-01", "10.20.0.2", netns="lbns-x")
    assert spec.to_dict()["netns"] == "lbns-x"
    assert TerminalSpec.from_dict(spec.to_dict()) == spec
    # Records written before namespaces existed: the host's network.
    assert TerminalSpec.from_dict({"terminal_id": "lb-02", "address": "127.0.100.2"}).netns == ""


def test_netns_names():
    assert validate_netns("lbns-1a2b3c-t") == "lbns-1a2b3c-t"
    for bad in ("", "a/b", "..", ".", "x" * 65, None, "with space"):
        with pytest.raises(LabError, match="is not a network namespace name"):
            validate_netns(bad)


def test_netns_addresses_are_any_unicast_ipv4():
    assert validate_netns_address("10.20.0.2", "ns") == "10.20.0.2"
    with pytest.raises(LabError, match=r"needs its address there: --address ADDR"):
        validate_netns_address(None, "ns")
    with pytest.raises(LabError, match="is not an IPv4 address"):
        validate_netns_address("10.20.0", "ns")
    for bad in ("0.0.0.0", "224.0.0.1", "255.255.255.255", "fe80::1"):
        with pytest.raises(LabError):
            validate_netns_address(bad, "ns")


def test_addresses_and_loopback_of_a_namespace_from_ip_json():
    assert netns_addresses(IP_ADDR_JSON) == ["127.0.0.1", "10.20.0.2"]
    assert netns_addresses("") == [] and netns_addresses("not json") == []
    assert netns_loopback_up(IP_ADDR_JSON)
    assert not netns_loopback_up(json.dumps([{"ifname": "lo", "flags": ["LOOPBACK"]}]))
    assert not netns_loopback_up("")


def test_commands_run_inside_a_namespace_or_as_they_are():
    assert in_netns("lbns-x", ["ssh", "root@10.20.0.2"]) == ["ip", "netns", "exec", "lbns-x", "ssh", "root@10.20.0.2"]
    assert in_netns("", ["ssh", "root@127.0.100.1"]) == ["ssh", "root@127.0.100.1"]


def test_inventory_host_with_ipm_lab_netns_boots_into_it():
    data = {
        "_meta": {
            "hostvars": {
                "vpn-a": {"ansible_host": "10.20.0.2", "ipm_lab_netns": "lbns-t", "ipm_model": "TK-110"},
                "loop-b": {"ansible_host": "127.0.99.5"},
            }
        },
        "all": {"hosts": ["vpn-a", "loop-b"]},
    }
    specs = {spec.terminal_id: spec for spec in specs_from_inventory(data, "inv.yml")}
    assert specs["vpn-a"].netns == "lbns-t" and specs["vpn-a"].address == "10.20.0.2"
    assert specs["vpn-a"].model == "TK-110"
    assert specs["loop-b"].netns == ""
    # Without the namespace, 10.x is refused as before.
    del data["_meta"]["hostvars"]["vpn-a"]["ipm_lab_netns"]
    with pytest.raises(LabError, match=r"inv.yml: host vpn-a: ansible_host: address 10.20.0.2 is outside 127.0.0.0/8"):
        specs_from_inventory(data, "inv.yml")
    data["_meta"]["hostvars"]["vpn-a"]["ipm_lab_netns"] = "bad/ns"
    with pytest.raises(LabError, match=r"inv.yml: host vpn-a: ipm_lab_netns: 'bad/ns' is not a network namespace name"):
        specs_from_inventory(data, "inv.yml")
