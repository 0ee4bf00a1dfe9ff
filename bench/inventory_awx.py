#!/usr/bin/env python3
"""Benchmark: a 50,000-terminal registry through the AWX inventory source path, with and without slices.

AWX imports an inventory source by running, in the execution environment,
``ansible-inventory -i <source> --list --export --output artifacts/<id>/output.json`` and loading the
JSON. This runs exactly that on a synthetic registry (the generator of bench/inventory.py) with the
``ipm.fleet.registry`` plugin, twice side by side in the same run: the configuration with
``slices: N`` (groups ``slice_<k>_of_<n>``) and the same without it. It checks the export (every
terminal a host with its ``ipm_`` variables, every site in exactly one slice group) and times the
slicing plan itself (``plugins/plugin_utils/slicing.py``) on the same fleet.

    .venv/bin/python bench/inventory_awx.py                     # 50,000 terminals, 8 slices
    .venv/bin/python bench/inventory_awx.py --terminals 5000 --slices 4

Last line: ``inventory_awx terminals=<N> slices=<n> export_s=<s> export_cpu_s=<s> export_peak_mib=<m>
plain_s=<s> slices_ratio=<r> plan_s=<s>`` (``slices_ratio``: the export with slices against without).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "collections"))

from inventory import generate_fleet, write_registry  # noqa: E402  (bench/inventory.py: the same fleet)

# The documented limits (docs/scale.md): 50,000 terminals through the inventory source path. Time is
# the CPU time of the process tree (workers included): on a shared machine wall time measures the
# neighbours. The test checks a smaller fleet against the same limits scaled per terminal.
LIMIT_S_PER_1000 = 3.0  # CPU seconds per 1,000 terminals (150 s at 50,000)
LIMIT_MIB_PER_1000 = 30.0  # peak resident MiB per 1,000 terminals (1,650 MiB at 50,000 with the base)
LIMIT_BASE_MIB = 150.0  # Ansible's own start-up, whatever the fleet


def limits(terminals: int) -> tuple[float, float]:
    """The (CPU seconds, peak MiB) a ``--list --export`` of ``terminals`` terminals must stay under."""
    return max(20.0, terminals / 1000 * LIMIT_S_PER_1000), LIMIT_BASE_MIB + terminals / 1000 * LIMIT_MIB_PER_1000


def make_fleet(directory: Path, terminals: int, slices: int) -> tuple[Path, Path, list[dict]]:
    """The registry and two inventory source configurations (with ``slices`` and without)."""
    customers = generate_fleet(terminals)
    plain = write_registry(directory, customers)
    sliced = directory / "sliced.ipm_registry.yml"
    sliced.write_text(plain.read_text() + f"slices: {slices}\n")
    return sliced, plain, customers


def export(config: Path, output: Path, extra_env=None) -> tuple[float, float, float]:
    """AWX's import command on ``config``: wall seconds, CPU seconds (workers included), peak RSS MiB."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "sys.stderr.write(r.stderr.decode()[-3000:])\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(u.ru_maxrss, u.ru_utime + u.ru_stime)\n"
        "sys.exit(r.returncode)\n"
    )
    command = [str(BIN / "ansible-inventory"), "-i", str(config), "--list", "--export", "--output", str(output)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    for name in ("ANSIBLE_INVENTORY", "IPM_REGISTRY_WORKERS"):
        env.pop(name, None)
    env.update(extra_env or {})
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    peak_kib, cpu = result.stdout.strip().splitlines()[-1].split()
    return elapsed, float(cpu), int(peak_kib) / 1024


def check_export(data: dict, customers: list[dict], slices: int | None) -> list[str]:
    """What is wrong with an export of ``customers`` (empty when it is whole); ``slices`` None: no slice groups."""
    problems = []
    hostvars = data.get("_meta", {}).get("hostvars", {})
    expected = {
        t["id"]: (d["customer"]["id"], s["id"], t["ring"])
        for d in customers
        for s in d["sites"]
        for t in s["terminals"]
    }
    if set(hostvars) != set(expected):
        missing = sorted(set(expected) - set(hostvars))
        extra = sorted(set(hostvars) - set(expected))
        problems.append(f"hosts: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected ({extra[:3]})")
    for name, (customer, site, ring) in expected.items():
        variables = hostvars.get(name)
        if variables is None:
            continue
        seen = (variables.get("ipm_customer_id"), variables.get("ipm_site_id"), variables.get("ipm_ring"))
        if seen != (customer, site, ring) or not variables.get("ipm_serial_number") or "ansible_host" not in variables:
            problems.append(f"host {name}: ipm_ variables {seen}, expected {(customer, site, ring)}")
            break
    slice_groups = sorted(g for g in data if g.startswith("slice_"))
    if slices is None:
        if slice_groups:
            problems.append(f"slice groups without the slices option: {slice_groups[:3]}")
        return problems
    names = [f"slice_{k}_of_{slices}" for k in range(1, slices + 1)]
    sites = {"site_" + s["id"].replace("-", "_") for d in customers for s in d["sites"]}
    where: dict = {}
    for name in names:
        group = data.get(name)
        if group is None:
            if len(sites) >= slices:
                problems.append(f"group {name}: missing from the export")
            continue
        for child in group.get("children", []):
            if child in where:
                problems.append(f"site group {child}: in {where[child]} and {name}")
            where[child] = name
    if set(where) != sites:
        problems.append(f"{len(sites - set(where))} site group(s) in no slice group")
    return problems


def time_plan(customers: list[dict], slices: int) -> float:
    """Seconds to compute the slicing plan (the filter's and ipm-registry slices' work) for the fleet."""
    from ansible_collections.ipm.fleet.plugins.plugin_utils.slicing import slice_plan

    terminals = [
        {"terminal": t["id"], "site": s["id"], "ring": t["ring"], "customer": d["customer"]["id"]}
        for d in customers
        for s in d["sites"]
        for t in s["terminals"]
    ]
    started = time.perf_counter()
    plan = slice_plan(terminals, slices)
    elapsed = time.perf_counter() - started
    assert plan["terminals"] == len(terminals)
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--terminals", type=int, default=50000, help="terminals in the synthetic fleet (default 50000)")
    parser.add_argument("--slices", type=int, default=8, help="slices of the sliced configuration (default 8)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and print where")
    args = parser.parse_args(argv)
    if args.terminals < 1 or args.slices < 1:
        parser.error("--terminals and --slices: expected 1 or more")

    directory = Path(tempfile.mkdtemp(prefix="ipm-bench-inventory-awx-"))
    try:
        started = time.perf_counter()
        sliced, plain, customers = make_fleet(directory, args.terminals, args.slices)
        print(f"generated {args.terminals} terminals in {time.perf_counter() - started:.1f} s under {directory}")
        print(f"{'ansible-inventory --list --export':<36} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}", flush=True)
        rows = {}
        for label, config, slices in (("slices", sliced, args.slices), ("plain", plain, None)):
            output = directory / f"{label}.json"
            rows[label] = export(config, output)
            problems = check_export(json.loads(output.read_text()), customers, slices)
            if problems:
                print("export incomplete: " + "; ".join(problems), file=sys.stderr)
                return 1
            wall, cpu, peak = rows[label]
            print(
                f"{label + (f' ({args.slices})' if slices else ''):<36} {wall:8.2f} {cpu:8.2f} {peak:9.1f}", flush=True
            )
        plan_s = time_plan(customers, args.slices)
        limit_s, limit_mib = limits(args.terminals)
        wall, cpu, peak = rows["slices"]
        verdict = "within" if cpu <= limit_s and peak <= limit_mib else "OVER"
        print(f"slicing plan of {args.terminals} terminals: {plan_s:.3f} s")
        print(f"documented limit at {args.terminals}: {limit_s:.0f} CPU s, {limit_mib:.0f} MiB: {verdict}")
        print(
            f"inventory_awx terminals={args.terminals} slices={args.slices} export_s={wall:.1f} export_cpu_s={cpu:.1f} "
            f"export_peak_mib={peak:.0f} plain_s={rows['plain'][0]:.1f} slices_ratio={wall / rows['plain'][0]:.3f} "
            f"plan_s={plan_s:.3f}"
        )
        return 0
    finally:
        if args.keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
