#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: terminal_facts
short_description: What a terminal is and runs - hardware, OS and patches, application, parameters, interfaces
version_added: 0.1.0
description:
  - Reads a terminal's configuration in one pass and returns it as the C(ipm_terminal) fact.
  - Read-only; safe in check mode. Cheaper than M(ansible.builtin.setup) while collecting what
    fleet maintenance needs - one module run, a single C(systemctl) call, no hardware probing.
  - A section that cannot be read (a missing hardware identity file, a corrupt apt list, an
    application that does not answer its health check) carries C(unknown) with the reason; the
    module does not fail the terminal for it.
options:
  sections:
    description: The sections to collect.
    type: list
    elements: str
    choices: [hardware, os, application, parameters, interfaces]
    default: [hardware, os, application, parameters, interfaces]
  packages:
    description:
      - Include every installed package with its version in C(os.packages).
      - The count, pending updates and pending security updates are returned either way.
    type: bool
    default: true
  health_timeout:
    description: Seconds to wait for the application's C(/health) answer.
    type: float
    default: 2.0
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.facts
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: debian
    details: Runs on the terminal; reads only.
notes:
  - Parameter values the release marks secret, and values of keys that look like secrets, are
    returned as C(********); their sha256 digest is still the one the application reports.
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Read every terminal's configuration
  ipm.fleet.terminal_facts:

- name: Only what a rollout's pre-flight needs, without the package list
  ipm.fleet.terminal_facts:
    sections: [hardware, os, application, interfaces]
    packages: false

- name: Show the running release
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} runs {{ ipm_terminal.application.current }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the terminal's host variables.
  returned: always
  type: dict
  contains:
    ipm_terminal:
      description: The terminal's configuration; each section may carry C(unknown) with a reason.
      returned: always
      type: dict
      contains:
        hardware:
          description: C(model) and C(serial_number) from C(/etc/ipm/hardware.yml), C(cpu), C(memory_mib), C(disk_free_mib).
          type: dict
          sample: {"model": "PS-300", "serial_number": "PS3-24-00117", "cpu": {"model": "Intel Atom", "count": 2},
                   "memory_mib": 3900, "disk_free_mib": 5120, "disk_total_mib": 8000}
        os:
          description:
            - C(id) (for example C(debian-12)), C(distribution), C(version), C(kernel), C(packages) (name to version),
              C(pending_updates) and C(pending_security_updates) (name to installed and candidate version, from the apt lists present),
              C(held_packages) (names dpkg keeps on hold), C(reboot_required) (C(required), C(packages), C(since) from /var/run/reboot-required).
          type: dict
          sample: {"id": "debian-12", "version": "12", "kernel": "6.1.0-26-amd64", "package_count": 212,
                   "pending_updates": {"openssl": {"installed": "3.0.14-1~deb12u1", "candidate": "3.0.15-1~deb12u1"}}}
        application:
          description: C(releases) installed, C(current) release, C(service) state of ipm-app.service, C(health) answer.
          type: dict
          sample: {"releases": ["2.3.1", "2.4.0"], "current": "2.4.0",
                   "service": {"active": "active", "sub": "running", "enabled": "enabled", "restarts": 0},
                   "health": {"version": "2.4.0", "status": "ok", "parameters_sha256": "9f2c..."}}
        parameters:
          description: Effective C(values) (defaults of the current release overlaid with C(/etc/ipm/app.yml); secrets redacted) and their C(sha256).
          type: dict
          sample: {"values": {"currency": "EUR", "payment_api_token": "********"}, "sha256": "9f2c..."}
        interfaces:
          description: Configured peripherals (C(devices), by name) with their type, device path and whether the device is present.
          type: dict
          sample: {"devices": {"payment": {"type": "payment", "device": "/dev/ipm/payment", "present": true}}, "count": 1}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils.terminal_facts import SECTIONS, collect


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sections=dict(type="list", elements="str", choices=list(SECTIONS), default=list(SECTIONS)),
            packages=dict(type="bool", default=True),
            health_timeout=dict(type="float", default=2.0),
        ),
        supports_check_mode=True,
    )
    if module.params["health_timeout"] <= 0:
        module.fail_json(
            msg="health_timeout must be a positive number of seconds, got %s" % module.params["health_timeout"]
        )
    facts = collect(
        "/",
        sections=module.params["sections"],
        include_packages=module.params["packages"],
        health_timeout=module.params["health_timeout"],
    )
    module.exit_json(changed=False, ansible_facts={"ipm_terminal": facts})


if __name__ == "__main__":
    main()
