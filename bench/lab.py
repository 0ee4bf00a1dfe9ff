"""Benchmark: boot 20 lab terminals on this machine; time to all-ready and memory per terminal.

    sudo .venv/bin/python bench/lab.py [--terminals 20]

Runs the real `ipm-lab up` (layers, nspawn boots, readiness = systemd running/degraded + SSH login)
once with 1 terminal, then with N, side by side, and stops them all. Memory per terminal is the
sum of VmRSS of each terminal's processes (its systemd-nspawn plus every process inside the
container, found through the overlay in /proc/<pid>/mountinfo), averaged over the terminals; the
proportional share (PSS, shared pages split between terminals) is printed alongside. The base tree is
built (untimed) first if missing. Last line:

    lab terminals=20 ready_s=<s> rss_mib_per_terminal=<MiB>
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from ipm_tools.lab_base import ensure_base  # noqa: E402
from ipm_tools.lab_procs import container_pids, nspawn_pid, rss_kib  # noqa: E402
from ipm_tools.lab_state import load_states, terminal_dir  # noqa: E402


def _ipm_lab(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tools'}{os.pathsep}{ROOT / 'collections'}")
    return subprocess.run(
        [sys.executable, "-m", "ipm_tools.lab", *args], capture_output=True, text=True, env=env, check=False
    )


def _pss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def boot(count: int) -> dict:
    """Boot COUNT terminals, measure, stop them. Returns the figures."""
    names = [f"bl{uuid.uuid4().hex[:4]}-{index:02d}" for index in range(1, count + 1)]
    available_before = _mem_available_kib()
    started = time.monotonic()
    try:
        result = _ipm_lab("up", "--timeout", "600", *names)
        ready_s = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"bench/lab.py: ipm-lab up failed: {result.stderr.strip() or result.stdout[-500:]}")
        degraded = result.stdout.count(", degraded")
        time.sleep(3)  # let the last units settle before counting memory
        states = load_states()
        rss = pss = processes = 0
        for name in names:
            # The supervisor (state pid), its systemd-nspawn and every process inside the container.
            own = [states[name]["pid"], nspawn_pid(states[name]), *container_pids(terminal_dir(name) / "upper")]
            pids = list(dict.fromkeys(pid for pid in own if pid))
            processes += len(pids)
            rss += rss_kib(pids)
            pss += _pss_kib(pids)
        used_mib = (available_before - _mem_available_kib()) / 1024
    finally:
        stop = _ipm_lab("down", "--missing-ok", *names)
        if stop.returncode != 0:
            print(f"bench/lab.py: ipm-lab down failed: {stop.stderr.strip()}", file=sys.stderr)
    return {
        "count": count,
        "ready_s": ready_s,
        "degraded": degraded,
        "rss_mib": rss / 1024 / count,
        "pss_mib": pss / 1024 / count,
        "processes": processes / count,
        "mem_available_drop_mib": used_mib / count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=20, help="terminals to boot together (default: 20)")
    args = parser.parse_args()
    if args.terminals < 1:
        parser.error(f"--terminals: expected 1 or more, found {args.terminals}")
    if os.geteuid() != 0:
        print("bench/lab.py: must run as root (it boots systemd-nspawn containers)", file=sys.stderr)
        return 1
    ensure_base(lambda message: print(message, flush=True))
    one = boot(1)
    many = boot(args.terminals)
    for figures in (one, many):
        print(
            f"terminals={figures['count']:>3}  ready_s={figures['ready_s']:6.1f}  "
            f"rss_mib/terminal={figures['rss_mib']:5.1f}  pss_mib/terminal={figures['pss_mib']:5.1f}  "
            f"processes/terminal={figures['processes']:4.1f}  "
            f"MemAvailable drop/terminal={figures['mem_available_drop_mib']:5.1f} MiB  degraded={figures['degraded']}"
        )
    print(
        f"ratios {args.terminals} vs 1 terminal: ready_s x{many['ready_s'] / one['ready_s']:.1f} "
        f"for {args.terminals}x the terminals; rss per terminal x{many['rss_mib'] / one['rss_mib']:.2f}"
    )
    print(f"lab terminals={args.terminals} ready_s={many['ready_s']:.1f} rss_mib_per_terminal={many['rss_mib']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
