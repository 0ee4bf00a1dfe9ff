#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: authorize
short_description: Refuse a run the authorization policy, the customer's contract or four-eyes does not allow
version_added: 0.1.0
description:
  - The first task of every playbook of the collection. Decides, once per customer of the targeted
    terminals, whether the operator may run the playbook or runbook there, following the authorization
    policy (people, roles, customers), the customer's contract in the registry (maintenance types bought,
    C(contract.start) and C(contract.end)) and, with I(four_eyes=true), whether the run's change was approved
    by a second C(it) person (docs/authorization.md).
  - The operator is the OS user running the controller; an identity claimed through C(ipm_operator),
    C(IPM_OPERATOR) or AWX's C(awx_user_name) is honoured only when the policy lists that OS user under
    C(service_accounts), and otherwise refused.
  - The policy is C(IPM_POLICY_FILE), else C(policy.yml) in the registry directory the inventory was read
    from. A missing or malformed policy denies everything.
  - Writes an C(authorization_denied) record to the audit log per denied customer (operator, action,
    terminals, reason) and an C(authorized) record (with C(on_demand) and the justification when a run is
    outside the contract), then fails with one line naming who, what, which terminals and why.
  - Runs on the controller only (use C(run_once)); it never connects to a terminal.
options:
  action:
    description: What is run, C(playbook:<name>) or C(runbook:<name>); a bare name means a playbook.
    type: str
    required: true
  maintenance_type:
    description:
      - The maintenance type the run implies (C(preventive), C(corrective), C(evolutive)); the extra var
        C(maintenance_type) overrides it. Omit for read-only runs (no contract type check).
    type: str
  hosts:
    description:
      - Host pattern or list of the terminals the playbook will target (the C(--limit) applies). Default - the
        hosts of the current play.
    type: raw
  four_eyes:
    description:
      - Check only the four-eyes rule for the terminals past the canary ring given in I(hosts) - the change
        must have been requested and approved by another C(it) person (C(ipm-change)).
    type: bool
    default: false
  change_id:
    description: The change checked with I(four_eyes). Default - the extra var C(change_id).
    type: str
  justification:
    description: Why an intervention outside the contract is done on demand. Default - the extra var C(justification).
    type: str
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.action
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Decides and records the same way in check mode (a check run is a run too).
  diff_mode:
    support: none
  action:
    support: full
  platform:
    platforms: posix
    details: Runs on the controller only; it never connects to the terminal.
seealso:
  - module: ipm.fleet.delivery
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Authorize the rollout on the terminals it targets
  ipm.fleet.authorize:
    action: playbook:rollout
    maintenance_type: evolutive
    hosts: "{{ rollout_hosts | default('release_' ~ (release | replace('.', '_'))) }}"

- name: Authorize the backup on this play's terminals
  ipm.fleet.authorize:
    action: playbook:backup
    maintenance_type: preventive
  run_once: true

- name: Four-eyes before the pilot and broad rings
  ipm.fleet.authorize:
    action: playbook:rollout
    four_eyes: true
    hosts: "{{ rollout_hosts | default('all') }}:!ring_canary"
"""

RETURN = r"""
operator:
  description: The identity the decision was about.
  returned: success
  type: str
  sample: alice
operator_source:
  description: Where the identity came from (C(os_user), C(extra_var:awx_user_name), ...).
  returned: success
  type: str
on_demand:
  description: True when the run is outside a customer's contract and goes on with a justification.
  returned: success
  type: bool
customers:
  description: The customers of the targeted terminals.
  returned: success
  type: list
  elements: str
terminals:
  description: How many terminals were checked.
  returned: success
  type: int
approved_by:
  description: With I(four_eyes), who approved the change.
  returned: success and four_eyes
  type: str
"""
