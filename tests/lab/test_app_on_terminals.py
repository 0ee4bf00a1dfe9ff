"""ipm-app and the app_parameters role on real lab terminals (systemd, journal, SSH, Ansible)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def health(address: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/health", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for_health(address: str, timeout: float = 90) -> dict:
    """The first /health answer once the service listens again (a loaded machine may take a while)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return health(address)[1]
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def unit_properties(terminals, name: str) -> dict[str, str]:
    output = terminals.ssh(name, "systemctl show ipm-app -p ActiveState -p ExecMainStatus -p NRestarts").stdout
    return dict(line.split("=", 1) for line in output.split())


def ansible_env() -> dict[str, str]:
    """The project's Ansible configuration and the venv's tools first."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_role(terminals, tmp_path: Path, extra_vars: dict, *options: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "parameters.yml"
    playbook.write_text(
        yaml.safe_dump(
            [{"name": "Parameters", "hosts": "all", "gather_facts": False, "roles": ["ipm.fleet.app_parameters"]}]
        )
    )
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps(extra_vars))
    command = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(terminals.inventory)]
    command += [str(playbook), "-e", f"@{variables}", *options]
    return subprocess.run(
        command, capture_output=True, text=True, env=ansible_env(), cwd=PROJECT_ROOT, timeout=600, check=False
    )


def test_invalid_parameters_stop_the_unit_without_a_restart_loop(lab_terminals):
    name = lab_terminals.names[0]
    lab_terminals.ssh(name, "cp -p /etc/ipm/app.yml /root/app.yml.good && echo 'timeout: 2' >> /etc/ipm/app.yml")
    try:
        lab_terminals.ssh(name, "systemctl restart ipm-app", check=False)
        deadline = time.monotonic() + 60
        properties = unit_properties(lab_terminals, name)
        while properties["ActiveState"] != "failed" and time.monotonic() < deadline:
            time.sleep(0.5)
            properties = unit_properties(lab_terminals, name)
        assert properties == {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}
        time.sleep(3)  # RestartSec=2: a restart would show by now
        assert unit_properties(lab_terminals, name) == properties
        journal = lab_terminals.ssh(name, "journalctl -u ipm-app -o cat --no-pager -n 20").stdout
        assert "timeout: expected an integer between 5 and 600, found 2 (int)" in journal
    finally:
        lab_terminals.ssh(name, "cp -p /root/app.yml.good /etc/ipm/app.yml && systemctl restart ipm-app")
    assert wait_for_health(lab_terminals.address(name))["status"] == "ok"


def test_a_crash_is_restarted_by_systemd(lab_terminals):
    name = lab_terminals.names[1]
    lab_terminals.ssh(name, "kill -9 $(systemctl show -p MainPID --value ipm-app)")
    deadline = time.monotonic() + 15
    properties = {}
    while time.monotonic() < deadline:
        properties = unit_properties(lab_terminals, name)
        if properties["NRestarts"] == "1" and properties["ActiveState"] == "active":
            break
        time.sleep(0.5)
    assert properties["NRestarts"] == "1"
    assert properties["ActiveState"] == "active"


def test_role_applies_layers_is_idempotent_and_refuses_invalid_values(lab_terminals, tmp_path):
    layers = {
        "ipm_customer_parameters": {"currency": "CHF", "language": "de"},
        "ipm_site_parameters": {"language": "fr", "transaction_interval_s": 5},
        "ipm_parameters": {"terminal_label": "Gate 3"},
    }
    first = run_role(lab_terminals, tmp_path, layers)
    assert first.returncode == 0, first.stdout + first.stderr
    for name in lab_terminals.names:
        parameters = yaml.safe_load(lab_terminals.ssh(name, "cat /etc/ipm/app.yml").stdout)
        assert (parameters["currency"], parameters["language"], parameters["terminal_label"]) == ("CHF", "fr", "Gate 3")
        assert parameters["listen_address"] == lab_terminals.address(name)  # kept from the factory
        digest = lab_terminals.ssh(name, "/opt/ipm/app/current/bin/ipm-app --print-digest /etc/ipm/app.yml").stdout
        status, answer = health(lab_terminals.address(name))
        assert (status, answer["status"], answer["parameters_sha256"]) == (200, "ok", digest.strip())

    again = run_role(lab_terminals, tmp_path, layers)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout
    assert "changed=1" not in again.stdout

    check = run_role(
        lab_terminals, tmp_path, {**layers, "ipm_parameters": {"terminal_label": "Gate 4"}}, "--check", "--diff"
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "+terminal_label: Gate 4" in check.stdout
    name = lab_terminals.names[0]
    assert "Gate 3" in lab_terminals.ssh(name, "grep terminal_label /etc/ipm/app.yml").stdout

    before = lab_terminals.ssh(name, "sha256sum /etc/ipm/app.yml").stdout
    refused = run_role(lab_terminals, tmp_path, {**layers, "ipm_parameters": {"max_amount": 5000}})
    assert refused.returncode != 0
    assert "refused the new parameters, /etc/ipm/app.yml left unchanged" in refused.stdout
    assert "max_amount: expected a number between 0.5 and 1000.0, found 5000 (int)" in refused.stdout
    assert lab_terminals.ssh(name, "sha256sum /etc/ipm/app.yml").stdout == before
    assert health(lab_terminals.address(name))[1]["status"] == "ok"


def test_parameters_ipm_app_is_not_healthy_on_are_put_back(lab_terminals, tmp_path):
    # The health check is pointed at a port nothing answers on: the role must treat the new parameters
    # as failed, put the previous file back and restart ipm-app on it.
    name = lab_terminals.names[1]
    before = lab_terminals.ssh(name, "sha256sum /etc/ipm/app.yml").stdout
    result = run_role(
        lab_terminals,
        tmp_path,
        {
            "ipm_parameters": {"terminal_label": "Never healthy"},
            "app_parameters_health_port": 8089,
            "app_parameters_health_retries": 2,
            "app_parameters_health_delay_s": 1,
        },
        "--limit",
        name,
    )
    assert result.returncode != 0
    output = " ".join(result.stdout.split())
    assert "The previous parameters were put back in /etc/ipm/app.yml and ipm-app restarted on them" in output, output
    assert lab_terminals.ssh(name, "sha256sum /etc/ipm/app.yml").stdout == before
    copies = [f for f in lab_terminals.ssh(name, "ls /etc/ipm").stdout.split() if f.startswith("app.yml.")]
    assert copies == [], "no copy of the parameters left behind"
    assert wait_for_health(lab_terminals.address(name))["status"] == "ok"
    label = lab_terminals.ssh(name, "grep terminal_label /etc/ipm/app.yml || true").stdout
    assert "Never healthy" not in label
