"""The registry through AWX's inventory source path: ``ansible-inventory --list --export --output`` with slices.

A synthetic registry of 4,000 terminals (bench/inventory.py's generator), read by two worker
processes as the plugin does on its own from about 12,000 terminals (so as at 50,000), exported the way AWX imports an
inventory source, with ``slices: 4``: every terminal is a host with its ``ipm_`` variables, every site
group in exactly one ``slice_<k>_of_4`` group, within the documented limit (docs/scale.md, scaled per
terminal: bench/inventory_awx.py holds the figures and measures 50,000). Then what AWX does with a
slice a limit leaves empty: the job fails, so the workflow must leave that slice out.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TERMINALS = 4000
SLICES = 4


def _bench():
    spec = importlib.util.spec_from_file_location("inventory_awx", ROOT / "bench" / "inventory_awx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


def test_export_holds_every_terminal_and_the_slice_groups_within_the_limit(bench, tmp_path):
    sliced, _plain, customers = bench.make_fleet(tmp_path, TERMINALS, SLICES)
    output = tmp_path / "output.json"
    wall, cpu, peak = bench.export(sliced, output, {"IPM_REGISTRY_WORKERS": "2"})
    data = json.loads(output.read_text())
    assert bench.check_export(data, customers, SLICES) == []
    assert len(data["_meta"]["hostvars"]) == TERMINALS
    first = data["_meta"]["hostvars"]["t000000"]
    assert first["ipm_site_id"] == "site-0000-000" and first["ipm_ring"] == "canary"
    assert data["slice_1_of_4"]["vars"] == {"ipm_slice": 1, "ipm_slice_count": 4}
    # Balanced: generated sites are all 25 terminals, 160 sites in 4 slices of 40 sites each.
    sizes = sorted(len(data[f"slice_{k}_of_4"]["children"]) for k in range(1, SLICES + 1))
    assert sizes == [40] * 4
    limit_s, limit_mib = bench.limits(TERMINALS)
    # CPU time of the whole process tree (workers included) is the work, whatever the neighbours do on
    # this shared machine (wall time there measures them: 108 s wall for 6.8 CPU s at a load of 30).
    assert cpu <= limit_s, f"--list --export of {TERMINALS} terminals took {cpu:.1f} CPU s, limit {limit_s:.0f} s"
    assert peak <= limit_mib, (
        f"--list --export of {TERMINALS} terminals peaked at {peak:.0f} MiB, limit {limit_mib:.0f}"
    )
    print(f"export of {TERMINALS} terminals: {wall:.1f} s wall, {cpu:.1f} CPU s, {peak:.0f} MiB peak")


def test_a_limit_that_empties_a_slice_fails_the_job_as_on_awx(tmp_path):
    config = tmp_path / "demo.ipm_registry.yml"
    config.write_text(f"plugin: ipm.fleet.registry\nregistry: {ROOT / 'registry' / 'demo'}\nslices: 12\n")
    playbook = tmp_path / "ping.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    env.pop("ANSIBLE_INVENTORY", None)
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(config), str(playbook), "--limit", "slice_12_of_12", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode != 0
    assert "slice(s) get no terminal (slice_9_of_12, slice_10_of_12, slice_11_of_12, slice_12_of_12)" in (
        " ".join(result.stderr.split())
    )
    assert "no hosts to target" in result.stderr
    listed = subprocess.run(
        [str(BIN / "ansible"), "-i", str(config), "slice_1_of_12:&ring_canary", "--list-hosts"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert "hosts (1):" in listed.stdout
