"""The supervisor of one lab terminal: runs its systemd-nspawn, and again when the system inside reboots.

``systemd-nspawn`` exits with status 133 when the system inside reboots (``systemctl reboot``,
``shutdown -r``, ``reboot``, ``ansible.builtin.reboot``); on real hardware the terminal comes back.
This process does what systemd's ``systemd-nspawn@.service`` does with ``RestartForceExitStatus=133``:
it starts the same nspawn command again (same overlay layer, so the files written before the reboot
are there; same address, machine name and host key; a fresh ``/run``) for as long as the exit status
is 133. Any other exit ends it with that status: the terminal is gone as before.

It is the terminal's lasting process: its pid is the ``pid`` of ``terminal.json`` (what ``ipm-lab
down`` signals); it records the current nspawn's pid and the number of boots in a small JSON file
(``--record``) for ``status``, ``container_init`` and cleaning. SIGTERM (or SIGINT, SIGHUP) is
forwarded to the running nspawn (systemd halts inside) and no new boot starts, also when the signal
comes between two boots. Standard library only: ``ipm-lab`` runs it as a script (``python3 -I -S``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

REBOOT_EXIT = 133
SCRIPT_NAME = "lab_supervisor.py"


def write_record(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def supervise(terminal: str, record: str, command: list[str]) -> int:
    """Run COMMAND until it exits with anything but REBOOT_EXIT or a stop signal came; its last status."""
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    boots, exits, code = 0, [], 0
    while not stopping:
        boots += 1
        started = time.time()
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, close_fds=True, cwd="/")
        if stopping:  # the signal came while the child was being started
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        state = {"supervisor_pid": os.getpid(), "nspawn_pid": child.pid, "boots": boots, "exits": exits}
        write_record(record, {**state, "booted_at": started})
        code = child.wait()
        child = None
        exits.append(code)
        write_record(record, {**state, "nspawn_pid": None, "exits": exits, "booted_at": started})
        if code != REBOOT_EXIT:
            break
        if not stopping:
            print(f"ipm-lab: {terminal} rebooted (systemd-nspawn exit {code}): boot {boots + 1}", flush=True)
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a lab terminal's systemd-nspawn, again after each reboot.")
    parser.add_argument("--terminal", required=True, help="terminal id (machine name)")
    parser.add_argument("--record", required=True, help="JSON file: current nspawn pid, boots, exit statuses")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- systemd-nspawn ARGS")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise (give it after --)")
    return supervise(args.terminal, args.record, command)


if __name__ == "__main__":
    sys.exit(main())
