#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: delivery
short_description: Record one delivery attempt in the delivery ledger
version_added: 0.1.0
description:
  - Returns one ledger entry for the terminal - customer, site, release, the release it came from,
    the result and the reason, the change and ticket ids, and the time in UTC and in the site's
    time zone. The C(ipm.fleet.audit) callback writes it to the audit log, where
    C(ipm-audit deliveries) finds it.
  - Runs on the controller only; it never connects to the terminal and changes nothing.
options:
  release:
    description: The release delivered or attempted.
    type: str
    required: true
  result:
    description: What happened to the terminal.
    type: str
    required: true
    choices: [delivered, already_current, baked, rolled_back, failed, deferred, incompatible, not_reached, reboot_pending]
  from_version:
    description: The release the terminal ran before.
    type: str
  reason:
    description: Why, in words (the failure, the closed window, the incompatibility).
    type: str
  details:
    description: Anything else worth keeping with the entry.
    type: dict
  kind:
    description:
      - What was delivered - V(release), a release of the application (C(playbooks/rollout.yml)),
        V(parameters), the registry's parameters (C(playbooks/parameters.yml)), or V(patch), OS patches
        (C(playbooks/patch.yml); result V(reboot_pending) when the reboot waits for the next window); then
        O(release) is the release the terminal runs, and the entry never changes what
        C(ipm-audit deliveries --running) says it runs.
    type: str
    choices: [release, parameters, patch]
    default: release
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.action
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  action:
    support: full
  platform:
    platforms: posix
    details: Runs on the controller only; it never connects to the terminal.
seealso:
  - module: ipm.fleet.release
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Record the delivery
  ipm.fleet.delivery:
    release: "{{ release }}"
    result: deferred
    reason: "site window closed; next opens {{ window.next_opens_at }}"

- name: Record a parameters change (the digests, never the values)
  ipm.fleet.delivery:
    kind: parameters
    release: "2.4.0"
    result: delivered
    reason: "2 parameter(s) changed: currency, max_amount"
    details: {parameters_sha256_before: "3f1c...", parameters_sha256_after: "9a0b..."}
"""

RETURN = r"""
delivery:
  description: The ledger entry.
  returned: always
  type: dict
  sample: {"terminal": "fr-lpd-001", "customer": "parkcite", "site": "lyon_part_dieu", "release": "2.4.0",
           "from_version": "2.3.1", "result": "delivered", "kind": "release", "reason": "", "change_id": "CHG-1042",
           "time_utc": "2026-11-28T01:12:09+00:00", "time_local": "2026-11-28T02:12:09+01:00", "timezone": "Europe/Paris"}
"""
