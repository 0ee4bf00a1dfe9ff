"""The ipm.fleet.registry inventory over the VPN: connect_via, the ipm_vpn_* variables, ipm_vpn, a broken plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
import vpn_fixtures as vf

from ipm_tools import registry as tool

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args, env=None):
    full_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **(env or {}))
    full_env.pop("ANSIBLE_INVENTORY", None)
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def listing(config, env=None):
    result = run(
        "ansible-inventory",
        "-i",
        str(config),
        "--list",
        env={"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1", **(env or {})},
    )
    return result, (json.loads(result.stdout) if result.returncode == 0 else None)


def with_options(config, **options):
    text = "plugin: ipm.fleet.registry\nregistry: registry\n" + "".join(f"{k}: {v}\n" for k, v in options.items())
    config.write_text(text)
    return config


def test_connect_via_vpn_sets_ansible_host_and_every_host_has_the_vpn_vars(tmp_path):
    config = vf.vpn_registry(tmp_path)
    _, data = listing(config)
    hostvars = data["_meta"]["hostvars"]
    assert hostvars["a-001"]["ansible_host"] == "127.0.99.1"  # default: the registry's address
    assert hostvars["a-001"]["ipm_vpn_address"] is None  # not assigned yet
    assert hostvars["a-001"]["ipm_vpn_prefix"] == "10.60.1.0/28"
    assert hostvars["a-001"]["ipm_vpn_customer_prefix"] == "10.60.0.0/20"

    assert tool.main(["addresses", "--assign", "-r", str(config)]) == 0
    with_options(config, connect_via="vpn", include_retired="true")
    _, data = listing(config)
    hostvars = data["_meta"]["hostvars"]
    assert hostvars["a-001"]["ansible_host"] == hostvars["a-001"]["ipm_vpn_address"] == "10.60.1.2"
    assert hostvars["b-002"]["ansible_host"] == "10.61.1.3"
    assert hostvars["b-002"]["ipm_vpn_customer_prefix"] == "10.61.0.0/20"  # assigned and recorded
    assert hostvars["a-002"]["ansible_host"] == "127.0.99.2" and hostvars["a-002"]["ipm_vpn_address"] is None  # retired
    ipm_vpn = data["all"]["vars"]["ipm_vpn"] if "vars" in data.get("all", {}) else hostvars["a-001"]["ipm_vpn"]
    assert ipm_vpn["support_prefix"] == "10.59.0.0/24" and ipm_vpn["hub_address"] == "10.59.0.1"
    assert ipm_vpn["customers"]["bravo"] == {"prefix": "10.61.0.0/20", "sites": {"bravo-sydney": "10.61.1.0/28"}}


def test_a_terminal_without_an_address_fails_the_inventory_or_is_skipped(tmp_path):
    config = vf.vpn_registry(tmp_path)
    tool.main(["addresses", "--assign", "-r", str(config)])
    registry = config.parent / "registry" / "customers"
    bravo = yaml.safe_load((registry / "bravo.yml").read_text())
    bravo["sites"][0]["terminals"].append(
        {"id": "b-003", "serial_number": "SN-B-003", "model": "PS-300", "address": "127.0.99.5"}
    )
    (registry / "bravo.yml").write_text(yaml.safe_dump(bravo, sort_keys=False))

    with_options(config, connect_via="vpn")
    result, _ = listing(config)
    assert result.returncode != 0
    assert "1 terminal(s) without an address in the VPN plan" in result.stderr and "b-003" in result.stderr
    assert "ipm-registry addresses --assign" in result.stderr

    with_options(config, connect_via="vpn", vpn_unassigned="skip")
    result, data = listing(config)
    assert data is not None, result.stderr
    assert "b-003" not in data["_meta"]["hostvars"] and "b-001" in data["_meta"]["hostvars"]
    assert "1 terminal(s) left out (vpn_unassigned: skip)" in result.stderr and "b-003" in result.stderr

    with_options(config, vpn_unassigned="skip")  # the environment variable chooses too
    result, data = listing(config, env={"IPM_REGISTRY_CONNECT_VIA": "vpn"})
    assert data["_meta"]["hostvars"]["b-001"]["ansible_host"] == "10.61.1.2" and "b-003" in result.stderr


def test_a_broken_plan_fails_the_inventory_with_the_validators_message(tmp_path):
    plan = {"terminals": {"a-001": {"address": "10.61.1.2"}, "b-001": {"address": "10.61.1.2"}}}
    config = vf.vpn_registry(tmp_path, plan=plan)
    result, _ = listing(config)
    assert result.returncode != 0
    assert "vpn-plan.yml:" in result.stderr and "terminals.b-001.address: duplicate address" in result.stderr
    assert "terminals.a-001.address: address outside its site alpha-paris's prefix 10.60.1.0/28" in result.stderr


def test_connect_via_vpn_without_a_vpn_section_is_explained(tmp_path):
    catalog, customers = vf.vpn_base()
    del catalog["vpn"]
    config = with_options(vf.vpn_registry(tmp_path, catalog, customers), connect_via="vpn")
    result, _ = listing(config)
    assert result.returncode != 0 and "connect_via: vpn needs the VPN address plan" in result.stderr
    with_options(config, connect_via="tunnel")
    result, _ = listing(config)
    assert result.returncode != 0 and "connect_via" in result.stderr and "tunnel" in result.stderr


def test_the_cache_follows_the_plan_file(tmp_path):
    config = vf.vpn_registry(tmp_path)
    tool.main(["addresses", "--assign", "-r", str(config)])
    cache = tmp_path / "cache"
    with_options(
        config, connect_via="vpn", cache="true", cache_plugin="ansible.builtin.jsonfile", cache_connection=str(cache)
    )
    assert listing(config)[1]["_meta"]["hostvars"]["a-001"]["ansible_host"] == "10.60.1.2"
    plan = vf.read_plan(config)
    plan["terminals"]["a-001"]["address"] = "10.60.1.9"
    vf.plan_file(config).write_text(yaml.safe_dump(plan, sort_keys=False))
    assert listing(config)[1]["_meta"]["hostvars"]["a-001"]["ansible_host"] == "10.60.1.9"


def test_the_isolation_filter_in_a_real_run_on_the_demo():
    json_output = {"ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
    template = "{{ ipm_vpn | ipm.fleet.vpn_isolation_rules }}"
    result = run(
        "ansible",
        "fr-pgl-001",
        "-i",
        "inventories/demo",
        "-m",
        "ansible.builtin.debug",
        "-a",
        f"msg={template}",
        env=json_output,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = json.loads(result.stdout.split("=>", 1)[1])["msg"]
    assert rules["policy"] == "drop"
    assert {rule["customer"] for rule in rules["accept"]} == {
        "andes-parking",
        "harbour-parking",
        "kansai-mobility",
        "metro-transit",
        "parkcite",
    }
    check = "{{ (ipm_vpn | ipm.fleet.vpn_isolation_rules) | ipm.fleet.vpn_may_reach(ipm_vpn_address, '10.61.1.2') }}"
    result = run(
        "ansible",
        "fr-pgl-001",
        "-i",
        "inventories/demo",
        "-m",
        "ansible.builtin.debug",
        "-a",
        f"msg={check}",
        env=json_output,
    )
    assert result.returncode == 0 and '"msg": false' in result.stdout
    bad = "{{ {} | ipm.fleet.vpn_isolation_rules }}"
    result = run(
        "ansible",
        "fr-pgl-001",
        "-i",
        "inventories/demo",
        "-m",
        "ansible.builtin.debug",
        "-a",
        f"msg={bad}",
        env=json_output,
    )
    assert result.returncode != 0 and "ipm.fleet.vpn_isolation_rules: expected the ipm_vpn variable" in result.stdout


def test_ansible_doc_renders_the_options_and_filters():
    result = run("ansible-doc", "-t", "inventory", "ipm.fleet.registry")
    assert result.returncode == 0 and "connect_via" in result.stdout and "vpn_unassigned" in result.stdout
    for name in ("ipm.fleet.vpn_isolation_rules", "ipm.fleet.vpn_may_reach"):
        result = run("ansible-doc", "-t", "filter", name)
        assert result.returncode == 0 and "RETURN" in result.stdout.upper(), result.stderr
