"""Patch compliance on real lab terminals: the vendor mirror, real snapshots, ipm-config patches before and after.

Two terminals (``pc-<random>-01/02``) on the lab's signed mirror (ipm-aptrepo, served on
127.0.73.250) at the baseline versions: both miss security and regular updates. Updates are then
installed over SSH with apt-get, as a person would: the kernel package asks for a reboot (its
postinst writes /var/run/reboot-required), a hold keeps ipm-runtime back, and once the reboot
file is gone (what a reboot does to /run) the terminal is up to date. Each state is read by
``playbooks/snapshot.yml`` into a history store of the test's own and reported by ``ipm-config patches``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from aptrepo_fixture import installed_versions, prepare_terminals, ssh

from ipm_tools import aptrepo

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADDRESS = "127.0.73.250"
PLACES = {"01": ("acme", "lyon"), "02": ("acme", "nice")}


def tool_env(store: Path) -> dict[str, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"), IPM_HISTORY_STORE=str(store))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory, run_lab_command):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root (systemd-nspawn, overlay mounts): run the lab tests as root")
    directory = tmp_path_factory.mktemp("patch-compliance")
    repository = aptrepo.build_repository(directory / "mirror")
    prefix = f"pc-{uuid.uuid4().hex[:6]}-"
    names = [prefix + suffix for suffix in PLACES]
    with aptrepo.serve_repository(repository, ADDRESS) as server:
        try:
            run_lab_command("up", *names)
            document = json.loads(run_lab_command("inventory", *names).stdout)
            hosts = document["all"]["children"]["lab"]["hosts"]
            for name, variables in hosts.items():
                customer, site = PLACES[name.rsplit("-", 1)[1]]
                variables.update(ipm_customer_id=customer, ipm_site_id=site)
            inventory = directory / "inventory.yml"
            inventory.write_text(yaml.safe_dump(document, sort_keys=False))
            addresses = {name: hosts[name]["ansible_host"] for name in names}
            prepare_terminals(addresses, repository, server.url)
            yield {
                "names": names,
                "addresses": addresses,
                "inventory": inventory,
                "store": directory / "history",
                "repository": repository,
            }
        finally:
            run_lab_command("down", "--missing-ok", *names, check=False)


def snapshot(lab) -> None:
    result = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            *("-i", str(lab["inventory"]), str(PROJECT_ROOT / "playbooks" / "snapshot.yml")),
            # the lab's static inventory carries no contract: the authorization wants a justification
            *("-e", "justification=lab test: terminals of no contract"),
        ],
        capture_output=True,
        text=True,
        env=tool_env(lab["store"]),
        cwd=PROJECT_ROOT,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def patches(lab, *options: str) -> subprocess.CompletedProcess:
    command = [str(BIN / "ipm-config"), "patches", "-i", str(lab["inventory"]), *options]
    result = subprocess.run(command, capture_output=True, text=True, env=tool_env(lab["store"]), timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def report(lab) -> dict:
    snapshot(lab)
    return json.loads(patches(lab, "--json").stdout)


def on(lab, index: int, script: str) -> str:
    name = lab["names"][index]
    result = ssh(lab["addresses"][name], script)
    assert result.returncode == 0, f"{name}: {script}: {result.stdout}{result.stderr}"
    return result.stdout


def test_before_the_updates_both_miss_security_updates(lab):
    document = report(lab)
    first, second = (document["terminals"][name] for name in lab["names"])
    for row in (first, second):
        assert row["status"] == "pending-security", row
        assert row["security_packages"] == ["ipm-kernel-sim", "ipm-openssl-sim"]
        assert row["pending_packages"] == ["ipm-base-tools", "ipm-kernel-sim", "ipm-openssl-sim", "ipm-runtime"]
        assert row["pending"] == 4 and row["security"] == 2
        assert row["held"] == [] and row["reboot_pending"] is False
    assert document["summary"]["customers"]["acme"]["counts"]["pending-security"] == 2
    assert document["summary"]["customers"]["acme"]["sites"]["lyon"]["terminals"] == 1
    text = patches(lab).stdout
    assert "customer acme: 2 terminals: 2 pending-security" in text
    assert "2 security updates (ipm-kernel-sim, ipm-openssl-sim); 2 other updates (ipm-base-tools, ipm-runtime)" in text


def test_installed_updates_wait_for_a_reboot_then_are_up_to_date(lab):
    on(lab, 0, "DEBIAN_FRONTEND=noninteractive apt-get -y -q upgrade >/dev/null")
    versions = installed_versions({lab["names"][0]: lab["addresses"][lab["names"][0]]}, lab["repository"])
    assert versions[lab["names"][0]] == lab["repository"].newest()
    row = report(lab)["terminals"][lab["names"][0]]
    assert row["status"] == "reboot-pending", row
    assert row["reboot_packages"] == ["ipm-kernel-sim"]  # written by the package's real postinst
    assert row["reboot_since"].endswith("Z") and row["pending"] == 0
    # a reboot empties /run: the terminal is then up to date
    on(lab, 0, "rm /var/run/reboot-required /var/run/reboot-required.pkgs")
    row = report(lab)["terminals"][lab["names"][0]]
    assert row["status"] == "up-to-date", row
    assert row["reason"] == "all updates installed"


def test_a_hold_shows_held(lab):
    on(
        lab,
        1,
        "apt-mark hold ipm-runtime >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -y -q upgrade >/dev/null",
    )
    on(lab, 1, "rm -f /var/run/reboot-required /var/run/reboot-required.pkgs")
    document = report(lab)
    row = document["terminals"][lab["names"][1]]
    assert row["status"] == "held", row
    assert row["held"] == ["ipm-runtime"]
    assert row["held_behind"] == {"ipm-runtime": {"installed": "1.0", "candidate": "2.0", "security": False}}
    assert row["pending"] == 0 and row["security"] == 0
    assert document["summary"]["fleet"] == dict(
        {status: 0 for status in ("unknown", "pending-security", "reboot-pending", "pending")},
        held=1,
        terminals=2,
        **{"up-to-date": 1},
    )
    rows = {row["terminal"]: row for row in csv.DictReader(io.StringIO(patches(lab, "--csv").stdout))}
    assert rows[lab["names"][1]]["held_behind"] == "ipm-runtime=2.0"
    site = json.loads(patches(lab, "--site", "nice", "--json").stdout)
    assert list(site["terminals"]) == [lab["names"][1]]


def test_a_reboot_required_file_shows_reboot_pending(lab):
    on(
        lab,
        1,
        "echo '*** System restart required ***' > /var/run/reboot-required && echo ipm-kernel-sim > /var/run/reboot-required.pkgs",
    )
    row = report(lab)["terminals"][lab["names"][1]]
    assert row["status"] == "reboot-pending", row  # a pending reboot comes before a hold
    assert row["held"] == ["ipm-runtime"] and row["reboot_packages"] == ["ipm-kernel-sim"]
    history = subprocess.run(
        [str(BIN / "ipm-config"), "history", lab["names"][1]],
        capture_output=True,
        text=True,
        env=tool_env(lab["store"]),
        check=False,
    )
    assert len(history.stdout.splitlines()) >= 3  # before, held, reboot pending: the report reads the latest
