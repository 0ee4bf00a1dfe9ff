"""Benchmark: ipm.fleet.terminal_facts against ansible.builtin.setup (default subset) on lab terminals.

    .venv/bin/python bench/facts.py [--terminals 20] [--rounds 3]

Boots N lab terminals (stopped again at the end, also on failure), then runs, alternating in each
round so that machine noise hits all alike: `ansible all -m ansible.builtin.ping` (the floor of any
module: connect, ship, run), `-m ansible.builtin.setup` and `-m ipm.fleet.terminal_facts`. Reports
the median wall time of each. Last line: `facts terminal_facts_s=<s> setup_s=<s> ratio=<r>`
(target: ratio <= 0.8).
"""

from __future__ import annotations

import argparse
import json
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


def env() -> dict[str, str]:
    variables = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


def lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ipm-lab"), *args], capture_output=True, text=True, env=env(), check=True)


def timed(inventory: Path, module: str, forks: int) -> float:
    command = [str(BIN / "ansible"), "all", "-i", str(inventory), "-m", module, "-f", str(forks)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env(), check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"bench/facts: `{' '.join(command)}` failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.terminals < 1:
        parser.error(f"--terminals: expected 1 or more, found {args.terminals}")
    names = [f"bf{uuid.uuid4().hex[:4]}-{i:02d}" for i in range(1, args.terminals + 1)]
    modules = {
        "ping": "ansible.builtin.ping",
        "setup": "ansible.builtin.setup",
        "terminal_facts": "ipm.fleet.terminal_facts",
    }
    times: dict[str, list[float]] = {key: [] for key in modules}
    with tempfile.TemporaryDirectory(prefix="bench-facts-") as scratch:
        inventory = Path(scratch) / "inventory.yml"
        try:
            print(f"booting {len(names)} lab terminals ...", flush=True)
            lab("up", *names)
            inventory.write_text(json.dumps(json.loads(lab("inventory", *names).stdout)))
            # Warm-up: SSH control masters and host keys, for every contender alike.
            timed(inventory, "ansible.builtin.ping", len(names))
            for round_number in range(1, args.rounds + 1):
                order = list(modules.items()) if round_number % 2 else list(reversed(modules.items()))
                for key, module in order:
                    times[key].append(timed(inventory, module, len(names)))
                print(
                    "round %d: %s" % (round_number, "  ".join(f"{k}={v[-1]:.2f}s" for k, v in times.items())),
                    flush=True,
                )
        finally:
            subprocess.run(
                [str(BIN / "ipm-lab"), "down", "--missing-ok", *names],
                capture_output=True,
                text=True,
                env=env(),
                check=False,
            )
    median = {key: statistics.median(values) for key, values in times.items()}
    print(
        f"median over {args.rounds} rounds, {len(names)} terminals, forks {len(names)}: ping={median['ping']:.2f}s setup={median['setup']:.2f}s terminal_facts={median['terminal_facts']:.2f}s"
    )
    print(
        f"facts terminal_facts_s={median['terminal_facts']:.2f} setup_s={median['setup']:.2f} ratio={median['terminal_facts'] / median['setup']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
