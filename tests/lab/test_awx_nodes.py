"""Four simulated AWX execution nodes write one merged, verifiable audit trail (docs/audit.md, segments).

Each job runs the way AWX runs it: ``ansible-runner run`` in a fresh private data directory (the job's
container), the project checked out at the repository, an inventory AWX imported with
``ansible-inventory --list --export`` (of a registry written here, prefix ``aw-``, 127.0.87.1-4) served
by an inventory script, AWX's extra vars ``awx_user_name`` and ``awx_job_id``, the audit checkpoint key
as a credential file. Every node has its own segment directory (a host path exposed to the jobs) and all
ship to one directory (the shared storage). Four jobs run at once, one rollout per node and terminal;
the fourth node is killed (SIGKILL of the runner and everything under it) in the middle of its job.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALWAYS = [{"days": DAYS, "start": "00:00", "duration_minutes": 1440}]
TARGETS = {s: {"response_hours": 4, "repair_hours": 24} for s in ("critical", "major", "minor", "temporary")}
INTERFACES = {
    "payment": {"device": "ingenico-self-5000"},
    "printer": {"device": "custom-vkp80"},
    "camera": {"device": "hikvision-lpr"},
}
TERMINALS = [f"aw-{n:02d}" for n in range(1, 5)]
NODES = [f"exec-{n}" for n in range(1, 5)]
KILLED = NODES[3]
JOB_TIMEOUT = 600
RESULT_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")

pytestmark = pytest.mark.lab


def _terminal(name: str) -> dict:
    address = f"127.0.87.{int(name.split('-')[1])}"
    return {
        "id": name,
        "serial_number": f"PS300-AW-{name}",
        "model": "PS-300",
        "ring": "canary",
        "address": address,
        "interfaces": INTERFACES,
        "parameters": {"listen_address": address},
    }


def write_registry(directory: Path) -> Path:
    registry = directory / "registry"
    (registry / "customers").mkdir(parents=True)
    catalog = yaml.safe_load((PROJECT_ROOT / "registry" / "demo" / "catalog.yml").read_text())
    catalog["releases_dir"] = str(PROJECT_ROOT / "app" / "releases")
    catalog.pop("vpn", None)
    (registry / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    customer = {
        "customer": {
            "id": "awco",
            "name": "Awco",
            "country": "FR",
            "languages": ["fr"],
            "release": "2.4.0",
            "contract": {
                "sla_tier": "gold",
                "coverage": {"days": DAYS, "start": "00:00", "end": "24:00"},
                "maintenance_types": ["preventive", "corrective", "evolutive"],
                "targets": TARGETS,
            },
            "parameters": {"currency": "EUR"},
        },
        "sites": [
            {"id": "aw-paris", "name": "Paris", "city": "Paris", "timezone": "Europe/Paris", "windows": ALWAYS,
             "terminals": [_terminal(t) for t in TERMINALS]},
        ],
    }  # fmt: skip
    (registry / "customers" / "awco.yml").write_text(yaml.safe_dump(customer, sort_keys=False))
    inventory = directory / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "fleet.ipm_registry.yml").write_text(
        yaml.safe_dump({"plugin": "ipm.fleet.registry", "registry": str(registry)})
    )
    (inventory / "group_vars" / "all.yml").write_text(
        (PROJECT_ROOT / "inventories" / "demo" / "group_vars" / "all.yml").read_text()
    )
    return inventory


def base_env() -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    for name in ("IPM_AUDIT_LOG", "IPM_OPERATOR", "IPM_AUDIT_SEGMENT_DIR", "IPM_AUDIT_SHIP_DIR", "IPM_AUDIT_NODE"):
        env.pop(name, None)
    return env


def lab_command(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / "ipm-lab"), *args], capture_output=True, text=True, timeout=900, check=False, env=base_env()
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ipm-lab {' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result


@pytest.fixture(scope="module")
def awx(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("awx-nodes")
    inventory = write_registry(directory)
    env = base_env()
    subprocess.run([str(BIN / "ipm-release"), "build"], check=True, capture_output=True, timeout=600, env=env)
    exported = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list", "--export"],
        capture_output=True, text=True, timeout=300, check=True, env=env, cwd=PROJECT_ROOT,
    )  # fmt: skip
    imported = directory / "awx-inventory.json"  # what AWX keeps of the inventory source
    imported.write_text(exported.stdout)
    assert set(TERMINALS) <= set(json.loads(exported.stdout)["_meta"]["hostvars"])
    key = directory / "credentials" / "audit.key"  # AWX: the custom credential type's file
    subprocess.run([str(BIN / "ipm-audit"), "keygen", "--key-file", str(key)], check=True, capture_output=True)
    state = {"directory": directory, "imported": imported, "key": key, "ship": directory / "shared" / "audit"}
    try:
        lab_command("up", "--inventory", str(inventory))
        yield state
    finally:
        lab_command("down", "--missing-ok", *TERMINALS, check=False)


def private_data_dir(awx, node: str, job_id: int, terminal: str, bake_s: int) -> Path:
    """A fresh job directory as AWX's receptor worker prepares it inside the job's container."""
    pdd = awx["directory"] / node / f"job-{job_id}"
    (pdd / "env").mkdir(parents=True)
    (pdd / "inventory").mkdir()
    script = pdd / "inventory" / "hosts"
    script.write_text(f"#!/bin/sh\nexec cat {awx['imported']}\n")
    script.chmod(0o755)
    extravars = {
        "awx_job_id": job_id,
        "awx_user_name": "bk-tester",
        "awx_job_template_name": "ipm rollout",
        "release": "2.4.0",
        "change_id": f"CHG-{job_id}",
        "rollout_hosts": "all",
        "rollout_settle_s": 3,
        "rollout_bake_s": bake_s,
        "rollout_bake_interval_s": 1,
    }
    (pdd / "env" / "extravars").write_text(yaml.safe_dump(extravars))
    envvars = {
        "ANSIBLE_CONFIG": str(PROJECT_ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "IPM_AUDIT_KEY_FILE": str(awx["key"]),
        "IPM_AUDIT_CREATE_KEY": "false",
        "IPM_AUDIT_SEGMENT_DIR": str(awx["directory"] / node / "segments"),
        "IPM_AUDIT_SHIP_DIR": str(awx["ship"]),
        "IPM_AUDIT_NODE": node,
        "IPM_AUDIT_SEGMENT_CHECKPOINT_INTERVAL": "5",
        "IPM_POLICY_FILE": str(PROJECT_ROOT / "tests" / "policy.yml"),
    }
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    return pdd


def start_job(pdd: Path, terminal: str, job_id: int) -> subprocess.Popen:
    command = [
        str(BIN / "ansible-runner"), "run", str(pdd), "-p", "playbooks/rollout.yml", "--project-dir",
        str(PROJECT_ROOT), "--limit", f"{terminal},localhost", "--ident", f"job-{job_id}",
    ]  # fmt: skip
    log = open(pdd / "runner.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=base_env(), start_new_session=True)


def events(pdd: Path, job_id: int) -> list[dict]:
    """The job's events as the runner saw them (complete event files only)."""
    directory = pdd / "artifacts" / f"job-{job_id}" / "job_events"
    found = []
    for path in directory.glob("*.json") if directory.is_dir() else ():
        if path.name.endswith("-partial.json"):
            continue
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:
            continue  # being written
    return found


