"""The molecule scenarios run inside the test command: real lab terminals, the collection's roles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p.parent.name for p in (PROJECT_ROOT / "molecule").glob("*/molecule.yml"))
TERMINALS_DIR = Path("/var/lib/ipm-lab/terminals")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario, run_lab_command):
    if os.geteuid() != 0:
        pytest.skip("molecule's lab terminals need root (systemd-nspawn): run as root")
    platforms = [
        p["name"]
        for p in yaml.safe_load((PROJECT_ROOT / "molecule" / scenario / "molecule.yml").read_text())["platforms"]
    ]
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PY_COLORS"] = "0"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    try:
        result = subprocess.run(
            [str(Path(sys.executable).with_name("molecule")), "test", "-s", scenario],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        for step in ("create", "converge", "idempotence", "check", "verify", "destroy"):
            assert f"{step}: Executed: Successful" in output, f"molecule step {step} did not succeed"
        assert "passed" in output  # testinfra ran its tests
        assert not any((TERMINALS_DIR / name).exists() for name in platforms), "destroy left a terminal"
    finally:
        # Safety net: even if molecule died between create and destroy, nothing stays up.
        run_lab_command("down", "--missing-ok", *platforms)
