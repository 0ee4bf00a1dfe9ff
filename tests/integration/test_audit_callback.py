"""End to end: real ansible-playbook runs (local connection) with ipm.fleet.audit, then ipm-audit on the log.

Canary secrets are planted in inventory variables (plain and vault-encrypted), a no_log task and literal
module arguments; none of them may appear in any file the callback writes nor in any ipm-audit output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CANARY_PLAIN = "canary-plain-5d1e0c"  # inventory var with a secret-looking name
CANARY_VAULT = "canary-vault-93ab27"  # vault-encrypted inventory var with a harmless name
CANARY_NOLOG = "canary-nolog-4c7f10"  # only ever used by a no_log task
CANARY_ARG = "canary-arg-b81d55"  # literal module argument under a secret-looking key
CANARIES = (CANARY_PLAIN, CANARY_VAULT, CANARY_NOLOG, CANARY_ARG)

PLAYBOOK = f"""\
- name: Maintain terminals
  hosts: all
  gather_facts: false
  vars:
    nolog_value: "{CANARY_NOLOG}"
  tasks:
    - name: Write the database settings
      ansible.builtin.copy:
        content: "db_url=postgres://app@db/app\\nconn_secret_hint=see vault\\nvalue={{{{ app_db_password }}}}\\n"
        dest: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}-db.conf"
        mode: "0600"
    - name: Write the vaulted blob
      ansible.builtin.copy:
        content: "blob={{{{ app_setting_blob }}}}\\n"
        dest: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}-blob.conf"
        mode: "0600"
    - name: Hidden step
      ansible.builtin.copy:
        content: "{{{{ nolog_value }}}}\\n"
        dest: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}-nolog.txt"
        mode: "0600"
      no_log: true
    - name: Remember a token
      ansible.builtin.set_fact:
        service_token: "{CANARY_ARG}"
    - name: Check the terminal's health (fails on term-c)
      ansible.builtin.command: "{{{{ 'false' if inventory_hostname == 'term-c' else 'true' }}}}"
      changed_when: false
    - name: Mark the change done
      ansible.builtin.file:
        path: "{{{{ out_dir }}}}/{{{{ inventory_hostname }}}}-final"
        state: touch
        mode: "0644"
"""


def _cfg(project: Path, **options) -> Path:
    lines = [
        "[defaults]",
        f"collections_path = {ROOT / 'collections'}",
        "callbacks_enabled = ipm.fleet.audit",
        "retry_files_enabled = false",
        "stdout_callback = default",
        "[callback_ipm_audit]",
    ]
    lines += [f"{key} = {value}" for key, value in options.items()]
    cfg = project / f"ansible-{abs(hash(tuple(options.items())))}.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _run(project: Path, cfg: Path, playbook: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(cfg), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.pop("IPM_OPERATOR", None)
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory.yml", playbook, *extra],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _audit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ipm-audit"), *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = tmp_path_factory.mktemp("audit-e2e")
    (project / "out").mkdir()
    (project / "vault-pass").write_text("correct horse battery staple\n")
    vaulted = subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", "vault-pass", CANARY_VAULT],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    vaulted = vaulted.strip().replace("\n", "\n            ")
    (project / "inventory.yml").write_text(
        f"""\
all:
  vars:
    ansible_connection: local
    ansible_python_interpreter: {sys.executable}
    out_dir: {project / "out"}
  children:
    customer_acme:
      vars:
        ipm_customer_name: ACME Parking
      children:
        site_par01:
          vars:
            ipm_site_timezone: Europe/Paris
          hosts:
            term-a:
              ipm_terminal_id: PAR01-T001
              ipm_customer_id: acme
              ipm_site_id: par01
              app_db_password: {CANARY_PLAIN}
              app_setting_blob: {vaulted}
            term-b:
              ipm_terminal_id: PAR01-T002
              ipm_customer_id: acme
              ipm_site_id: par01
              app_db_password: {CANARY_PLAIN}
              app_setting_blob: plain-blob
        site_syd01:
          vars:
            ipm_site_timezone: Australia/Sydney
          hosts:
            term-c:
              ipm_terminal_id: SYD01-T001
              ipm_customer_id: acme
              ipm_site_id: syd01
              app_db_password: {CANARY_PLAIN}
              app_setting_blob: plain-blob
