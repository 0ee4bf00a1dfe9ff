"""Benchmark: ``ipm-support run RUNBOOK`` (ansible-runner, ticket notes, redacted artifacts) against plain
``ansible-playbook`` of the same runbook on the same lab terminal.

    .venv/bin/python bench/support.py [--runbook health_check] [--rounds 5]

Writes a small registry (the lab test's, with its own prefix ``sb-``), boots one lab terminal (``sb-01``,
127.0.83.1; stopped again at the end, also on failure), opens a ticket, then in each round runs both
commands (alternating which goes first, so that machine noise hits both alike) and measures, from the
moment the command is started, when its first task result is printed (``ok: [sb-01]`` for
ansible-playbook, the first progress line for ipm-support) and when it ends. Both use the same
inventory, audit callback, vault password file and SSH settings; one warm-up run of each first.
Last line: ``support runbook=<name> support_s=<s> playbook_s=<s> ratio=<r>`` (median end times; goal
ratio <= 1.3). Its terminal name and address are its own: it may run while tests/lab/test_support_runbooks.py
(``sr-``, 127.0.82.n) runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
sys.path.insert(0, str(ROOT / "tools"))

from test_support_runbooks import boot, stop, support_env, write_support_fleet  # noqa: E402

PREFIX = "sb"  # never the lab tests' prefixes (test_support_runbooks.SUBNETS)
TERMINAL = f"{PREFIX}-01"
PLAYBOOK_RESULT = ("ok: [", "changed: [", "fatal: [", "skipping: [")
SUPPORT_RESULT = ("  ok ", "  changed ", "  failed ", "  skipped ")


def timed(command: list[str], env: dict, first: tuple[str, ...]) -> tuple[float, float]:
    """(seconds to the first task result line, seconds to the end) of one command."""
    started = time.perf_counter()
    first_at = None
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            lines.append(line)
            if first_at is None and line.startswith(first):
                first_at = time.perf_counter() - started
        proc.wait()
    ended = time.perf_counter() - started
    if proc.returncode != 0 or first_at is None:
        sys.exit(f"bench/support: `{' '.join(command)}` failed (exit {proc.returncode}):\n{''.join(lines)[-3000:]}")
    return first_at, ended


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runbook", default="health_check", help="a runbook that changes nothing (default %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds: expected 1 or more, found {args.rounds}")
    if os.geteuid() != 0:
        sys.exit("bench/support: lab terminals need root: sudo .venv/bin/python bench/support.py")
    from ipm_tools.support import TicketStore, load_catalog

    if args.runbook not in load_catalog():
        parser.error(f"--runbook: unknown runbook {args.runbook!r}: ipm-support runbooks lists them")
    with tempfile.TemporaryDirectory(prefix="bench-support-") as scratch, tempfile.TemporaryDirectory() as secrets:
        directory = Path(scratch)
        password = Path(secrets) / "vault-password"
        password.write_text(f"pw-{uuid.uuid4()}\n")
        password.chmod(0o600)
        inventory = write_support_fleet(directory, password, f"canary-{uuid.uuid4()}", prefix=PREFIX)
        env = dict(support_env(directory), PYTHONUNBUFFERED="1")
        ticket = TicketStore(directory / "support", registry=inventory).open_error(
            "srco", "minor", "benchmark", "bench", terminal=TERMINAL, actor="bench"
        )
        runbook = ROOT / "playbooks" / "runbooks" / f"{args.runbook}.yml"
        commands = {
            "support": (
                [str(BIN / "ipm-support"), "run", args.runbook, "--terminal", TERMINAL, "--ticket", ticket.id,
                 "--vault-password-file", str(password), "--keep-jobs", "100"],
                SUPPORT_RESULT,
            ),
            "playbook": (
                [str(BIN / "ansible-playbook"), "-i", str(inventory), str(runbook), "-l", TERMINAL,
                 "-e", f"terminal={TERMINAL}", "-e", f"ticket_id={ticket.id}", "--vault-password-file", str(password)],
                PLAYBOOK_RESULT,
            ),
        }  # fmt: skip
        times: dict[str, list[tuple[float, float]]] = {key: [] for key in commands}
        try:
            boot([TERMINAL])
            for command, first in commands.values():  # warm-up: SSH control master, caches
                timed(command, env, first)
            for round_number in range(1, args.rounds + 1):
                order = list(commands) if round_number % 2 else list(reversed(commands))
                for key in order:
                    times[key].append(timed(*commands[key][:1], env, commands[key][1]))
                print(
                    f"round {round_number}: "
                    + "  ".join(f"{k} first={v[-1][0]:.2f}s end={v[-1][1]:.2f}s" for k, v in times.items()),
                    flush=True,
                )
        finally:
            stop([TERMINAL])
    first = {key: statistics.median(t[0] for t in values) for key, values in times.items()}
    end = {key: statistics.median(t[1] for t in values) for key, values in times.items()}
    print(
        f"median over {args.rounds} rounds, runbook {args.runbook} on one terminal: first task result "
        f"support={first['support']:.2f}s playbook={first['playbook']:.2f}s ratio={first['support'] / first['playbook']:.2f}"
    )
    print(
        f"support runbook={args.runbook} support_s={end['support']:.2f} playbook_s={end['playbook']:.2f} "
        f"ratio={end['support'] / end['playbook']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
