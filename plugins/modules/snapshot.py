#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot
short_description: Store a terminal's configuration in the controller's history store
version_added: 0.1.0
description:
  - Writes the terminal's C(ipm_terminal) fact (from M(ipm.fleet.terminal_facts)) as a snapshot
    in a history store on the controller - one JSON file per terminal and time, under O(store).
  - A snapshot is written only when the configuration differs from the terminal's previous
    snapshot (volatile readings such as free memory or uptime do not count), so a second run on an
    unchanged fleet reports C(changed=false).
  - The terminal's customer and site, and the run's change or ticket id, are stored with it.
  - Runs on the controller only (an action plugin); it never connects to the terminal.
options:
  store:
    description: Directory of the history store on the controller; created when missing.
    type: path
    required: true
  facts:
    description: The facts to store; by default the terminal's C(ipm_terminal) fact.
    type: dict
  taken_at:
    description: Time of the snapshot (ISO 8601); by default now.
    type: str
  context:
    description: Extra keys stored beside the facts.
    type: dict
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.action
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Reports what would be stored, writes nothing.
  diff_mode:
    support: full
  action:
    support: full
  platform:
    platforms: posix
    details: Runs on the controller only (an action plugin); it never connects to the terminal.
seealso:
  - module: ipm.fleet.terminal_facts
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Read the configuration
  ipm.fleet.terminal_facts:

- name: Keep it in the history
  ipm.fleet.snapshot:
    store: /var/lib/ipm-fleet/history
"""

RETURN = r"""
path:
  description: The snapshot file written, or null when nothing changed (or in check mode).
  returned: always
  type: str
  sample: /var/lib/ipm-fleet/history/lyon-pd-01/20261128T140000123456Z.json
changes:
  description: What differs from the previous snapshot (C(path), C(change), C(before), C(after)).
  returned: always
  type: list
  elements: dict
  sample: [{"path": "application.current", "change": "changed", "before": "2.3.1", "after": "2.4.0"}]
terminal:
  description: The terminal id the snapshot is filed under.
  returned: always
  type: str
"""
