"""Shared pytest fixtures: real lab terminals (systemd-nspawn containers reached over SSH).

``lab_terminals`` boots two terminals for a test module and always stops them afterwards, also
when a test fails or the boot itself fails. ``lab_factory`` boots any number for tests that need
their own; everything it started is stopped at the end of the session at the latest. Both skip
with a clear reason when not root. See docs/lab.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAB_COMMAND = [sys.executable, "-m", "ipm_tools.lab"]
LAB_TERMINALS_DIR = Path("/var/lib/ipm-lab/terminals")
# Playbooks refuse to run without an authorization policy: the suite's own, unless a test names another.
os.environ.setdefault("IPM_POLICY_FILE", str(PROJECT_ROOT / "tests" / "policy.yml"))


def lab_env() -> dict[str, str]:
    """Environment for ipm-lab and Ansible run from tests: the project's config and tools first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(PROJECT_ROOT / "ansible.cfg")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "tools"), str(PROJECT_ROOT / "collections")])
    return env


def run_lab(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``ipm-lab ARGS`` (the real command-line tool) and return its result."""
    result = subprocess.run(
        [*LAB_COMMAND, *args], capture_output=True, text=True, env=lab_env(), timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ipm-lab {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def require_lab_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root (systemd-nspawn, overlay mounts): run the lab tests as root")


@dataclass
class LabTerminals:
    """Running lab terminals: their ids, addresses and an Ansible inventory to reach them."""

    names: list[str]
    hosts: dict[str, dict]
    inventory: Path
    stopped: bool = field(default=False)

    def address(self, name: str) -> str:
        return self.hosts[name]["ansible_host"]

    def ssh(self, name: str, command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run COMMAND on terminal NAME over real SSH (lab key, host key checked)."""
        result = run_lab("ssh", name, command, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{name}: `{command}` failed ({result.returncode}): {result.stdout}{result.stderr}")
        return result

    def ansible(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``ansible -i <their inventory> ARGS`` from the project's venv."""
        return subprocess.run(
            [str(Path(sys.executable).with_name("ansible")), "-i", str(self.inventory), *args],
            capture_output=True,
            text=True,
            env=lab_env(),
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        """Stop these terminals (idempotent); fails the caller if anything of them is left."""
        if self.stopped:
            return
        self.stopped = True
        running = [name for name in self.names if (LAB_TERMINALS_DIR / name).exists()]
        if running:
            run_lab("down", *running)


def _boot(count: int, directory: Path) -> LabTerminals:
    # A prefix of our own: other test sessions on this machine may run lab terminals at the same time.
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    names = [f"{prefix}{index:02d}" for index in range(1, count + 1)]
    terminals = LabTerminals(names, {}, directory / "inventory.yml")
    try:
        run_lab("up", *names)
        document = json.loads(run_lab("inventory", *names).stdout)
        terminals.hosts = document["all"]["children"]["lab"]["hosts"]
        terminals.inventory.write_text(yaml.safe_dump(document, sort_keys=False))
    except BaseException:
        terminals.stop()
        raise
    return terminals


@pytest.fixture(scope="session")
def run_lab_command():
    """The ``ipm-lab`` command-line tool as a function: ``run_lab_command("status", "--json")``."""
    return run_lab


@pytest.fixture(scope="session")
def lab_factory(tmp_path_factory) -> Iterator:
    """Boot ``count`` lab terminals on demand; all are stopped at the end of the session at the latest."""
    require_lab_root()
    started: list[LabTerminals] = []

    def boot(count: int = 2) -> LabTerminals:
        terminals = _boot(count, tmp_path_factory.mktemp("lab"))
        started.append(terminals)
        return terminals

    yield boot
    for terminals in started:
        terminals.stop()


@pytest.fixture(scope="module")
def lab_terminals(lab_factory) -> Iterator[LabTerminals]:
    """Two running lab terminals for this test module, stopped when the module's tests are done."""
    terminals = lab_factory(2)
    try:
        yield terminals
    finally:
        terminals.stop()
