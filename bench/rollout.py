"""Benchmark: playbooks/rollout.yml against a plain parallel ssh/scp script doing the same steps (the floor).

    .venv/bin/python bench/rollout.py [--terminals 20] [--rounds 2] [--settle 2]

Boots N lab terminals on release 2.3.1 (stopped again at the end, also on failure). Each round
delivers 2.4.0 to all of them twice, once per contender, resetting the terminals to 2.3.1 in
between (not timed), alternating which goes first:

- ansible: `ansible-playbook playbooks/rollout.yml -e release=2.4.0` (one ring, one wave, forks N);
- floor: one thread per terminal: scp the artifact and the migrated parameters, then one ssh
  command that verifies the sha256, unpacks beside the current release, writes the parameters,
  switches `current`, restarts ipm-app and polls /health until 2.4.0 answers, then again after
  the same settle period.

The rollout runs with `rollout_bake_s=0` (no bake: the delivery's own settle period is the last
look, as for the floor); the time Ansible spends in bake tasks is read from the run's audit records
and printed separately (`bake_wait_s`), so that the work is not confused with the watching.
`--bake S` runs the rollout with a bake of S seconds instead (the ratio then includes it).

Prints the median of each; last line `rollout terminals=<N> ansible_s=<s> floor_s=<s> ratio=<r>
bake_wait_s=<s>` (target: ratio <= 2.5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "collections"))
sys.path.insert(0, str(ROOT / "tools"))
from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm  # noqa: E402
from ipm_tools.lab import ssh_options  # noqa: E402

RELEASES = ROOT / "build" / "releases"
# The lab's own SSH options (key, recorded host keys), plus a control master: the floor gets the same
# connection reuse as Ansible's ControlPersist.
SSH_OPTIONS = [
    *ssh_options(),
    "-o",
    "ControlMaster=auto",
    "-o",
    "ControlPersist=60s",
    "-o",
    "ControlPath=/tmp/bench-rollout-%C",
]


def env() -> dict[str, str]:
    variables = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        IPM_AUDIT_LOG=str(Path(tempfile.gettempdir()) / "bench-rollout-audit.jsonl"),
    )
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=env(), check=False, **kwargs)
    if result.returncode != 0:
        sys.exit(
            f"bench/rollout: `{' '.join(command[:4])} ...` failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    return result


def ssh(address: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", *SSH_OPTIONS, f"root@{address}", command], capture_output=True, text=True, check=False, timeout=300
    )


def inventory_for(hosts: dict[str, dict], path: Path) -> None:
    """A static inventory with what rollout.yml reads: one ring, an always-open window, listen addresses."""
    for name, variables in hosts.items():
        variables.update(ipm_terminal_id=name, ipm_parameters={"listen_address": variables["ansible_host"]})
    document = {
        "all": {
            "vars": {
                "ipm_site_timezone": "UTC",
                "ipm_site_windows": [
                    {
                        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                        "start": "00:00",
                        "duration_minutes": 1440,
                    }
                ],
            },
            "children": {"ring_broad": {"hosts": hosts}, "release_2_4_0": {"hosts": {name: {} for name in hosts}}},
        }
    }
    path.write_text(yaml.safe_dump(document))


RESET = """set -e
systemctl stop ipm-app
ln -sfn releases/2.3.1 /opt/ipm/app/current.new && mv -T /opt/ipm/app/current.new /opt/ipm/app/current
cp -p /root/app.yml.bench /etc/ipm/app.yml
rm -rf /opt/ipm/app/releases/2.4.0 /var/lib/ipm/delivery
systemctl reset-failed ipm-app 2>/dev/null || true
systemctl start ipm-app
"""


def reset(addresses: list[str]) -> None:
    with ThreadPoolExecutor(len(addresses)) as pool:
        for address, result in zip(addresses, pool.map(lambda a: ssh(a, RESET), addresses), strict=True):
            if result.returncode != 0:
                sys.exit(f"bench/rollout: reset of {address} failed: {result.stderr}")
    time.sleep(2)


def floor_one(address: str, artifact: Path, sha256: str, parameters: bytes, settle: float) -> float:
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile("wb", suffix=".yml") as handle:
        handle.write(parameters)
        handle.flush()
        copied = subprocess.run(
            ["scp", "-q", *SSH_OPTIONS, str(artifact), handle.name, f"root@{address}:/tmp/"],
            capture_output=True,
            text=True,
            check=False,
        )
        if copied.returncode != 0:
            raise RuntimeError(f"{address}: scp failed: {copied.stderr}")
        remote_yml = "/tmp/" + os.path.basename(handle.name)
    health = f"http://{address}:8080/health"
    script = f"""set -e