def results(found: list[dict]) -> Counter:
    status = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_skipped": "skipped",
              "runner_on_unreachable": "unreachable"}  # fmt: skip
    counted = Counter()
    for e in found:
        if e.get("event") in RESULT_EVENTS:
            data = e["event_data"]
            task = (data.get("task") or "").strip()
            role = data.get("resolved_role") or data.get("role")
            if role and not task.startswith(f"{role} : "):
                task = f"{role} : {task}"  # how ansible names a role's task (the callback records that)
            counted[(data.get("host"), task, status[e["event"]])] += 1
    return counted


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_node(proc: subprocess.Popen) -> None:
    """The node dies: the runner's process group and everything under it (pexpect starts its own session)."""
    victims = [proc.pid, *descendants(proc.pid)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)  # freeze all first: nobody gets to clean up
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def ipm_audit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ipm-audit"), *args], capture_output=True, text=True, timeout=300, check=False, env=base_env()
    )


def trail_records(ship: Path) -> list[dict]:
    listed = ipm_audit("--trail", str(ship), "show", "--kind", "all")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


def test_1_four_nodes_one_trail_and_a_killed_node_loses_nothing(awx):
    jobs = {}
    for index, (node, terminal) in enumerate(zip(NODES, TERMINALS, strict=True)):
        job_id = 101 + index
        # The killed node's job bakes long: it is killed while it watches its terminal.
        pdd = private_data_dir(awx, node, job_id, terminal, bake_s=120 if node == KILLED else 2)
        jobs[node] = {"pdd": pdd, "job": job_id, "terminal": terminal, "proc": start_job(pdd, terminal, job_id)}
    killed = jobs[KILLED]
    deadline = time.monotonic() + JOB_TIMEOUT
    seen_before_kill = None
    while time.monotonic() < deadline:
        found = events(killed["pdd"], killed["job"])
        baking = any(
            e.get("event") == "runner_on_ok" and "bake" in (e["event_data"].get("task") or "").lower() for e in found
        ) or any(e.get("event") == "playbook_on_task_start" and "Bak" in (e["event_data"].get("task") or "")
                 for e in found)  # fmt: skip
        if baking and sum(results(found).values()) >= 10:
            seen_before_kill = results(events(killed["pdd"], killed["job"]))
            kill_node(killed["proc"])
            break
        assert killed["proc"].poll() is None, (killed["pdd"] / "runner.log").read_text()[-3000:]
        time.sleep(0.3)
    assert seen_before_kill, "the fourth node's job never reached its bake"
    for node in NODES[:3]:
        rc = jobs[node]["proc"].wait(timeout=max(10, deadline - time.monotonic()))
        assert rc == 0, (jobs[node]["pdd"] / "runner.log").read_text()[-4000:]

    ship = awx["ship"]
    key = ["--key-file", str(awx["key"])]
    # Before anyone ships the dead job's leftovers, the shipped prefix already verifies (incomplete).
    early = ipm_audit("verify", "--trail", str(ship), *key)
    assert early.returncode == 0, early.stdout + early.stderr
    assert "4 segments (3 complete, 1 incomplete)" in early.stdout
    # The node's next job (or its clean-up) ships what the dead job left in the node's segment directory.
    shipped = ipm_audit("ship", "--segment-dir", str(awx["directory"] / KILLED / "segments"), "--trail", str(ship))
    assert shipped.returncode == 0 and shipped.stdout.startswith("shipped j104_nexec-4_"), shipped.stdout
    verified = ipm_audit("verify", "--trail", str(ship), *key, "--workers", "2")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "4 segments (3 complete, 1 incomplete)" in verified.stdout
    assert "j104_nexec-4_" in verified.stderr and "incomplete: job died after record" in verified.stderr

    records = trail_records(ship)
    by_segment: dict[str, list[dict]] = {}
    for record in records:
        by_segment.setdefault(record["segment"], []).append(record)
    assert sorted(name.split("_")[0] for name in by_segment) == ["j101", "j102", "j103", "j104"]
    assert len({name.split("_")[1] for name in by_segment}) == 4, "four nodes"
    times = [r["time"] for r in records]
    assert times == sorted(times), "the merged trail is in time order"
    for node, job in jobs.items():
        (segment,) = [name for name in by_segment if name.startswith(f"j{job['job']}_n{node}_")]
        tasks = [r for r in by_segment[segment] if r["kind"] == "task"]
        recorded = Counter((r["host"], r["task"], r["status"]) for r in tasks)
        starts = [r for r in by_segment[segment] if r["kind"] == "run_start"]
        assert starts and starts[0]["operator"] == "bk-tester" and starts[0]["operator_source"].startswith("extra_var")
        assert starts[0]["change_id"] == f"CHG-{job['job']}"
        if node == KILLED:
            missing = seen_before_kill - recorded
            assert not missing, f"results the runner saw before the kill but not in the trail: {missing}"
            assert by_segment[segment][-1]["kind"] != "segment_end"
        else:
            assert recorded == results(events(job["pdd"], job["job"])), "every result the runner saw, once"
            assert by_segment[segment][-1]["kind"] == "segment_end"
            assert any(r.get("terminal") == job["terminal"] for r in tasks)

    deliveries = ipm_audit("--trail", str(ship), "deliveries", "--json")
    entries = json.loads(deliveries.stdout)
    delivered = {e["terminal"] for e in entries if e["result"] == "delivered"}
    assert set(TERMINALS[:3]) <= delivered, entries
    assert all(e["operator"] == "bk-tester" for e in entries)
    report = subprocess.run(
        [str(BIN / "ipm-report"), "audit", "--log", str(ship), "--key-file", str(awx["key"]),
         "--registry", str(awx["directory"] / "registry"),
         "--period", time.strftime("%Y-%m", time.gmtime()), "--format", "json", "-o", str(awx["directory"] / "r.json")],
        capture_output=True, text=True, timeout=300, check=False, env=base_env(),
    )  # fmt: skip
    awx["report"] = report


