"""playbooks/parameters.yml on 6 real lab terminals in 3 time zones (Paris, Sydney, New York).

The terminals run the factory release 2.3.1; the registry's parameters change at customer, site and
terminal level between the tests, and the playbook puts them on the terminals ring by ring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fleet import write_fleet

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TOKEN = "tok-7f3a-never-shown"


def env(audit_log: Path) -> dict[str, str]:
    variables = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"), IPM_AUDIT_LOG=str(audit_log))
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, run_lab_command):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("parameters")
    inventory, terminals = write_fleet(directory)
    try:
        run_lab_command("up", "--inventory", str(inventory))
        yield {
            "inventory": inventory,
            "registry": directory / "registry",
            "terminals": terminals,
            "audit": directory / "audit.jsonl",
        }
    finally:
        run_lab_command("down", "--missing-ok", *terminals, check=False)


def named(fleet, suffix: str) -> str:
    return next(t for t in fleet["terminals"] if t.endswith(suffix))


def set_parameters(fleet, customer: str, values: dict | None = None, sites=None, terminals=None) -> None:
    """Change the registry: CUSTOMER's parameters, its sites' (by id prefix), its terminals' (by suffix)."""
    path = fleet["registry"] / "customers" / f"{customer}.yml"
    document = yaml.safe_load(path.read_text())
    if values is not None:
        document["customer"]["parameters"] = values
    for site in document["sites"]:
        for prefix, site_values in (sites or {}).items():
            if site["id"].startswith(prefix):
                site["parameters"] = site_values
        for terminal in site["terminals"]:
            for suffix, terminal_values in (terminals or {}).items():
                if terminal["id"].endswith(suffix):
                    terminal["parameters"] = {"listen_address": terminal["address"], **terminal_values}
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def parameters(fleet, *options: str) -> subprocess.CompletedProcess:
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(fleet["inventory"]),
        str(PROJECT_ROOT / "playbooks" / "parameters.yml"),
    ]
    command += ["-e", "change_id=CHG-7012", "-e", "rollout_bake_s=2", "-e", "rollout_bake_interval_s=1", *options]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env(fleet["audit"]), cwd=PROJECT_ROOT, timeout=1200, check=False
    )
    # Ansible's YAML output folds long messages over lines: compare words, not line breaks.
    result.stdout = " ".join(result.stdout.split())
    return result


def on_each(fleet, shell: str) -> dict[str, str]:
    """SHELL's output on every terminal, over SSH."""
    command = [
        str(BIN / "ansible"),
        "-i",
        str(fleet["inventory"]),
        "all",
        "-o",
        "-m",
        "ansible.builtin.shell",
        "-a",
        shell,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env(fleet["audit"]), cwd=PROJECT_ROOT, timeout=600, check=False
    )
    answers = {}
    for line in result.stdout.splitlines():
        host, _, rest = line.partition(" | ")
        if "(stdout)" in rest:
            answers[host] = rest.split("(stdout)", 1)[1].strip().replace("\\n", "\n")
    assert len(answers) == len(fleet["terminals"]), result.stdout + result.stderr
    return answers


def files(fleet) -> dict[str, dict]:
    return {host: yaml.safe_load(text) for host, text in on_each(fleet, "cat /etc/ipm/app.yml").items()}


def digests(fleet) -> dict[str, str]:
    return on_each(fleet, "sha256sum /etc/ipm/app.yml")


