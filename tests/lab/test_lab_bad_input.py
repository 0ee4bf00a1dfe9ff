"""ipm-lab refuses bad input with one clear line, and leaves nothing half-started behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TERMINALS_DIR = Path("/var/lib/ipm-lab/terminals")


def _ipm_lab(
    *args: str, env: dict | None = None, user: str | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess:
    command = [*(prefix or []), sys.executable, "-m", "ipm_tools.lab", *args]
    if user:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    base_env = dict(os.environ)
    base_env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "tools"), str(PROJECT_ROOT / "collections")])
    base_env.update(env or {})
    return subprocess.run(command, capture_output=True, text=True, env=base_env, timeout=120, check=False, cwd="/")


def _terminals() -> set[str]:
    return {path.name for path in TERMINALS_DIR.iterdir()} if TERMINALS_DIR.is_dir() else set()


def _nspawn_names() -> set[str]:
    names = set()
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0].endswith("systemd-nspawn") and "-M" in argv:
            names.add(argv[argv.index("-M") + 1])
    return names


# Every terminal a refused `up` below would have created. Other sessions may boot terminals of their
# own meanwhile (random prefixes), so only these names are watched.
REFUSED = {"lab-01", "lab-02", "ok-01", "t-ok", "t-far", "t-noaddr", "under_score-01"}


@pytest.fixture(autouse=True)
def nothing_half_started():
    if os.geteuid() != 0:
        pytest.skip("these checks switch users and inspect the lab's state: run as root")
    before_dirs, before_nspawn = _terminals() & REFUSED, _nspawn_names() & REFUSED
    yield
    assert _terminals() & REFUSED <= before_dirs, "a refused `up` left a terminal layer behind"
    assert _nspawn_names() & REFUSED <= before_nspawn, "a refused `up` left a systemd-nspawn running"


def _one_line_error(result: subprocess.CompletedProcess, expected: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ipm-lab: error: ")
    assert "Traceback" not in result.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


def test_not_root():
    probe = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", "import yaml"],
        capture_output=True,
        check=False,
    )
    if probe.returncode == 0:
        result = _ipm_lab("up", "--count", "1", user="65534")
    else:
        # The interpreter lives where nobody cannot reach it (/root/...): a user namespace still makes
        # the process non-root (euid 65534) while it keeps reading its files as their owner.
        result = _ipm_lab("up", "--count", "1", prefix=["unshare", "--user"])
    _one_line_error(result, "must run as root")


def test_missing_debootstrap_and_nspawn(tmp_path):
    # A PATH with ssh but without debootstrap or systemd-nspawn, as on a machine never bootstrapped.
    for tool in ("ssh", "ssh-keygen"):
        (tmp_path / tool).symlink_to(shutil.which(tool))
    result = _ipm_lab("up", "--count", "1", env={"PATH": str(tmp_path)})
    _one_line_error(result, "apt-get install debootstrap systemd-container")


def test_more_terminals_than_the_address_plan_holds():
    _one_line_error(_ipm_lab("up", "--count", "5000"), "address plan holds 1016")


@pytest.mark.parametrize("name", ["bad_name", "lead-", "x" * 70, "a..b"])
def test_terminal_id_that_is_not_a_hostname(name):
    _one_line_error(_ipm_lab("up", "ok-01", name), "is not a valid hostname")


def test_count_prefix_that_makes_no_hostname():
    _one_line_error(_ipm_lab("up", "--count", "2", "--prefix", "under_score-"), "is not a valid hostname")


def test_inventory_address_outside_loopback(tmp_path):
    inventory = tmp_path / "fleet.yml"
    inventory.write_text(
        "all:\n  hosts:\n    t-ok:\n      ansible_host: 127.0.90.1\n    t-far:\n      ansible_host: 10.20.30.40\n"
    )
    line = _one_line_error(_ipm_lab("up", "--inventory", str(inventory)), "outside 127.0.0.0/8")
    assert str(inventory) in line and "t-far" in line and "ansible_host" in line


def test_inventory_host_without_address(tmp_path):
    inventory = tmp_path / "fleet.ini"
    inventory.write_text("[site_a]\nt-noaddr ipm_model=PS-300\n")
    _one_line_error(_ipm_lab("up", "--inventory", str(inventory)), "t-noaddr: no ansible_host")


def test_inventory_that_does_not_exist(tmp_path):
    _one_line_error(_ipm_lab("up", "--inventory", str(tmp_path / "nope.yml")), "does not exist")


def test_down_and_ssh_of_an_unknown_terminal():
    _one_line_error(_ipm_lab("down", "no-such-terminal"), "no lab terminal named 'no-such-terminal'")
    _one_line_error(_ipm_lab("ssh", "no-such-terminal", "true"), "no lab terminal named 'no-such-terminal'")
