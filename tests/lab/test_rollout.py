"""playbooks/rollout.yml on 6 real lab terminals in 3 time zones (Paris, Sydney, New York)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from fleet import write_fleet

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def env(audit_log: Path) -> dict[str, str]:
    variables = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"), IPM_AUDIT_LOG=str(audit_log))
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, run_lab_command):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("rollout")
    inventory, terminals = write_fleet(directory)
    subprocess.run([str(BIN / "ipm-release"), "build"], check=True, capture_output=True)
    try:
        run_lab_command("up", "--inventory", str(inventory))
        yield {"inventory": inventory, "terminals": terminals, "audit": directory / "audit.jsonl"}
    finally:
        run_lab_command("down", "--missing-ok", *terminals, check=False)


def rollout(fleet, release: str, *options: str) -> subprocess.CompletedProcess:
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(fleet["inventory"]),
        str(PROJECT_ROOT / "playbooks" / "rollout.yml"),
    ]
    command += ["-e", f"release={release}", "-e", "change_id=CHG-7001", "-e", "rollout_settle_s=6"]
    # Short bakes (the demo inventory's are 5 s); a test that needs a longer one gives its own -e.
    command += ["-e", "rollout_bake_s=2", "-e", "rollout_bake_interval_s=1", *options]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env(fleet["audit"]), cwd=PROJECT_ROOT, timeout=1200, check=False
    )
    # Ansible's YAML output folds long messages over lines: compare words, not line breaks.
    result.stdout = " ".join(result.stdout.split())
    return result


def current(fleet, leave_out: tuple[str, ...] = ()) -> dict[str, str]:
    """The release each terminal (but ``leave_out``) really runs: its current link, read over SSH."""
    command = [
        str(BIN / "ansible"),
        "-i",
        str(fleet["inventory"]),
        ":".join(["all", *(f"!{name}" for name in leave_out)]),
        "-m",
        "ansible.builtin.command",
        "-a",
        "readlink /opt/ipm/app/current",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env(fleet["audit"]), cwd=PROJECT_ROOT, timeout=600, check=False
    )
    answers = {}
    for line in result.stdout.splitlines():
        if "| CHANGED |" in line or "| SUCCESS |" in line:
            host = line.split(" | ")[0]
            answers[host] = None
            last = host
        elif line.startswith("releases/") and answers:
            answers[last] = line.strip().split("/")[-1]
    assert len(answers) == len(fleet["terminals"]) - len(leave_out), result.stdout + result.stderr
    return answers


def named(fleet, suffix: str) -> str:
    return next(t for t in fleet["terminals"] if t.endswith(suffix))


def test_1_broken_release_is_rolled_back_and_halts_the_rollout(fleet):
    result = rollout(fleet, "2.4.1", "-e", "rollout_hosts=all")
    assert result.returncode != 0
    canary = named(fleet, "par1")
    assert "rolled_back" in result.stdout and "ROLLOUT HALTED in ring canary" in result.stdout, result.stdout
    assert "later waves and rings untouched" in result.stdout
    releases = current(fleet)
    assert releases[canary] == "2.3.1", "the canary is back on its previous release"
    assert set(releases.values()) == {"2.3.1"}, "pilot and broad were never touched"


def test_2_release_reaches_every_ring_and_defers_the_closed_site(fleet):
    result = rollout(fleet, "2.4.0")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    releases = current(fleet)
    for terminal, release in releases.items():
        expected = "2.3.1" if "nyc" in terminal else "2.4.0"
        assert release == expected, (terminal, release)
    assert result.stdout.count("deferred") >= 2
    assert "went through every ring" in result.stdout
    for ring in ("canary", "pilot", "broad"):
        assert f"Baking ring {ring}" in result.stdout, f"ring {ring} was not baked"
    again = rollout(fleet, "2.4.0")
    assert again.returncode == 0
    assert "changed=1" not in again.stdout, "a second run changes nothing"
    assert "already_current" in again.stdout

    # The delivery ledger, from the audit log: every attempt, and what each terminal runs since when.
    audit = [str(BIN / "ipm-audit"), "--log", str(fleet["audit"])]
    verified = subprocess.run([*audit, "verify"], capture_output=True, text=True, env=env(fleet["audit"]), check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    ledger = subprocess.run(
        [*audit, "deliveries", "--release", "2.4.0", "--json"], capture_output=True, text=True, check=False
    )
    entries = json.loads(ledger.stdout)
    second_run_started = min(e["time"] for e in entries if e["result"] == "already_current")
    first_run = sorted(e["result"] for e in entries if e["time"] < second_run_started)
    # every delivered terminal passed its ring's bake: one baked entry each, after its delivery
    assert first_run == ["baked"] * 4 + ["deferred", "deferred"] + ["delivered"] * 4
    assert all(e["reason"].startswith("healthy for 2") for e in entries if e["result"] == "baked")
    assert all(e["operator"] and e["change_id"] == "CHG-7001" and e["site_time"] for e in entries)
    running = subprocess.run([*audit, "deliveries", "--running", "--json"], capture_output=True, text=True, check=False)
    runs = {row["terminal"]: row for row in json.loads(running.stdout)}
    assert runs[named(fleet, "par1")]["release"] == "2.4.0" and runs[named(fleet, "par1")]["change_id"] == "CHG-7001"


LATE_FAILING = "2.4.2"


@pytest.fixture(scope="module")
def late_failing_release(tmp_path_factory):
    """A release that answers healthy through the settle period (6 s) and fails 20 s after its start."""
    definitions = tmp_path_factory.mktemp("definitions")
    artifacts = tmp_path_factory.mktemp("artifacts")
    definition = yaml.safe_load((PROJECT_ROOT / "app" / "releases" / "2.4.0.yml").read_text())
    definition.update(
        version=LATE_FAILING,
        description="Fails its health check 20 s after its start, after the settle period (bake tests).",
        defect={"kind": "health-fails-after-start", "healthy_for_s": 20},
    )
    (definitions / f"{LATE_FAILING}.yml").write_text(yaml.safe_dump(definition, sort_keys=False))
    built = subprocess.run(
        [str(BIN / "ipm-release"), "build", LATE_FAILING, "--definitions", str(definitions), "--out", str(artifacts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return artifacts


def test_3_late_failure_is_rolled_back_during_the_canary_bake_and_halts(fleet, late_failing_release):
    # After test 2 every terminal but New York's runs 2.4.0. The release stays healthy through the
    # delivery's settle period; only the bake (40 s, a probe a second) sees it fail.
    before = current(fleet)
    canary = named(fleet, "par1")
    result = rollout(
        fleet,
        LATE_FAILING,
        "-e",
        "rollout_hosts=all",
        "-e",
        f"rollout_artifacts_dir={late_failing_release}",
        "-e",
        "rollout_bake_s_canary=40",
    )
    assert result.returncode == 2, result.stdout[-4000:] + result.stderr[-2000:]
    assert "ROLLOUT HALTED in ring canary" in result.stdout, result.stdout[-4000:]
    assert f"canary {canary} rolled_back 2.4.0 -> {LATE_FAILING}" in result.stdout, result.stdout[-4000:]
    assert "failed during bake" in result.stdout
    assert "Baking ring pilot" not in result.stdout, "the pilot ring must not start"
    assert current(fleet) == before, "the canary is back on 2.4.0; pilot and broad were never touched"

    audit = [str(BIN / "ipm-audit"), "--log", str(fleet["audit"])]
    ledger = subprocess.run(
        [*audit, "deliveries", "--release", LATE_FAILING, "--json"], capture_output=True, text=True, check=False
    )
    entries = json.loads(ledger.stdout)
    assert [(e["terminal"], e["result"]) for e in entries] == [(canary, "delivered"), (canary, "rolled_back")]
    assert entries[1]["reason"].startswith("failed during bake: ") and entries[1]["from_version"] == "2.4.0"
    running = subprocess.run([*audit, "deliveries", "--running", "--json"], capture_output=True, text=True, check=False)
    runs = {row["terminal"]: row for row in json.loads(running.stdout)}
    assert runs[canary]["release"] == "2.4.0", "the ledger says the canary runs 2.4.0 again"
    health = subprocess.run([str(BIN / "ipm-lab"), "status", "--json"], capture_output=True, text=True, check=False)
    assert health.returncode == 0, health.stderr
    app = {row["terminal"]: row for row in json.loads(health.stdout)}[canary]["app"] or {}
    assert (app.get("status"), app.get("version")) == ("ok", "2.4.0"), app


def test_4_new_generation_skips_the_old_model(fleet):
    result = rollout(fleet, "3.0.0", "-e", "rollout_hosts=all")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    releases = current(fleet)
    old_model = named(fleet, "par2")
    assert releases[old_model] == "2.4.0", "the PS-200 is not touched"
    assert "hardware model PS-200 is not supported by release 3.0.0" in result.stdout
    for suffix in ("par1", "syd1", "syd2"):
        assert releases[named(fleet, suffix)] == "3.0.0"


def test_5_requests_without_change_id_or_unknown_release_are_refused(fleet):
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(fleet["inventory"]),
        str(PROJECT_ROOT / "playbooks" / "rollout.yml"),
        "-e",
        "release=2.4.0",
    ]
    missing = subprocess.run(
        command, capture_output=True, text=True, env=env(fleet["audit"]), cwd=PROJECT_ROOT, check=False
    )
    assert missing.returncode != 0 and "Every rollout carries its change id" in missing.stdout
    unknown = rollout(fleet, "9.9.9")
    assert unknown.returncode != 0 and "is not in the catalog" in unknown.stdout
    emergency = rollout(fleet, "2.4.0", "-e", "window=ignore")
    assert emergency.returncode != 0 and "say why with -e window_justification" in emergency.stdout


def test_6_an_unreachable_canary_is_recorded_and_halts_the_rollout(fleet, tmp_path):
    canary = named(fleet, "par1")
    before = current(fleet)
    # A second inventory source points the canary at a closed port: SSH is refused, as for a terminal
    # whose link is down. Its wave is that terminal alone, so without the role's handling Ansible
    # would end the playbook there, without a ledger entry or a summary.
    unreachable = tmp_path / "unreachable.yml"
    unreachable.write_text(f"all:\n  hosts:\n    {canary}:\n      ansible_port: 9\n")
    result = rollout(fleet, "2.4.0", "-e", "rollout_hosts=all", "-i", str(unreachable))
    assert result.returncode == 2, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"canary {canary}" in result.stdout and "not_reached" in result.stdout, result.stdout[-4000:]
    assert "ROLLOUT HALTED in ring canary" in result.stdout
    assert f"failed, rolled back or not reached: {canary}" in result.stdout
    assert current(fleet) == before, "the rollout went no further than the canary"

    audit = [str(BIN / "ipm-audit"), "--log", str(fleet["audit"])]
    ledger = subprocess.run(
        [*audit, "deliveries", "--result", "not_reached", "--json"], capture_output=True, text=True, check=False
    )
    entries = json.loads(ledger.stdout)
    assert [(e["terminal"], e["release"]) for e in entries] == [(canary, "2.4.0")]
    assert entries[0]["reason"].startswith("unreachable:") and entries[0]["change_id"] == "CHG-7001"


def test_7_going_back_to_an_older_release_needs_allow_downgrade(fleet):
    # After test 4, par1, syd1 and syd2 run 3.0.0; par2 runs 2.4.0; the windows are ignored so that
    # New York takes part too.
    before = current(fleet)
    emergency = [
        "-e",
        "rollout_hosts=all",
        "-e",
        json.dumps({"window": "ignore", "window_justification": "planned downgrade test"}),
    ]
    refused = rollout(fleet, "2.4.0", *emergency)
    assert refused.returncode == 0, refused.stdout[-4000:]
    assert "installed release 3.0.0 is newer than 2.4.0: a downgrade needs allow_downgrade" in refused.stdout
    assert "-e rollout_allow_downgrade=true" in refused.stdout
    after = current(fleet)
    newer = [name for name, release in before.items() if release == "3.0.0"]
    assert len(newer) == 3 and all(after[name] == "3.0.0" for name in newer), after
    assert all(release == "2.4.0" for name, release in after.items() if name not in newer), "the others upgraded"
    allowed = rollout(fleet, "2.4.0", *emergency, "-e", "rollout_allow_downgrade=true")
    assert allowed.returncode == 0, allowed.stdout[-4000:]
    assert set(current(fleet).values()) == {"2.4.0"}
