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

import contextlib
import json
import os
import signal
import sys
import time

REBOOT_EXIT = 133
SCRIPT_NAME = "lab_supervisor.py"
USAGE = "usage: lab_supervisor.py --terminal ID --record PATH -- COMMAND [ARGS...]"
# It lives as long as its terminal, one per terminal: few imports (no subprocess, no argparse) keep it small.


def write_record(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _spawn(command: list[str]) -> int:
    """Start COMMAND with stdin from /dev/null, stdout and stderr ours (the console log); its pid.

    Signals Python ignores (SIGPIPE, SIGXFSZ) or handles are set back to their defaults in the child.
    """
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    defaults = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    return os.posix_spawnp(command[0], command, os.environ, file_actions=actions, setsigdef=defaults)


def supervise(terminal: str, record: str, command: list[str]) -> int:
    """Run COMMAND until it exits with anything but REBOOT_EXIT or a stop signal came; its last status."""
    stopping = False
    child = 0

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    boots, exits, code = 0, [], 0
    while not stopping:
        boots += 1
        started = time.time()
        pid = _spawn(command)
        child = pid
        if stopping:  # the signal came while the child was being started
            on_signal(signal.SIGTERM, None)
        state = {"supervisor_pid": os.getpid(), "nspawn_pid": pid, "boots": boots, "exits": exits}
        write_record(record, {**state, "booted_at": started})
        _pid, status = os.waitpid(pid, 0)  # retried after a signal's handler ran (PEP 475)
        child = 0
        code = os.waitstatus_to_exitcode(status)
        exits.append(code)
        write_record(record, {**state, "nspawn_pid": None, "exits": exits, "booted_at": started})
        if code != REBOOT_EXIT:
            break
        if not stopping:
            print(f"ipm-lab: {terminal} rebooted (systemd-nspawn exit {code}): boot {boots + 1}", flush=True)
    return code if code >= 0 else 128 - code


def parse(argv: list[str]) -> tuple[str, str, list[str]]:
    """(terminal, record, command) from ``--terminal ID --record PATH -- COMMAND...``."""
    options: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0] in ("--terminal", "--record") and len(rest) > 1:
        options[rest[0]] = rest[1]
        rest = rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if "--terminal" not in options or "--record" not in options or not rest:
        raise SystemExit(USAGE)
    return options["--terminal"], options["--record"], rest


def main(argv: list[str] | None = None) -> int:
    terminal, record, command = parse(sys.argv[1:] if argv is None else argv)
    return supervise(terminal, record, command)


if __name__ == "__main__":
    sys.exit(main())