def ledger(fleet, *options: str) -> list[dict]:
    command = [str(BIN / "ipm-audit"), "--log", str(fleet["audit"]), "deliveries", "--kind", "parameters", "--json"]
    result = subprocess.run([*command, *options], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def change_registry(fleet) -> None:
    set_parameters(fleet, "acme", {"currency": "CHF"}, sites={"sydney": {"max_amount": 150.0}})
    set_parameters(fleet, "acme", terminals={"par2": {"terminal_label": "Gare - Sortie B"}})
    set_parameters(fleet, "liberty", {"language": "fr"})


def canary_parameters(fleet, directory: Path, **values) -> list[str]:
    """An inventory source giving the canary's terminal parameters (a secret among them).

    The registry takes secrets only vault-encrypted; a second inventory source sets the canary's
    terminal layer (ipm_parameters) as the registry would after decrypting it.
    """
    canary = named(fleet, "par1")
    layer = {"listen_address": fleet["terminals"][canary]["address"], "payment_api_token": TOKEN, **values}
    source = directory / "canary.yml"
    source.write_text(yaml.safe_dump({"all": {"hosts": {canary: {"ipm_parameters": layer}}}}))
    return ["-i", str(source)]


def test_1_check_mode_changes_nothing_and_shows_the_masked_diff(fleet):
    before = digests(fleet)
    change_registry(fleet)
    result = parameters(fleet, "--check", "--diff", *canary_parameters(fleet, fleet["registry"].parent))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "currency: EUR -> CHF" in result.stdout
    assert 'payment_api_token: "" -> ******** (secret, value not shown)' in result.stdout
    assert "max_amount: 200.0 -> 150.0" in result.stdout and 'terminal_label: "" -> Gare - Sortie B' in result.stdout
    assert TOKEN not in result.stdout and TOKEN not in result.stderr, "a secret value was shown"
    assert digests(fleet) == before, "check mode changed a parameters file"


def test_2_parameters_reach_every_ring_and_a_second_run_restarts_nothing(fleet):
    canary_source = canary_parameters(fleet, fleet["registry"].parent)
    result = parameters(fleet, *canary_source)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "went through every ring" in result.stdout
    for ring in ("canary", "pilot", "broad"):
        assert f"Baking ring {ring}" in result.stdout, f"ring {ring} was not baked"
    assert TOKEN not in result.stdout and TOKEN not in result.stderr, "a secret value was shown"
    applied = files(fleet)
    for host, values in applied.items():
        if "nyc" in host:  # New York's window is closed: deferred, untouched
            assert "language" not in values or values["language"] != "fr", host
            continue
        assert values["currency"] == "CHF", host
        assert values["payment_api_token"] == (TOKEN if host == named(fleet, "par1") else ""), host
        assert values["listen_address"] == fleet["terminals"][host]["address"], "kept from the factory"
    assert applied[named(fleet, "syd1")]["max_amount"] == 150.0 and applied[named(fleet, "par1")]["max_amount"] == 200.0
    assert applied[named(fleet, "par2")]["terminal_label"] == "Gare - Sortie B"
    modes = on_each(fleet, "stat -c %a:%U /etc/ipm/app.yml")
    assert set(modes.values()) == {"600:root"}, modes

    entries = ledger(fleet)
    assert sorted(e["result"] for e in entries) == ["baked"] * 4 + ["deferred"] * 2 + ["delivered"] * 4
    assert all(e["kind"] == "parameters" and e["change_id"] == "CHG-7012" and e["operator"] for e in entries)
    assert TOKEN not in json.dumps(entries)

    # A second run changes nothing and restarts nothing.
    processes = on_each(fleet, "systemctl show -p MainPID -p NRestarts --value ipm-app")
    again = parameters(fleet, *canary_source)
    assert again.returncode == 0, again.stdout[-4000:]
    assert "changed=1" not in again.stdout and "changed=2" not in again.stdout, "a second run changes nothing"
    assert "already_current" in again.stdout and "Baking ring" in again.stdout
    assert on_each(fleet, "systemctl show -p MainPID -p NRestarts --value ipm-app") == processes, "ipm-app restarted"
    assert files(fleet) == applied


def test_3_parameters_the_application_cannot_start_on_are_rolled_back_on_the_canary_and_halt(fleet):
    canary = named(fleet, "par1")
    before = digests(fleet)
    # The canary is told to listen on an address another terminal's ipm-app already listens on: it
    # cannot bind, the role's health check fails, the previous file goes back. Every other terminal
    # would change too (the customer's currency), but the halt leaves them untouched.
    busy = fleet["terminals"][named(fleet, "nyc1")]["address"]
    set_parameters(fleet, "acme", {"currency": "GBP"}, sites={"sydney": {"max_amount": 150.0}})
    canary_source = canary_parameters(fleet, fleet["registry"].parent, listen_address=busy)
    retries = ["-e", "app_parameters_health_retries=4", "-e", "app_parameters_health_delay_s=1"]
    result = parameters(fleet, *canary_source, *retries)
    assert result.returncode == 2, result.stdout[-4000:] + result.stderr[-2000:]
    assert "ROLLOUT HALTED in ring canary" in result.stdout and "later waves and rings untouched" in result.stdout
    assert f"canary {canary} rolled_back" in result.stdout, result.stdout[-4000:]
    assert f"failed, rolled back or not reached: {canary}" in result.stdout
    assert "Baking ring pilot" not in result.stdout, "the pilot ring must not start"
    assert digests(fleet) == before, "the canary is back on its previous file; pilot and broad untouched"
    health = subprocess.run([str(BIN / "ipm-lab"), "status", "--json"], capture_output=True, text=True, check=False)
    app = {row["terminal"]: row for row in json.loads(health.stdout)}[canary]["app"] or {}
    assert app.get("status") == "ok", app

    (entry,) = [e for e in ledger(fleet) if e["change_id"] == "CHG-7012" and e["result"] == "rolled_back"]
    assert entry["terminal"] == canary and entry["kind"] == "parameters" and entry["release"] == "2.3.1"
    assert "put back" in entry["reason"], entry["reason"]
    releases = subprocess.run(
        [str(BIN / "ipm-audit"), "--log", str(fleet["audit"]), "deliveries", "--kind", "release", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(releases.stdout) == [], "parameters entries are not release deliveries"


def test_4_a_terminal_that_turns_unhealthy_during_the_bake_gets_its_previous_parameters_back(fleet):
    # After test 3 the canary is healthy on its previous parameters. New ones pass the delivery's
    # health check; during the canary's 30 s bake its ipm-app is stopped (as a crash would): the bake
    # sees it, the previous file goes back, ipm-app is restarted on it, and the run halts.
    canary = named(fleet, "par1")
    before = digests(fleet)
    set_parameters(fleet, "acme", {"currency": "USD"}, sites={"sydney": {"max_amount": 150.0}})
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(fleet["inventory"]),
        *canary_parameters(fleet, fleet["registry"].parent),
        str(PROJECT_ROOT / "playbooks" / "parameters.yml"),
        *["-e", "change_id=CHG-7013", "-e", "rollout_bake_s_canary=30", "-e", "rollout_bake_interval_s=1"],
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(fleet["audit"]), cwd=PROJECT_ROOT
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "Baking ring canary" in line:
                time.sleep(3)
                stopped = subprocess.run(
                    [str(BIN / "ipm-lab"), "ssh", canary, "systemctl stop ipm-app"], capture_output=True, check=False
                )
                assert stopped.returncode == 0, stopped.stderr
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    output = " ".join("".join(lines).split())
    assert process.returncode == 2, output[-4000:]
    assert "ROLLOUT HALTED in ring canary" in output and "failed during bake" in output, output[-4000:]
    assert f"canary {canary} rolled_back" in output, output[-4000:]
    assert "Baking ring pilot" not in output, "the pilot ring must not start"
    assert digests(fleet) == before, "the canary is back on its previous file; pilot and broad untouched"
    health = subprocess.run([str(BIN / "ipm-lab"), "status", "--json"], capture_output=True, text=True, check=False)
    app = {row["terminal"]: row for row in json.loads(health.stdout)}[canary]["app"] or {}
    assert app.get("status") == "ok", app
    entries = [e for e in ledger(fleet) if e["change_id"] == "CHG-7013"]
    assert [(e["terminal"], e["result"]) for e in entries] == [(canary, "delivered"), (canary, "rolled_back")]
    assert entries[1]["reason"].startswith("failed during bake: "), entries[1]["reason"]
