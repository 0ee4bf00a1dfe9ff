"""ipm-config patches: compliance per terminal from the latest snapshots of a real store, text, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from ansible_collections.ipm.fleet.plugins.plugin_utils.config_history import write_snapshot

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

INVENTORY = """
all:
  hosts:
    pa-01: {ipm_customer_id: acme, ipm_site_id: lyon}
    pa-02: {ipm_customer_id: acme, ipm_site_id: lyon}
    pa-03: {ipm_customer_id: acme, ipm_site_id: nice}
    pb-01: {ipm_customer_id: citypark, ipm_site_id: bern}
    pb-02: {ipm_customer_id: citypark, ipm_site_id: bern}
"""


def os_facts(pending=(), security=(), held=(), reboot=False):
    update = {"installed": "1.0", "candidate": "1.1"}
    return {
        "os": {
            "id": "debian-12",
            "pending_updates": {name: update for name in (*pending, *security)},
            "pending_security_updates": {name: update for name in security},
            "held_packages": list(held),
            "reboot_required": {"required": reboot, "packages": ["ipm-kernel-sim"] if reboot else [], "since": None}
            | ({"since": "2026-12-01T02:10:00Z"} if reboot else {}),
        }
    }


def store_with_snapshots(tmp_path: Path) -> Path:
    store = tmp_path / "history"
    # pa-01: pending security on the first snapshot, up to date on the latest
    write_snapshot(str(store), "pa-01", os_facts(security=["ipm-openssl-sim"]), "2026-11-30T02:00:00Z")
    write_snapshot(str(store), "pa-01", os_facts(), "2026-12-01T02:00:00Z")
    write_snapshot(
        str(store), "pa-02", os_facts(pending=["ipm-base-tools"], held=["ipm-runtime"]), "2026-12-01T02:00:00Z"
    )
    write_snapshot(str(store), "pa-03", os_facts(reboot=True), "2026-12-01T02:00:00Z")
    write_snapshot(str(store), "pb-01", os_facts(pending=["ipm-runtime"], held=["ipm-runtime"]), "2026-12-01T02:00:00Z")
    return store  # pb-02 has no snapshot


def config(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    command = [str(BIN / "ipm-config"), "--store", str(tmp_path / "history"), "patches", "-i", str(inventory), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=120)


def test_text_report_per_customer_and_site(tmp_path):
    store_with_snapshots(tmp_path)
    result = config(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "customer acme: 3 terminals: 1 reboot-pending, 1 pending, 1 up-to-date"
    assert lines[1] == "  site lyon: 2 terminals: 1 pending, 1 up-to-date"
    assert lines[2].split() == ["pa-01", "up-to-date", "all", "updates", "installed"]
    assert lines[3].split()[:2] == ["pa-02", "pending"] and "held: ipm-runtime" in lines[3]
    assert "reboot pending since 2026-12-01T02:10:00Z for ipm-kernel-sim" in result.stdout
    assert "customer citypark: 2 terminals: 1 unknown, 1 held" in lines
    assert "no snapshot: run playbooks/snapshot.yml" in result.stdout
    assert lines[-1] == "fleet: 5 terminals: 1 unknown, 1 reboot-pending, 1 pending, 1 held, 1 up-to-date"


def test_json_and_csv(tmp_path):
    store_with_snapshots(tmp_path)
    report = json.loads(config(tmp_path, "--json").stdout)
    assert report["summary"]["customers"]["acme"]["sites"]["nice"]["reboot-pending"] == 1
    assert report["terminals"]["pa-01"]["snapshot"] == "2026-12-01T02:00:00+00:00"
    assert report["terminals"]["pb-01"]["held_behind"] == {
        "ipm-runtime": {"installed": "1.0", "candidate": "1.1", "security": False}
    }
    rows = list(csv.DictReader(io.StringIO(config(tmp_path, "--csv").stdout)))
    assert [row["terminal"] for row in rows] == ["pa-01", "pa-02", "pa-03", "pb-01", "pb-02"]
    assert rows[1]["status"] == "pending" and rows[1]["pending_packages"] == "ipm-base-tools"
    assert rows[4]["status"] == "unknown" and rows[4]["snapshot"] == ""


def test_filters_by_customer_and_site(tmp_path):
    store_with_snapshots(tmp_path)
    site = json.loads(config(tmp_path, "--site", "lyon", "--json").stdout)
    assert sorted(site["terminals"]) == ["pa-01", "pa-02"]
    customer = config(tmp_path, "--customer", "citypark")
    assert customer.stdout.splitlines()[-1] == "fleet: 2 terminals: 1 unknown, 1 held"


def test_mistakes_are_one_line(tmp_path):
    store_with_snapshots(tmp_path)
    nobody = config(tmp_path, "--customer", "nobody")
    assert nobody.returncode == 2
    assert nobody.stderr.strip() == "ipm-config: no terminal matches customer=nobody"
    both = config(tmp_path, "--json", "--csv")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    (tmp_path / "history").rename(tmp_path / "elsewhere")
    empty = config(tmp_path)
    assert empty.returncode == 0
    assert "ipm-config: warning: no selected terminal has a snapshot in" in empty.stderr
