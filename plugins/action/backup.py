# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.backup: stage on the terminal, fetch what changed, store a signed backup on the controller."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import subprocess
import tarfile
import tempfile

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.ipm.fleet.plugins.module_utils import app_backup
from ansible_collections.ipm.fleet.plugins.module_utils.app_backup import STAGING, STREAM_MAGIC
from ansible_collections.ipm.fleet.plugins.module_utils.maintenance_window import WindowError, site_zone
from ansible_collections.ipm.fleet.plugins.plugin_utils import backup_store as bs
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import resolve_operator

display = Display()

# Run on the terminal by ``python3 -c``: the first stdin line is JSON (the staging, the previous
# backup's sha256 per path, and the sources of this collection's module_utils, stdlib only, served
# from memory by a meta path finder); then app_backup.stream() stages, sends and cleans up.
_BOOTSTRAP = """import importlib.util, json, sys
d = json.loads(sys.stdin.buffer.readline())
S = d["sources"]
class F:
    @classmethod
    def find_spec(c, n, p=None, t=None):
        return importlib.util.spec_from_loader(n, c, is_package=S[n][1]) if n in S else None
    @staticmethod
    def create_module(s):
        return None
    @staticmethod
    def exec_module(m):
        exec(compile(S[m.__name__][0], "ipm.fleet:" + m.__name__, "exec"), m.__dict__)
sys.meta_path.insert(0, F)
from ansible_collections.ipm.fleet.plugins.module_utils import app_backup
sys.exit(app_backup.stream(d["staging"], d["reusable"]))
"""
_SOURCES = {}


def _module_utils_sources():
    """{module name: (source, is package)} of this collection's module_utils (read once per process)."""
    if not _SOURCES:
        package = "ansible_collections.ipm.fleet.plugins.module_utils"
        parts = package.split(".")
        for depth in range(1, len(parts) + 1):
            _SOURCES[".".join(parts[:depth])] = ("", True)
        directory = os.path.dirname(os.path.abspath(app_backup.__file__))
        for name in sorted(os.listdir(directory)):
            if name.endswith(".py") and name != "__init__.py":
                with open(os.path.join(directory, name), encoding="utf-8") as handle:
                    _SOURCES["%s.%s" % (package, name[:-3])] = (handle.read(), False)
    return _SOURCES


