#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: registry_swap
short_description: Record replacement hardware in the registry - the terminal's serial number changes, the swap is kept
version_added: 0.1.0
description:
  - Changes the terminal's C(serial_number) line in its customer file in place (every other line and
    comment stays), checks the registry still validates (or puts the file back) and appends the swap
    - time, terminal, customer, site, model, old and new serial number, ticket, operator, backup - to
    C(hardware-swaps.jsonl) in the registry directory (C(docs/registry.md)). C(ipm-registry swap)
    does the same from the command line.
  - Refuses a serial number that is the terminal's already or another terminal's, and a swap without
    a ticket or change id.
  - Runs on the controller only; it never connects to the terminal.
options:
  serial_number:
    description: The new box's serial number (from its C(/etc/ipm/hardware.yml)).
    type: str
    required: true
  ticket:
    description: The ticket or change id of the swap. Default - C(ticket_id), else C(change_id).
    type: str
  registry:
    description: The registry directory (or inventory path naming it). Default - the registry the inventory was read from.
    type: path
  backup:
    description: The backup restored onto the new box, kept with the record.
    type: str
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.action
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Says what would change; writes nothing.
  diff_mode:
    support: none
  action:
    support: full
  platform:
    platforms: posix
    details: Runs on the controller only; it never connects to the terminal.
seealso:
  - module: ipm.fleet.backup_restore
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Record the new box in the registry
  ipm.fleet.registry_swap:
    serial_number: PS3-26-001204
    ticket: INC-4711
"""

RETURN = r"""
swap:
  description: The swap record written.
  returned: success
  type: dict
  sample: {"terminal": "fr-lpd-001", "old_serial_number": "PS3-23-000877", "new_serial_number": "PS3-26-001204", "ticket": "INC-4711"}
path:
  description: The customer file changed.
  returned: success
  type: str
"""
