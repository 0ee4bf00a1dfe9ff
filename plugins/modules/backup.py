#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup
short_description: Back up a terminal into the controller's backup store, sending only what changed
version_added: 0.1.0
description:
  - Stages on the terminal a consistent copy of the application's data while ipm-app keeps
    serving (sqlite's online backup), plus the parameters, the installed release, the hardware
    identity and the peripheral configuration, each with its size and sha256.
  - The files of the terminal's latest backup in the store are hard-linked into the new one (and
    re-hashed); only the files whose sha256 changed are sent, so a second backup of unchanged data
    moves almost nothing.
  - Over the C(ssh) connection (key authentication, no become) staging and transfer are one SSH
    command over the task's own connection - C(python3) on the terminal runs the collection's
    module_utils (sent on stdin, no module start-up), writes one header line (what was staged and
    what it sends) and then the changed files as one C(tar) stream, and removes the staging; each
    file is written into the store while hashed and checked against the terminal's sha256 (one
    pass). The task prints one line per terminal (what was stored, where).
  - Other connections run M(ipm.fleet.backup_prepare), fetch the files one by one and hash them
    after.
  - Writes the manifest (terminal, customer, site, serial number, model, the site's time zone, the
    time in UTC from the controller's clock and in site time, release, parameters digest, operator,
    change or ticket id, the database's transactions count, last transaction and integrity, every
    file, the bytes transferred and reused), signs it and makes the backup complete in one rename
    (C(docs/backup-store.md)).
  - Any failure - the SSH connection lost mid-transfer, a damaged transfer, a store that is not
    writable or full - removes the partial backup, so nothing incomplete looks like a backup, and
    fails with the reason. The staging on the terminal is always removed.
  - The result's C(msg) and C(path) (the backup, its time and sizes) reach the audit log.
options:
  store:
    description:
      - The backup store on the controller. Default - the host variable C(backup_store), else
        C($IPM_BACKUP_STORE), else C(~/.ipm/backups).
    type: path
  key_file:
    description:
      - The key that signs the manifest. Default - C($IPM_BACKUP_KEY_FILE), else the audit key
        C($IPM_AUDIT_KEY_FILE), else C(~/.ipm/audit.key).
    type: path
  staging:
    description: The staging directory on the terminal.
    type: path
    default: /var/lib/ipm/backup-staging
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.action
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Lists the files that would be sent and their size; stages and stores nothing.
  diff_mode:
    support: none
  action:
    support: full
    details: An action plugin fetches the staged files and writes the store on the controller.
  platform:
    platforms: debian
    details: The terminal runs Debian with ipm-app; the store is on the controller.
notes:
  - The terminal's C(ipm_customer_id), C(ipm_site_id) and C(ipm_site_timezone) come from the registry inventory.
seealso:
  - module: ipm.fleet.backup_prepare
  - module: ipm.fleet.backup_restore
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Back up the terminal
  ipm.fleet.backup:
    store: /srv/ipm/backups
"""

RETURN = r"""
path:
  description: The backup's directory in the store.
  returned: success, not in check mode
  type: str
  sample: /srv/ipm/backups/parkcite/lyon-part-dieu/fr-lpd-001/20261202T071500Z
time:
  description: The backup's time (the controller's clock, UTC).
  returned: success, not in check mode
  type: str
  sample: "2026-12-02T07:15:00Z"
time_site:
  description: The same moment in the site's time zone.
  returned: success, not in check mode
  type: str
transferred_bytes:
  description: Bytes fetched from the terminal.
  returned: success, not in check mode
  type: int
reused_bytes:
  description: Bytes hard-linked from the previous backup.
  returned: success, not in check mode
  type: int
files:
  description: Every file of the backup with C(path), C(size), C(sha256).
  returned: success, not in check mode
  type: list
  elements: dict
database:
  description: C(transactions), C(last_transaction) and C(integrity) of the backed-up database.
  returned: success, not in check mode
  type: dict
release:
  description: The release installed on the terminal.
  returned: success, not in check mode
  type: str
would_send:
  description: The files a backup would send.
  returned: in check mode
  type: list
  elements: str
would_send_bytes:
  description: Their size.
  returned: in check mode
  type: int
"""
