"""Run a runbook on one terminal for a ticket, through ansible-runner.

:func:`run_runbook` checks what it is asked (the runbook, the terminal in the registry, the ticket, the
ticket's customer against the terminal's, the authorization), notes ``job_started`` on the ticket,
runs ``ansible_runner.run`` with a fresh private data dir per job under the ticket's folder
(``<support_dir>/tickets/<id>/jobs/<ident>/``), streams one line per task result, and notes
``job_finished`` with the outcome. What it keeps on disk is redacted with the audit log's rule
(``plugins/plugin_utils/audit_redact.py``): runner's own event files and stdout file are not written,
the job's events are written redacted by this module instead, and runner's ``command`` file (the
environment) is redacted as soon as the job starts. The vault password stays in its own file outside
the job folder (``--vault-password-file``); nothing secret is put in runner's ``env/`` files.

Outcomes (``RunResult.status``) and exit codes of ``ipm-support run``:

=============  ====  ==========================================================================
status         exit  meaning
=============  ====  ==========================================================================
successful     0     every task ran, none failed
failed         1     a task failed (the runbook's message says why)
unreachable    3     the terminal did not answer over SSH
failed         1     ansible-playbook stopped before its first task (its error line is the message:
                   a limit that matches no host, a playbook that does not parse)
killed         4     ansible-playbook ended without its final statistics (killed, crashed)
interrupted    4     (seen later by a reader) the ipm-support process itself died mid-job: ``jobs.py``
(RunError)     2     bad input or denied: nothing was started
=============  ====  ==========================================================================
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import os_user
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_redact import Redactor
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry import load_fleet
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import is_vault_value
from ipm_tools import PROJECT_ROOT

from . import jobs
from .runbooks import CatalogError, Runbook, get_runbook
from .tickets import TicketError, TicketStore

EXIT_CODES = {"successful": 0, "failed": 1, "unreachable": 3, "killed": 4}
EXIT_BAD_INPUT = 2
DEFAULT_KEEP_JOBS = 20
KEPT_ENV = ("ANSIBLE_", "IPM_", "PATH")
RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
    "runner_item_on_failed": "failed",
}


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
SHIM_DIR = Path(__file__).resolve().parent / "shim"


def _real_playbook(bindir: str) -> str:
    beside = Path(bindir) / "ansible-playbook"
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not found:
        raise RunError(
            "ansible-playbook: not found beside this Python nor in PATH; install ansible-core (./run bootstrap)"
        )
    return found


class RunError(Exception):
    """Bad input or a refusal: one line, nothing started (exit code 2)."""


@dataclass
class TaskLine:
    task: str
    host: str
    status: str
    changed: bool = False
    message: str = ""

    def line(self) -> str:
        flag = " (changed)" if self.changed else ""
        text = f"  {self.status:<11} {self.host}  {self.task}{flag}"
        return text + (f": {self.message}" if self.message and self.status in ("failed", "unreachable") else "")


@dataclass
class RunResult:
    runbook: str
    terminal: str
    ticket_id: str
    operator: str
    ident: str
    job_dir: str
    status: str  # successful | failed | unreachable | killed
    rc: int | None
    started_utc: str
    finished_utc: str
    duration_s: float
    first_task_s: float | None  # seconds from the call to the first task event
    tasks: list[TaskLine] = field(default_factory=list)
    message: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    @property
    def ok(self) -> bool:
        return self.status == "successful"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data

    def summary(self) -> str:
        """The one-screen result."""
        counts: dict[str, int] = {}
        for task in self.tasks:
            counts[task.status] = counts.get(task.status, 0) + 1
        changed = sum(1 for task in self.tasks if task.changed)
        lines = [
            f"{self.runbook} on {self.terminal} for {self.ticket_id}: {self.status.upper()} "
            f"(exit {self.exit_code}) in {self.duration_s:.1f} s",
            "  tasks: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f", {changed} changed",
        ]
        if self.message:
            lines.append(f"  {self.message}")
        lines.append(f"  operator {self.operator}, job {self.ident}")
        lines.append(f"  artifacts: {self.job_dir}")
        return "\n".join(lines)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def find_inventory(path: str | os.PathLike) -> Path:
    """The registry inventory configuration (``*.ipm_registry.yml``) of an inventory directory, or the file itself."""
    path = Path(path).expanduser().absolute()  # runner jobs run in their own directory
    if path.is_file():
        return path
    if path.is_dir():
        configs = sorted(path.glob("*.ipm_registry.y*ml"))
        if configs:
            return configs[0]
    raise RunError(
        f"inventory {path}: no ipm.fleet.registry configuration (*.ipm_registry.yml) there: "
        "give --inventory DIR of a registry inventory (inventories/demo is an example)"
    )


def _secret_values(customer: Mapping, site: Mapping, terminal: Mapping, vault_password_file: str | None) -> list[str]:
    """The plaintext of the terminal's vaulted registry parameters (for masking), when the password is given."""
    if not vault_password_file:
        return []
    from ansible.parsing.vault import VaultLib, VaultSecret

    try:
        secret = Path(vault_password_file).read_bytes().strip()
    except OSError as error:
        raise RunError(f"vault password file {vault_password_file}: cannot read: {error.strerror}") from None
    vault = VaultLib([("default", VaultSecret(secret))])
    found = []

    def walk(value):
        if is_vault_value(value):
            with contextlib.suppress(Exception):
                found.append(vault.decrypt(str(value)).decode())
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for layer in (customer, site, terminal):
        walk(layer.get("parameters") or {})
    return found