def test_2_a_segment_edited_afterwards_is_found_and_named(awx, tmp_path):
    ship = awx["ship"]
    assert any(ship.glob("j101_*.jsonl")), "test 1 shipped the trail"
    key = ["--key-file", str(awx["key"])]

    def tampered(edit) -> tuple[str, subprocess.CompletedProcess]:
        copy = tmp_path / f"trail-{edit.__name__}"
        shutil.copytree(ship, copy)
        name = edit(copy)
        return name, ipm_audit("verify", "--trail", str(copy), *key)

    def flip_byte(trail: Path) -> str:
        path = next(trail.glob("j101_*.jsonl"))
        data = bytearray(path.read_bytes())
        at = data.index(b'"status":"') + 10
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
        return path.stem

    def change_field(trail: Path) -> str:
        path = next(trail.glob("j102_*.jsonl"))
        path.write_text(path.read_text().replace('"operator":"bk-tester"', '"operator":"someone"', 1))
        return path.stem

    def delete_line(trail: Path) -> str:
        path = next(trail.glob("j103_*.jsonl"))
        lines = path.read_text().splitlines(keepends=True)
        del lines[len(lines) // 2]
        path.write_text("".join(lines))
        return path.stem

    def delete_segment(trail: Path) -> str:
        path = next(trail.glob("j102_*.jsonl"))
        path.unlink()
        Path(str(path) + ".head").unlink()
        return path.stem

    for edit, why in (
        (flip_byte, "altered: line"),
        (change_field, "altered: line"),
        (delete_line, "record missing"),
        (delete_segment, "missing: listed in the index but absent"),
    ):
        name, result = tampered(edit)
        assert result.returncode == 1, (edit.__name__, result.stdout, result.stderr)
        assert f"{name}: " in result.stdout and why in result.stdout, (edit.__name__, result.stdout)


def test_3_reports_read_the_merged_trail(awx):
    report = awx.get("report")
    assert report is not None, "test 1 ran the report"
    assert report.returncode == 0, report.stdout + report.stderr
    document = json.loads((awx["directory"] / "r.json").read_text())
    assert "Traceback" not in report.stderr
    assert json.dumps(document).count("aw-0") >= 3
