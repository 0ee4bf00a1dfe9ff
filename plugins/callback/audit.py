# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: audit
type: notification
short_description: Record every run and task result in the tamper-evident ipm.fleet audit log
description:
  - Appends one hash-chained JSON record per run start, per task result per host and per run end to an
    append-only audit log, with signed checkpoints (HMAC-SHA256) so that altering, cutting or replacing the
    log is detected by C(ipm-audit verify).
  - Records the operator, the controller, the project's git commit, the playbook, limit, tags, check mode,
    change id, ticket id, maintenance type and extra-vars keys; per task and host the customer, site and
    terminal, the module, its (redacted) arguments, status, diff, message, duration, and the time in UTC and
    in the site's time zone (C(ipm_site_timezone)).
  - The operator comes from the extra var C(ipm_operator), else the environment variable C(IPM_OPERATOR),
    else AWX's C(awx_user_name) or C(tower_user_name), else the OS user.
  - C(no_log) results are recorded as a marker only; vault-encrypted values and values of secret-looking
    keys never reach the log.
  - Must be enabled explicitly (C(callbacks_enabled = ipm.fleet.audit)).
version_added: "0.1.0"
author:
  - ipm.fleet maintainers (@ipm-fleet)
requirements:
  - enable in configuration
options:
  log_path:
    description: The audit log (JSON Lines). Its directory is created with mode 0700 when missing.
    type: path
    default: ~/.ipm/audit/audit.jsonl
    env:
      - name: IPM_AUDIT_LOG
    ini:
      - section: callback_ipm_audit
        key: log_path
  key_file:
    description:
      - File holding the checkpoint key (hex). Keep it outside the log's directory and readable only by
        the account that runs playbooks; auditors verify with a copy.
    type: path
    default: ~/.ipm/audit.key
    env:
      - name: IPM_AUDIT_KEY_FILE
    ini:
      - section: callback_ipm_audit
        key: key_file
  create_key:
    description: Create the key file with a new random key when it does not exist.
    type: bool
    default: true
    env:
      - name: IPM_AUDIT_CREATE_KEY
    ini:
      - section: callback_ipm_audit
        key: create_key
  fail_closed:
    description:
      - When the log cannot be written, stop the run before the next task instead of changing terminals
        unrecorded (exit code 3). When false, warn and go on.
    type: bool
    default: true
    env:
      - name: IPM_AUDIT_FAIL_CLOSED
    ini:
      - section: callback_ipm_audit
        key: fail_closed
  checkpoint_interval:
    description: Write a signed checkpoint every this many records (and always at the end of a run).
    type: int
    default: 1000
    env:
      - name: IPM_AUDIT_CHECKPOINT_INTERVAL
    ini:
      - section: callback_ipm_audit
        key: checkpoint_interval
  segment_dir:
    description:
      - Segment mode, for AWX/AAP and other ephemeral runners. Each job writes its own signed chain
        segment in this directory instead of appending to O(log_path); every record is fsync-ed as it is
        written. Segments are named by job (AWX's C(awx_job_id), else the run id), node and run id.
      - Segments a killed job left here are shipped by the next job (or C(ipm-audit ship)).
      - See docs/audit.md, "Segments and the merged trail".
    type: path
    env:
      - name: IPM_AUDIT_SEGMENT_DIR
    ini:
      - section: callback_ipm_audit
        key: segment_dir
  ship_to:
    description:
      - Durable directory (shared storage, an object store's mount) the segments are shipped to at each
        segment checkpoint and at the job's end (copy to a temporary name, fsync, atomic rename), with a
        signed index entry per segment. C(ipm-audit --trail DIR) verifies and reads the merged trail there.
      - Setting it alone turns segment mode on with the segment directory C(~/.ipm/audit/segments).
    type: path
    env:
      - name: IPM_AUDIT_SHIP_DIR
    ini:
      - section: callback_ipm_audit
        key: ship_to
  node:
    description: Name of the execution node in segment names (default the host name).
    type: str
    env:
      - name: IPM_AUDIT_NODE
    ini:
      - section: callback_ipm_audit
        key: node
  segment_checkpoint_interval:
    description: In segment mode, a signed checkpoint and a ship every this many records.
    type: int
    default: 100
    env:
      - name: IPM_AUDIT_SEGMENT_CHECKPOINT_INTERVAL
    ini:
      - section: callback_ipm_audit
        key: segment_checkpoint_interval
  segment_max_records:
    description: A segment ends (reason C(rotate)) after this many records and the job goes on in the next part.
    type: int
    default: 50000
    env:
      - name: IPM_AUDIT_SEGMENT_MAX_RECORDS
    ini:
      - section: callback_ipm_audit
        key: segment_max_records
"""

# Imports follow DOCUMENTATION, as ansible-test validate-modules requires.
import os  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

from ansible import context  # noqa: E402
from ansible.inventory.helpers import get_group_vars  # noqa: E402
from ansible.module_utils.common.text.converters import to_text  # noqa: E402
from ansible.parsing.vault import EncryptedString, VaultHelper  # noqa: E402
from ansible.plugins.callback import CallbackBase  # noqa: E402
from ansible.utils.display import Display  # noqa: E402

from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import MASK  # noqa: E402
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import (  # noqa: E402
    controller_host,
    git_commit,
    normalise_maintenance_type,
    os_user,
    resolve_operator,
    utc_and_site_time,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import (  # noqa: E402
    AuditLogError,
    AuditWriter,
    generate_key,
    load_key,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_redact import NO_LOG_MARKER, Redactor  # noqa: E402
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_segments import (  # noqa: E402
    SegmentWriter,
    salvage,
)

display = Display()

FAIL_CLOSED_EXIT_CODE = 3
# Result keys recorded besides status, changed, diff and msg (module output worth an auditor's eye).
_RESULT_KEYS = ("rc", "stdout", "stderr", "dest", "path", "state", "backup_file")
_LOOP_ITEM_KEYS = ("item", "changed", "failed", "skipped", "msg", "rc", "diff")


def _is_vaulted(value: object) -> bool:
    if isinstance(value, EncryptedString):
        return True
    if isinstance(value, str) and value.__class__ is not str:
        return VaultHelper.get_ciphertext(value, with_tags=False) is not None
    return False


def _plaintext(value: object) -> str | None:
    try:
        return str(value)
    except Exception:  # an undecryptable vault value: nothing to mask, it never reaches a result
        return None


class AuditStop(SystemExit):
    """Raised (in the controller's main thread) to stop the run when the log cannot be written.

    ansible-core hands callback exceptions derived from Exception to a warning handler; SystemExit is not
    an Exception, so it leaves the strategy, runs ansible's cleanup (``finally`` blocks) and ends the process.
    """


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "ipm.fleet.audit"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display=display)
        self._writer: AuditWriter | SegmentWriter | None = None
        self._job = None
        self._redactor = Redactor(is_vaulted=_is_vaulted)
        self._run_id = uuid.uuid4().hex
        self._run_started = False
        self._playbook = None
        self._playbook_dir = None
        self._play = None
        self._play_name = None
        self._hosts: dict[str, dict] = {}
        self._starts: dict[tuple[str, str], tuple[float, str]] = {}
        self._broken: str | None = None
        self._warned = False
        self._records = 0

    # ------------------------------------------------------------------ options and the writer

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self._log_path = self.get_option("log_path")
        self._key_file = self.get_option("key_file")
        self._fail_closed = self.get_option("fail_closed")
        self._interval = self.get_option("checkpoint_interval")
        self._create_key = self.get_option("create_key")
        self._ship_to = self.get_option("ship_to")
        self._segment_dir = self.get_option("segment_dir") or (
            os.path.expanduser("~/.ipm/audit/segments") if self._ship_to else None
        )
        self._node = self.get_option("node") or controller_host()
        self._max_records = self.get_option("segment_max_records")
        self._segment_interval = self.get_option("segment_checkpoint_interval")

    def _open(self):
        key = None
        try:
            if self._create_key and not os.path.exists(os.path.expanduser(self._key_file)):
                generate_key(self._key_file)
                display.warning(
                    f"ipm.fleet.audit: created a new checkpoint key {self._key_file}; keep a copy for auditors"
                )
            key = load_key(self._key_file)
        except (AuditLogError, OSError) as exc:
            self._failure(f"checkpoint key unusable: {exc}")
        if self._segment_dir:
            self._open_segment(key)
            return
        self._writer = AuditWriter(self._log_path, key=key, checkpoint_interval=self._interval).open()

    def _open_segment(self, key):
        """Segment mode: ship what killed jobs left on this node, then write this job's own segment."""
        if key is None:
            raise AuditLogError(f"{self._segment_dir}: segment mode needs the checkpoint key ({self._key_file})")
        for directory in (self._segment_dir, self._ship_to):
            if directory:
                try:
                    os.makedirs(os.path.expanduser(directory), mode=0o700, exist_ok=True)
                except OSError as exc:
                    raise AuditLogError(f"{directory}: cannot create the directory ({exc.strerror})") from None
        if self._ship_to:
            try:
                left = salvage(self._segment_dir, self._ship_to)
            except OSError as exc:
                raise AuditLogError(
                    f"{self._ship_to}: cannot ship left-over segments ({exc.strerror or exc})"
                ) from None
            for name in left:
                display.warning(f"ipm.fleet.audit: shipped {name}, left by a job that did not end")
        # The file itself is opened at the first record, once the job id (awx_job_id) is known.
        self._writer = SegmentWriter(
            self._segment_dir,
            key,
            job=self._job or f"run-{self._run_id[:12]}",
            node=self._node,
            run=self._run_id,
            ship_to=self._ship_to,
            checkpoint_interval=self._segment_interval,
            max_records=self._max_records,
        )

    def _failure(self, why: str):
        """The log cannot be written: stop the run (fail closed) or warn once and go on."""
        self._broken = why
        if self._fail_closed:
            display.error(
                f"ipm.fleet.audit: {why}. Stopping the run before the next task (fail_closed=true): "
                "fix the audit log, then run again."
            )
            raise AuditStop(FAIL_CLOSED_EXIT_CODE)
        if not self._warned:
            self._warned = True
            display.warning(f"ipm.fleet.audit: {why}; the run goes on UNRECORDED (fail_closed=false)")

    def _write(self, kind: str, data: dict, checkpoint: str | None = None):
        try:
            if self._writer is None:
                self._open()
            self._writer.append(kind, data, checkpoint=checkpoint)
            self._records += 1
        except AuditLogError as exc:
            self._failure(str(exc))

    # ------------------------------------------------------------------ run start and end

    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.abspath(to_text(playbook._file_name))
        self._playbook_dir = os.path.dirname(self._playbook)
        if self._writer is not None:
            return  # a second playbook of the same ansible-playbook command: same run, same log
        try:
            self._open()  # fail closed before any task if the log cannot even be opened
        except AuditLogError as exc:
            self._failure(str(exc))

    def v2_playbook_on_play_start(self, play):
        self._play = play
        self._play_name = to_text(play.get_name()).strip()
        self._hosts = {}
        if self._run_started:
            return
        self._run_started = True
        variable_manager = play.get_variable_manager()
        extra_vars = dict(variable_manager.extra_vars) if variable_manager else {}
        self._redactor.collect(extra_vars, _plaintext)
        self._redactor.collect(play.vars or {}, _plaintext)
        operator, source = resolve_operator(extra_vars)
        awx_job = extra_vars.get("awx_job_id", extra_vars.get("tower_job_id"))
        if isinstance(self._writer, SegmentWriter) and awx_job is not None and not self._writer.path:
            self._writer.job = str(awx_job)
        elif awx_job is not None and self._writer is not None and not self._segment_dir:
            display.warning(
                "ipm.fleet.audit: an AWX job writes its audit log inside its container; set IPM_AUDIT_SHIP_DIR "
                "(segment mode, docs/audit.md) or the records are lost with the container"
            )
        try:
            maintenance_type = normalise_maintenance_type(extra_vars.get("maintenance_type"))
        except ValueError as exc:
            display.warning(f"ipm.fleet.audit: {exc}; recorded as given")
            maintenance_type = to_text(extra_vars.get("maintenance_type"))
        cli = context.CLIARGS
        data = {
            "run": self._run_id,
            "operator": operator,
            "operator_source": source,
            "controller": controller_host(),
            "controller_user": os_user(),
            "playbook": self._playbook,
            "project_commit": git_commit(self._playbook_dir) if self._playbook_dir else None,
            "limit": cli.get("subset"),
            "tags": list(cli.get("tags") or ()),
            "skip_tags": list(cli.get("skip_tags") or ()),
            "check_mode": bool(cli.get("check")),
            "diff_mode": bool(cli.get("diff")),
            "change_id": _scalar(extra_vars.get("change_id")),
            "ticket_id": _scalar(extra_vars.get("ticket_id")),
            "maintenance_type": maintenance_type,
            "extra_vars_keys": sorted(str(k) for k in extra_vars),
            "ansible_pid": os.getpid(),
        }
        self._write("run_start", self._redactor.value(data))

    def v2_playbook_on_stats(self, stats):
        hosts = {}
        for name in sorted(stats.processed):
            summary = stats.summarize(name)
            hosts[name] = {k: int(v) for k, v in summary.items()}
        totals = {}
        for summary in hosts.values():
            for k, v in summary.items():
                totals[k] = totals.get(k, 0) + v
        data = {"run": self._run_id, "hosts": hosts, "totals": totals, "records": self._records}
        self._write("run_end", data, checkpoint="run_end")
        if isinstance(self._writer, SegmentWriter):
            try:
                self._writer.end()
            except AuditLogError as exc:
                self._failure(str(exc))
        if self._writer is not None:
            self._writer.close()

    # ------------------------------------------------------------------ per host context

    def _host_context(self, host) -> dict:
        name = host.get_name()
        ctx = self._hosts.get(name)
        if ctx is not None:
            return ctx
        # Once per host and play: the variable manager also sees group_vars/host_vars files, vars_files and
        # vars plugins (about a millisecond per host); its secrets are learnt for redaction.
        variables = None
        if self._play is not None:
            variable_manager = self._play.get_variable_manager()
            if variable_manager is not None:
                try:
                    variables = variable_manager.get_vars(play=self._play, host=host, include_hostvars=False)
                except Exception:  # never let context lookup break recording
                    variables = None
        if variables is None:  # no play or no variable manager: the inventory's own variables
            variables = get_group_vars(host.get_groups())
            variables.update(host.get_vars())
        self._redactor.collect(variables, _plaintext)
        timezone = _scalar(variables.get("ipm_site_timezone")) or "UTC"
        ctx = {
            "terminal": _scalar(variables.get("ipm_terminal_id")),
            "customer": _scalar(variables.get("ipm_customer_id")),
            "site": _scalar(variables.get("ipm_site_id")),
            "site_timezone": timezone,
        }
        self._hosts[name] = ctx
        return ctx

    # ------------------------------------------------------------------ task results

    def v2_playbook_on_task_start(self, task, is_conditional=False):
        if self._broken and self._fail_closed:
            raise AuditStop(FAIL_CLOSED_EXIT_CODE)

    def v2_playbook_on_handler_task_start(self, task):
        # Ansible calls this one with the task only (no is_conditional).
        self.v2_playbook_on_task_start(task)

    def v2_runner_on_start(self, host, task):
        self._starts[(host.get_name(), task._uuid)] = (time.monotonic(), time.time())

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed", ignore_errors=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def _record(self, result, status, ignore_errors=False):
        try:
            self._record_result(result, status, ignore_errors)
        except AuditStop:
            raise
        except Exception as exc:  # a result that cannot be recorded is treated like an unwritable log
            self._failure(
                f"cannot record the result of {result.task.get_name()!r} on {result.host.get_name()}: {exc!r}"
            )

    def _record_result(self, result, status, ignore_errors):
        host, task = result.host, result.task
        name = host.get_name()
        ctx = self._host_context(host)
        started = self._starts.pop((name, task._uuid), None)
        now, now_site = utc_and_site_time(time.time(), ctx["site_timezone"])
        res = result.result
        data = {
            "run": self._run_id,
            "host": name,
            "terminal": ctx["terminal"],
            "customer": ctx["customer"],
            "site": ctx["site"],
            "site_timezone": ctx["site_timezone"],
            "play": self._play_name,
            "task": to_text(task.get_name()).strip(),
            "task_path": to_text(task.get_path() or ""),
            "module": to_text(task.resolved_action or task.action),
            "status": status,
            "changed": bool(res.get("changed", False)) if isinstance(res, dict) else False,
            "ignore_errors": bool(ignore_errors),
            "check_mode": bool(task.check_mode) if task.check_mode is not None else bool(context.CLIARGS.get("check")),
            "started": utc_and_site_time(started[1], None)[0] if started else None,
            "ended": now,
            "site_time": now_site,
            "duration_s": round(time.monotonic() - started[0], 3) if started else None,
        }
        if task.delegate_to:
            data["delegate_to"] = to_text(task.delegate_to)
        if (isinstance(task.no_log, bool) and task.no_log) or "censored" in res:
            data["no_log"] = True
            data["args"] = NO_LOG_MARKER
            data["msg"] = NO_LOG_MARKER
            # The status alone is not secret: a loop's per-item changed/failed counts neither.
            self._write("task", data)
            return
        redact = self._redactor.value
        invocation = res.get("invocation")
        if isinstance(invocation, dict) and isinstance(invocation.get("module_args"), dict):
            args = invocation["module_args"]
        else:
            args = task.args
        data["args"] = redact({k: v for k, v in args.items() if not str(k).startswith("_ansible_")})
        if "diff" in res:
            data["diff"] = redact(res["diff"])
        if "msg" in res:
            data["msg"] = redact(res["msg"])
        for key in _RESULT_KEYS:
            if key in res:
                data[key] = redact(res[key])
        if isinstance(res.get("results"), list):
            data["items"] = [
                {k: redact(item[k]) for k in _LOOP_ITEM_KEYS if k in item}
                if isinstance(item, dict) and not item.get("_ansible_no_log") and "censored" not in item
                else {"no_log": True}
                for item in res["results"]
            ]
        if "skip_reason" in res:
            data["skip_reason"] = redact(res["skip_reason"])
        self._write("task", data)


def _scalar(value):
    if value is None:
        return None
    if _is_vaulted(value):
        return MASK
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value
    return to_text(value)
