#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bake
short_description: Watch a delivered release for a bake period, and roll the delivery back if it fails
version_added: 0.1.0
description:
  - After a ring's deliveries, watches the terminal for O(duration) seconds before the next ring
    starts. Every O(interval) seconds (and once more at the end of O(duration)) a probe checks that
    C(/opt/ipm/app/current) still points at O(version), that C(/health) answers 200 with status
    C(ok), that the answered version is O(version), and that its C(parameters_sha256) is the
    digest of the terminal's parameters (computed once at the start from C(/etc/ipm/app.yml) and
    the current release's manifest).
  - At the first failing probe the watch stops. With O(rollback=true) the state the last
    M(ipm.fleet.release) delivery recorded in C(/var/lib/ipm/delivery/previous.json) is restored -
    the previous release, its parameters file and its unit - ipm-app is restarted, and the
    previous release must answer healthy within O(start_timeout) seconds. The release the delivery
    unpacked is removed and the record too, since nothing is left to roll back. The rollback runs
    under the delivery lock in a process of its own session on the terminal, so a dropped SSH
    connection cannot leave it half done.
  - When the recorded delivery is not of O(version) (or there is no record, or the terminal was
    changed since), nothing is rolled back and the message says why and what to check.
  - A terminal that was not healthy throughout fails the task, with every return value below;
    the message starts with the failing probe in words. C(changed) is true only when it rolled back.
options:
  version:
    description: The release that must stay current, for example V(2.4.0).
    type: str
    required: true
  duration:
    description: Seconds to watch; V(0) is a single probe.
    type: float
    required: true
  interval:
    description: Seconds between probes; must be positive.
    type: float
    default: 5
  rollback:
    description: At the first failing probe, roll back the recorded delivery of O(version). With V(false) the task fails and nothing changes.
    type: bool
    default: true
  start_timeout:
    description: Seconds the previous release has to answer healthy after the rollback's restart.
    type: float
    default: 30
  port:
    description: The port ipm-app answers its health check on.
    type: int
    default: 8080
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Watches only and never rolls back; says whether it would roll back, and to which release (C(changed) then true).
  diff_mode:
    support: none
  platform:
    platforms: debian
    details: Runs on the terminal (Debian with systemd, ipm-app installed), as root.
seealso:
  - module: ipm.fleet.release
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Deliver 2.4.0
  ipm.fleet.release:
    version: "2.4.0"
    sha256: "{{ manifest.sha256 }}"
    src: "build/releases/ipm-app-2.4.0.tar.gz"

- name: Watch it for ten minutes before the next ring; roll it back at the first failing probe
  ipm.fleet.bake:
    version: "2.4.0"
    duration: 600
    interval: 10

- name: Only watch (a failing probe fails the task, nothing is rolled back)
  ipm.fleet.bake:
    version: "2.4.0"
    duration: 60
    rollback: false
"""

RETURN = r"""
healthy:
  description: Whether every probe passed.
  returned: always
  type: bool
probes:
  description: How many probes were made.
  returned: always
  type: int
  sample: 13
watched_s:
  description: Seconds watched, until the last probe.
  returned: always
  type: float
  sample: 60.0
healthy_for_s:
  description: Seconds the release was seen healthy - until the failing probe, or the whole watch.
  returned: always
  type: float
  sample: 14.2
reason:
  description: The failing probe in words, with the time it failed; null when healthy.
  returned: always
  type: str
  sample: "health answered 503 status failing after 14.2 s"
rolled_back:
  description: Whether the recorded delivery was rolled back (see RV(rollback) for the outcome).
  returned: always
  type: bool
rolled_back_to:
  description: The release rolled back to; null when nothing was rolled back.
  returned: always
  type: str
  sample: "2.3.1"
rollback:
  description:
    - What the rollback did - C(to) the release it went back to, C(healthy) whether that release
      answered healthy again, C(error) what went wrong (also why it could not start, for example
      another delivery holding the lock). All null when no rollback was attempted.
  returned: always
  type: dict
  sample: {"to": "2.3.1", "healthy": true, "error": null}
steps:
  description: What was done, in order.
  returned: always
  type: list
  elements: str
health:
  description: The last health answer of the watch (of the failing probe when one failed).
  returned: always
  type: dict
  sample: {"version": "2.4.1", "status": "failing", "uptime_s": 14.3, "parameters_sha256": "9f2c..."}
version:
  description: The release watched.
  returned: always
  type: str
  sample: "2.4.0"
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import release_bake


def main():
    module = AnsibleModule(
        argument_spec=dict(
            version=dict(type="str", required=True),
            duration=dict(type="float", required=True),
            interval=dict(type="float", default=5.0),
            rollback=dict(type="bool", default=True),
            start_timeout=dict(type="float", default=30.0),
            port=dict(type="int", default=8080),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not release_bake.rm.version_tuple(params["version"]):
        module.fail_json(msg="version %r is not a release version X.Y.Z" % params["version"])
    if params["duration"] < 0:
        module.fail_json(msg="duration must be 0 (a single probe) or more seconds, got %s" % params["duration"])
    if params["interval"] <= 0:
        module.fail_json(msg="interval must be a positive number of seconds, got %s" % params["interval"])
    if params["start_timeout"] <= 0:
        module.fail_json(msg="start_timeout must be a positive number of seconds, got %s" % params["start_timeout"])
    if not 0 < params["port"] < 65536:
        module.fail_json(msg="port must be between 1 and 65535, got %d" % params["port"])
    if os.geteuid() != 0:
        module.fail_json(
            msg="watching and rolling back a release needs root on the terminal (its parameters file is "
            "readable by root only): set become: true or connect as root"
        )
    result = release_bake.bake(
        params["version"],
        params["duration"],
        interval=params["interval"],
        rollback=params["rollback"],
        start_timeout=params["start_timeout"],
        port=params["port"],
        check_mode=module.check_mode,
    )
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
