# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action for ipm.fleet.release: copy the artifact from the controller, then run the module, in one task."""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        source = args.pop("src", None)
        if source is None and not args.get("artifact"):
            raise AnsibleActionFail(
                "ipm.fleet.release: give src (the artifact on the controller) or artifact (already on the terminal)"
            )
        remote_tmp = None
        try:
            if source is not None:
                source = os.path.expanduser(str(source))
                if not os.path.isfile(source):
                    raise AnsibleActionFail(
                        "ipm.fleet.release: artifact %s not found on the controller: build it with `ipm-release build %s`"
                        % (source, args.get("version", ""))
                    )
                # Also in check mode: a temporary copy lets the module verify the artifact and show the
                # parameter migration it would do; the copy is removed below, nothing else changes.
                remote_tmp = self._make_tmp_path()
                remote_artifact = self._connection._shell.join_path(remote_tmp, os.path.basename(source))
                self._transfer_file(source, remote_artifact)
                self._fixup_perms2((remote_tmp, remote_artifact))
                args["artifact"] = remote_artifact
            result.update(self._execute_module(module_name="ipm.fleet.release", module_args=args, task_vars=task_vars))
        finally:
            if remote_tmp is not None:
                self._remove_tmp_path(remote_tmp)
        return result