def _authorize(operator, book: Runbook, customer, ticket, terminal, justification, registry, contract):
    """The authorization policy's decision (``ipm_tools.authz_check``, recorded in the audit chain); RunError when denied."""
    from ipm_tools import authz_check

    decision = authz_check.authorize_run(
        operator,
        f"runbook:{book.name}",
        customer=customer,
        maintenance_type=book.maintenance_type if book.changes_terminal else None,
        justification=justification,
        ticket_id=ticket,
        terminals=[terminal],
        changes_terminal=book.changes_terminal,
        registry=registry,
        contract=contract,  # read with the registry above: not loaded a second time
    )
    if not decision.allowed:
        raise RunError(f"DENIED: {decision.operator} may not run runbook {book.name} on {terminal}: {decision.reason}")
    return decision


def _keep_jobs(keep_jobs: int | None) -> int:
    """The job folders kept per ticket: ``keep_jobs``, else $IPM_SUPPORT_KEEP_JOBS, else 20; at least 1."""
    where, value = "--keep-jobs", keep_jobs
    if value is None:
        where, value = "IPM_SUPPORT_KEEP_JOBS", os.environ.get("IPM_SUPPORT_KEEP_JOBS") or DEFAULT_KEEP_JOBS
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, bool):
        raise RunError(f"{where} {value!r}: expected a whole number of job folders to keep, 1 or more")
    return number


def _prune(jobs_dir: Path, keep: int, current: Path) -> None:
    folders = sorted((p for p in jobs_dir.iterdir() if p.is_dir() and p != current), key=lambda p: p.name)
    for old in folders[: max(0, len(folders) - (keep - 1))]:
        if not jobs.is_running(old):  # a job running in parallel on the same ticket keeps its folder
            shutil.rmtree(old, ignore_errors=True)


