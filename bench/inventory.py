#!/usr/bin/env python3
"""Benchmark: the ipm.fleet.registry inventory plugin against an equivalent static YAML inventory.

One synthetic fleet of N terminals is written twice: as a registry (catalog + one file per customer)
read by ``ipm.fleet.registry``, and as a static inventory read by ``ansible.builtin.yaml`` with the same
hosts, the same host variables and the same customer/site groups carrying the same group variables.
Both are timed side by side in this run with ``ansible-inventory --list --export`` and
``ansible all --list-hosts``: wall time and peak resident memory of each command (its process tree).

    .venv/bin/python bench/inventory.py                 # 10,000 terminals
    .venv/bin/python bench/inventory.py --quick         # 1,000 terminals
    .venv/bin/python bench/inventory.py --terminals 100000 --registry-only

Last line: ``inventory terminals=<N> list_ratio=<r> hosts_ratio=<r> mem_ratio=<r>`` (registry/static;
``mem_ratio`` compares the larger peak of the two commands on each side). With ``--registry-only`` the
ratios are ``n/a`` and the line ends with the registry's ``--list --export`` wall time, CPU time
(the plugin's worker processes included) and peak memory, then the ratio of that wall time to the same
command with the registry read by one process (``IPM_REGISTRY_WORKERS=1``), timed in the same run:
``list_s=<s> list_cpu_s=<s> list_peak_mib=<m> workers_ratio=<r>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

try:
    from yaml import CSafeDumper as Dumper
except ImportError:  # pragma: no cover
    from yaml import SafeDumper as Dumper

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TERMINALS_PER_SITE = 25
SITES_PER_CUSTOMER = 20
ZONES = [
    ("FR", "fr", "Europe/Paris", "EUR"),
    ("AU", "en", "Australia/Sydney", "AUD"),
    ("US", "en", "America/New_York", "USD"),
    ("CL", "es", "America/Santiago", "USD"),
    ("JP", "ja", "Asia/Tokyo", "USD"),
    ("AU", "en", "Australia/Perth", "AUD"),
    ("DE", "de", "Europe/Berlin", "EUR"),
]
MODELS = [
    ("PS-200", ["payment", "printer", "coin_acceptor"]),
    ("PS-300", ["payment", "printer", "camera"]),
    ("TK-110", ["payment", "printer", "camera"]),
]
RINGS = ["canary", "pilot", "broad", "broad", "broad"]


def _contract(index):
    tiers = ["bronze", "silver", "gold", "platinum"]
    return {
        "sla_tier": tiers[index % 4],
        "coverage": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"},
        "maintenance_types": ["preventive", "corrective"],
        "targets": {
            "critical": {"response_hours": 1, "repair_hours": 4},
            "major": {"response_hours": 4, "repair_hours": 24},
            "minor": {"response_hours": 24, "repair_hours": 120},
            "temporary": {"response_hours": 8, "repair_hours": 48},
        },
    }


def generate_fleet(terminals: int) -> list[dict]:
    """Customer documents (registry form) for ``terminals`` terminals."""
    customers = []
    count = 0
    customer_index = 0
    while count < terminals:
        country, language, zone, currency = ZONES[customer_index % len(ZONES)]
        customer = {
            "id": f"customer-{customer_index:04d}",
            "name": f"Customer {customer_index} Parking",
            "country": country,
            "languages": [language, "en"] if language != "en" else ["en"],
            "release": "2.4.0",
            "contract": _contract(customer_index),
            "contacts": [{"name": f"Contact {customer_index}", "role": "it", "email": f"it@c{customer_index}.example"}],
            "parameters": {"currency": currency},
        }
        sites = []
        for site_index in range(SITES_PER_CUSTOMER):
            if count >= terminals:
                break
            site = {
                "id": f"site-{customer_index:04d}-{site_index:03d}",
                "name": f"Site {site_index} of customer {customer_index}",
                "city": f"City {site_index}",
                "timezone": zone,
                "language": language,
                "windows": [{"days": ["tue", "thu"], "start": "23:00", "duration_minutes": 180}],
                "network": {"uplink": "fiber", "vpn_subnet": f"10.{customer_index % 250}.{site_index}.0/24"},
                "address": {"street": f"{site_index} Main Street", "postal_code": f"{10000 + site_index}"},
                "parameters": {"idle_timeout_s": 90},
                "terminals": [],
            }
            for _ in range(TERMINALS_PER_SITE):
                if count >= terminals:
                    break
                model, interfaces = MODELS[count % 3]
                site["terminals"].append(
                    {
                        "id": f"t{count:06d}",
                        "serial_number": f"SN{count:08d}",
                        "model": model,
                        "ring": RINGS[count % len(RINGS)],
                        "address": f"10.{count // 65536}.{count // 256 % 256}.{count % 256}",
                        "interfaces": {name: {"device": f"{name}-dev"} for name in interfaces},
                        "parameters": {"terminal_label": f"Terminal {count}"},
                        "tags": ["synthetic"],
                    }
                )
                count += 1
            sites.append(site)
        customers.append({"customer": customer, "sites": sites})
        customer_index += 1
    return customers


def write_registry(directory: Path, customers: list[dict]) -> Path:
    registry = directory / "registry"
    (registry / "customers").mkdir(parents=True)
    catalog = {
        "releases_dir": str(ROOT / "app" / "releases"),
        "models": {model: {"interfaces": [*interfaces, "barrier", "barcode_reader"]} for model, interfaces in MODELS},
    }
    (registry / "catalog.yml").write_text(yaml.dump(catalog, Dumper=Dumper))
    for document in customers:
        path = registry / "customers" / f"{document['customer']['id']}.yml"
        path.write_text(yaml.dump(document, Dumper=Dumper, sort_keys=False))
    config = directory / "fleet.ipm_registry.yml"
    config.write_text(f"plugin: ipm.fleet.registry\nregistry: {registry}\n")
    return config


def write_static(directory: Path, customers: list[dict]) -> Path:
    """The same hosts and variables as the registry yields, as an ansible.builtin.yaml inventory."""
    children = {}
    for document in customers:
        customer = document["customer"]
        site_groups = {}
        for site in document["sites"]:
            hosts = {}
            for terminal in site["terminals"]:
                hosts[terminal["id"]] = {
                    "ansible_host": terminal["address"],
                    "ipm_terminal_id": terminal["id"],
                    "ipm_customer_id": customer["id"],
                    "ipm_site_id": site["id"],
                    "ipm_model": terminal["model"],
                    "ipm_serial_number": terminal["serial_number"],
                    "ipm_release": customer["release"],
                    "ipm_ring": terminal["ring"],
                    "ipm_status": "active",
                    "ipm_interfaces": terminal["interfaces"],
                    "ipm_parameters": terminal["parameters"],
                    "ipm_tags": terminal["tags"],
                }
            site_groups["site_" + site["id"].replace("-", "_")] = {
                "vars": {
                    "ipm_site_name": site["name"],
                    "ipm_site_city": site["city"],
                    "ipm_site_country": customer["country"],
                    "ipm_site_timezone": site["timezone"],
                    "ipm_site_language": site["language"],
                    "ipm_site_windows": site["windows"],
                    "ipm_site_network": site["network"],
                    "ipm_site_address": site["address"],
                    "ipm_site_parameters": site["parameters"],
                },
                "hosts": hosts,
            }
        children["customer_" + customer["id"].replace("-", "_")] = {
            "vars": {
                "ipm_customer_name": customer["name"],
                "ipm_customer_country": customer["country"],
                "ipm_customer_languages": customer["languages"],
                "ipm_contract": customer["contract"],
                "ipm_contacts": customer["contacts"],
                "ipm_customer_parameters": customer["parameters"],
            },
            "children": site_groups,
        }
    path = directory / "static.yml"
    path.write_text(yaml.dump({"all": {"children": children}}, Dumper=Dumper, sort_keys=False))
    return path


def measure(command: list[str], extra_env=None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one command, measured in a fresh wrapper process.

    CPU time is printed too because this machine is shared: under load, wall time mostly measures
    the neighbours.
    """
    wrapper = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
        "sys.stderr.write(r.stderr.decode()[-2000:]) if r.returncode else None\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(u.ru_maxrss, u.ru_utime + u.ru_stime)\n"
        "sys.exit(r.returncode)\n"
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    env.pop("ANSIBLE_INVENTORY", None)
    env.pop("IPM_REGISTRY_WORKERS", None)
    env.update(extra_env or {})
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed:\n{result.stderr}")
    peak_kib, cpu = result.stdout.strip().splitlines()[-1].split()
    return elapsed, float(cpu), int(peak_kib) / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--terminals", type=int, default=10000, help="terminals in the synthetic fleet (default 10000)")
    parser.add_argument("--quick", action="store_true", help="1,000 terminals")
    parser.add_argument("--registry-only", action="store_true", help="time the registry side only (ratios n/a)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and print where")
    args = parser.parse_args(argv)
    terminals = 1000 if args.quick else args.terminals

    directory = Path(tempfile.mkdtemp(prefix="ipm-bench-inventory-"))
    try:
        started = time.perf_counter()
        customers = generate_fleet(terminals)
        config = write_registry(directory, customers)
        static = None if args.registry_only else write_static(directory, customers)
        print(f"generated {terminals} terminals in {time.perf_counter() - started:.1f} s under {directory}", flush=True)

        commands = {
            "list": lambda source: [str(BIN / "ansible-inventory"), "-i", str(source), "--list", "--export"],
            "hosts": lambda source: [str(BIN / "ansible"), "all", "-i", str(source), "--list-hosts"],
        }
        results = {}
        sides = [("registry", config)] + ([] if static is None else [("static", static)])
        print(f"{'command':<34} {'side':<9} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
        for name, command in commands.items():
            for side, source in sides:
                elapsed, cpu, peak = measure(command(source))
                results[name, side] = (elapsed, peak, cpu)
                label = "ansible-inventory --list --export" if name == "list" else "ansible all --list-hosts"
                print(f"{label:<34} {side:<9} {elapsed:8.2f} {cpu:8.2f} {peak:9.1f}", flush=True)
        if static is None:
            # The registry against itself read by one process (workers=1), for the parallel reading's share.
            serial, serial_cpu, serial_peak = measure(commands["list"](config), {"IPM_REGISTRY_WORKERS": "1"})
            label = "ansible-inventory --list --export"
            print(f"{label:<34} {'workers=1':<9} {serial:8.2f} {serial_cpu:8.2f} {serial_peak:9.1f}", flush=True)
            elapsed, peak, cpu = results["list", "registry"]
            print(
                f"inventory terminals={terminals} list_ratio=n/a hosts_ratio=n/a mem_ratio=n/a "
                f"list_s={elapsed:.1f} list_cpu_s={cpu:.1f} list_peak_mib={peak:.0f} "
                f"workers_ratio={elapsed / serial:.3f}"
            )
            return 0
        list_ratio = results["list", "registry"][0] / results["list", "static"][0]
        hosts_ratio = results["hosts", "registry"][0] / results["hosts", "static"][0]
        cpu_list = results["list", "registry"][2] / results["list", "static"][2]
        cpu_hosts = results["hosts", "registry"][2] / results["hosts", "static"][2]
        print(f"cpu time ratios (registry/static): list {cpu_list:.3f}, hosts {cpu_hosts:.3f}")
        mem_registry = max(results[name, "registry"][1] for name in commands)
        mem_static = max(results[name, "static"][1] for name in commands)
        print(
            f"inventory terminals={terminals} list_ratio={list_ratio:.3f} hosts_ratio={hosts_ratio:.3f} mem_ratio={mem_registry / mem_static:.3f}"
        )
        return 0
    finally:
        if args.keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
