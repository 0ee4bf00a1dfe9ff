#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_prepare
short_description: Stage a consistent copy of a terminal's application data for a backup, or remove the staging
version_added: 0.1.0
description:
  - With O(state=present), copies on the terminal, while ipm-app keeps serving, everything a backup
    holds into a staging directory (mode 0700) - the transactions database through sqlite's online
    backup API (a consistent snapshot, not a file copy), checked with C(PRAGMA integrity_check),
    its transactions counted and the last one read; the parameters C(/etc/ipm/app.yml); the hardware
    identity C(/etc/ipm/hardware.yml); the peripheral configuration (C(/etc/ipm/interfaces.yml),
    C(/etc/ipm/payment-module.yml)); the installed release's manifest and a C(release.json) with
    its version and the C(/opt/ipm/app/current) link's target. Returns every staged file with its
    size and sha256.
  - A failure, the terminal's disk full among them, removes the staging and fails with the reason.
  - With O(state=absent), removes the staging directory.
  - M(ipm.fleet.backup) runs this module, fetches the staged files and removes the staging again;
    it is rarely used alone.
options:
  state:
    description: V(present) stages a backup, V(absent) removes the staging.
    type: str
    choices: [present, absent]
    default: present
  staging:
    description: The staging directory on the terminal; it is replaced by each run.
    type: path
    default: /var/lib/ipm/backup-staging
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Lists the files a backup would take and their current sizes; stages nothing.
  diff_mode:
    support: none
  platform:
    platforms: debian
    details: Runs on the terminal (ipm-app installed), as root.
seealso:
  - module: ipm.fleet.backup
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Stage the backup
  ipm.fleet.backup_prepare:
  register: staged

- name: Remove the staging
  ipm.fleet.backup_prepare:
    state: absent
"""

RETURN = r"""
staging:
  description: The staging directory.
  returned: always
  type: str
  sample: /var/lib/ipm/backup-staging
files:
  description: Every staged file (or, in check mode, every file a backup would take) - C(path) (relative to C(/)), C(size), C(sha256).
  returned: when state is present
  type: list
  elements: dict
  sample: [{"path": "etc/ipm/app.yml", "size": 412, "sha256": "9f2c..."}]
database:
  description: The staged database - C(transactions) (count), C(last_transaction) (the row), C(integrity) (C(ok)).
  returned: when state is present and not in check mode
  type: dict
release:
  description: The installed release - C(version), C(current) (the link's target), C(manifest) (its path).
  returned: when state is present
  type: dict
hardware:
  description: The hardware identity - C(model), C(serial_number).
  returned: when state is present and not in check mode
  type: dict
parameters_sha256:
  description: The digest of the effective parameters, as C(/health) reports it.
  returned: when state is present and not in check mode
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import app_backup


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent"], default="present"),
            staging=dict(type="path", default=app_backup.STAGING),
        ),
        supports_check_mode=True,
    )
    staging = module.params["staging"]
    if os.geteuid() != 0:
        module.fail_json(msg="a backup needs root on the terminal: set become: true or connect as root")
    try:
        if module.params["state"] == "absent":
            existed = os.path.lexists(staging)
            if not module.check_mode:
                app_backup.cleanup(staging)
            module.exit_json(changed=existed, staging=staging)
        if module.check_mode:
            module.exit_json(changed=False, staging=staging, **app_backup.plan())
        result = app_backup.prepare(staging)
    except app_backup.BackupError as exc:
        module.fail_json(msg=str(exc), staging=staging)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
