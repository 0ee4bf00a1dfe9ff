"""Benchmark: playbooks/backup.yml against a plain parallel `ssh T tar c ... | tar x` to the controller (the floor).

    .venv/bin/python bench/backup.py [--terminals 20] [--mib 50] [--rounds 2]

Boots N lab terminals (prefix bb-, stopped again at the end, also on failure). Each gets MIB MiB
of application data **inside its sqlite database** (a table of random 1 MiB blobs, written once
with the sqlite3 tool while ipm-app runs, then checkpointed), and no simulated traffic
(`transaction_interval_s: 0`), so its data does not change between the runs.

Each round, the order reversed every other round:

- backup: `ansible-playbook playbooks/backup.yml` into an empty store (a first backup: sqlite's
  online backup, integrity check and sha256 on the terminal, one tar stream over SSH written and
  hashed in one pass on the controller, signed manifest), forks N;
- floor: one `ssh root@T tar c -C / var/lib/ipm/app etc/ipm | tar x -C DIR/T` per terminal, all at
  once (no consistency, no checksums, no manifest: the plain copy the backup must come close to);
- stream (a reference, not a contender): the terminal's share of a backup without Ansible: the same
  command the backup runs on each terminal (``app_backup.stream``: sqlite's online backup,
  ``integrity_check``, sha256, then the tar stream), started by plain ssh, all at once, its tar
  unpacked by ``tar x`` on the controller (no store, no hashing there, no manifest, no Ansible).
  Its ratio to the floor is the most any backup with the issue's consistency and checksums can
  reach on this machine, where the controller and the N terminals share the same cores.

MiB/s = the bytes of the backed-up files (the manifests' sizes; for the floor what tar unpacked) /
wall time. After the last round a second backup of the unchanged data runs into the last store:
`second_bytes_ratio` = bytes it transferred / bytes the first transferred (goal <= 0.05).
Last line: `backup terminals=<N> mib_s=<x> floor_mib_s=<y> ratio=<r> second_bytes_ratio=<q>` (goal ratio >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
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
from ansible_collections.ipm.fleet.plugins.plugin_utils import backup_store as bs  # noqa: E402
from ipm_tools.lab import ssh_options  # noqa: E402

SSH_OPTIONS = [
    *ssh_options(),
    "-o",
    "ControlMaster=auto",
    "-o",
    "ControlPersist=60s",
    "-o",
    "ControlPath=/tmp/bench-backup-%C",
]
DB = "/var/lib/ipm/app/transactions.sqlite3"
POLICY = """version: 1
service_accounts: [root]
roles:
  it: {runbooks: ["*"], playbooks: ["*"]}
people:
  root: {roles: [it], customers: all, vendor: true}
four_eyes:
  playbooks: []
