"""Every runbook as a real ansible-runner job (``ipm-support run``) on real lab terminals, for a ticket.

The registry is generated at test time (prefix ``sr-``, addresses 127.0.82.1-30): customer ``srco``
with one site whose window is always open (eight terminals; ``sr-30`` is in the registry but never
booted: the unreachable terminal) and one site whose window is closed now (``sr-29``, never booted:
a reboot there is refused before anything connects); customer ``srother`` with ``sr-28`` (a ticket
of one customer never reaches another's terminal). The customer's ``payment_api_token`` is a canary
encrypted by the real ``ansible-vault encrypt_string``: it must reach ``/etc/ipm/app.yml`` of the
terminals the parameters runbook writes, and no file of the support dir (job artifacts, bundles,
tickets) nor the audit log. Two terminals serve the runbook tests; six more boot for the test of
eight jobs at once only (then stop). 3.6 minutes here (5.5 under heavy load).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from zoneinfo import ZoneInfo

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
TERMINALS = [f"sr-{n:02d}" for n in range(1, 9)]
UNREACHABLE, CLOSED, OTHER = "sr-30", "sr-29", "sr-28"
SUPPORT_TIMEOUT = 600
# Each user of this fleet has its own name prefix and addresses (127.0.<subnet>.n), so they never collide:
# this test ``sr-``, bench/support.py ``sb-``, tests/lab/test_support_killed.py ``sh-``.
SUBNETS = {"sr": 82, "sb": 83, "sh": 84}


def address_of(name: str) -> str:
    prefix, number = name.split("-")
    return f"127.0.{SUBNETS[prefix]}.{int(number)}"


def _closed_window(zone: str) -> list[dict]:
    opened = dt.datetime.now(ZoneInfo(zone)) - dt.timedelta(hours=3)
    return [{"days": [DAYS[opened.weekday()]], "start": opened.strftime("%H:%M"), "duration_minutes": 60}]


def renamed(name: str, prefix: str) -> str:
    """``sr-01`` as another user of the fleet names it (``sb-01``)."""
    return f"{prefix}-{name.split('-')[1]}"


def _terminal(name: str) -> dict:
    address = address_of(name)
    return {
        "id": name,
        "serial_number": f"PS300-{name.split('-')[0].upper()}-{name}",
        "model": "PS-300",
        "ring": "canary",
        "address": address,
        "interfaces": INTERFACES,
        "parameters": {"listen_address": address},
    }


def _customer(customer_id: str, sites: list[dict], parameters: str = "") -> str:
    document = {
        "customer": {
            "id": customer_id,
            "name": customer_id.title(),
            "country": "FR",
            "languages": ["fr"],
            "release": "2.3.1",
            "contract": {
                "sla_tier": "gold",
                "coverage": {"days": DAYS, "start": "00:00", "end": "24:00"},
                "maintenance_types": ["preventive", "corrective", "evolutive"],
                "targets": TARGETS,
            },
            "parameters": {"currency": "EUR", "PASTE": 1},
        },
        "sites": sites,
    }
    text = yaml.safe_dump(document, sort_keys=False)
    line = next(line for line in text.splitlines() if "PASTE" in line)
    spaces = len(line) - len(line.lstrip())
    pasted = "\n".join(" " * spaces + row for row in parameters.rstrip("\n").split("\n")) if parameters else ""
    return text.replace(line + "\n", pasted + "\n" if pasted else "")


def write_support_fleet(directory: Path, vault_password_file: Path, canary: str, prefix: str = "sr") -> Path:
    """The registry, its policy and inventory under ``directory``; returns the inventory directory.

    ``prefix`` names the terminals and sites (``sr``: this test's, see :data:`SUBNETS` for the others).
    """
    encrypt = [str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(vault_password_file)]
    printed = subprocess.run(
        [*encrypt, "--name", "payment_api_token", canary],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    registry = directory / "registry"
    (registry / "customers").mkdir(parents=True)
    catalog = yaml.safe_load((PROJECT_ROOT / "registry" / "demo" / "catalog.yml").read_text())
    catalog["releases_dir"] = str(PROJECT_ROOT / "app" / "releases")
    catalog.pop("vpn", None)
    (registry / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    sites = [
        {"id": f"{prefix}-paris", "name": "Paris", "city": "Paris", "timezone": "Europe/Paris", "windows": ALWAYS,
         "terminals": [_terminal(renamed(t, prefix)) for t in [*TERMINALS, UNREACHABLE]]},
        {"id": f"{prefix}-newyork", "name": "New York", "city": "New York", "timezone": "America/New_York",
         "windows": _closed_window("America/New_York"), "terminals": [_terminal(renamed(CLOSED, prefix))]},
    ]  # fmt: skip
    (registry / "customers" / "srco.yml").write_text(_customer("srco", sites, printed))
    other = [{"id": f"{prefix}-lyon", "name": "Lyon", "city": "Lyon", "timezone": "Europe/Paris", "windows": ALWAYS,
              "terminals": [_terminal(renamed(OTHER, prefix))]}]  # fmt: skip
    (registry / "customers" / "srother.yml").write_text(_customer("srother", other))
    user = os.environ.get("USER") or "root"
    policy = {
        "version": 1,
        "service_accounts": [],
        "roles": {"l1": {"runbooks": ["health_check"], "playbooks": []}, "it": {"runbooks": ["*"], "playbooks": ["*"]}},
        "people": {
            user: {"name": "The lab's operator", "roles": ["it"], "customers": "all", "vendor": True},
            "root": {"name": "The lab's operator", "roles": ["it"], "customers": "all", "vendor": True},
        },
    }
    (registry / "policy.yml").write_text(yaml.safe_dump(policy, sort_keys=False))
    inventory = directory / "inventory"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "fleet.ipm_registry.yml").write_text(
        yaml.safe_dump({"plugin": "ipm.fleet.registry", "registry": str(registry)})
    )
    (inventory / "group_vars" / "all.yml").write_text(
        (PROJECT_ROOT / "inventories" / "demo" / "group_vars" / "all.yml").read_text()
    )
    return inventory


def support_env(directory: Path) -> dict:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        IPM_AUDIT_LOG=str(directory / "audit" / "audit.jsonl"),
        IPM_AUDIT_KEY_FILE=str(directory / "audit.key"),
        IPM_HISTORY_STORE=str(directory / "history"),
        IPM_SUPPORT_DIR=str(directory / "support"),
        IPM_REGISTRY=str(directory / "inventory"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    for name in ("ANSIBLE_VAULT_PASSWORD_FILE", "IPM_POLICY_FILE", "IPM_OPERATOR"):
        env.pop(name, None)
    return env


def boot(names: list[str]) -> None:
    from ipm_tools.lab import boot_terminals, spec_for

    specs = [
        spec_for(name, address_of(name), i, {"ipm_model": "PS-300", "ipm_interfaces": INTERFACES})
        for i, name in enumerate(names)
    ]
    boot_terminals(specs, progress=lambda *_args, **_kw: None)


def stop(names: list[str]) -> None:
    from ipm_tools.lab import stop_terminals_named

    stop_terminals_named(names, missing_ok=True, progress=lambda *_args, **_kw: None)


pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("support-runbooks")
    secrets = tmp_path_factory.mktemp("support-secrets")  # the vault password lives outside the support dir
    password = secrets / "vault-password"
    password.write_text(f"pw-{uuid.uuid4()}\n")
    password.chmod(0o600)
    canary = f"canary-{uuid.uuid4()}"
    inventory = write_support_fleet(directory, password, canary)
    env = support_env(directory)
    subprocess.run([str(BIN / "ipm-release"), "build"], check=True, capture_output=True, timeout=600, env=env)
    from ipm_tools.support.tickets import TicketStore

    store = TicketStore(directory / "support", registry=inventory)
    tickets = {
        name: store.open_error(
            "srco", "major", f"{name} misbehaves", "Jean +33 1 02", terminal=name, actor="l1-desk"
        ).id
        for name in [*TERMINALS, UNREACHABLE, CLOSED]
    }
    state = {
        "directory": directory,
        "password": password,
        "canary": canary,
        "inventory": inventory,
        "env": env,
        "store": store,
        "tickets": tickets,
        "outputs": [],
    }
    try:
        boot(TERMINALS[:2])
        yield state
    finally:
        stop(TERMINALS)


def support(lab, *args, timeout=SUPPORT_TIMEOUT) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / "ipm-support"), *args], capture_output=True, text=True, env=lab["env"], timeout=timeout, check=False
    )
    lab["outputs"].append(result.stdout + result.stderr)
    return result


def run(lab, runbook, terminal, *options, ticket=None) -> subprocess.CompletedProcess:
    ticket = ticket or lab["tickets"][terminal]
    return support(
        lab, "run", runbook, "--terminal", terminal, "--ticket", ticket, "--vault-password-file", str(lab["password"]),
        *options,
    )  # fmt: skip


def on_terminal(terminal: str, command: str) -> str:
    result = subprocess.run(
        [str(BIN / "ipm-lab"), "ssh", terminal, command], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def last_job(lab, ticket: str) -> tuple[Path, dict]:
    jobs = sorted((lab["directory"] / "support" / "tickets" / ticket / "jobs").iterdir())
    return jobs[-1], json.loads((jobs[-1] / "job.json").read_text())


def job_events(lab, ticket: str) -> list:
    return [e for e in lab["store"].events(ticket) if e.kind in ("job_started", "job_finished")]


def assert_complete(job_dir: Path, status: str = "successful") -> None:
    """A job folder as the tool leaves it: job.json, runner's command (environment trimmed), the events, stdout."""
    info = json.loads((job_dir / "job.json").read_text())
    assert info["status"] == status, info
    artifacts = job_dir / "artifacts" / info["ident"]
    command = json.loads((artifacts / "command").read_text())
    assert command["command"][0] == "ansible-playbook"
    assert all(key.startswith(("ANSIBLE_", "IPM_", "PATH")) for key in command["env"]), sorted(command["env"])
    events = [json.loads(path.read_text()) for path in (artifacts / "job_events").glob("*.json")]
    kinds = {event["event"] for event in events}
    assert "playbook_on_start" in kinds and "playbook_on_task_start" in kinds
    assert ("playbook_on_stats" in kinds) == (status != "killed"), kinds
    assert (artifacts / "stdout").read_text().strip()


def audit_verify(lab) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ipm-audit"), "verify", "--log", lab["env"]["IPM_AUDIT_LOG"], "--key-file", lab["env"]["IPM_AUDIT_KEY_FILE"]],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_health_check_job_is_noted_on_the_ticket(lab):
    result = run(lab, "health_check", "sr-01")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "health_check on sr-01 for INC-" in result.stdout and "SUCCESSFUL" in result.stdout
    assert "  ok          sr-01  Authorize the runbook" in result.stdout  # the progress, one line per task
    job_dir, info = last_job(lab, lab["tickets"]["sr-01"])
    assert_complete(job_dir)
    started, finished = job_events(lab, lab["tickets"]["sr-01"])
    assert started.data["ident"] == finished.data["ident"] == info["ident"]
    assert finished.data["status"] == "successful" and finished.data["exit_code"] == 0
    assert lab["store"].get(lab["tickets"]["sr-01"]).first_response_utc  # the first job answers the ticket


def test_diagnostics_bundle_in_the_ticket_folder(lab):
    result = run(lab, "diagnostics", "sr-01")
    assert result.returncode == 0, result.stdout + result.stderr
    job_dir, _info = last_job(lab, lab["tickets"]["sr-01"])
    bundle = job_dir / "bundle" / "sr-01"
    assert sorted(p.name for p in bundle.iterdir()) == [
        "app.log", "disk.txt", "facts.json", "journal.txt", "parameters.yml", "peripherals.json", "transactions.json",
    ]  # fmt: skip
    parameters = yaml.safe_load((bundle / "parameters.yml").read_text())["values"]
    assert parameters["listen_address"] == "127.0.82.1"
    assert parameters["payment_api_token"] in ("", "********")  # masked (or not set yet)
    assert isinstance(json.loads((bundle / "transactions.json").read_text())["count"], int)
    assert "ipm-app" in (bundle / "journal.txt").read_text()
    assert "started on 127.0.82.1:8080" in (bundle / "app.log").read_text()
    assert "/" in (bundle / "disk.txt").read_text()
    assert set(json.loads((bundle / "peripherals.json").read_text())["devices"]) == set(INTERFACES)
    facts = json.loads((bundle / "facts.json").read_text())
    assert facts["hardware"]["model"] == "PS-300" and facts["application"]["current"] == "2.3.1"


def test_clear_spool_empties_the_spool(lab):
    on_terminal("sr-01", "mkdir -p /var/spool/ipm/print && touch /var/spool/ipm/a.job /var/spool/ipm/print/b.job")
    result = run(lab, "clear_spool", "sr-01")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "3 queued file(s) removed"
        in (Path(last_job(lab, lab["tickets"]["sr-01"])[0]) / "artifacts")
        .joinpath(last_job(lab, lab["tickets"]["sr-01"])[1]["ident"], "stdout")
        .read_text()
    )
    assert on_terminal("sr-01", "ls -A /var/spool/ipm; systemctl is-active ipm-app").split() == ["active"]