cd /tmp && echo '{sha256}  {artifact.name}' | sha256sum -c --quiet
mkdir -p /opt/ipm/app/releases/.2.4.0 && tar xzf /tmp/{artifact.name} -C /opt/ipm/app/releases/.2.4.0
mv -T /opt/ipm/app/releases/.2.4.0 /opt/ipm/app/releases/2.4.0
install -m 600 {remote_yml} /etc/ipm/app.yml
ln -sfn releases/2.4.0 /opt/ipm/app/current.new && mv -T /opt/ipm/app/current.new /opt/ipm/app/current
systemctl restart ipm-app
check() {{ python3 -c "import json,sys,urllib.request; h=json.load(urllib.request.urlopen('{health}', timeout=2)); sys.exit(h['version'] != '2.4.0' or h['status'] != 'ok')"; }}
for i in $(seq 1 120); do check 2>/dev/null && break; sleep 0.5; done
check
sleep {settle}
check
"""
    result = ssh(address, script)
    if result.returncode != 0:
        raise RuntimeError(f"{address}: floor delivery failed: {result.stdout}{result.stderr}")
    return time.perf_counter() - started


def floor(hosts: dict[str, dict], settle: float) -> float:
    manifest = yaml.safe_load((RELEASES / "ipm-app-2.4.0.manifest.yml").read_text())
    source = yaml.safe_load((RELEASES / "ipm-app-2.3.1.manifest.yml").read_text())
    started = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        jobs = []
        for variables in hosts.values():
            address = variables["ansible_host"]
            installed = {"listen_address": address}
            migrated, _ = rm.migrate_parameters(installed, manifest, source)
            document = ("---\n" + rm.dump_yaml(migrated)).encode()
            jobs.append(
                pool.submit(floor_one, address, RELEASES / manifest["artifact"], manifest["sha256"], document, settle)
            )
        for job in jobs:
            job.result()
    return time.perf_counter() - started


BAKE_MODULES = ("ipm.fleet.bake", "ansible.builtin.async_status")


def bake_wait(audit_log: Path, offset: int) -> float:
    """Seconds from the first bake task's start to the last one's end, in the records after OFFSET."""
    starts, ends = [], []
    with audit_log.open("rb") as stream:
        stream.seek(offset)
        for line in stream:
            try:
                record = json.loads(line).get("data") or {}
            except (ValueError, AttributeError):
                continue
            if record.get("module") in BAKE_MODULES and record.get("started") and record.get("ended"):
                starts.append(record["started"])
                ends.append(record["ended"])
    if not starts:
        return 0.0
    first = min(map(_instant, starts))
    return max(map(_instant, ends)) - first


def _instant(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def ansible(inventory: Path, forks: int, settle: float, bake: float, bake_waits: list[float]) -> float:
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(inventory),
        str(ROOT / "playbooks" / "rollout.yml"),
        "-f",
        str(forks),
    ]
    command += [
        "-e",
        "release=2.4.0",
        "-e",
        "change_id=CHG-BENCH",
        "-e",
        f"rollout_settle_s={settle}",
        "-e",
        "rollout_serial_broad=100%",
        "-e",
        f"rollout_bake_s={bake}",
    ]
    audit_log = Path(env()["IPM_AUDIT_LOG"])
    offset = audit_log.stat().st_size if audit_log.exists() else 0
    started = time.perf_counter()
    run(command, cwd=ROOT, timeout=1800)
    elapsed = time.perf_counter() - started
    bake_waits.append(bake_wait(audit_log, offset))
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=2.0, help="settle period of both contenders, seconds")
    parser.add_argument("--bake", type=float, default=0.0, help="bake period of the rollout, seconds (default 0: none)")
    args = parser.parse_args()
    if args.terminals < 1:
        parser.error(f"--terminals: expected 1 or more, found {args.terminals}")
    if args.bake < 0:
        parser.error(f"--bake: expected 0 or more seconds, found {args.bake:g}")
    run([str(BIN / "ipm-release"), "build", "2.3.1", "2.4.0"])
    names = [f"br{uuid.uuid4().hex[:4]}-{i:02d}" for i in range(1, args.terminals + 1)]
    times: dict[str, list[float]] = {"ansible": [], "floor": []}
    bake_waits: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as scratch:
        inventory = Path(scratch) / "inventory.yml"
        try:
            print(f"booting {len(names)} lab terminals ...", flush=True)
            run([str(BIN / "ipm-lab"), "up", *names], timeout=1800)
            hosts = json.loads(run([str(BIN / "ipm-lab"), "inventory", *names]).stdout)["all"]["children"]["lab"][
                "hosts"
            ]
            inventory_for(hosts, inventory)
            addresses = [h["ansible_host"] for h in hosts.values()]
            with ThreadPoolExecutor(len(addresses)) as pool:
                list(pool.map(lambda a: ssh(a, "cp -p /etc/ipm/app.yml /root/app.yml.bench"), addresses))
            contenders = {
                "ansible": lambda: ansible(inventory, len(names), args.settle, args.bake, bake_waits),
                "floor": lambda: floor(hosts, args.settle),
            }
            for round_number in range(1, args.rounds + 1):
                order = ["ansible", "floor"] if round_number % 2 else ["floor", "ansible"]
                for key in order:
                    times[key].append(contenders[key]())
                    reset(addresses)
                print(
                    f"round {round_number}: ansible={times['ansible'][-1]:.1f}s (bake {bake_waits[-1]:.1f}s) "
                    f"floor={times['floor'][-1]:.1f}s",
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
    ansible_s, floor_s = statistics.median(times["ansible"]), statistics.median(times["floor"])
    bake_s = statistics.median(bake_waits)
    print(f"median over {args.rounds} rounds, settle {args.settle}s, bake {args.bake:g}s, {len(names)} terminals")
    print(
        f"rollout terminals={len(names)} ansible_s={ansible_s:.1f} floor_s={floor_s:.1f} "
        f"ratio={ansible_s / floor_s:.2f} bake_wait_s={bake_s:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
