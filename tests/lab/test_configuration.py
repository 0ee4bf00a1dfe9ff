"""ipm.fleet.terminal_facts, snapshots and drift on real lab terminals over SSH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def env() -> dict[str, str]:
    variables = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"))
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


def facts_of(terminals, *module_args: str) -> dict[str, dict]:
    """ipm_terminal of every terminal, through `ansible -m ipm.fleet.terminal_facts --tree`."""
    tree = Path(terminals.inventory).parent / "facts-tree"
    result = terminals.ansible("all", "-m", "ipm.fleet.terminal_facts", *module_args, "--tree", str(tree))
    assert result.returncode == 0, result.stdout + result.stderr
    return {name: json.loads((tree / name).read_text())["ansible_facts"]["ipm_terminal"] for name in terminals.names}


def test_facts_describe_the_terminal(lab_terminals):
    facts = facts_of(lab_terminals)
    for name in lab_terminals.names:
        hardware = yaml.safe_load(lab_terminals.ssh(name, "cat /etc/ipm/hardware.yml").stdout)
        terminal = facts[name]
        assert terminal["hardware"]["model"] == hardware["model"]
        assert terminal["hardware"]["serial_number"] == hardware["serial_number"]
        assert terminal["os"]["id"] == "debian-12"
        assert terminal["os"]["package_count"] > 50
        assert "systemd" in terminal["os"]["packages"]
        assert terminal["application"]["current"] == "2.3.1"
        assert terminal["application"]["service"]["active"] == "active"
        assert terminal["application"]["health"]["version"] == "2.3.1"
        # The digest the module computes is the one the running application reports.
        assert terminal["parameters"]["sha256"] == terminal["application"]["health"]["parameters_sha256"]
        devices = terminal["interfaces"]["devices"]
        assert devices and all(device["present"] for device in devices.values()), devices


def test_missing_identity_and_dead_application_are_unknown_not_failures(lab_terminals):
    name = lab_terminals.names[1]
    lab_terminals.ssh(name, "mv /etc/ipm/hardware.yml /root/hardware.yml.away && systemctl stop ipm-app")
    try:
        terminal = facts_of(lab_terminals)[name]
        assert terminal["hardware"]["model"] is None
        assert terminal["hardware"]["unknown"] == "/etc/ipm/hardware.yml is missing"
        assert terminal["application"]["service"]["active"] == "inactive"
        assert terminal["application"]["health"]["unknown"].startswith("no health answer from")
        assert terminal["os"]["id"] == "debian-12", "the other sections are still read"
    finally:
        lab_terminals.ssh(name, "mv /root/hardware.yml.away /etc/ipm/hardware.yml && systemctl start ipm-app")


def test_snapshot_playbook_history_and_drift(lab_terminals, tmp_path):
    store = tmp_path / "history"
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(lab_terminals.inventory),
        str(PROJECT_ROOT / "playbooks" / "snapshot.yml"),
    ]
    command += ["-e", f"ipm_history_store={store}"]
    first = subprocess.run(
        command, capture_output=True, text=True, env=env(), cwd=PROJECT_ROOT, timeout=600, check=False
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed=1" in first.stdout
    again = subprocess.run(
        command, capture_output=True, text=True, env=env(), cwd=PROJECT_ROOT, timeout=600, check=False
    )
    assert again.returncode == 0 and "changed=1" not in again.stdout, "an unchanged terminal stores no new snapshot"

    name = lab_terminals.names[0]
    lab_terminals.ssh(name, "echo 'currency: CHF' >> /etc/ipm/app.yml")
    third = subprocess.run(
        [*command, "--diff", "-l", name],
        capture_output=True,
        text=True,
        env=env(),
        cwd=PROJECT_ROOT,
        timeout=600,
        check=False,
    )
    assert third.returncode == 0, third.stdout + third.stderr
    assert "parameters.values.currency: CHF" in third.stdout

    history = subprocess.run(
        [str(BIN / "ipm-config"), "--store", str(store), "--json", "history", name],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    assert len(json.loads(history.stdout)) == 2

    # Desired state: the registry wants EUR on both terminals.
    inventory = yaml.safe_load(Path(lab_terminals.inventory).read_text())
    for host in inventory["all"]["children"]["lab"]["hosts"].values():
        host.update(ipm_customer_id="lab", ipm_site_id="bench", ipm_release="2.3.1", ipm_parameters={"currency": "EUR"})
    desired = tmp_path / "desired.yml"
    desired.write_text(yaml.safe_dump(inventory))
    drift = subprocess.run(
        [str(BIN / "ipm-config"), "--store", str(store), "--json", "drift", "-i", str(desired)],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    report = json.loads(drift.stdout)
    assert report["summary"]["drifted"] == 1
    assert report["terminals"][name]["differences"] == [
        {"aspect": "parameter", "path": "parameters.values.currency", "desired": "EUR", "actual": "CHF"}
    ]


def run_compat_report(terminals, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(terminals.inventory),
        str(PROJECT_ROOT / "playbooks" / "compat_report.yml"),
        *extra,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=env(), cwd=PROJECT_ROOT, timeout=600, check=False
    )


def test_compat_report_says_who_can_take_a_release_and_why_not(lab_terminals, tmp_path):
    report_file = tmp_path / "compat.json"
    upgrade = run_compat_report(
        lab_terminals, tmp_path, "-e", "release=2.4.0", "-e", f"compat_report_file={report_file}"
    )
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    report = json.loads(report_file.read_text())
    assert sorted(report["compatible"]) == sorted(lab_terminals.names) and report["incompatible"] == {}

    older = lab_terminals.names[0]
    lab_terminals.ssh(
        older, "cp /etc/ipm/hardware.yml /root/hw.yml && sed -i 's/^model: .*/model: PS-200/' /etc/ipm/hardware.yml"
    )
    try:
        generation = run_compat_report(
            lab_terminals, tmp_path, "-e", "release=3.0.0", "-e", f"compat_report_file={report_file}"
        )
    finally:
        lab_terminals.ssh(older, "mv /root/hw.yml /etc/ipm/hardware.yml")
    assert generation.returncode == 0, generation.stdout + generation.stderr
    report = json.loads(report_file.read_text())
    assert report["compatible"] == []
    assert any(
        "hardware model PS-200 is not supported by release 3.0.0" in reason for reason in report["incompatible"][older]
    )
    # Every terminal runs the 2.3.1 baseline: 3.0.0 only upgrades from 2.4.0.
    for name in lab_terminals.names:
        assert any("older than 2.4.0" in reason for reason in report["incompatible"][name])
    assert "cannot take 3.0.0: hardware model PS-200" in generation.stdout


def test_compat_report_refuses_an_unknown_release(lab_terminals, tmp_path):
    result = run_compat_report(lab_terminals, tmp_path, "-e", "release=9.9.9")
    assert result.returncode != 0
    assert "must be one of the catalog's releases" in result.stdout
