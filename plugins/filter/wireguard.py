# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filter of the VPN hub (docs in vpn_hub_terminals.yml).

Only gathers, per terminal of the inventory, what the hub's peers are made of; which terminals
become peers (revoked, retired, keys kept, duplicates) is decided by the ``ipm.fleet.wg_hub``
module on the hub (``plugins/module_utils/wireguard.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError


def vpn_hub_terminals(hosts, hostvars, key_var="vpn_terminal_public_key"):
    """``[{name, address, public_key, status, customer}]`` for every host of HOSTS that is a terminal."""
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError(
            "ipm.fleet.vpn_hub_terminals: expected a list of host names (groups['all']), got %r"
            % (type(hosts).__name__,)
        )
    if not isinstance(hostvars, Mapping) and not hasattr(hostvars, "__getitem__"):
        raise AnsibleFilterError("ipm.fleet.vpn_hub_terminals: expected hostvars as the second argument")
    terminals = []
    for host in hosts:
        variables = hostvars[host]
        if "ipm_terminal_id" not in variables:
            continue  # the hub itself, a controller: not a terminal
        terminals.append(
            {
                "name": str(host),
                "address": str(variables.get("ipm_vpn_address") or ""),
                "public_key": str(variables.get(key_var) or ""),
                "status": str(variables.get("ipm_status") or "active"),
                "customer": str(variables.get("ipm_customer_id") or ""),
            }
        )
    return terminals


class FilterModule:
    """ipm.fleet WireGuard hub filters."""

    def filters(self):
        return {"vpn_hub_terminals": vpn_hub_terminals}
