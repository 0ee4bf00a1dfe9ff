"""The lab's state on the controller: where it lives, each terminal's record, the SSH key and host keys, the lock.

Everything ``ipm-lab`` keeps between runs is under ``/var/lib/ipm-lab``: one directory per terminal
(its overlay layer, ``terminal.json``, its console log), the console logs of failed boots, the lab's
SSH key pair and the ``known_hosts`` of running terminals. This module reads and writes those files
and gives the SSH options that use them; it starts or stops nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

STATE_DIR = Path("/var/lib/ipm-lab")
TERMINALS_DIR = STATE_DIR / "terminals"
SSH_DIR = STATE_DIR / "ssh"
LAB_KEY = SSH_DIR / "id_ed25519"
KNOWN_HOSTS = SSH_DIR / "known_hosts"
FAILED_LOGS = STATE_DIR / "failed"
STATE_FILE = "terminal.json"
# Written by the terminal's supervisor (lab_supervisor.py): current nspawn pid, boots, exit statuses.
BOOTS_FILE = "boots.json"
CONSOLE_LOG = "console.log"


def ssh_options() -> list[str]:
    """SSH options to reach lab terminals: the lab key, their recorded host keys, no user config."""
    return [
        "-F",
        "/dev/null",
        "-i",
        str(LAB_KEY),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={KNOWN_HOSTS}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "LogLevel=ERROR",
    ]


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    """Exclusive lock on PATH (created if missing); others wait their turn."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lab_lock() -> contextlib.AbstractContextManager[None]:
    """One `up`/`down` changes the lab at a time."""
    return flock(STATE_DIR / "lock")


def terminal_dir(terminal_id: str) -> Path:
    return TERMINALS_DIR / terminal_id


def load_states() -> dict[str, dict]:
    """Every terminal the lab knows of (running or left over), by id."""
    states = {}
    if not TERMINALS_DIR.is_dir():
        return states
    for directory in sorted(TERMINALS_DIR.iterdir()):
        try:
            states[directory.name] = json.loads((directory / STATE_FILE).read_text())
        except (OSError, ValueError):
            states[directory.name] = {"terminal_id": directory.name, "pid": None, "address": None}
    return states


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def known_hosts_update(remove: set[str], add: list[str]) -> None:
    """Drop the lines of addresses in ``remove``, append ``add``; atomic replace."""
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    lines = KNOWN_HOSTS.read_text().splitlines() if KNOWN_HOSTS.exists() else []
    kept = [line for line in lines if line.split(" ", 1)[0] not in remove]
    tmp = KNOWN_HOSTS.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in [*kept, *add]))
    tmp.chmod(0o644)
    tmp.replace(KNOWN_HOSTS)


def ensure_lab_key() -> str:
    """The lab's SSH key pair (generated once); returns the public key."""
    SSH_DIR.mkdir(parents=True, exist_ok=True)
    SSH_DIR.chmod(0o700)
    if not LAB_KEY.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ipm-lab", "-f", str(LAB_KEY)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    return LAB_KEY.with_suffix(".pub").read_text().strip()


def log_tail(terminal: str) -> str:
    """The last line of the terminal's console log, said for an error message."""
    log = terminal_dir(terminal) / CONSOLE_LOG
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no console log"
    return f"last console line: {lines[-1].strip()}" if lines else "empty console log"


def keep_failed_log(terminal: str) -> Path | None:
    """Copy the terminal's console log under FAILED_LOGS (before a stop or a boot again removes it)."""
    log = terminal_dir(terminal) / CONSOLE_LOG
    if not log.exists():
        return None
    FAILED_LOGS.mkdir(parents=True, exist_ok=True)
    kept = FAILED_LOGS / f"{terminal}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    shutil.copyfile(log, kept)
    return kept