def test_restart_app_restarts_the_service(lab):
    before = on_terminal("sr-01", "systemctl show -p InvocationID --value ipm-app").strip()
    result = run(lab, "restart_app", "sr-01")
    assert result.returncode == 0, result.stdout + result.stderr
    after = on_terminal("sr-01", "systemctl show -p InvocationID --value ipm-app").strip()
    assert before and after and before != after
    with urllib.request.urlopen("http://127.0.82.1:8080/health", timeout=10) as answer:
        assert json.load(answer)["status"] == "ok"


def test_reapply_parameters_puts_the_registry_back(lab):
    on_terminal("sr-01", "sed -i 's/^currency: .*/currency: USD/' /etc/ipm/app.yml")
    result = run(lab, "reapply_parameters", "sr-01")
    assert result.returncode == 0, result.stdout + result.stderr
    written = yaml.safe_load(on_terminal("sr-01", "cat /etc/ipm/app.yml"))
    assert written["currency"] == "EUR"
    assert written["payment_api_token"] == lab["canary"]  # the vaulted secret reached the terminal only


def test_rollback_release_goes_back(lab):
    rollout = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(lab["inventory"]), str(PROJECT_ROOT / "playbooks" / "rollout.yml"),
         "-e", "release=2.4.0", "-e", "change_id=CHG-SR1", "-e", "rollout_hosts=sr-02",
         "--vault-password-file", str(lab["password"])],
        capture_output=True, text=True, env=lab["env"], cwd=PROJECT_ROOT, timeout=600, check=False,
    )  # fmt: skip
    lab["outputs"].append(rollout.stdout + rollout.stderr)
    assert rollout.returncode == 0, rollout.stdout[-3000:]
    assert on_terminal("sr-02", "readlink /opt/ipm/app/current").strip().endswith("2.4.0")
    result = run(lab, "rollback_release", "sr-02")
    assert result.returncode == 0, result.stdout + result.stderr
    assert on_terminal("sr-02", "readlink /opt/ipm/app/current").strip().endswith("2.3.1")


