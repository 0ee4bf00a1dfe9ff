"""ipm-lab refuses bad input with one clear line, and leaves nothing half-started behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TERMINALS_DIR = Path("/var/lib/ipm-lab/terminals")


def _ipm_lab(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ipm_tools.lab", *args]
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


NOBODY = "65534"


def _as_nobody(*command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd="/",
    )


def _python_for_nobody() -> str:
    """A Python 3.11 that user nobody can start: the project's own if it can, else the system's.

    The project's interpreter may live where nobody cannot enter (a clone under /root or under a
    `mktemp -d` folder, a pyenv under /root): then the system's Python 3.11 (Debian bookworm's) runs
    the same copied code.
    """
    probe = "import encodings, json, sys; sys.exit(sys.version_info[:2] != (3, 11))"
    candidates = [sys.executable, os.path.realpath(sys.executable), shutil.which("python3.11"), "/usr/bin/python3.11"]
    tried = []
    for candidate in dict.fromkeys(c for c in candidates if c):
        result = _as_nobody(candidate, "-S", "-c", probe)
        if result.returncode == 0:
            return candidate
        tried.append(f"{candidate}: exit {result.returncode} {result.stderr.strip()[-200:]}")
    pytest.fail(f"no Python 3.11 that user nobody ({NOBODY}) can start: {'; '.join(tried)}")


@pytest.fixture
def readable_copy():
    """This checkout's ipm-lab code copied where any user can read it: ``(directory, PYTHONPATH)``.

    The clone itself may be unreadable to others (under /root, under a `mktemp -d` folder, or a
    umask of 077), so the code nobody runs is a world-readable copy of exactly these files: the
    ``ipm_tools`` package, the collection's plugins (its domain logic, under
    ``collections/ansible_collections/ipm/fleet``, where ``ipm_tools`` looks for them) and PyYAML,
    the one package it imports that is not in the standard library.
    """
    import yaml

    directory = Path(tempfile.mkdtemp(prefix="ipm-lab-nobody-"))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(PROJECT_ROOT / "tools" / "ipm_tools", directory / "tools" / "ipm_tools", ignore=ignore)
        fleet = directory / "collections" / "ansible_collections" / "ipm" / "fleet"
        shutil.copytree(PROJECT_ROOT / "plugins", fleet / "plugins", ignore=ignore)
        site = Path(yaml.__file__).resolve().parents[1]
        for package in ("yaml", "_yaml"):
            if (site / package).is_dir():
                shutil.copytree(site / package, directory / "site" / package, ignore=ignore)
        for path in [directory, *directory.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield directory, os.pathsep.join([str(directory / "tools"), str(directory / "site")])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_not_root(readable_copy):
    # A real other user (nobody, no groups) runs this checkout's ipm-lab: it must refuse in one line.
    directory, pythonpath = readable_copy
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"}
    python = _python_for_nobody()
    # -S: no site-packages, so nothing but the copy (and the standard library) can answer an import.
    where = _as_nobody(
        python, "-S", "-c", "import ipm_tools.lab as lab, os; print(lab.__file__, os.geteuid())", env=env
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(directory / "tools" / "ipm_tools" / "lab.py"), NOBODY]
    result = _as_nobody(python, "-S", "-m", "ipm_tools.lab", "up", "--count", "1", env=env)
    line = _one_line_error(result, "must run as root")
    assert "sudo ipm-lab up" in line


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