class _Job:
    """What one job collects from runner's events (called from runner's thread)."""

    def __init__(self, ident, artifact_dir: Path, redactor: Redactor, progress, started: float):
        self.ident = ident
        self.artifact_dir = artifact_dir
        self.redactor = redactor
        self.progress = progress
        self.started = started
        self.first_task_s = None
        self.tasks: list[TaskLine] = []
        self.stats = None
        self.command_redacted = False
        self.lock = threading.Lock()
        self.events_dir = artifact_dir / "job_events"
        self.stdout = None
        self.errors: list[str] = []

    def _redact_command(self):
        command = self.artifact_dir / "command"
        try:
            data = json.loads(command.read_text())
        except (OSError, ValueError):
            return
        # Runner records the whole environment: keep only what the job was given (no stray secret).
        env = data.get("env") or {}
        data["env"] = {key: value for key, value in env.items() if key.startswith(KEPT_ENV)}
        data = self.redactor.value(data)
        command.write_text(json.dumps(data))
        self.command_redacted = True

    def handle(self, event: dict) -> bool:
        with self.lock:
            if not self.command_redacted:
                self._redact_command()
            name = event.get("event", "")
            if name == "playbook_on_task_start" and self.first_task_s is None:
                self.first_task_s = time.monotonic() - self.started
            clean = self.redactor.value(event)
            self.events_dir.mkdir(parents=True, exist_ok=True)
            target = self.events_dir / f"{event.get('counter', 0)}-{event.get('uuid', 'event')}.json"
            temporary = target.with_suffix(".tmp")
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
                json.dump(clean, handle)
            os.replace(temporary, target)
            if clean.get("stdout"):
                if self.stdout is None:
                    self.stdout = open(  # noqa: SIM115 - kept open for the job's whole stream
                        os.open(self.artifact_dir / "stdout", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a"
                    )
                self.stdout.write(clean["stdout"] + "\n")
                self.stdout.flush()
            data = clean.get("event_data") or {}
            if name == "verbose" and clean.get("stdout"):
                line = " ".join(ANSI_ESCAPE.sub("", clean["stdout"]).split())
                if line.startswith(("[ERROR]", "ERROR!")):
                    self.errors.append(line[:300])
            if name in RESULT_EVENTS:
                result = data.get("res") or {}
                message = result.get("msg") or result.get("stderr") or "" if isinstance(result, dict) else ""
                task = TaskLine(
                    task=data.get("task", ""),
                    host=data.get("host", ""),
                    status=RESULT_EVENTS[name],
                    changed=bool(isinstance(result, dict) and result.get("changed")),
                    message=" ".join(str(message).split())[:300],
                )
                if name == "runner_on_failed" and data.get("ignore_errors"):
                    task.status = "ignored"
                self.tasks.append(task)
                if self.progress is not None:
                    self.progress(task.line())
            elif name == "playbook_on_stats":
                self.stats = data
        return False  # runner writes no raw copy

    def close(self):
        if self.stdout is not None:
            self.stdout.close()


def _outcome(job: _Job, terminal: str, rc) -> tuple[str, str]:
    stats = job.stats
    if stats is None and job.errors and isinstance(rc, int) and 0 < rc < 128:
        # ansible-playbook refused to start (no host, a parse error): its own error, not a kill.
        where = "before its first task" if job.first_task_s is None else "with an error"
        return "failed", f"ansible-playbook stopped {where} (exit {rc}): {job.errors[0]}"
    if stats is None:
        return "killed", (
            f"ansible-playbook ended without its final statistics (exit {rc}): the job was killed or crashed; "
            "what ran is in the job's events and the audit log"
        )
    if terminal in (stats.get("dark") or {}):
        failed = [t for t in job.tasks if t.status == "unreachable"]
        reason = failed[-1].message if failed else "no answer over SSH"
        return "unreachable", f"{terminal} did not answer: {reason}"
    if terminal in (stats.get("failures") or {}) or rc not in (0, None):
        failed = [t for t in job.tasks if t.status == "failed"]
        reason = f"{failed[-1].task}: {failed[-1].message}" if failed else f"ansible-playbook exit {rc}"
        return "failed", reason
    return "successful", ""


def run_runbook(
    runbook: str,
    terminal: str,
    ticket: str,
    *,
    support_dir: str | os.PathLike,
    inventory: str | os.PathLike | None = None,
    operator: str | None = None,
    justification: str | None = None,
    extra_vars: Mapping[str, object] | None = None,
    vault_password_file: str | None = None,
    progress: Callable[[str], None] | None = None,
    keep_jobs: int | None = None,
    runbooks_root: str | os.PathLike | None = None,
    timeout: int | None = None,
) -> RunResult:
    """Run ``runbook`` on ``terminal`` for ``ticket``; :class:`RunError` when nothing could be started."""
    import ansible_runner

    called = time.monotonic()
    keep = _keep_jobs(keep_jobs)
    try:
        book: Runbook = get_runbook(runbook, runbooks_root)
    except CatalogError as error:
        raise RunError(str(error)) from None
    inventory_file = find_inventory(
        inventory or os.environ.get("IPM_REGISTRY") or PROJECT_ROOT / "inventories" / "demo"
    )
    fleet, problems = load_fleet(str(inventory_file))
    errors = [p for p in problems if getattr(p, "severity", "error") == "error"]
    found = fleet.find_terminal(terminal)
    if found is None:
        hint = f" ({len(errors)} registry problem(s): ipm-registry validate)" if errors else ""
        raise RunError(f"unknown terminal {terminal!r}: not in the registry of {inventory_file}{hint}")
    customer, site, terminal_doc = found
    store = TicketStore(support_dir, registry=str(inventory_file))
    try:
        record = store.get(ticket)
    except TicketError as error:
        raise RunError(str(error)) from None
    if record.customer != customer.get("id"):
        raise RunError(
            f"ticket {record.id} is customer {record.customer}'s, terminal {terminal} is customer "
            f"{customer.get('id')}'s: run runbooks only on the terminals of the ticket's customer"
        )
    if record.status == "closed":
        raise RunError(f"ticket {record.id} is closed: open a new ticket for new work")
    with contextlib.suppress(TicketError, OSError):  # a job of this ticket whose ipm-support died: noted first
        jobs.reconcile(store, record.id, operator or os_user())
    variables = dict(extra_vars or {})
    decision = _authorize(
        operator,
        book,
        record.customer,
        record.id,
        terminal,
        justification,
        str(inventory_file),
        customer.get("contract") or {},
    )
    operator_name = decision.operator

    started_at = utc_now()
    ident = f"{record.id}-{started_at.strftime('%Y%m%dT%H%M%S%fZ')}"
    try:
        jobs_dir = store.folder(record.id) / "jobs"
    except OSError as error:
        raise RunError(f"support dir {store.support_dir}: cannot make the ticket's folder: {error.strerror}") from None
    job_dir = jobs_dir / ident
    artifact_dir = job_dir / "artifacts" / ident
    if vault_password_file:
        vault_path = Path(vault_password_file).resolve()
        if jobs_dir.resolve() in vault_path.parents:
            raise RunError(f"vault password file {vault_path}: keep it outside the job folders")
    secrets = _secret_values(customer, site, terminal_doc, vault_password_file)
    redactor = Redactor()
    for value in secrets:
        redactor.add_secret(value)

    variables.update(
        terminal=terminal,
        ticket_id=record.id,
        ipm_ticket=record.id,
        runbook_output_dir=str(job_dir / "bundle"),
    )
    if operator:
        variables["ipm_operator"] = operator  # honoured only for the policy's service accounts
    if justification:
        variables["justification"] = justification
    redactor.collect(variables)
    try:
        job_dir.mkdir(parents=True, mode=0o700)
        # Held until the job's end is recorded: a reader taking it knows this process is gone (jobs.py).
        lock = jobs.hold(job_dir)
    except OSError as error:
        raise RunError(f"job folder {job_dir}: cannot be made: {error.strerror}; nothing was started") from None
    try:
        return _run_job(
            ansible_runner, store, record, book, terminal, inventory_file, operator_name, variables, redactor,
            vault_password_file, progress, called, started_at, ident, jobs_dir, job_dir, artifact_dir, keep,
            timeout,
        )  # fmt: skip
    finally:
        jobs.release(lock)


def _run_job(
    ansible_runner, store, record, book, terminal, inventory_file, operator_name, variables, redactor,
    vault_password_file, progress, called, started_at, ident, jobs_dir, job_dir, artifact_dir, keep, timeout,
) -> RunResult:  # fmt: skip
    """The job itself, its lock held (see :func:`run_runbook`)."""
    job_info = {
        "ident": ident,
        "runbook": book.name,
        "terminal": terminal,
        "ticket_id": record.id,
        "customer": record.customer,
        "operator": operator_name,
        "started_utc": _iso(started_at),
        "status": "running",
        "pid": os.getpid(),
        "pid_start": jobs.process_start(os.getpid()),
    }
    jobs.write_info(job_dir, job_info)
    note = {"runbook": book.name, "terminal": terminal, "ident": ident, "job_dir": str(job_dir)}
    store.note(record.id, operator_name, f"runbook {book.name} started on {terminal}", kind="job_started", data=note)

    bindir = str(Path(sys.executable).parent)
    envvars = {
        "ANSIBLE_CONFIG": os.environ.get("ANSIBLE_CONFIG") or str(PROJECT_ROOT / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(PROJECT_ROOT / "collections"),
        "ANSIBLE_NOCOLOR": "1",
        # The shim first: the playbook ends when this process dies (shim/ansible-playbook).
        "PATH": os.pathsep.join((str(SHIM_DIR), bindir, os.environ.get("PATH", ""))),
        "IPM_SUPPORT_PLAYBOOK": _real_playbook(bindir),
    }
    cmdline = f"--vault-password-file {vault_password_file}" if vault_password_file else None
    job = _Job(ident, artifact_dir, redactor, progress, called)
    rc = None
    try:
        runner = ansible_runner.run(
            private_data_dir=str(job_dir),
            ident=ident,
            playbook=str(book.path),
            inventory=str(inventory_file.parent if inventory_file.parent.is_dir() else inventory_file),
            limit=terminal,
            extravars=variables,
            envvars=envvars,
            cmdline=cmdline,
            project_dir=str(PROJECT_ROOT),
            event_handler=job.handle,
            suppress_output_file=True,
            quiet=True,
            rotate_artifacts=0,
            timeout=timeout,
        )
        rc = runner.rc
    finally:
        job.close()
        if not job.command_redacted:
            job._redact_command()
    status, message = _outcome(job, terminal, rc)
    finished_at = utc_now()
    result = RunResult(
        runbook=book.name,
        terminal=terminal,
        ticket_id=record.id,
        operator=operator_name,
        ident=ident,
        job_dir=str(job_dir),
        status=status,
        rc=rc,
        started_utc=_iso(started_at),
        finished_utc=_iso(finished_at),
        duration_s=round(time.monotonic() - called, 3),
        first_task_s=None if job.first_task_s is None else round(job.first_task_s, 3),
        tasks=job.tasks,
        message=redactor.text(message),
    )
    job_info.update(
        status=status, rc=rc, finished_utc=result.finished_utc, message=result.message, exit_code=result.exit_code
    )
    jobs.write_info(job_dir, job_info)
    store.note(
        record.id,
        operator_name,
        f"runbook {book.name} on {terminal}: {status}" + (f": {result.message}" if result.message else ""),
        kind="job_finished",
        data={**note, "status": status, "rc": rc, "exit_code": result.exit_code, "duration_s": result.duration_s},
    )
    _prune(jobs_dir, keep, job_dir)
    return result