def _boots(terminal: str) -> int:
    status = subprocess.run(
        [str(BIN / "ipm-lab"), "status", "--json", terminal], capture_output=True, text=True, timeout=60, check=True
    )
    return next(t for t in json.loads(status.stdout) if t.get("terminal_id", t.get("terminal")) == terminal)["boots"]


def test_reboot_inside_the_window_and_refused_outside(lab):
    before = _boots("sr-02")
    result = run(lab, "reboot", "sr-02")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _boots("sr-02") == before + 1
    refused = run(lab, "reboot", CLOSED)  # never booted: refused before anything connects
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "maintenance window of site sr-newyork is closed" in refused.stdout
    assert job_events(lab, lab["tickets"][CLOSED])[-1].data["status"] == "failed"


def test_unreachable_terminal_ends_the_job_and_the_ticket_notes_it(lab):
    result = run(lab, "health_check", UNREACHABLE)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"{UNREACHABLE} did not answer" in result.stdout
    finished = job_events(lab, lab["tickets"][UNREACHABLE])[-1]
    assert finished.kind == "job_finished" and finished.data["status"] == "unreachable"
    assert_complete(last_job(lab, lab["tickets"][UNREACHABLE])[0], "unreachable")


def _playbook_pids(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"ansible-playbook" in part for part in cmdline[:2]) and any(marker.encode() in p for p in cmdline):
                pids.append(int(proc.name))
    return pids


