"""The ipm.fleet.registry inventory plugin, end to end through ansible-inventory and ansible-doc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
import registry_builder as rb

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*args, env=None, check=True):
    full_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **(env or {}))
    full_env.pop("ANSIBLE_INVENTORY", None)
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stderr
    return result


def inventory(source, *extra, env=None):
    return json.loads(run("ansible-inventory", "-i", str(source), "--list", *extra, env=env).stdout)


def refused(config):
    """ansible-inventory on a source that must fail (an unparsed source fails the command)."""
    return run(
        "ansible-inventory",
        "-i",
        str(config),
        "--list",
        env={"ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"},
        check=False,
    )


def members(data, group):
    return set(data.get(group, {}).get("hosts", []))


def test_demo_inventory_groups_and_variables():
    data = inventory("inventories/demo", "--export")
    hostvars = data["_meta"]["hostvars"]
    assert len(hostvars) >= 12
    assert "au-sdh-003" not in hostvars  # retired
    host = hostvars["fr-pgl-001"]
    assert host["ansible_host"] == "127.0.10.1"
    for key in (
        "ipm_terminal_id",
        "ipm_customer_id",
        "ipm_site_id",
        "ipm_model",
        "ipm_serial_number",
        "ipm_release",
        "ipm_ring",
        "ipm_status",
        "ipm_interfaces",
        "ipm_parameters",
        "ipm_tags",
    ):
        assert key in host, key
    assert not [
        key
        for key in host
        if key.startswith(("ipm_site_", "ipm_customer_")) and key not in ("ipm_site_id", "ipm_customer_id")
    ]
    assert "site_paris_gare_de_lyon" in data["customer_parkcite"]["children"]
    assert data["site_paris_gare_de_lyon"]["vars"]["ipm_site_timezone"] == "Europe/Paris"
    assert data["customer_parkcite"]["vars"]["ipm_contract"]["sla_tier"] == "gold"
    for group in (
        "country_au",
        "tz_australia_sydney",
        "tz_america_santiago",
        "language_es",
        "sla_platinum",
        "model_tk_110",
        "release_3_0_0",
        "ring_canary",
        "status_spare",
    ):
        assert group in data, group
    assert members(data, "model_tk_110") and members(data, "ring_canary")
    assert not any(name in data for name in ("serial", "name", "port", "environment"))


def test_demo_graph_and_lab_connection_settings():
    graph = run("ansible-inventory", "-i", "inventories/demo", "--graph").stdout
    assert "@customer_parkcite:" in graph and "@site_lyon_part_dieu:" in graph
    host = json.loads(run("ansible-inventory", "-i", "inventories/demo", "--host", "us-nyp-001").stdout)
    assert host["ansible_user"] == "root"
    assert host["ansible_ssh_private_key_file"] == "/var/lib/ipm-lab/ssh/id_ed25519"
    assert "/var/lib/ipm-lab/ssh/known_hosts" in host["ansible_ssh_common_args"]
    assert host["ipm_site_timezone"] == "America/New_York"  # from the site group, merged by Ansible


def test_constructed_options_and_retired(tmp_path):
    config = rb.write(tmp_path)
    config.write_text(
        yaml.safe_dump(
            {
                "plugin": "ipm.fleet.registry",
                "registry": "registry",
                "include_retired": True,
                "strict": True,
                "compose": {"ipm_local_zone": "ipm_site_timezone", "ipm_is_canary": "ipm_ring == 'canary'"},
                "groups": {"gold_canary": "ipm_ring == 'canary' and ipm_contract.sla_tier == 'gold'"},
                "keyed_groups": [{"key": "ipm_tags", "prefix": "tag"}, {"key": "ipm_site_country", "prefix": "where"}],
            }
        )
    )
    data = inventory(config)
    hostvars = data["_meta"]["hostvars"]
    assert "a-002" in hostvars and members(data, "status_retired") == {"a-002"}
    assert hostvars["a-001"]["ipm_local_zone"] == "Europe/Paris"
    assert hostvars["a-001"]["ipm_is_canary"] is True and hostvars["b-001"]["ipm_is_canary"] is False
    assert members(data, "gold_canary") == {"a-001"}
    assert members(data, "tag_entrance") == {"a-001"}
    assert members(data, "where_AU") == {"b-001", "b-002"}


def test_strict_compose_error_is_reported(tmp_path):
    config = rb.write(tmp_path)
    config.write_text(
        "plugin: ipm.fleet.registry\nregistry: registry\nstrict: true\ncompose:\n  broken: no_such_variable.attr\n"
    )
    result = refused(config)
    assert result.returncode != 0
    assert "Could not set broken for host" in result.stderr


def test_invalid_registry_fails_with_the_full_report(tmp_path):
    catalog, customers = rb.base()
    customers["alpha.yml"]["sites"][0]["timezone"] = "Europe/Pariss"
    customers["bravo.yml"]["sites"][0]["terminals"][0]["modle"] = "PS-300"
    config = rb.write(tmp_path, catalog, customers)
    result = refused(config)
    assert result.returncode != 0
    assert "problem(s) in the fleet registry" in result.stderr
    assert "sites[0].timezone: unknown IANA time zone (did you mean 'Europe/Paris'?)" in result.stderr
    assert "sites[0].terminals[0].modle: unknown key (did you mean 'model'?)" in result.stderr


def test_missing_registry_directory(tmp_path):
    config = tmp_path / "x.ipm_registry.yml"
    config.write_text("plugin: ipm.fleet.registry\nregistry: nowhere\n")
    result = refused(config)
    assert result.returncode != 0 and "no such directory" in result.stderr


def test_other_file_names_are_not_claimed(tmp_path):
    rb.write(tmp_path)
    other = tmp_path / "fleet.yml"
    other.write_text("plugin: ipm.fleet.registry\nregistry: registry\n")
    result = run("ansible-inventory", "-i", str(other), "--list", "-vvv", check=False)
    assert "declined parsing" in result.stdout + result.stderr and "ipm.fleet.registry" in result.stdout + result.stderr


def test_cache_serves_and_notices_edits(tmp_path):
    config = rb.write(tmp_path)
    cache_dir = tmp_path / "cache"
    config.write_text(
        f"plugin: ipm.fleet.registry\nregistry: registry\ncache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: {cache_dir}\n"
    )
    first = inventory(config)
    (cached,) = list(cache_dir.iterdir())
    assert inventory(config) == first
    # Served from the cache: a value changed in the cache file (only there) comes out.
    cached.write_text(cached.read_text().replace("127.0.99.1", "127.0.99.201"))
    assert inventory(config)["_meta"]["hostvars"]["a-001"]["ansible_host"] == "127.0.99.201"
    # Files the registry does not read (git's own, a README) leave the cache in use...
    (tmp_path / "registry" / ".git").mkdir()
    (tmp_path / "registry" / ".git" / "index").write_text("x")
    (tmp_path / "registry" / "README.md").write_text("notes")
    assert inventory(config)["_meta"]["hostvars"]["a-001"]["ansible_host"] == "127.0.99.201"
    # ...a release definition the catalog points to does not.
    release = tmp_path / "registry" / "releases" / "1.0.0.yml"
    release.write_text(release.read_text() + "\n")
    assert inventory(config)["_meta"]["hostvars"]["a-001"]["ansible_host"] == "127.0.99.1"
    path = tmp_path / "registry" / "customers" / "bravo.yml"
    document = yaml.safe_load(path.read_text())
    document["sites"][0]["terminals"][0]["ring"] = "canary"
    path.write_text(yaml.safe_dump(document))
    assert "b-001" in members(inventory(config), "ring_canary")


def test_ansible_doc_renders_the_plugin():
    result = run("ansible-doc", "-t", "inventory", "ipm.fleet.registry")
    for words in ("include_retired", "workers", "IPM_REGISTRY_WORKERS", "keyed_groups", "cache_plugin", "EXAMPLES"):
        assert words in result.stdout, words
    assert "registry: ../../registry/demo" in result.stdout


def test_workers_give_the_same_inventory_and_bad_values_are_refused(tmp_path):
    config = rb.write(tmp_path)
    serial = inventory(config, "--export", env={"IPM_REGISTRY_WORKERS": "1"})
    assert inventory(config, "--export", env={"IPM_REGISTRY_WORKERS": "2"}) == serial
    config.write_text("plugin: ipm.fleet.registry\nregistry: registry\nworkers: -2\n")
    result = refused(config)
    assert result.returncode != 0
    assert "option workers in" in result.stderr and "found -2" in result.stderr


FREEZE_PROBE = """
import gc, sys
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader()
from ansible.parsing.dataloader import DataLoader
from ansible.inventory.manager import InventoryManager
inventory = InventoryManager(loader=DataLoader(), sources=[sys.argv[1]])
print(len(inventory.hosts), gc.get_freeze_count())
"""


def test_large_inventories_are_frozen_for_the_collector(tmp_path):
    catalog, customers = rb.base()
    alpha = customers["alpha.yml"]
    model = alpha["sites"][0]["terminals"][0]
    alpha["sites"] = []
    for site_number in range(40):
        site = dict(rb.base()[1]["alpha.yml"]["sites"][0], id=f"alpha-site-{site_number}")
        site["terminals"] = [
            dict(
                model,
                id=f"a-{site_number}-{n}",
                serial_number=f"SN-{site_number}-{n}",
                address=f"10.1.{site_number}.{n}",
            )
            for n in range(250)
        ]
        alpha["sites"].append(site)
    big = rb.write(tmp_path / "big", catalog, customers)
    small = rb.write(tmp_path / "small")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    counts = {}
    for name, config in (("big", big), ("small", small)):
        result = subprocess.run(
            [sys.executable, "-c", FREEZE_PROBE, str(config)], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        counts[name] = [int(word) for word in result.stdout.split()]
    assert counts["big"][0] == 10002 and counts["big"][1] > 10002 * 2  # hosts and their variables, at least
    assert counts["small"] == [3, 0]
