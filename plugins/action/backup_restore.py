# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.backup_restore: find and verify the backup on the controller, then restore it on the terminal."""

from __future__ import annotations

import contextlib
import shlex

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.ipm.fleet.plugins.module_utils.app_backup import RESTORED, STAGING
from ansible_collections.ipm.fleet.plugins.plugin_utils import backup_store as bs


class ActionModule(ActionBase):
    TRANSFERS_FILES = True
    _VALID_ARGS = frozenset(("step", "backup", "store", "key_file", "replacement", "staging", "start_timeout"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        _validation, args = self.validate_argument_spec(
            argument_spec=dict(
                step=dict(type="str", choices=["check", "restore"], default="restore"),
                backup=dict(type="str", default="latest"),
                store=dict(type="path"),
                key_file=dict(type="path"),
                replacement=dict(type="bool", default=False),
                staging=dict(type="path", default=STAGING),
                start_timeout=dict(type="float", default=30.0),
            )
        )
        terminal = task_vars.get("ipm_terminal_id") or task_vars.get("inventory_hostname")
        entry, manifest = self._verified(args, task_vars, terminal)
        found = dict(
            backup=entry.path,
            backup_time=manifest["time_utc"],
            manifest=manifest,
        )
        module_args = dict(manifest=manifest, replacement=args["replacement"], staging=args["staging"])
        if args["step"] == "check":
            answer = self._execute_module(
                module_name="ipm.fleet.backup_restore", module_args=dict(module_args, step="check"), task_vars=task_vars
            )
            result.update(answer)
            result.update(found)
            if not answer.get("failed"):
                result["msg"] = "backup %s of %s verified (signature and every file's sha256); box %s, release %s%s" % (
                    manifest["time_utc"],
                    terminal,
                    (answer.get("hardware") or {}).get("serial_number"),
                    answer.get("installed_release"),
                    " (the backup's %s is installed first)" % manifest["release"]
                    if answer.get("needs_release")
                    else "",
                )
            else:
                result["msg"] = "%s: %s" % (terminal, answer.get("msg"))
            return result
        if self._task.check_mode:
            result.update(found, changed=True, msg="would restore backup %s onto %s" % (manifest["time_utc"], terminal))
            return result
        staging = args["staging"]
        try:
            self._send(entry, manifest, staging)
        except AnsibleError as exc:
            self._remove_staging(staging)
            raise AnsibleActionFail(
                "ipm.fleet.backup_restore: %s: copying the backup to the terminal failed (%s); the terminal's "
                "application was not touched" % (terminal, exc)
            ) from None
        answer = self._execute_module(
            module_name="ipm.fleet.backup_restore",
            module_args=dict(module_args, step="restore", start_timeout=args["start_timeout"]),
            task_vars=task_vars,
        )
        result.update(answer)
        result.update(found)
        if not answer.get("failed"):
            result["msg"] = "restored backup %s onto %s: %d file(s), %s transactions, last id %s" % (
                manifest["time_utc"],
                terminal,
                len(answer.get("restored") or []),
                answer.get("transactions"),
                (answer.get("last_transaction") or {}).get("id"),
            )
        else:
            result["msg"] = "%s: %s" % (terminal, answer.get("msg"))
        return result

    def _verified(self, args, task_vars, terminal):
        """The backup to restore, after B1's verify: signature, manifest, every file's sha256; refused otherwise."""
        try:
            store = bs.BackupStore(args.get("store") or task_vars.get("backup_store") or None)
            key = bs.load_signing_key(args.get("key_file"))
            entry = store.find(terminal, args.get("backup"))
            problems = bs.verify(entry, key)
        except bs.BackupStoreError as exc:
            raise AnsibleActionFail(
                "ipm.fleet.backup_restore: %s: %s; nothing on the terminal was changed" % (terminal, exc)
            ) from None
        if problems:
            shown = "; ".join(problems[:5]) + (" (+%d more)" % (len(problems) - 5) if len(problems) > 5 else "")
            raise AnsibleActionFail(
                "ipm.fleet.backup_restore: backup %s refused: %s; nothing on the terminal was changed "
                "(ipm-backup verify; restore another backup with -e backup=TIME)" % (entry.name, shown)
            )
        manifest = entry.manifest()
        if manifest.get("terminal") != terminal:
            raise AnsibleActionFail(
                "ipm.fleet.backup_restore: backup %s is of terminal %s, not %s; nothing on the terminal was changed"
                % (entry.name, manifest.get("terminal"), terminal)
            )
        return entry, manifest

    def _shell(self, command):
        answer = self._low_level_execute_command(command)
        if answer.get("rc") != 0:
            raise AnsibleError(
                "`%s` failed: %s" % (command, (answer.get("stderr") or answer.get("stdout") or "").strip())
            )

    def _remove_staging(self, staging):
        with contextlib.suppress(AnsibleError):
            self._low_level_execute_command("rm -rf %s" % shlex.quote(staging))

    def _send(self, entry, manifest, staging):
        chosen = [f["path"] for f in manifest["files"] if f["path"] in RESTORED]
        directories = sorted({staging.rstrip("/") + "/" + path.rsplit("/", 1)[0] for path in chosen})
        quoted = " ".join(shlex.quote(d) for d in directories)
        self._shell("rm -rf %s && umask 077 && mkdir -p %s" % (shlex.quote(staging), quoted))
        for path in chosen:
            self._transfer_file(entry.file_path(path), staging.rstrip("/") + "/" + path)
