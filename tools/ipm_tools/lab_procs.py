"""Processes of lab terminals: which ones belong to a terminal, what state it is in, and stopping it.

A terminal is its supervisor (``lab_supervisor.py``, pid in ``terminal.json``), the supervisor's
current ``systemd-nspawn`` (pid in ``boots.json``; none for a moment while the terminal reboots) and
the processes inside the container (found through their overlay mount, so also when the nspawn was
killed). Terminals started before supervisors existed have their nspawn's pid in ``terminal.json``;
both kinds are understood. Stopping sends SIGTERM (the supervisor forwards it and starts no new
boot), kills what is left, unmounts, removes the layer and forgets the host key; cleaning stops the
terminals a crash left behind. Zombies count as gone.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ipm_tools.lab_state import BOOTS_FILE, known_hosts_update, load_states, terminal_dir
from ipm_tools.lab_supervisor import SCRIPT_NAME as SUPERVISOR_SCRIPT

NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")
STOP_TIMEOUT_S = 20


def proc_state(pid: int) -> str | None:
    """The process state letter, or None if there is no such process (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state = stat.rsplit(")", 1)[1].split()[0]
    return None if state in ("Z", "X") else state


def _cmdline(pid: int) -> list[str]:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in argv]


def is_nspawn_of(pid: int, terminal_id: str) -> bool:
    args = _cmdline(pid)
    return bool(args) and args[0].endswith("systemd-nspawn") and terminal_id in args and "-M" in args


def is_supervisor_of(pid: int, terminal_id: str) -> bool:
    args = _cmdline(pid)
    if not any(arg.endswith(SUPERVISOR_SCRIPT) for arg in args[:4]):
        return False
    return any(flag == "--terminal" and value == terminal_id for flag, value in itertools.pairwise(args))


def nspawn_alive(state: dict) -> bool:
    """The terminal is up: its supervisor runs (its nspawn, or between two boots while it reboots).

    For a terminal started before supervisors existed: its nspawn runs.
    """
    pid = state.get("pid")
    if not pid or proc_state(pid) is None:
        return False
    return is_supervisor_of(pid, state["terminal_id"]) or is_nspawn_of(pid, state["terminal_id"])


def boots_record(state: dict) -> dict:
    """What the terminal's supervisor recorded (``boots``, ``nspawn_pid``, ``exits``), or {}."""
    try:
        return json.loads((terminal_dir(state["terminal_id"]) / BOOTS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def nspawn_pid(state: dict) -> int | None:
    """Host pid of the terminal's running systemd-nspawn, or None (stopped, or between two boots)."""
    terminal = state["terminal_id"]
    pid = state.get("pid")
    if pid and proc_state(pid) is not None and is_nspawn_of(pid, terminal):
        return pid  # started before supervisors existed
    current = boots_record(state).get("nspawn_pid")
    if current and proc_state(current) is not None and is_nspawn_of(current, terminal):
        return current
    return None


def boot_count(state: dict) -> int:
    """How many times the terminal booted (1 + its reboots); 1 for a terminal without a record."""
    return int(boots_record(state).get("boots") or 1)


def container_pids(upper: Path) -> list[int]:
    """Processes that run inside a terminal: those whose root is the overlay with this upper layer.

    Found through /proc/<pid>/mountinfo, so it also finds a terminal whose nspawn was killed.
    """
    needle = f"upperdir={upper},".encode()
    needle_end = f"upperdir={upper}\n".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            info = (entry / "mountinfo").read_bytes()
        except OSError:
            continue
        if (needle in info or needle_end in info) and proc_state(int(entry.name)) is not None:
            pids.append(int(entry.name))
    return pids


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS over ``pids`` (KiB)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below PATH, deepest first (the order to unmount them)."""
    prefix = str(path).rstrip("/") + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(path) or point.startswith(prefix):
            mounts.append(point)
    return sorted(mounts, key=len, reverse=True)


def container_init(state: dict) -> int | None:
    """Host pid of the terminal's systemd (PID 1 inside): the child of its systemd-nspawn."""
    pid = nspawn_pid(state)
    if pid is None:
        return None
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        status = Path(f"/proc/{children[0]}/status").read_text()
    except (OSError, IndexError):
        return None
    nspid = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
    return int(children[0]) if nspid and nspid[0][-1] == "1" else None


def system_state(state: dict) -> str:
    """`systemctl is-system-running` inside the terminal, entered with nsenter (no SSH handshake)."""
    init = container_init(state)
    if init is None:
        return "unknown (no systemd found in the container)"
    try:
        result = subprocess.run(
            ["nsenter", "-t", str(init), "-m", "-p", "-u", "-i", "systemctl", "is-system-running"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "unknown (systemctl did not answer)"
    return result.stdout.strip() or f"unknown ({result.stderr.strip() or 'no answer'})"


def _running(state: dict) -> bool:
    return nspawn_alive(state) or nspawn_pid(state) is not None


def _signal(pid: int | None, signum: int) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def stop_terminals(states: list[dict], progress: Callable[[str], None]) -> None:
    """SIGTERM every terminal, wait, kill what is left, unmount, remove layers and known hosts.

    The supervisor forwards SIGTERM to its nspawn and starts no new boot (also mid-reboot); an
    nspawn whose supervisor was killed (a crash) gets the SIGTERM itself.
    """
    for state in states:
        if nspawn_alive(state):
            _signal(state["pid"], signal.SIGTERM)
        else:
            _signal(nspawn_pid(state), signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for state in states:
        while _running(state) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _running(state):
            orphan = nspawn_pid(state)
            if nspawn_alive(state):
                _signal(state["pid"], signal.SIGKILL)
            _signal(orphan, signal.SIGKILL)
    for state in states:
        terminal = state["terminal_id"]
        directory = terminal_dir(terminal)
        # An nspawn killed hard leaves its container running: kill what still runs on the layer.
        for _attempt in range(50):
            pids = container_pids(directory / "upper")
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for mount in mounts_under(directory):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
        # nspawn leaves this behind when /run is not a tmpfs (it refuses to delete on a disk file system).
        propagate = NSPAWN_PROPAGATE / terminal
        if propagate.is_dir() and not mounts_under(propagate):
            shutil.rmtree(propagate, ignore_errors=True)
        progress(f"{terminal}: stopped")
    addresses = {state["address"] for state in states if state.get("address")}
    if addresses:
        known_hosts_update(addresses, [])


def clean_leftovers(progress: Callable[[str], None]) -> dict[str, dict]:
    """Remove terminals whose nspawn is gone (after a crash); return the running ones."""
    running: dict[str, dict] = {}
    stale: dict[str, dict] = {}
    for terminal, state in load_states().items():
        (running if nspawn_alive(state) else stale).__setitem__(terminal, state)
    if stale:
        progress(f"cleaning {len(stale)} left-over terminal(s): {', '.join(sorted(stale))}")
        stop_terminals(list(stale.values()), lambda _message: None)
    return running