def test_killed_job_leaves_artifacts_and_audit_consistent(lab):
    ticket = lab["tickets"]["sr-01"]
    on_terminal("sr-01", "systemctl stop ipm-app")
    try:
        job = subprocess.Popen(
            [str(BIN / "ipm-support"), "run", "health_check", "--terminal", "sr-01", "--ticket", ticket,
             "-e", "runbook_health_retries=200"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=lab["env"],
        )  # fmt: skip
        marker = str(lab["directory"] / "support" / "tickets" / ticket / "jobs")
        deadline = time.monotonic() + 120
        pids: list[int] = []
        while time.monotonic() < deadline and job.poll() is None:
            jobs = sorted(Path(marker).iterdir())
            events = list(jobs[-1].glob("artifacts/*/job_events/*.json")) if jobs else []
            started = any("Ask the application for its health" in p.read_text() for p in events)
            pids = _playbook_pids(marker) if started else []
            if pids:
                break
            time.sleep(0.3)
        assert pids, "the job's ansible-playbook never reached the health task"
        time.sleep(2)  # mid-way: the health task is retrying
        # The first one is the playbook's main process (its forks are children of it).
        os.kill(min(pids), signal.SIGKILL)
        output, _ = job.communicate(timeout=120)
    finally:
        on_terminal("sr-01", "systemctl start ipm-app")
    lab["outputs"].append(output)
    assert job.returncode == 4, output
    assert "KILLED" in output
    job_dir, info = last_job(lab, ticket)
    assert info["status"] == "killed"
    assert_complete(job_dir, "killed")
    assert job_events(lab, ticket)[-1].data["status"] == "killed"
    verified = audit_verify(lab)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_eight_jobs_at_once(lab):
    try:
        boot(TERMINALS)  # the first two are up already
        with ThreadPoolExecutor(len(TERMINALS)) as pool:
            results = list(pool.map(lambda name: run(lab, "diagnostics", name), TERMINALS))
    finally:
        stop(TERMINALS[2:])
    for name, result in zip(TERMINALS, results, strict=True):
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        job_dir, info = last_job(lab, lab["tickets"][name])
        assert_complete(job_dir)
        assert (job_dir / "bundle" / name / "facts.json").is_file()
        assert job_events(lab, lab["tickets"][name])[-1].data["ident"] == info["ident"]
    verified = audit_verify(lab)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_canary_is_in_no_artifact_and_not_in_the_audit_log(lab):
    canary = lab["canary"]
    checked = 0
    for root in (lab["directory"] / "support", lab["directory"] / "audit"):
        for path in root.rglob("*"):
            if path.is_file():
                checked += 1
                assert canary.encode() not in path.read_bytes(), path
    assert checked > 100
    for output in lab["outputs"]:
        assert canary not in output
    audit = (lab["directory"] / "audit" / "audit.jsonl").read_text()
    assert '"ticket_id": "INC-' in audit or '"ticket_id":"INC-' in audit
