#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: wg_hub
short_description: The VPN hub's peers - one per terminal - checked as a whole, then applied with wg syncconf
version_added: 0.1.0
description:
  - Works out the hub's peers from O(terminals) (every terminal of the inventory, with its planned VPN
    address and, when it reported one this run, its public key) and the peers the hub's file has now. A
    terminal that reported no key keeps the key its peer has; terminals in O(revoked), terminals whose
    status is C(retired) and peers of terminals the inventory no longer has are removed; a terminal
    without any key yet is C(pending). Each peer's allowed address is the terminal's address (/32).
  - Checks the whole set before anything is written - a public key already used by another terminal,
    a terminal with a key but no address in the plan - and refuses with the names; the hub's file and
    its running interface then stay as they were (never half applied).
  - Writes the wg-quick file atomically and applies it to the running interface with one C(wg syncconf)
    (the equivalent of C(wg syncconf <name> <(wg-quick strip <name>))); other peers' tunnels stay up. A
    terminal whose key was rotated gets its old peer's endpoint, so that the hub reaches it at once.
options:
  name:
    description: The hub's interface.
    type: str
    default: ipm-hub
  path:
    description: The wg-quick file; default C(/etc/wireguard/<name>.conf).
    type: path
  address:
    description: The hub's addresses (CIDR); routes to the terminals' supernet are added by O(post_up).
    type: list
    elements: str
    required: true
  listen_port:
    description: The UDP port terminals reach the hub on.
    type: int
    default: 51820
  key_file:
    description: The hub's private key file (see M(ipm.fleet.wg_key)).
    type: path
    default: /etc/wireguard/ipm-hub.key
  post_up:
    description: More PostUp commands (routes, the forwarding policy).
    type: list
    elements: str
    default: []
  post_down:
    description: PostDown commands.
    type: list
    elements: str
    default: []
  terminals:
    description: Every terminal of the inventory.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The terminal id.
        type: str
        required: true
      address:
        description: Its planned VPN address (C(ipm_vpn_address)); empty when it has none.
        type: str
      public_key:
        description: The public key it reported this run; empty to keep the one the hub has.
        type: str
      status:
        description: The registry status (C(active), C(spare), C(retired)).
        type: str
        default: active
      customer:
        description: Its customer, for the file's comments.
        type: str
  revoked:
    description: Terminal ids whose peers are removed (a stolen or compromised terminal).
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details: Checks the peers and says which would be added, removed or rotated; nothing is written.
  diff_mode:
    support: full
    details: The wg-quick file before and after (public keys only).
  platform:
    platforms: debian
    details: Runs on the hub as root, with wireguard-tools and iproute2.
seealso:
  - module: ipm.fleet.wg_config
  - module: ipm.fleet.wg_key
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Peers of every terminal of the inventory
  ipm.fleet.wg_hub:
    address: ["10.59.0.1/32"]
    post_up: ["ip route replace 10.60.0.0/14 dev %i"]
    terminals:
      - {name: t-0001, address: 10.60.16.5, public_key: "{{ key_1 }}", customer: parkcite}
      - {name: t-0002, address: 10.60.16.6, customer: parkcite}
    revoked: [t-0042]
"""

RETURN = r"""
peers:
  description: The hub's peers after the run.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "t-0001", "public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "allowed_ips": ["10.60.16.5/32"]}]
added:
  description: Terminals that became peers.
  returned: always
  type: list
  elements: str
removed:
  description: Terminal to why its peer was removed (revoked, retired, not in the inventory any more).
  returned: always
  type: dict
rotated:
  description: Terminals whose public key changed.
  returned: always
  type: list
  elements: str
pending:
  description: Terminals with no key yet (run the terminal role on them first).
  returned: always
  type: list
  elements: str
problems:
  description: Why nothing was applied (one line each); empty on success.
  returned: always
  type: list
  elements: str
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
  description: Public key to endpoint carried over from a rotated terminal's old peer.
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import wireguard as wg

TERMINAL_SPEC = dict(
    name=dict(type="str", required=True),
    address=dict(type="str"),
    public_key=dict(type="str", no_log=False),
    status=dict(type="str", default="active"),
    customer=dict(type="str"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", default="ipm-hub"),
            path=dict(type="path"),
            address=dict(type="list", elements="str", required=True),
            listen_port=dict(type="int", default=51820),
            key_file=dict(type="path", default="/etc/wireguard/ipm-hub.key", no_log=False),
            post_up=dict(type="list", elements="str", default=[]),
            post_down=dict(type="list", elements="str", default=[]),
            terminals=dict(type="list", elements="dict", required=True, options=TERMINAL_SPEC),
            revoked=dict(type="list", elements="str", default=[]),
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
    _current_interface, current = wg.parse(wg.read_text(path) or "")
    plan = wg.hub_peers(params["terminals"], current, params["revoked"])
    summary = {key: plan[key] for key in ("added", "removed", "rotated", "pending", "problems")}
    if plan["problems"]:
        module.fail_json(
            msg=f"{path}: nothing applied, the hub keeps its current peers: " + "; ".join(plan["problems"]),
            changed=False,
            peers=[_public(peer) for peer in current],
            **summary,
        )
    try:
        result = wg.converge(
            name, path, interface, plan["peers"], run, check_mode=module.check_mode, who="role vpn_hub"
        )
    except wg.WireGuardError as error:
        module.fail_json(msg=f"{path}: {error}", changed=False, peers=[_public(peer) for peer in current], **summary)
    diff = result.pop("diff")
    if module._diff and result["file_changed"]:
        result["diff"] = diff
    result.update(summary, peers=[_public(peer) for peer in plan["peers"]])
    module.exit_json(**result)


def _public(peer):
    return {"name": peer["name"], "public_key": peer["public_key"], "allowed_ips": list(peer.get("allowed_ips") or [])}


if __name__ == "__main__":
    main()