"""


def env(scratch: Path) -> dict[str, str]:
    variables = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        IPM_AUDIT_LOG=str(scratch / "audit.jsonl"),
        IPM_AUDIT_KEY_FILE=str(scratch / "audit.key"),
    )
    variables.pop("IPM_BACKUP_KEY_FILE", None)
    # The playbooks check an authorization policy first: the bench's own (root, any customer) unless one is named.
    variables.setdefault("IPM_POLICY_FILE", str(scratch / "policy.yml"))
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    return variables


def run(command: list[str], scratch: Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=env(scratch), check=False, **kwargs)
    if result.returncode != 0:
        sys.exit(
            f"bench/backup: `{' '.join(command[:4])} ...` failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-2000:]}"
        )
    return result


def ssh(address: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", *SSH_OPTIONS, f"root@{address}", command], capture_output=True, text=True, check=False, timeout=600
    )


def fill(address: str, mib: int) -> None:
    script = (
        "set -e; sed -i '/^transaction_interval_s:/d' /etc/ipm/app.yml; "
        "echo 'transaction_interval_s: 0' >> /etc/ipm/app.yml; systemctl restart ipm-app; sleep 1; "
        f"sqlite3 {DB} 'CREATE TABLE IF NOT EXISTS bench_pad (b BLOB); "
        f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {mib}) "
        "INSERT INTO bench_pad SELECT randomblob(1048576) FROM n;' >/dev/null; "
        f"sqlite3 {DB} 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null"
    )
    result = ssh(address, script)
    if result.returncode != 0:
        sys.exit(f"bench/backup: filling {address} failed: {result.stderr}")


def inventory_for(hosts: dict[str, dict], path: Path) -> None:
    for number, (name, variables) in enumerate(sorted(hosts.items())):
        variables.update(
            ipm_terminal_id=name,
            ipm_customer_id="bench",
            ipm_site_id=f"site-{number % 4}",
            ipm_site_timezone=["Europe/Paris", "Australia/Sydney", "America/New_York", "Asia/Tokyo"][number % 4],
        )
    path.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))


def backup(inventory: Path, store: Path, forks: int, scratch: Path) -> tuple[float, int, int]:
    """(seconds, bytes backed up, bytes transferred) of one run of playbooks/backup.yml."""
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(ROOT / "playbooks" / "backup.yml")]
    command += ["-e", "backup_hosts=all", "-e", f"backup_store={store}", "-f", str(forks), "-e", "change_id=CHG-BENCH"]
    command += ["-e", "justification=bench: lab terminals of no customer contract"]
    started = time.perf_counter()
    run(command, scratch, cwd=ROOT, timeout=3600)
    elapsed = time.perf_counter() - started
    total = transferred = 0
    store_object = bs.BackupStore(str(store))
    for terminal in store_object.terminals():
        manifest = store_object.latest(terminal).manifest()
        total += sum(f["size"] for f in manifest["files"])
        transferred += manifest["transferred_bytes"]
    return elapsed, total, transferred


def floor(hosts: dict[str, dict], target: Path) -> tuple[float, int]:
    def one(item):
        name, variables = item
        directory = target / name
        directory.mkdir(parents=True)
        pipeline = (
            f"ssh {' '.join(SSH_OPTIONS)} root@{variables['ansible_host']} 'tar c -C / var/lib/ipm/app etc/ipm' "
            f"| tar x -C {directory}"
        )
        return subprocess.run(pipeline, shell=True, capture_output=True, text=True, check=False).returncode

    started = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        codes = list(pool.map(one, hosts.items()))
    elapsed = time.perf_counter() - started
    if any(codes):
        sys.exit(f"bench/backup: the floor's tar | ssh failed on {codes.count(1)} terminal(s)")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and not p.is_symlink())
    return elapsed, size


def stream(hosts: dict[str, dict], target: Path) -> tuple[float, int]:
    """(seconds, bytes) of app_backup.stream on every terminal at once over plain ssh, untarred by tar x."""
    from ansible_collections.ipm.fleet.plugins.action import backup as action
    from ansible_collections.ipm.fleet.plugins.module_utils.app_backup import STAGING

    payload = json.dumps({"staging": STAGING, "reusable": {}, "sources": action._module_utils_sources()}) + "\n"
    remote = shlex.quote("python3 -c " + shlex.quote(action._BOOTSTRAP))

    def one(item):
        name, variables = item
        directory = target / name
        directory.mkdir(parents=True)
        header = target / f"{name}.header"
        script = (
            f"ssh {' '.join(map(shlex.quote, SSH_OPTIONS))} root@{variables['ansible_host']} {remote} "
            f"| {{ IFS= read -r line && printf '%s\\n' \"$line\" > {header} && tar x -C {directory}; }}"
        )
        done = subprocess.run(["bash", "-c", script], input=payload, capture_output=True, text=True, check=False)
        text = header.read_text() if header.exists() else ""
        staged = json.loads(text.split(" ", 2)[2]) if text.startswith("IPM-BACKUP-STREAM ") else {"failed": True}
        if done.returncode != 0 or staged.get("failed"):
            return f"{name}: exit {done.returncode}, {staged.get('msg', '')} {done.stderr.strip()[-300:]}"
        return ""

    started = time.perf_counter()
    with ThreadPoolExecutor(len(hosts)) as pool:
        problems = [problem for problem in pool.map(one, sorted(hosts.items())) if problem]
    elapsed = time.perf_counter() - started
    if problems:
        sys.exit("bench/backup: the stream reference failed on\n" + "\n".join(problems))
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and p.suffix != ".header")
    return elapsed, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--mib", type=int, default=50, help="MiB of application data per terminal (default 50)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.terminals < 1 or args.mib < 1 or args.rounds < 1:
        parser.error("--terminals, --mib and --rounds: expected 1 or more")
    names = [f"bb-{uuid.uuid4().hex[:4]}-{i:02d}" for i in range(1, args.terminals + 1)]
    rates: dict[str, list[float]] = {"backup": [], "floor": [], "stream": []}
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as scratch_name:
        scratch = Path(scratch_name)
        run([str(BIN / "ipm-audit"), "keygen", "--key-file", str(scratch / "audit.key")], scratch)
        (scratch / "policy.yml").write_text(POLICY)
        inventory = scratch / "inventory.yml"
        last_store = None
        first_transferred = 0
        try:
            print(f"booting {len(names)} lab terminals ...", flush=True)
            run([str(BIN / "ipm-lab"), "up", *names], scratch, timeout=1800)
            hosts = json.loads(run([str(BIN / "ipm-lab"), "inventory", *names], scratch).stdout)["all"]["children"][
                "lab"
            ]["hosts"]
            inventory_for(hosts, inventory)
            print(f"writing {args.mib} MiB into each terminal's database ...", flush=True)
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda h: fill(h["ansible_host"], args.mib), hosts.values()))
            for round_number in range(1, args.rounds + 1):
                order = ["backup", "floor", "stream"] if round_number % 2 else ["stream", "floor", "backup"]
                for key in order:
                    target = scratch / f"{key}-{round_number}"
                    if key == "backup":
                        if last_store is not None:
                            shutil.rmtree(last_store, ignore_errors=True)
                        seconds, size, first_transferred = backup(inventory, target, len(names), scratch)
                        last_store = target
                    else:
                        seconds, size = (floor if key == "floor" else stream)(hosts, target)
                        shutil.rmtree(target, ignore_errors=True)
                    rates[key].append(size / 1048576 / seconds)
                    print(f"round {round_number}: {key} {size / 1048576:.0f} MiB in {seconds:.1f} s", flush=True)
            time.sleep(1.1)  # the store names a backup by its second
            seconds, size, second_transferred = backup(inventory, last_store, len(names), scratch)
            print(f"second backup: {second_transferred} of {size} bytes transferred in {seconds:.1f} s", flush=True)
        finally:
            subprocess.run(
                [str(BIN / "ipm-lab"), "down", "--missing-ok", *names],
                capture_output=True,
                text=True,
                env=env(scratch),
                check=False,
            )
    mib_s, floor_mib_s = statistics.median(rates["backup"]), statistics.median(rates["floor"])
    stream_mib_s = statistics.median(rates["stream"])
    print(f"median over {args.rounds} rounds, {len(names)} terminals, {args.mib} MiB of data each")
    print(
        f"reference: the terminals' stream without Ansible {stream_mib_s:.1f} MiB/s, ratio {stream_mib_s / floor_mib_s:.2f} "
        f"to the floor (the most a consistent, checksummed backup reaches here); the backup {mib_s / stream_mib_s:.2f} of it"
    )
    print(
        f"backup terminals={len(names)} mib_s={mib_s:.1f} floor_mib_s={floor_mib_s:.1f} "
        f"ratio={mib_s / floor_mib_s:.2f} second_bytes_ratio={second_transferred / max(first_transferred, 1):.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
