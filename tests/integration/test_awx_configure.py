"""awx/configure.yml with the awx.awx collection (from the `ansible` package of the dev extra): it passes
ansible-playbook's syntax check, stops with one line per missing setting, and with every setting given its first
awx.awx module runs and calls the controller's API at CONTROLLER_HOST (a closed port on 127.0.0.1: no AWX runs
here). See docs/awx.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def playbook(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "awx/configure.yml", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home()), **env},
    )


def test_configure_yml_passes_syntax_check_with_awx_awx():
    done = playbook("--syntax-check")
    assert done.returncode == 0, done.stderr


def test_configure_yml_stops_with_one_line_per_missing_setting(tmp_path):
    done = playbook(
        "-e",
        "ipm_awx_scm_url=https://git.example.invalid/x.git",
        IPM_AUDIT_LOG=str(tmp_path / "a.jsonl"),
        IPM_AUDIT_KEY_FILE=str(tmp_path / "k"),
    )
    assert done.returncode != 0
    assert "ipm_awx_ee_image is empty: set it with -e ipm_awx_ee_image=" in done.stdout
    assert "ipm_awx_scm_url is empty" not in done.stdout


def test_configure_yml_reaches_the_controller_api_with_every_setting(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("not a real secret\n", encoding="utf-8")
    settings = {
        "ipm_awx_scm_url": "https://git.example.invalid/ipm/fleet.git",
        "ipm_awx_ee_image": "registry.example.invalid/ipm/ipm-fleet-ee:0.1.0",
        "ipm_awx_ssh_key_file": str(secret),
        "ipm_awx_vault_password_file": str(secret),
        "ipm_awx_audit_key_file": str(secret),
    }
    args = [item for name, value in settings.items() for item in ("-e", f"{name}={value}")]
    done = playbook(
        *args,
        CONTROLLER_HOST="http://127.0.0.1:9",
        IPM_AUDIT_LOG=str(tmp_path / "a.jsonl"),
        IPM_AUDIT_KEY_FILE=str(tmp_path / "k"),
    )
    assert done.returncode != 0
    assert "TASK [Organization]" in done.stdout
    assert "http://127.0.0.1:9/api/v2/organizations/" in done.stdout and "Connection refused" in done.stdout
