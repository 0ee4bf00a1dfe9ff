"""Runbook jobs of a ticket as their folders hold them, and the jobs whose ``ipm-support run`` died.

While ``ipm-support run`` (:func:`ipm_tools.support.runner.run_runbook`) runs a job it holds an
exclusive ``flock`` on ``<job dir>/job.lock``, taken before ``job.json`` says ``running`` and released
only after the job's end is written to ``job.json`` and noted on the ticket. The kernel releases the
lock when the process ends however it ends (SIGKILL, a crash, the machine's power), so a reader that
can take the lock knows nobody is running the job any more; a reused process id cannot fool it (the
lock belongs to an open file of the process, not to its number). ``job.json`` also records the pid and
the process's start time, for people and for job folders without a lock file.

:func:`reconcile` (called by ``ipm-support ticket show``, ``ipm-support jobs`` and before a new
``ipm-support run`` on the ticket) turns such a dead job into status ``interrupted`` in its
``job.json`` (written to a temporary name, then renamed), with what its artifacts hold (events, task
results, the last task), and notes ``job_finished`` on the ticket once; a job whose end was written
but not noted (the tool died in between) is noted with its own status. The reader holds the job's lock
while it does this, so two readers never note a job twice. On a read-only support dir it reports the
same status without writing (``persisted`` false).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .tickets import StoreError, TicketError, TicketStore, iso_utc

LOCK_FILE = "job.lock"
JOB_FILE = "job.json"
INTERRUPTED = "interrupted"
RESULT_EVENTS = ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped")


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def hold(job_dir: Path) -> int:
    """Take the job's lock (a new job: nobody else holds it); the descriptor stays open while the job runs."""
    fd = os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {process_start(os.getpid()) or ''}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def _try_lock(job_dir: Path):
    """Yield True when the job's lock could be taken (nobody runs the job), False when it is held."""
    try:
        fd = os.open(job_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield None  # no lock file (a job folder of an older tool), or not ours to read: the pid decides
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _pid_alive(info: dict) -> bool:
    pid, started = info.get("pid"), info.get("pid_start")
    if not isinstance(pid, int) or pid <= 0:
        return False
    now = process_start(pid)
    return now is not None and (started is None or str(started) == now)


@dataclass
class JobView:
    """One job folder as a reader sees it."""

    ident: str
    job_dir: str
    status: str
    runbook: str = ""
    terminal: str = ""
    operator: str = ""
    started_utc: str | None = None
    finished_utc: str | None = None
    message: str = ""
    events: int = 0
    task_results: int = 0
    last_task: str = ""
    persisted: bool = True
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "info"}

    def line(self) -> str:
        text = f"{self.ident}  {self.runbook or '?'} on {self.terminal or '?'}  {self.status}"
        if self.status == INTERRUPTED:
            text += f" ({self.events} event(s), {self.task_results} task result(s)"
            text += f", last task {self.last_task!r})" if self.last_task else ")"
        return text


def artifacts_summary(job_dir: Path, ident: str) -> tuple[int, int, str]:
    """(events, task results, the last task started) kept in the job's ``job_events``."""
    events_dir = job_dir / "artifacts" / ident / "job_events"
    names = []
    with contextlib.suppress(OSError):
        names = [p for p in events_dir.iterdir() if p.suffix == ".json"]

    def counter(path: Path) -> int:
        head = path.name.split("-", 1)[0]
        return int(head) if head.isdigit() else 0

    results, last = 0, ""
    for path in sorted(names, key=counter):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") in RESULT_EVENTS:
            results += 1
        if event.get("event") == "playbook_on_task_start":
            last = str((event.get("event_data") or {}).get("task") or "")
    return len(names), results, last


