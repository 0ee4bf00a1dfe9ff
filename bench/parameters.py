#!/usr/bin/env python3
"""Benchmark: resolving and validating every terminal's parameters against ``ansible-inventory --list``.

One synthetic fleet of N terminals (the generator of ``bench/inventory.py``, plus values for the
layering rule to work on: a 3.0.0 parameter staged by a third of the customers, a value renamed in
3.0.0 on every seventh terminal; the PS-200, which 3.0.0 does not support, is left at the first
customer only, as old hardware is where it was not replaced yet) is written as a registry. Two commands are timed side by side on it,
each in a fresh process, in alternating rounds (median of the rounds):

* **parameters**: ``load_fleet`` (which checks every terminal's layered parameters against its
  desired release), then the provenance of every terminal (``parameter_provenance.resolve``: each
  effective value with its layer, staged values with the releases that have them), then the
  fleet-wide check of a move to 3.0.0 (``registry_candidate.check_release``, as
  ``ipm-registry validate --release 3.0.0``);
* **inventory**: ``ansible-inventory -i <registry> --list`` (what every playbook run pays).

    .venv/bin/python bench/parameters.py                 # 10,000 terminals, 5 rounds
    .venv/bin/python bench/parameters.py --quick         # 1,000 terminals, 1 round

Last line: ``parameters terminals=<N> validate_s=<s> inventory_s=<s> ratio=<r>`` (wall seconds,
medians; ratio = validate_s / inventory_s, goal 0.25 or less), after a line with the ratio of the
CPU times (this machine is shared: under load, wall time mostly measures the neighbours).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET = "3.0.0"


def _inventory_bench():
    """bench/inventory.py as a module (its fleet generator, registry writer and measuring wrapper)."""
    spec = importlib.util.spec_from_file_location("bench_inventory", Path(__file__).with_name("inventory.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def generate(terminals: int, inventory) -> list[dict]:
    customers = inventory.generate_fleet(terminals)
    count = 0
    for index, document in enumerate(customers):
        if index % 3 == 0:
            document["customer"]["parameters"]["tariff_zone"] = "B"  # 3.0.0's: staged under 2.4.0
        for site in document["sites"]:
            for terminal in site["terminals"]:
                if index > 0 and terminal["model"] == "PS-200":
                    terminal["model"] = "PS-300"  # the old model is left at the first customer only
                    terminal["interfaces"] = {name: {"device": f"{name}-dev"} for name in ("payment", "printer")}
                if count % 7 == 0:
                    terminal["parameters"]["max_amount"] = 150.0  # renamed max_transaction_amount in 3.0.0
                count += 1
    return customers


def run_parameters(config: str) -> int:
    """The parameters side, in its own process: load, resolve every terminal, check the move to TARGET."""
    sys.path.insert(0, str(ROOT / "collections"))
    from ansible_collections.ipm.fleet.plugins.plugin_utils import parameter_provenance, registry, registry_candidate

    started = time.perf_counter()
    fleet, problems = registry.load_fleet(config)
    loaded = time.perf_counter()
    if problems:
        sys.exit(f"bench: the generated registry has {len(problems)} problem(s), first: {problems[0]}")
    secrets = parameter_provenance.secret_names(fleet)
    cache: dict = {}
    resolved = staged = 0
    for customer, site, terminal in fleet.terminals():
        release = fleet.releases[registry.desired_release(customer, site, terminal)]
        table = parameter_provenance.resolve(fleet, release, customer, site, terminal, secrets, cache)
        resolved += len(table["parameters"])
        staged += len(table["staged"])
    resolved_at = time.perf_counter()
    result = registry_candidate.check_release(fleet, TARGET)
    checked = time.perf_counter()
    summary = registry_candidate.summary(result)
    print(
        f"resolved {resolved} values of {summary['terminals']} terminals, {staged} staged; "
        f"{TARGET}: {summary['breaking']} would break, {summary['problems']} problem(s); "
        f"load_fleet {loaded - started:.2f} s, resolve {resolved_at - loaded:.2f} s, check {checked - resolved_at:.2f} s"
    )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--terminals", type=int, default=10000, help="terminals in the synthetic fleet (default 10000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds, medians reported (default 5)")
    parser.add_argument("--quick", action="store_true", help="1,000 terminals, 1 round")
    parser.add_argument("--keep", action="store_true", help="keep the generated registry and print where")
    parser.add_argument("--side", choices=["parameters"], help=argparse.SUPPRESS)  # internal: one timed side
    parser.add_argument("config", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side == "parameters":
        return run_parameters(args.config)
    terminals = 1000 if args.quick else args.terminals
    rounds = 1 if args.quick else max(1, args.rounds)
    inventory = _inventory_bench()

    directory = Path(tempfile.mkdtemp(prefix="ipm-bench-parameters-"))
    try:
        started = time.perf_counter()
        config = inventory.write_registry(directory, generate(terminals, inventory))
        print(f"generated {terminals} terminals in {time.perf_counter() - started:.1f} s under {directory}", flush=True)
        commands = {
            "parameters": [sys.executable, str(Path(__file__).resolve()), "--side", "parameters", str(config)],
            "inventory": [str(BIN / "ansible-inventory"), "-i", str(config), "--list"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        print(f"{'round':<6} {'side':<11} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
        for number in range(1, rounds + 1):
            for name, command in commands.items():
                elapsed, cpu, peak = inventory.measure(command)
                times[name].append(elapsed)
                cpus[name].append(cpu)
                print(f"{number:<6} {name:<11} {elapsed:8.2f} {cpu:8.2f} {peak:9.1f}", flush=True)
        # What the parameters side found (one more run, untimed): the figures are about real work.
        found = subprocess.run(commands["parameters"], capture_output=True, text=True, check=False, cwd=ROOT)
        print((found.stdout or found.stderr).strip().splitlines()[-1], flush=True)
        cpu_ratio = statistics.median(cpus["parameters"]) / statistics.median(cpus["inventory"])
        print(f"cpu time ratio (parameters/inventory, medians): {cpu_ratio:.3f}")
        validate_s = statistics.median(times["parameters"])
        inventory_s = statistics.median(times["inventory"])
        print(
            f"parameters terminals={terminals} validate_s={validate_s:.2f} inventory_s={inventory_s:.2f} "
            f"ratio={validate_s / inventory_s:.3f}"
        )
        return 0
    finally:
        if args.keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
