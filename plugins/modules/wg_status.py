#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: wg_status
short_description: A WireGuard interface's peers and their handshakes; waits for the handshakes a change needs
version_added: 0.1.0
description:
  - Reads C(wg show <name> dump) and returns each peer with its name (from the wg-quick file's
    comments), endpoint, allowed addresses and the age of its latest handshake - never a key but public keys.
  - Says whether the kernel has the WireGuard module (RV(kernel)); a machine without it runs userspace C(wireguard-go).
  - With O(wait_for), waits up to O(timeout) seconds until each of those peers has a handshake younger
    than O(max_age_s), sending a UDP packet to O(probe) through the tunnel every half second so that
    WireGuard starts one. Peers still without one fail the task, the message naming them, their endpoint
    and what the network must allow.
options:
  name:
    description: The interface.
    type: str
    default: ipm0
  path:
    description: Its wg-quick file (peer names); default C(/etc/wireguard/<name>.conf).
    type: path
  wait_for:
    description: Public keys of the peers that must have a handshake; V([]) only reads.
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait for the handshakes.
    type: float
    default: 20
  max_age_s:
    description: A handshake older than this does not count (WireGuard renews them every 2 minutes while in use).
    type: int
    default: 180
  probe:
    description: An address through the tunnel (the hub's) to send a packet to while waiting.
    type: str
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Only reads (and sends the probe packets).
  diff_mode:
    support: none
  platform:
    platforms: debian
    details: Runs as root where the interface lives.
seealso:
  - module: ipm.fleet.wg_config
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: The terminal has a handshake with the hub
  ipm.fleet.wg_status:
    name: ipm0
    wait_for: ["{{ hub_public_key }}"]
    probe: 10.59.0.1
"""

RETURN = r"""
peers:
  description: The running peers.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "hub", "public_key": "...", "endpoint": "203.0.113.7:51820", "allowed_ips": ["10.59.0.0/24"], "handshake_age_s": 3.2}]
missing:
  description: Names of the peers of O(wait_for) without a recent handshake.
  returned: always
  type: list
  elements: str
running:
  description: Whether the interface is up.
  returned: always
  type: bool
kernel:
  description: Whether the kernel has the WireGuard module (else wg-quick needs userspace wireguard-go).
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import wireguard as wg


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", default="ipm0"),
            path=dict(type="path"),
            wait_for=dict(type="list", elements="str", default=[], no_log=False),
            timeout=dict(type="float", default=20.0),
            max_age_s=dict(type="int", default=180),
            probe=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    name = params["name"]
    path = params["path"] or f"/etc/wireguard/{name}.conf"

    def run(argv, data=None):
        return module.run_command(argv, data=data, binary_data=True)

    _interface, configured = wg.parse(wg.read_text(path) or "")
    names = {peer["public_key"]: peer["name"] for peer in configured}
    endpoints = {peer["public_key"]: peer.get("endpoint") for peer in configured}
    try:
        kernel = wg.kernel_wireguard(run) if not module.check_mode else os.path.exists("/sys/module/wireguard")
        if not wg.interface_exists(name):
            if not params["wait_for"]:
                module.exit_json(changed=False, peers=[], missing=[], running=False, kernel=kernel)
            module.fail_json(
                msg=f"interface {name} is not up: see `systemctl status wg-quick@{name}` and `journalctl -u wg-quick@{name}`",
                peers=[],
                missing=[names.get(key, key) for key in params["wait_for"]],
                running=False,
                kernel=kernel,
            )
        state = wg.wait_handshakes(
            name,
            params["wait_for"],
            params["timeout"] if params["wait_for"] else 0,
            run,
            probe=params["probe"],
            max_age=params["max_age_s"],
        )
    except wg.WireGuardError as error:
        module.fail_json(msg=str(error), peers=[], missing=[], running=True, kernel=False)
    peers = [
        dict(peer, name=names.get(key, key))
        for key, peer in sorted(state["peers"].items(), key=lambda item: names.get(item[0], item[0]))
    ]
    missing = [names.get(key, key) for key in state["missing"]]
    if missing:
        where = ", ".join(
            f"{names.get(key, key)} ({endpoints.get(key) or (state['peers'].get(key) or {}).get('endpoint') or 'no endpoint known'})"
            for key in state["missing"]
        )
        module.fail_json(
            msg=(
                f"{name}: no WireGuard handshake with {where} within {params['timeout']:g} s: the network must let UDP "
                "out to the hub's endpoint (and its answers back), and the peer must know this machine's public key "
                "(docs/vpn.md, 'What a customer's network must allow')"
            ),
            peers=peers,
            missing=missing,
            running=True,
            kernel=kernel,
        )
    module.exit_json(changed=False, peers=peers, missing=[], running=True, kernel=kernel)


if __name__ == "__main__":
    main()
