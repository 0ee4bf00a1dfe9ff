"""Testinfra (ansible backend, real SSH): the facts describe the terminal, the snapshot is stored, drift is computed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

STORE = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "history"
PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])


def _facts(host):
    result = host.ansible("ipm.fleet.terminal_facts", "packages=false", check=False)
    return result["ansible_facts"]["ipm_terminal"]


def test_facts_match_the_terminals_own_files(host):
    facts = _facts(host)
    hardware = yaml.safe_load(host.file("/etc/ipm/hardware.yml").content_string)
    assert facts["hardware"]["model"] == hardware["model"]
    assert facts["hardware"]["serial_number"] == hardware["serial_number"]
    assert facts["os"]["id"] == "debian-12"
    assert facts["application"]["current"] == host.file("/opt/ipm/app/current").linked_to.rsplit("/", 1)[-1]
    digest = host.check_output("/opt/ipm/app/current/bin/ipm-app --print-digest /etc/ipm/app.yml").strip()
    assert facts["parameters"]["sha256"] == digest
    for name, device in facts["interfaces"]["devices"].items():
        assert device["present"] == host.file(device["device"]).exists, name


def test_snapshot_stored_once_for_the_terminal(host):
    name = host.ansible.get_variables()["inventory_hostname"]
    snapshots = sorted((STORE / name).glob("*.json"))
    assert len(snapshots) == 1, "converge stored one snapshot; the idempotence run stored none"
    record = json.loads(snapshots[0].read_text())
    assert record["terminal"] == name
    assert record["context"]["customer"] == "molecule"
    assert record["facts"]["hardware"]["model"] == _facts(host)["hardware"]["model"]


def test_drift_from_the_registry(host):
    variables = host.ansible.get_variables()
    inventory = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
    tool = Path(sys.executable).with_name("ipm-config")
    result = subprocess.run(
        [
            str(tool),
            "--store",
            str(STORE),
            "--json",
            "drift",
            "-i",
            str(inventory),
            "--terminal",
            variables["inventory_hostname"],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)["terminals"][variables["inventory_hostname"]]
    # The lab's factory parameters leave currency at its default, EUR, as the registry wants.
    assert report["differences"] == []
