#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release
short_description: Deliver a release of the terminal application as one transaction, with automatic rollback
version_added: 0.1.0
description:
  - Puts a release of ipm-app on a terminal in one module run - copy of the artifact (from the
    controller, O(src)), sha256 check, unpack beside the installed releases, migration of the
    parameters to the new release's schema (defaults for new parameters, renamed and removed ones as
    the release's manifest says, then the registry's O(parameters)), atomic switch of
    C(/opt/ipm/app/current), restart of C(ipm-app.service), and a health check - the new version must
    answer healthy, with the expected parameters digest, and stay healthy for O(settle) seconds.
  - On any failure after the switch it switches back, restores the previous parameters and unit,
    restarts the previous release and checks that it is healthy again, then fails the task with
    the reason. The terminal ends on the new release or on the old one, never in between.
    Application data (C(/var/lib/ipm/app)) is never touched.
  - The transaction runs in a process of its own session on the terminal, so it completes (or
    rolls back) even when the SSH connection drops during it; one delivery at a time per terminal.
  - Idempotent - a release that is already current, healthy and configured as desired is left
    alone (C(changed=false)).
  - Old releases are pruned, keeping O(keep) of them (never the current or the previous one).
  - A successful delivery keeps what it replaced - the previous release's version, its parameters
    file and its unit - in C(/var/lib/ipm/delivery/previous.json) (mode 0600, the parameters may
    hold secrets), so that M(ipm.fleet.bake) can roll it back later.
options:
  version:
    description: The release to make current, for example V(2.4.0).
    type: str
    required: true
  sha256:
    description: The sha256 of the release artifact, from its manifest; a mismatch changes nothing.
    type: str
    required: true
  src:
    description:
      - Path of the release artifact (C(ipm-app-<version>.tar.gz)) on the controller; it is copied to
        the terminal's temporary directory for this run.
      - Without it, O(artifact) must already be on the terminal.
    type: path
  artifact:
    description: Path of the artifact on the terminal, when it is already there.
    type: path
  parameters:
    description:
      - Parameters the registry sets for this terminal (customer, site and terminal layers merged),
        applied over the migrated ones. Values are checked against the new release's schema first.
    type: dict
    default: {}
  compatibility:
    description:
      - The release manifest's C(compatibility) block. When given, the terminal is checked first
        (model, OS, free disk, upgrade path, interfaces; see the P(ipm.fleet.compat#filter) filter)
        and an incompatible terminal is left untouched - the task is not failed, it returns
        RV(incompatible=true) with the reasons.
    type: dict
  allow_downgrade:
    description:
      - Let the compatibility check accept a release older than the installed one (going back to an
        earlier release on purpose). Without it such a terminal is reported incompatible.
    type: bool
    default: false
  keep:
    description: How many releases to keep installed.
    type: int
    default: 3
  start_timeout:
    description: Seconds the new release has to answer healthy after the restart.
    type: float
    default: 30
  settle:
    description: Seconds the new release must then stay healthy before the delivery counts as done.
    type: float
    default: 10
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.action
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Verifies the artifact and reports what would change; changes nothing on the terminal.
  diff_mode:
    support: none
  action:
    support: full
    details: An action plugin copies O(src) from the controller in the same task.
  platform:
    platforms: debian
    details: Runs on the terminal (Debian with systemd, ipm-app installed), as root.
seealso:
  - module: ipm.fleet.bake
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Deliver 2.4.0 with the registry's parameters
  ipm.fleet.release:
    version: "2.4.0"
    sha256: "{{ manifest.sha256 }}"
    src: "build/releases/ipm-app-2.4.0.tar.gz"
    parameters: "{{ ipm_customer_parameters | default({}) | combine(ipm_site_parameters | default({}), ipm_parameters | default({})) }}"
    settle: 15
"""

RETURN = r"""
from_version:
  description: The release that was current before.
  returned: always
  type: str
  sample: "2.3.1"
to_version:
  description: The release asked for.
  returned: always
  type: str
  sample: "2.4.0"
incompatible:
  description: True when the terminal cannot take the release (see O(compatibility)); nothing was changed.
  returned: when the terminal is incompatible
  type: bool
reasons:
  description: Why the terminal cannot take the release, one sentence per failed rule.
  returned: when the terminal is incompatible
  type: list
  elements: str
rolled_back:
  description: Whether the delivery failed after the switch and the previous release was restored.
  returned: always
  type: bool
rollback:
  description: What the rollback did; C(healthy) says whether the previous release answered healthy again.
  returned: when rolled_back
  type: dict
  sample: {"to": "2.3.1", "healthy": true}
notes:
  description: Parameter migration, one sentence per change.
  returned: always
  type: list
  elements: str
  sample: ["timeout: renamed to idle_timeout_s", "modem_port: removed in 2.4.0", "contactless_enabled: new, default true"]
steps:
  description: The steps done, in order.
  returned: always
  type: list
  elements: str
health:
  description: The last health answer of the new release.
  returned: on success
  type: dict
pruned:
  description: Releases removed to keep O(keep).
  returned: on success
  type: list
  elements: str
duration_s:
  description: Seconds the transaction took on the terminal.
  returned: when something was done
  type: float
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import release_switch


def main():
    module = AnsibleModule(
        argument_spec=dict(
            version=dict(type="str", required=True),
            sha256=dict(type="str", required=True),
            src=dict(type="path"),
            artifact=dict(type="path"),
            parameters=dict(type="dict", default={}),
            keep=dict(type="int", default=3),
            start_timeout=dict(type="float", default=30.0),
            settle=dict(type="float", default=10.0),
            compatibility=dict(type="dict"),
            allow_downgrade=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not release_switch.rm.version_tuple(params["version"]):
        module.fail_json(msg="version %r is not a release version X.Y.Z" % params["version"])
    if params["keep"] < 2:
        module.fail_json(
            msg="keep must be at least 2 (the current release and the one to roll back to), got %d" % params["keep"]
        )
    if params["start_timeout"] <= 0 or params["settle"] < 0:
        module.fail_json(msg="start_timeout must be positive and settle not negative")
    if os.geteuid() != 0:
        module.fail_json(msg="delivering a release needs root on the terminal: set become: true or connect as root")
    arguments = dict(
        version=params["version"],
        artifact=params["artifact"],
        sha256=params["sha256"].lower(),
        desired_parameters=params["parameters"],
        keep=params["keep"],
        start_timeout=params["start_timeout"],
        settle=params["settle"],
        compatibility=params["compatibility"],
        allow_downgrade=params["allow_downgrade"],
    )
    if module.check_mode:
        try:
            result = release_switch.deliver(check_mode=True, **arguments)
        except release_switch.rm.ReleaseError as exc:
            module.fail_json(msg=str(exc))
    else:
        state_file = os.path.join(release_switch.STATE_DIR, "delivery-%s.json" % params["version"])
        result = release_switch.deliver_detached(state_file, **arguments)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