def _mib(size):
    """A size for people: KiB below one MiB (a small first backup is not "0.0 MiB")."""
    if size < 1048576:
        return "%.1f KiB" % (size / 1024.0)
    return "%.1f MiB" % (size / 1048576.0)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("store", "key_file", "staging"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _validation, args = self.validate_argument_spec(
            argument_spec=dict(
                store=dict(type="path"),
                key_file=dict(type="path"),
                staging=dict(type="path", default=STAGING),
            )
        )
        terminal = task_vars.get("ipm_terminal_id") or task_vars.get("inventory_hostname")
        customer = task_vars.get("ipm_customer_id")
        site = task_vars.get("ipm_site_id")
        if not customer or not site:
            raise AnsibleActionFail(
                "ipm.fleet.backup: %s has no ipm_customer_id / ipm_site_id: back up terminals of the registry "
                "inventory (docs/registry.md)" % terminal
            )
        try:
            store = bs.BackupStore(args.get("store") or task_vars.get("backup_store") or None)
            key = bs.load_signing_key(args.get("key_file"))
            previous = store.previous(customer, site, terminal)
            reusable = self._reusable(previous)
        except bs.BackupStoreError as exc:
            raise AnsibleActionFail("ipm.fleet.backup: %s: %s" % (terminal, exc)) from None
        staging = args["staging"]
        if self._task.check_mode:
            return self._check(result, task_vars, staging, reusable, store, terminal)
        if self._can_stream():
            entry, manifest = self._backup_streamed(
                store, previous, reusable, task_vars, terminal, customer, site, key, staging
            )
        else:
            staged = self._module(task_vars, staging, "present")
            if staged.get("failed"):
                result.update(
                    failed=True, msg="ipm.fleet.backup: %s: %s" % (terminal, staged.get("msg")), changed=False
                )
                return result
            try:
                entry, manifest = self._store(
                    store, staged, previous, reusable, task_vars, terminal, customer, site, key
                )
            finally:
                # One shell command, not a module run (the staging is a plain directory); the terminal may be
                # gone (connection lost): its next backup replaces the staging.
                with contextlib.suppress(AnsibleError):
                    self._low_level_execute_command("rm -rf %s" % shlex.quote(staging))
        message = "backup of %s at %s: %d file(s), %s transferred, %s reused from the previous backup, stored in %s" % (
            terminal,
            manifest["time_utc"],
            len(manifest["files"]),
            _mib(manifest["transferred_bytes"]),
            _mib(manifest["reused_bytes"]),
            entry.path,
        )
        # One line per terminal as it is done (the playbook has no debug task: one task per terminal).
        display.display("%s: %s" % (task_vars.get("inventory_hostname", terminal), message))
        result.update(
            changed=True,
            msg=message,
            path=entry.path,
            time=manifest["time_utc"],
            time_site=manifest["time_site"],
            transferred_bytes=manifest["transferred_bytes"],
            reused_bytes=manifest["reused_bytes"],
            files=manifest["files"],
            database=manifest["database"],
            release=manifest["release"],
        )
        return result

    # -- pieces --------------------------------------------------------------------------------------

    def _module(self, task_vars, staging, state):
        # In check mode Ansible runs the module in check mode too: it lists the files, stages nothing.
        args = dict(state=state, staging=staging)
        return self._execute_module(module_name="ipm.fleet.backup_prepare", module_args=args, task_vars=task_vars)

    @staticmethod
    def _reusable(previous):
        """{path: sha256} of the previous backup's files (empty when there is none)."""
        if previous is None:
            return {}
        try:
            files = previous.manifest().get("files") or []
        except bs.BackupStoreError:
            return {}  # a damaged previous backup: fetch everything again
        return {f["path"]: f["sha256"] for f in files if isinstance(f, dict) and "path" in f and "sha256" in f}

    def _check(self, result, task_vars, staging, reusable, store, terminal):
        planned = self._module(task_vars, staging, "present")
        if planned.get("failed"):
            result.update(failed=True, msg="ipm.fleet.backup: %s: %s" % (terminal, planned.get("msg")), changed=False)
            return result
        would = [f for f in planned.get("files", []) if reusable.get(f["path"]) != f.get("sha256")]
        size = sum(f["size"] for f in would)
        result.update(
            changed=True,
            would_send=[f["path"] for f in would],
            would_send_bytes=size,
            msg="would back up %s into %s: send %d file(s), about %s (the database always; other files when they "
            "changed since the previous backup)" % (terminal, store.root, len(would), _mib(size)),
        )
        display.display("%s: %s" % (task_vars.get("inventory_hostname", terminal), result["msg"]))
        return result

    def _fetch(self, remote, local, relpath, terminal):
        try:
            self._connection.fetch_file(remote, local)
        except AnsibleError as exc:
            if "No space left" in str(exc) or bs.free_mib(os.path.dirname(local)) == 0:
                raise bs.BackupStoreError(
                    "store full: %s MiB free on %s while fetching /%s from %s; free space or remove old backups "
                    "(ipm-backup prune), then back up again; no backup was stored"
                    % (bs.free_mib(os.path.dirname(local)), os.path.dirname(local), relpath, terminal)
                ) from None
            raise bs.BackupStoreError(
                "the connection to %s failed while fetching /%s (%s); no backup was stored" % (terminal, relpath, exc)
            ) from None
        if not os.path.isfile(local):
            raise bs.BackupStoreError("fetching /%s from %s gave no file; no backup was stored" % (relpath, terminal))

    def _can_stream(self):
        """One tar stream over the SSH connection: the ssh connection plugin, key auth, no become."""
        connection = self._connection
        if getattr(connection, "_load_name", "").rsplit(".", 1)[-1] != "ssh" or self._play_context.become:
            return False
        return not (connection.get_option("password") or self._play_context.password)

    def _backup_streamed(self, store, previous, reusable, task_vars, terminal, customer, site, key, staging):
        """Stage and fetch in one SSH command (app_backup.stream on the terminal): the files unchanged since
        the previous backup are hard-linked (and re-hashed) first and their sha256 sent along, so the terminal
        sends only the others, as one tar stream written and hashed in one pass."""
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            partial = store.begin(customer, site, terminal, now)
        except bs.BackupStoreError as exc:
            raise AnsibleActionFail("ipm.fleet.backup: %s: %s" % (terminal, exc)) from None
        done = False
        try:
            linked = {}
            for relpath in sorted(reusable):
                with contextlib.suppress(bs.DamagedPreviousFile):  # a damaged previous copy: sent again
                    linked[relpath] = partial.link_unchanged(previous, relpath)
            staged, streamed = self._stage_and_stream(
                staging, {path: item["sha256"] for path, item in linked.items()}, partial, terminal, task_vars
            )
            done = True
            sent = {item["path"] for item in streamed}
            files, transferred, reused = [], 0, 0
            for item in staged["files"]:
                relpath = item["path"]
                if relpath in sent:
                    files.append(next(f for f in streamed if f["path"] == relpath))
                    transferred += item["size"]
                    continue
                kept = linked.get(relpath)
                if kept is None or kept["sha256"] != item["sha256"] or kept["size"] != item["size"]:
                    raise bs.BackupStoreError("the terminal staged /%s but did not send it" % relpath)
                files.append(kept)
                reused += item["size"]
            for relpath in set(linked) - {item["path"] for item in staged["files"]}:
                partial.forget(relpath)  # gone from the terminal since the previous backup
            manifest = self._manifest(partial, staged, task_vars, terminal, customer, site, files, transferred, reused)
            entry = store.commit(partial, manifest, key)
        except bs.BackupStoreError as exc:
            partial.abort()
            message = str(exc) if "no backup was stored" in str(exc) else "%s; no backup was stored" % exc
            raise AnsibleActionFail("ipm.fleet.backup: %s: %s" % (terminal, message)) from None
        except OSError as exc:  # writing the fetched file on the controller: the store full or not writable
            error = store._write_error(exc, partial)
            raise AnsibleActionFail("ipm.fleet.backup: %s: %s; no backup was stored" % (terminal, error)) from None
        except AnsibleConnectionFailure:
            partial.abort()
            done = True  # unreachable: no second attempt to remove the staging (its next backup replaces it)
            raise
        except BaseException:
            partial.abort()
            raise
        finally:
            if not done:  # the terminal removes its staging itself; after a failure, try once more
                with contextlib.suppress(AnsibleError):
                    self._low_level_execute_command("rm -rf %s" % shlex.quote(staging))
        return entry, manifest

    @staticmethod
    def _last_error(errors):
        errors.seek(0)
        lines = errors.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:300] if lines else ""

    def _interpreter(self, task_vars):
        python = task_vars.get("ansible_python_interpreter")
        if python and "{{" in str(python):
            python = self._templar.template(python)
        python = str(python or "")
        return python if python and not python.startswith("auto") else "/usr/bin/python3"

    def _stage_and_stream(self, staging, reusable, partial, terminal, task_vars):
        """Run app_backup.stream on the terminal over the task's SSH connection (its options, its multiplexed
        master); returns (what was staged, the files received into the partial)."""
        connection = self._connection
        connection.host = connection.get_option("host") or self._play_context.remote_addr
        payload = json.dumps({"staging": staging, "reusable": reusable, "sources": _module_utils_sources()})
        remote = "%s -c %s" % (shlex.quote(self._interpreter(task_vars)), shlex.quote(_BOOTSTRAP))
        command = connection._build_command(connection.get_option("ssh_executable"), "ssh", connection.host, remote)
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
            try:
                with contextlib.suppress(OSError):  # ssh gone already: its exit status says why
                    process.stdin.write(payload.encode("utf-8") + b"\n")
                with contextlib.suppress(OSError):
                    process.stdin.close()
                line = process.stdout.readline()
                if not line.startswith(STREAM_MAGIC):
                    code = process.wait()
                    reason = self._last_error(errors)
                    if code == 255:
                        raise AnsibleConnectionFailure(
                            "ipm.fleet.backup: cannot reach %s over SSH (%s); no backup was stored"
                            % (terminal, reason or "ssh exit 255")
                        )
                    raise bs.BackupStoreError(
                        "staging the backup on %s failed (exit %s%s)"
                        % (terminal, code, ", " + reason if reason else "")
                    )
                staged = json.loads(line[len(STREAM_MAGIC) :])
                if staged.get("failed"):
                    process.wait()
                    raise AnsibleActionFail("ipm.fleet.backup: %s: %s" % (terminal, staged.get("msg")))
                by_path = {item["path"]: item for item in staged["files"] if item["path"] in set(staged["send"])}
                files = self._receive(process, by_path, partial, terminal, errors) if by_path else []
                code = process.wait()
                if code != 0:
                    raise bs.BackupStoreError(
                        "the connection to %s failed after the transfer (exit %s, %s)"
                        % (terminal, code, self._last_error(errors))
                    )
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return staged, files

    def _receive(self, process, by_path, partial, terminal, errors):
        """Read the tar stream: each file written into the partial while hashed, checked against the
        terminal's sha256 (one pass over the bytes)."""
        files = []
        try:
            with tarfile.open(fileobj=process.stdout, mode="r|", bufsize=1 << 20) as archive:
                for member in archive:
                    item = by_path.pop(member.name, None)
                    if item is None or not member.isfile() or member.size != item["size"]:
                        raise bs.BackupStoreError(
                            "the terminal sent /%s (%d bytes), not a staged file" % (member.name, member.size)
                        )
                    files.append(
                        partial.add_stream(item["path"], archive.extractfile(member), item["size"], item["sha256"])
                    )
        except (tarfile.TarError, bs.BackupStoreError) as exc:
            # A cut connection shows as a short or broken archive: tar's exit status says which.
            if process.wait() == 0 and isinstance(exc, bs.BackupStoreError):
                raise
            by_path.setdefault("", {"error": str(exc)})
        code = process.wait()
        if code != 0 or by_path:
            reason = self._last_error(errors)
            missing = ", ".join("/" + p for p in by_path if p) or "the end of the archive"
            raise bs.BackupStoreError(
                "the connection to %s failed while fetching %s (tar over ssh: exit %s%s); no backup was stored"
                % (terminal, missing, code, ", " + reason if reason else "")
            )
        return files

    def _store(self, store, staged, previous, reusable, task_vars, terminal, customer, site, key):
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            partial = store.begin(customer, site, terminal, now)
        except bs.BackupStoreError as exc:
            raise AnsibleActionFail("ipm.fleet.backup: %s: %s" % (terminal, exc)) from None
        try:
            files, transferred, reused, wanted = [], 0, 0, []
            for item in staged["files"]:
                relpath = item["path"]
                if previous is not None and reusable.get(relpath) == item["sha256"]:
                    files.append(partial.link_unchanged(previous, relpath))
                    reused += item["size"]
                else:
                    wanted.append(item)
            for item in wanted:  # another connection type, or become: one fetch per file, hashed after
                relpath = item["path"]
                handle, local = tempfile.mkstemp(dir=partial.path, prefix=".fetch-")
                os.close(handle)
                self._fetch(staged["staging"].rstrip("/") + "/" + relpath, local, relpath, terminal)
                stored = partial.add_file(relpath, local)
                if stored["sha256"] != item["sha256"] or stored["size"] != item["size"]:
                    raise bs.BackupStoreError(
                        "/%s arrived with sha256 %s (%d bytes), the terminal staged %s (%d bytes): the transfer was "
                        "damaged; no backup was stored"
                        % (relpath, stored["sha256"][:12], stored["size"], item["sha256"][:12], item["size"])
                    )
                transferred += item["size"]
                files.append(stored)
            manifest = self._manifest(partial, staged, task_vars, terminal, customer, site, files, transferred, reused)
            entry = store.commit(partial, manifest, key)
        except bs.BackupStoreError as exc:
            partial.abort()
            raise AnsibleActionFail("ipm.fleet.backup: %s: %s" % (terminal, exc)) from None
        except OSError as exc:  # writing the fetched file on the controller: the store full or not writable
            error = store._write_error(exc, partial)
            raise AnsibleActionFail("ipm.fleet.backup: %s: %s; no backup was stored" % (terminal, error)) from None
        except BaseException:
            partial.abort()
            raise
        return entry, manifest

    @staticmethod
    def _manifest(partial, staged, task_vars, terminal, customer, site, files, transferred, reused):
        zone_name = task_vars.get("ipm_site_timezone") or "UTC"
        try:
            site_time = partial.time.astimezone(site_zone(zone_name)).isoformat()
        except WindowError:
            zone_name, site_time = "UTC", partial.time.isoformat()
        hardware = staged.get("hardware") or {}
        extra = {name: task_vars.get(name) for name in ("ipm_operator", "awx_user_name", "tower_user_name")}
        operator = resolve_operator({k: v for k, v in extra.items() if v})[0]
        change_id = task_vars.get("change_id")
        ticket = task_vars.get("ticket_id")
        return {
            "format": bs.FORMAT,
            "terminal": terminal,
            "customer": customer,
            "site": site,
            "serial_number": str(hardware.get("serial_number") or task_vars.get("ipm_serial_number") or ""),
            "model": str(hardware.get("model") or task_vars.get("ipm_model") or ""),
            "timezone": zone_name,
            "time_utc": partial.time_iso,
            "time_site": site_time,
            "release": (staged.get("release") or {}).get("version"),
            "parameters_sha256": staged.get("parameters_sha256"),
            "operator": operator,
            "change_id": str(change_id) if change_id else None,
            "ticket": str(ticket) if ticket else None,
            "database": staged["database"],
            "files": files,
            "transferred_bytes": transferred,
            "reused_bytes": reused,
        }
