"""Benchmark of the audit trail: callback overhead beside ARA, verify and append throughput.

    .venv/bin/python bench/audit.py            # 20 hosts x 20 tasks, 3 interleaved repetitions, 1,000,000-record verify
    .venv/bin/python bench/audit.py --quick    # 20 hosts x 20 tasks, 1 repetition, 100,000-record verify

(1) The same playbook (local connection) runs with no callback, with ipm.fleet.audit and with ARA's
    callback (ara[server] from PyPI, installed by this script into build/bench-ara-venv, offline sqlite
    client). All three use that venv's ansible-playbook (the project's ansible-core version), so only the
    callback differs. Repetitions are interleaved; ratios use the median wall time.
(2) ``verify`` of a generated log (records/s, wall clock and CPU time) and ``AuditWriter.append``
    throughput with a lock per record.

The last line is ``audit overhead_ratio=<r> ara_ratio=<r> verify_rps=<n>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.ipm.fleet.plugins.plugin_utils import audit_log  # noqa: E402

BUILD = ROOT / "build"
ARA_VENV = BUILD / "bench-ara-venv"
ARA_SPEC = "ara[server]>=1.7,<2"
SITES = (("par01", "Europe/Paris"), ("syd01", "Australia/Sydney"), ("nyc01", "America/New_York"))


def ensure_ara_venv() -> Path:
    """A separate venv with the project's ansible-core and ARA (not a project dependency)."""
    python = ARA_VENV / "bin" / "python"
    wanted = f"ansible-core=={version('ansible-core')}"
    stamp = ARA_VENV / ".bench-installed"
    if not python.exists() or not stamp.exists() or stamp.read_text() != f"{wanted} {ARA_SPEC}":
        print(f"installing {wanted} and {ARA_SPEC} into {ARA_VENV} ...", flush=True)
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(ARA_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", wanted, ARA_SPEC], check=True)
        stamp.write_text(f"{wanted} {ARA_SPEC}")
    return python


def write_project(work: Path, hosts: int, tasks: int, python: Path) -> None:
    lines = ["all:", "  vars:", "    ansible_connection: local", f"    ansible_python_interpreter: {python}"]
    lines += ["  children:"]
    for index, (site, zone) in enumerate(SITES):
        lines += [f"    site_{site}:", "      vars:", f"        ipm_site_timezone: {zone}", "      hosts:"]
        for h in range(index, hosts, len(SITES)):
            lines += [
                f"        term-{h:03d}:",
                f"          ipm_terminal_id: {site.upper()}-T{h:03d}",
                "          ipm_customer_id: acme",
                f"          ipm_site_id: {site}",
            ]
    (work / "inventory.yml").write_text("\n".join(lines) + "\n")
    cycle = [
        """    - name: Write settings {i}
      ansible.builtin.copy:
        content: "idle_timeout_s={i}\\nterminal={{{{ ipm_terminal_id }}}}\\n"
        dest: "{{{{ out }}}}/{{{{ inventory_hostname }}}}-{i}.conf"
        mode: "0644\"""",
        """    - name: Add a line {i}
      ansible.builtin.lineinfile:
        path: "{{{{ out }}}}/{{{{ inventory_hostname }}}}-{i}.txt"
        line: "currency=EUR {i}"
        create: true
        mode: "0644\"""",
        """    - name: Make a directory {i}
      ansible.builtin.file:
        path: "{{{{ out }}}}/{{{{ inventory_hostname }}}}-{i}.d"
        state: directory
        mode: "0755\"""",
        """    - name: Run a command {i}
      ansible.builtin.command: "true"
      changed_when: false""",
        """    - name: Say something {i}
      ansible.builtin.debug:
        msg: "step {i} on {{{{ ipm_terminal_id }}}}\"""",
    ]
    body = [cycle[i % len(cycle)].format(i=i) for i in range(tasks)]
    (work / "bench.yml").write_text(
        "- name: Benchmark play\n  hosts: all\n  gather_facts: false\n  vars:\n"
        f'    out: "{work / "out"}"\n  tasks:\n' + "\n".join(body) + "\n"
    )


def write_configs(work: Path, ara_plugins: str) -> dict[str, Path]:
    common = [
        "[defaults]",
        f"collections_path = {ROOT / 'collections'}",
        "forks = 20",
        "retry_files_enabled = false",
        "gathering = explicit",
        "stdout_callback = default",
    ]
    configs = {
        "none": common,
        "audit": [
            *common,
            "callbacks_enabled = ipm.fleet.audit",
            "[callback_ipm_audit]",
            f"log_path = {work / 'audit' / 'audit.jsonl'}",
            f"key_file = {work / 'audit.key'}",
        ],
        "ara": [*common, f"callback_plugins = {ara_plugins}", "callbacks_enabled = ara_default"],
    }
    paths = {}
    for name, lines in configs.items():
        paths[name] = work / f"{name}.cfg"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


def run_playbook(work: Path, venv_bin: Path, cfg: Path) -> float:
    shutil.rmtree(work / "out", ignore_errors=True)
    (work / "out").mkdir()
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(cfg),
        ARA_API_CLIENT="offline",
        ARA_BASE_DIR=str(work / "ara"),
        ARA_DATABASE_NAME=str(work / "ara" / "ansible.sqlite"),
    )
    env.pop("IPM_AUDIT_LOG", None)
    start = time.perf_counter()
    result = subprocess.run(
        [str(venv_bin / "ansible-playbook"), "-i", "inventory.yml", "bench.yml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"bench: ansible-playbook failed with {cfg.name}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return wall


def playbook_bench(hosts: int, tasks: int, reps: int) -> tuple[float, float]:
    python = ensure_ara_venv()
    venv_bin = python.parent
    ara_plugins = subprocess.run(
        [str(python), "-m", "ara.setup.callback_plugins"], capture_output=True, text=True, check=True
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="bench-audit-", dir=BUILD))
    try:
        write_project(work, hosts, tasks, python)
        configs = write_configs(work, ara_plugins)
        print(f"playbook: {hosts} hosts x {tasks} tasks, local connection, {reps} interleaved repetition(s)")
        run_playbook(work, venv_bin, configs["ara"])  # warm-up: ARA creates and migrates its database once
        walls: dict[str, list[float]] = {name: [] for name in configs}
        order = list(configs)
        for rep in range(reps):
            for name in order[rep % 3 :] + order[: rep % 3]:
                walls[name].append(run_playbook(work, venv_bin, configs[name]))
                print(f"  rep {rep + 1} {name:<5} {walls[name][-1]:7.2f} s", flush=True)
        log = work / "audit" / "audit.jsonl"
        report = audit_log.verify_log(str(log), audit_log.load_key(str(work / "audit.key")))
        task_records = sum(1 for line in log.open("rb") if b'"kind":"task"' in line)
        expected = hosts * tasks * reps
        if not report.ok or task_records != expected:
            sys.exit(f"bench: audit log wrong: {report.problem}, {task_records} task records, expected {expected}")
        print(f"  audit log: {report.records} records ({task_records} task results), verify OK")
        median = {name: statistics.median(values) for name, values in walls.items()}
        for name, value in median.items():
            print(f"  median {name:<5} {value:7.2f} s  ratio {value / median['none']:.3f}")
        return median["audit"] / median["none"], median["ara"] / median["none"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sample_data(i: int) -> dict:
    site, zone = SITES[i % 3]
    return {
        "run": hashlib.md5(str(i // 400).encode(), usedforsecurity=False).hexdigest(),
        "host": f"term-{i % 500:03d}",
        "terminal": f"{site.upper()}-T{i % 500:03d}",
        "customer": "acme",
        "site": site,
        "site_timezone": zone,
        "play": "Maintain terminals",
        "task": f"Write settings {i % 20}",
        "task_path": f"/srv/ipm/playbooks/params.yml:{i % 20 * 5 + 3}",
        "module": "ansible.builtin.copy",
        "status": "ok",
        "changed": i % 3 == 0,
        "ignore_errors": False,
        "check_mode": False,
        "started": "2026-11-28T13:43:06.515514Z",
        "ended": "2026-11-28T13:43:07.157170Z",
        "site_time": "2026-11-28T14:43:07.157170+01:00",
        "duration_s": 0.642,
        "args": {"dest": f"/etc/ipm/app-{i % 20}.yml", "mode": "0644", "backup": False, "owner": None},
        "diff": [{"before": "idle_timeout_s: 60\n", "after": f"idle_timeout_s: {i % 600}\n"}],
        "msg": "",
    }


def generate_log(path: Path, count: int, key: bytes, interval: int = 1000) -> None:
    """Write a valid ``count``-record log fast: pre-serialised data bodies, the writer's exact line layout."""
    bodies = [
        json.dumps(sample_data(i), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        for i in range(997)
    ]
    sample = {"data": sample_data(0), "kind": "task", "prev": audit_log.GENESIS, "seq": 0, "time": audit_log.utc_now()}
    expected = audit_log.canonical_bytes(sample)
    built = b'{"data":' + bodies[0] + b',"kind":"task","prev":"' + audit_log.GENESIS.encode()
    built += b'","seq":0,"time":"' + sample["time"].encode() + b'"}'
    assert built == expected, "bench layout differs from the writer's canonical form"
    prev = audit_log.GENESIS
    sha256 = hashlib.sha256
    stamp = audit_log.utc_now().encode()
    with path.open("wb") as handle:
        buffer = []
        for seq in range(count):
            if seq % interval == interval - 1:
                record = {
                    "data": {
                        "reason": "interval",
                        "key_id": audit_log.key_id(key),
                        "mac": audit_log.checkpoint_mac(key, seq, prev),
                    },
                    "kind": "checkpoint",
                    "prev": prev,
                    "seq": seq,
                    "time": stamp.decode(),
                }
                body = audit_log.canonical_bytes(record)
            else:
                body = (
                    b'{"data":'
                    + bodies[seq % 997]
                    + b',"kind":"task","prev":"'
                    + prev.encode()
                    + b'","seq":'
                    + str(seq).encode()
                    + b',"time":"'
                    + stamp
                    + b'"}'
                )
            prev = sha256(body).hexdigest()
            buffer.append(body[:-1] + b',"hash":"' + prev.encode() + b'"}\n')
            if len(buffer) >= 20000:
                handle.write(b"".join(buffer))
                buffer = []
        handle.write(b"".join(buffer))


def log_bench(records: int, appends: int) -> float:
    work = Path(tempfile.mkdtemp(prefix="bench-audit-log-", dir=BUILD))
    try:
        key = os.urandom(32)
        log = work / "audit.jsonl"
        start = time.perf_counter()
        generate_log(log, records, key)
        size = log.stat().st_size
        print(f"verify: generated {records:,} records ({size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
        best = None
        for workers in (1, 2):
            wall, cpu = time.perf_counter(), time.process_time()
            report = audit_log.verify_log(str(log), key, head=False, workers=workers)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if not report.ok or report.records != records:
                sys.exit(f"bench: verify failed on the generated log: {report.problem}")
            rps = records / wall
            cpu_note = f", {records / cpu:,.0f} records/s of this process's CPU" if workers == 1 else ""
            print(f"  verify workers={workers}: {wall:.2f} s wall, {rps:,.0f} records/s{cpu_note}")
            best = rps if best is None else max(best, rps)
        append_log = work / "append.jsonl"
        with audit_log.AuditWriter(str(append_log), key=key) as writer:
            start = time.perf_counter()
            for i in range(appends):
                writer.append("task", sample_data(i))
            wall = time.perf_counter() - start
        print(
            f"append: {appends:,} records, lock per record, {appends / wall:,.0f} records/s ({wall / appends * 1e6:.0f} us each)"
        )
        assert audit_log.verify_log(str(append_log), key).ok
        return best
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repetition and a 100,000-record verify")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3, 1 with --quick)")
    parser.add_argument("--records", type=int, help="records in the verify log (default 1,000,000)")
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    records = args.records or (100_000 if args.quick else 1_000_000)
    BUILD.mkdir(exist_ok=True)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPU(s)")
    overhead, ara = playbook_bench(args.hosts, args.tasks, reps)
    verify_rps = log_bench(records, 5_000 if args.quick else 20_000)
    print(f"audit overhead_ratio={overhead:.3f} ara_ratio={ara:.3f} verify_rps={verify_rps:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