"""
    )
    (project / "maintain.yml").write_text(PLAYBOOK)
    return project


@pytest.fixture(scope="module")
def recorded(project):
    log = project / "audit" / "audit.jsonl"
    cfg = _cfg(project, log_path=log, key_file=project / "keys" / "audit.key", checkpoint_interval=5)
    run = _run(
        project,
        cfg,
        "maintain.yml",
        "--vault-password-file",
        "vault-pass",
        "--diff",
        "-e",
        "change_id=CHG-42 ticket_id=TCK-7 maintenance_type=corrective ipm_operator=alice",
    )
    assert run.returncode == 2, run.stdout + run.stderr  # term-c failed on purpose
    records = [json.loads(line) for line in log.read_bytes().splitlines()]
    return {"run": run, "log": log, "key": project / "keys" / "audit.key", "records": records}


def test_run_start_records_who_why_and_what(recorded):
    start = recorded["records"][0]
    assert start["kind"] == "run_start"
    data = start["data"]
    assert data["operator"] == "alice" and data["operator_source"] == "extra_var:ipm_operator"
    assert data["change_id"] == "CHG-42" and data["ticket_id"] == "TCK-7"
    assert data["maintenance_type"] == "corrective"
    assert data["extra_vars_keys"] == ["change_id", "ipm_operator", "maintenance_type", "ticket_id"]
    assert data["playbook"].endswith("maintain.yml")
    assert data["check_mode"] is False and data["diff_mode"] is True
    assert data["controller"]


def test_every_task_result_per_host_is_recorded_with_site_time(recorded):
    tasks = [r["data"] for r in recorded["records"] if r["kind"] == "task"]
    by = {(t["host"], t["task"]): t for t in tasks}
    # 5 tasks x 3 hosts, plus the last task on the two hosts still in the play.
    assert len(tasks) == 17
    first = by[("term-a", "Write the database settings")]
    assert first["module"] == "ansible.builtin.copy"
    assert (first["terminal"], first["customer"], first["site"]) == ("PAR01-T001", "acme", "par01")
    assert first["status"] == "ok" and first["changed"] is True
    assert first["args"]["dest"].endswith("term-a-db.conf")
    assert first["diff"][0]["after"].startswith("db_url=postgres://app@db/app")
    assert first["site_timezone"] == "Europe/Paris"
    assert first["site_time"][-6:] in ("+01:00", "+02:00")
    assert first["duration_s"] is not None and first["started"] <= first["ended"]
    sydney = by[("term-c", "Write the database settings")]
    assert sydney["site_time"][-6:] in ("+10:00", "+11:00")
    failed = by[("term-c", "Check the terminal's health (fails on term-c)")]
    assert failed["status"] == "failed" and failed["rc"] == 1
    assert ("term-c", "Mark the change done") not in by
    assert by[("term-a", "Mark the change done")]["changed"] is True
    hidden = by[("term-b", "Hidden step")]
    assert hidden["no_log"] is True and "diff" not in hidden and isinstance(hidden["args"], str)
    assert by[("term-a", "Remember a token")]["args"]["service_token"] == "********"
    end = recorded["records"][-2]
    assert end["kind"] == "run_end"
    assert end["data"]["totals"]["failures"] == 1
    assert end["data"]["hosts"]["term-c"]["failures"] == 1
    assert recorded["records"][-1]["kind"] == "checkpoint"


def test_log_verifies(recorded):
    result = _audit("--log", str(recorded["log"]), "verify", "--key-file", str(recorded["key"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK ")


def test_canaries_appear_nowhere(project, recorded, tmp_path):
    log = str(recorded["log"])
    outputs = {
        "list": _audit("--log", log, "list", "--kind", "all").stdout,
        "show": _audit("--log", log, "show", "--kind", "all").stdout,
        "stats": _audit("--log", log, "stats").stdout,
    }
    for fmt in ("csv", "json"):
        target = tmp_path / f"export.{fmt}"
        assert _audit("--log", log, "export", "--format", fmt, "-o", str(target)).returncode == 0
        outputs[f"export.{fmt}"] = target.read_text()
    for path in sorted((project / "audit").iterdir()):
        outputs[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert len(outputs["export.csv"].splitlines()) == 18
    for name, text in outputs.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} leaked into {name}"
    # The terminal really received the secrets (so the canaries were live), the log did not.
    assert CANARY_PLAIN in (project / "out" / "term-a-db.conf").read_text()
    assert CANARY_VAULT in (project / "out" / "term-a-blob.conf").read_text()
    # ansible's own output hides what no_log hides.
    stdout = recorded["run"].stdout + recorded["run"].stderr
    assert CANARY_NOLOG not in stdout


def test_filters_query_and_stats(recorded):
    log = str(recorded["log"])
    listed = _audit("--log", log, "list", "--site", "syd01", "--failed")
    assert listed.returncode == 0
    assert len(listed.stdout.splitlines()) == 1 and "SYD01-T001" in listed.stdout
    changed = json.loads(_audit("--log", log, "list", "--json", "--changed", "--operator", "alice").stdout)
    assert {r["task"] for r in changed} == {
        "Write the database settings",
        "Write the vaulted blob",
        "Hidden step",
        "Mark the change done",
    }
    query = _audit("--log", log, "list", "--change", "CHG-42", "--query", "[?status=='failed'].terminal")
    assert json.loads(query.stdout) == ["SYD01-T001"]
    today = recorded["records"][0]["time"][:10]
    assert _audit("--log", log, "list", "--since", today, "--tz", "site").stdout.count("\n") == 17
    assert _audit("--log", log, "list", "--until", "2000-01-01").stdout == ""
    stats = json.loads(_audit("--log", log, "stats", "--json").stdout)
    assert stats["runs"] == 1 and stats["task_results"] == 17 and stats["by_status"]["failed"] == 1


def test_bad_input_is_one_clear_line(recorded, tmp_path):
    log = str(recorded["log"])
    for args, expected in (
        (("--log", str(tmp_path / "none.jsonl"), "list"), "no audit log there"),
        (("--log", log, "list", "--query", "[?"), "not a valid JMESPath"),
        (("--log", log, "list", "--since", "yesterday"), "expected a date"),
        (("--log", log, "list", "--since", "2026-01-01", "--tz", "Mars/Olympus"), "not an IANA time zone"),
        (("--log", log, "verify", "--key-file", str(tmp_path / "nokey")), "key file not found"),
    ):
        result = _audit(*args)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and expected in result.stderr and "Traceback" not in result.stderr


def test_tampered_log_fails_verify_naming_the_record(recorded, tmp_path):
    lines = recorded["log"].read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"changed":true', b'"changed":false', 1)
    if b'"changed":false' not in lines[3]:
        lines[3] = lines[3].replace(b'"status":"ok"', b'"status":"skipped"', 1)
    forged = tmp_path / "audit.jsonl"
    forged.write_bytes(b"".join(lines))
    (tmp_path / "audit.jsonl.head").write_bytes(Path(str(recorded["log"]) + ".head").read_bytes())
    result = _audit("--log", str(forged), "verify", "--key-file", str(recorded["key"]))
    assert result.returncode == 1
    assert "line 4 (seq 3)" in result.stdout and "altered" in result.stdout


FAIL_CLOSED_PLAYBOOK = """\
- name: Fail closed
  hosts: term-a,term-b
  gather_facts: false
  tasks:
    - name: First change
      ansible.builtin.file:
        path: "{{ out_dir }}/{{ inventory_hostname }}-fc-first"
        state: touch
        mode: "0644"
    - name: Damage the audit log
      ansible.builtin.shell: "echo 'not a record' >> {{ audit_log }}"
      run_once: true
      changed_when: true
    - name: Next change, must not happen
      ansible.builtin.file:
        path: "{{ out_dir }}/{{ inventory_hostname }}-fc-next"
        state: touch
        mode: "0644"