def read_info(job_dir: Path) -> dict | None:
    try:
        info = json.loads((job_dir / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def write_info(job_dir: Path, info: dict) -> None:
    """``job.json`` written to a temporary name, then renamed: a reader sees the old or the new one, whole."""
    target = job_dir / JOB_FILE
    temporary = job_dir / f".{JOB_FILE}.{os.getpid()}.tmp"
    try:
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(info, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def is_running(job_dir: Path, info: dict | None = None) -> bool:
    """Whether some process still runs the job (its lock is held; without a lock file: its pid lives)."""
    with _try_lock(job_dir) as free:
        if free is None:
            return _pid_alive(info if info is not None else (read_info(job_dir) or {}))
        return not free


def _view(job_dir: Path, info: dict) -> JobView:
    return JobView(
        ident=str(info.get("ident") or job_dir.name),
        job_dir=str(job_dir),
        status=str(info.get("status") or "unknown"),
        runbook=str(info.get("runbook") or ""),
        terminal=str(info.get("terminal") or ""),
        operator=str(info.get("operator") or ""),
        started_utc=info.get("started_utc"),
        finished_utc=info.get("finished_utc"),
        message=str(info.get("message") or ""),
        info=info,
    )


def _interrupted(job_dir: Path, info: dict, now: str) -> dict:
    ident = str(info.get("ident") or job_dir.name)
    events, results, last = artifacts_summary(job_dir, ident)
    hold_ = f", the last task started was {last!r}" if last else ""
    message = (
        f"the ipm-support process running this job ended without recording its end (killed or crashed); "
        f"the artifacts hold {events} event(s) and {results} task result(s){hold_}; "
        "the audit log holds what ran (ipm-audit verify); check the terminal, then run the runbook again"
    )
    return dict(
        info,
        status=INTERRUPTED,
        rc=None,
        exit_code=4,
        finished_utc=None,
        detected_utc=now,
        message=message,
        artifacts={"events": events, "task_results": results, "last_task": last},
    )


def reconcile(store: TicketStore, ticket_id: str, actor: str) -> list[JobView]:
    """The ticket's jobs, oldest first; dead ``running`` jobs become ``interrupted`` (see the module docstring)."""
    ticket = store.get(ticket_id)
    jobs_dir = store.support_dir / "tickets" / ticket.id / "jobs"
    try:
        folders = sorted(p for p in jobs_dir.iterdir() if p.is_dir())
    except OSError:
        return []
    noted = None
    views = []
    for job_dir in folders:
        info = read_info(job_dir)
        if info is None:
            if (job_dir / JOB_FILE).exists():
                views.append(JobView(job_dir.name, str(job_dir), "unknown", message="job.json is unreadable"))
            continue  # a folder being created (its job.json comes right after the lock)
        view = _view(job_dir, info)
        with _try_lock(job_dir) as free:
            alive = _pid_alive(info) if free is None else not free
            if alive:
                views.append(view)
                continue
            info = read_info(job_dir) or info  # re-read under the lock: another reader may have done it
            if noted is None:
                noted = {e.data.get("ident") for e in store.events(ticket.id) if e.kind == "job_finished"}
            ident = str(info.get("ident") or job_dir.name)
            if info.get("status") == "running":
                info = _interrupted(job_dir, info, iso_utc(store.clock()))
                try:
                    write_info(job_dir, info)
                except OSError:
                    view = _view(job_dir, info)
                    view.persisted = False
                    _fill(view, info)
                    views.append(view)
                    continue
            view = _view(job_dir, info)
            _fill(view, info)
            if ident not in noted:
                try:
                    _note(store, ticket.id, job_dir, info, actor)
                    noted.add(ident)
                except (StoreError, TicketError, OSError):
                    view.persisted = False
            views.append(view)
    return views


def _fill(view: JobView, info: dict) -> None:
    kept = info.get("artifacts") or {}
    view.events = int(kept.get("events") or 0)
    view.task_results = int(kept.get("task_results") or 0)
    view.last_task = str(kept.get("last_task") or "")


def _note(store: TicketStore, ticket_id: str, job_dir: Path, info: dict, actor: str) -> None:
    status = str(info.get("status"))
    runbook, terminal = info.get("runbook", "?"), info.get("terminal", "?")
    text = f"runbook {runbook} on {terminal}: {status}"
    if info.get("message"):
        text += f": {info['message']}"
    data = {
        "runbook": runbook,
        "terminal": terminal,
        "ident": info.get("ident"),
        "job_dir": str(job_dir),
        "status": status,
        "rc": info.get("rc"),
        "exit_code": info.get("exit_code"),
        "detected_by": actor,
    }
    store.note(ticket_id, str(info.get("operator") or actor), text[:9000], kind="job_finished", data=data)


def all_jobs(store: TicketStore, actor: str, ticket_id: str | None = None) -> list[tuple[str, JobView]]:
    """(ticket id, job) of one ticket or of every ticket that has job folders, reconciled."""
    if ticket_id is not None:
        ticket = store.get(ticket_id)
        return [(ticket.id, view) for view in reconcile(store, ticket.id, actor)]
    found = []
    for ticket in store.list():
        if (store.support_dir / "tickets" / ticket.id / "jobs").is_dir():
            found.extend((ticket.id, view) for view in reconcile(store, ticket.id, actor))
    return found
