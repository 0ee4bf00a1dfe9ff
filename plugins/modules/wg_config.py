#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: wg_config
short_description: A WireGuard interface's wg-quick file and its running peers, changed without dropping tunnels
version_added: 0.1.0
description:
  - Writes the wg-quick file O(path) of interface O(name) (atomically, mode 0600) with O(address),
    O(listen_port) and O(peers). The file holds no private key - C(PostUp = wg set %i private-key
    <key_file>) loads it from O(key_file) (see M(ipm.fleet.wg_key)) - so its diff can be shown.
  - The peers are checked before anything is written - a public key used twice, a peer without an
    address, overlapping allowed addresses - and refused with every problem named; nothing changes then.
  - When the interface is up and its peers differ from the file (also when only the running state
    drifted), they are applied with C(wg syncconf) (peers that did not change keep their sessions), and
    routes are added for allowed addresses outside the interface's own prefixes. If that fails the
    previous file is put back and applied again. A change of the interface part (address, key file, hooks)
    is not applied live; RV(restart_needed) then asks the caller to restart C(wg-quick@<name>).
options:
  name:
    description: The interface, for example V(ipm0).
    type: str
    default: ipm0
  path:
    description: The wg-quick file; default C(/etc/wireguard/<name>.conf).
    type: path
  address:
    description: The interface's addresses (CIDR), for example V(10.60.16.5/32).
    type: list
    elements: str
    required: true
  listen_port:
    description: The UDP port it listens on; unset lets WireGuard choose (a terminal behind NAT).
    type: int
  key_file:
    description: The private key file, loaded by PostUp.
    type: path
    required: true
  post_up:
    description: More PostUp commands, after the key is loaded.
    type: list
    elements: str
    default: []
  post_down:
    description: PostDown commands.
    type: list
    elements: str
    default: []
  peers:
    description: The peers.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A name for messages and the file's comments (a terminal id, V(hub)).
        type: str
        required: true
      public_key:
        description: The peer's public key.
        type: str
        required: true
      allowed_ips:
        description: Addresses routed to and accepted from the peer (CIDR).
        type: list
        elements: str
        required: true
      endpoint:
        description: V(host:port) to reach the peer; unset for peers behind NAT (they are found by their packets).
        type: str
      persistent_keepalive:
        description: Seconds between keepalives (V(25) behind NAT); unset for none.
        type: int
      note:
        description: Words for the file's comment line.
        type: str
        default: ""
  who:
    description: Who manages the file, for its header comment.
    type: str
    default: role vpn_terminal
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Says whether the file or the running peers would change, and shows the file's diff.
  diff_mode:
    support: full
    details: The wg-quick file before and after (it holds no private key).
  platform:
    platforms: debian
    details: Runs as root where the interface lives, with wireguard-tools and iproute2.
seealso:
  - module: ipm.fleet.wg_key
  - module: ipm.fleet.wg_hub
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: The terminal's tunnel to the hub
  ipm.fleet.wg_config:
    name: ipm0
    address: ["10.60.16.5/32"]
    key_file: /etc/wireguard/ipm0.key
    peers:
      - name: hub
        public_key: "{{ hub_public_key }}"
        endpoint: "vpn.ipm.example:51820"
        allowed_ips: ["10.59.0.0/24"]
        persistent_keepalive: 25
"""

RETURN = r"""
file_changed:
  description: Whether the file was (or would be) written.
  returned: always
  type: bool
live_changed:
  description: Whether the running interface's peers differed from the file.
  returned: always
  type: bool
applied:
  description: Whether C(wg syncconf) was run on the running interface.
  returned: always
  type: bool
restart_needed:
  description: Whether the interface part changed so that C(wg-quick@<name>) must be restarted.
  returned: always
  type: bool
running:
  description: Whether the interface is up.
  returned: always
  type: bool
carried_endpoints:
  description: Public key to endpoint, for new peers that took over the addresses of a live peer (a rotated key).
  returned: always
  type: dict
path:
  description: The wg-quick file.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import wireguard as wg

PEER_SPEC = dict(
    name=dict(type="str", required=True),
    public_key=dict(type="str", required=True, no_log=False),
    allowed_ips=dict(type="list", elements="str", required=True),
    endpoint=dict(type="str"),
    persistent_keepalive=dict(type="int"),
    note=dict(type="str", default=""),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", default="ipm0"),
            path=dict(type="path"),
            address=dict(type="list", elements="str", required=True),
            listen_port=dict(type="int"),
            key_file=dict(type="path", required=True, no_log=False),
            post_up=dict(type="list", elements="str", default=[]),
            post_down=dict(type="list", elements="str", default=[]),
            peers=dict(type="list", elements="dict", required=True, options=PEER_SPEC),
            who=dict(type="str", default="role vpn_terminal"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    name = params["name"]
    path = params["path"] or f"/etc/wireguard/{name}.conf"
    if os.geteuid() != 0:
        module.fail_json(msg=f"{path}: WireGuard files are root's: connect as root or set become: true")

    def run(argv, data=None):
        return module.run_command(argv, data=data, binary_data=True)

    interface = {key: params[key] for key in ("address", "listen_port", "key_file", "post_up", "post_down")}
    try:
        peers = [wg.normalise_peer(peer, index) for index, peer in enumerate(params["peers"])]
        result = wg.converge(name, path, interface, peers, run, check_mode=module.check_mode, who=params["who"])
    except wg.WireGuardError as error:
        module.fail_json(msg=f"{path}: {error}", changed=False)
    diff = result.pop("diff")
    if module._diff and result["file_changed"]:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