"""


def test_fail_closed_stops_before_the_next_change(project):
    (project / "fc.yml").write_text(FAIL_CLOSED_PLAYBOOK)
    log = project / "fc" / "audit.jsonl"
    cfg = _cfg(project, log_path=log, key_file=project / "keys" / "fc.key", fail_closed="true")
    run = _run(project, cfg, "fc.yml", "-e", f"audit_log={log}")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "Stopping the run before the next task" in run.stdout + run.stderr
    assert (project / "out" / "term-a-fc-first").exists()
    assert not (project / "out" / "term-a-fc-next").exists()
    assert not (project / "out" / "term-b-fc-next").exists()


def test_fail_closed_when_the_log_cannot_even_be_opened(project):
    blocker = project / "not-a-dir"
    blocker.write_text("x")
    cfg = _cfg(project, log_path=blocker / "audit.jsonl", key_file=project / "keys" / "fc2.key")
    (project / "fc2.yml").write_text(FAIL_CLOSED_PLAYBOOK.replace("fc-", "fc2-"))
    run = _run(project, cfg, "fc2.yml", "-e", f"audit_log={blocker}/audit.jsonl")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "cannot open the audit log" in run.stdout + run.stderr
    assert not (project / "out" / "term-a-fc2-first").exists()
    assert "TASK [First change]" not in run.stdout


def test_fail_open_warns_and_goes_on(project):
    blocker = project / "not-a-dir-either"
    blocker.write_text("x")
    cfg = _cfg(project, log_path=blocker / "audit.jsonl", key_file=project / "keys" / "fo.key", fail_closed="false")
    (project / "fo.yml").write_text(FAIL_CLOSED_PLAYBOOK.replace("fc-", "fo-").replace("Damage", "Do not damage"))
    run = _run(project, cfg, "fo.yml", "-e", "audit_log=/dev/null")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "UNRECORDED" in run.stdout + run.stderr
    assert (project / "out" / "term-b-fo-next").exists()
