#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_restore
short_description: Put a verified backup's data and parameters back on a terminal, with the previous data kept for a failure
version_added: 0.1.0
description:
  - Restores the files of a backup that the controller copied into O(staging) (see
    C(playbooks/restore.yml), which verifies the backup's signature and checksums on the controller
    first) - the transactions database, C(/etc/ipm/app.yml) and the peripheral configuration, never
    the hardware identity.
  - Refuses, changing nothing, a staged file whose sha256 is not the manifest's, a box of another
    model, a box with another serial number unless O(replacement=true), and a terminal that does not
    run the backup's release (install it first with M(ipm.fleet.release)).
  - Then stops ipm-app (a clear failure, nothing restored, when it cannot be stopped), copies the
    current data and parameters to C(/var/lib/ipm/restore-previous), writes the backup's files in
    place (each re-hashed), starts ipm-app and requires it healthy on the backup's release and
    parameters digest, with the backup's transactions (the count up to the last one and the last one
    itself). Any failure after the stop puts the previous files back and starts ipm-app again.
  - Runs in a process of its own session under the delivery lock, so a dropped SSH connection cannot
    leave it half done. The staging is removed at the end.
options:
  step:
    description:
      - V(check) only reads the box - its identity against the backup's (O(replacement)) and its
        installed release - and changes nothing; V(restore) restores.
    type: str
    choices: [check, restore]
    default: restore
  manifest:
    description: The backup's manifest (from the controller's backup store).
    type: dict
    required: true
  staging:
    description: Where the controller put the backup's files on the terminal (paths relative to C(/)).
    type: path
    default: /var/lib/ipm/backup-staging
  replacement:
    description: The box is replacement hardware for the backup's terminal (another serial number, same model).
    type: bool
    default: false
  start_timeout:
    description: Seconds ipm-app has to answer healthy after the restore.
    type: float
    default: 30
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Checks the staged files and the box's identity and says what would be restored; changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: debian
    details: Runs on the terminal (Debian with systemd, ipm-app installed), as root.
seealso:
  - module: ipm.fleet.backup
  - module: ipm.fleet.release
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Restore the staged backup
  ipm.fleet.backup_restore:
    manifest: "{{ restore_backup.manifest }}"
    replacement: "{{ replacement | bool }}"
"""

RETURN = r"""
installed_release:
  description: The release the box runs.
  returned: when step is check
  type: str
needs_release:
  description: Whether the backup's release must be installed before the restore.
  returned: when step is check
  type: bool
hardware:
  description: The box's hardware identity, C(model) and C(serial_number).
  returned: when step is check
  type: dict
restored:
  description: Every file written, with C(path), C(size) and the C(sha256) read back on the terminal.
  returned: on success
  type: list
  elements: dict
steps:
  description: The steps done, in order.
  returned: on success
  type: list
  elements: str
transactions:
  description: Transactions in the restored database up to the backup's last one.
  returned: on success
  type: int
last_transaction:
  description: The backup's last transaction as read back from the restored database.
  returned: on success
  type: dict
health:
  description: The last health answer of ipm-app after the restore.
  returned: on success
  type: dict
previous_kept_in:
  description: Where the data and parameters from before the restore are kept.
  returned: on success
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import app_backup
from ansible_collections.ipm.fleet.plugins.module_utils import release_switch as rs


def main():
    module = AnsibleModule(
        argument_spec=dict(
            step=dict(type="str", choices=["check", "restore"], default="restore"),
            manifest=dict(type="dict", required=True),
            staging=dict(type="path", default=app_backup.STAGING),
            replacement=dict(type="bool", default=False),
            start_timeout=dict(type="float", default=30.0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if os.geteuid() != 0:
        module.fail_json(msg="a restore needs root on the terminal: set become: true or connect as root")
    manifest = params["manifest"]
    if params["step"] == "check":
        problem = app_backup.identity_problem(manifest, params["replacement"])
        if problem:
            module.fail_json(msg=problem + "; nothing was changed")
        installed = rs.current_version("/")
        module.exit_json(
            changed=False,
            installed_release=installed,
            needs_release=installed != manifest.get("release"),
            hardware=app_backup.hardware_identity(),
        )
    if module.check_mode:
        try:
            problem = app_backup.identity_problem(manifest, params["replacement"])
            if problem:
                module.fail_json(msg=problem + "; nothing was changed")
            chosen = app_backup.check_staged(params["staging"], manifest)
        except app_backup.BackupError as exc:
            module.fail_json(msg=str(exc))
        module.exit_json(changed=True, would_restore=[entry["path"] for entry in chosen])
    state_file = os.path.join(rs.STATE_DIR, "restore.json")
    arguments = dict(
        manifest=manifest,
        staging=params["staging"],
        replacement=params["replacement"],
        start_timeout=params["start_timeout"],
    )
    result = rs.run_detached(state_file, rs.lock_path("/"), app_backup.restore, arguments)
    try:
        app_backup.cleanup(params["staging"])
    except app_backup.BackupError as exc:
        result.setdefault("warnings", []).append(str(exc))
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
