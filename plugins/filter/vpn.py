# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filters of the VPN (docs in vpn_isolation_rules.yml, vpn_may_reach.yml).

The rule (support reaches every terminal, nothing crosses between customers) is
``plugins/plugin_utils/vpn_plan.py``'s; these filters only hand it to the roles.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.plugin_utils.vpn_plan import VpnPlanError, isolation_rules, may_reach


def vpn_isolation_rules(ipm_vpn, allow_within_customer=False):
    """The hub's forwarding policy (default drop; support prefix to each customer prefix) from ``ipm_vpn``."""
    if not isinstance(allow_within_customer, bool):
        raise AnsibleFilterError(
            "ipm.fleet.vpn_isolation_rules: allow_within_customer must be true or false, got %r"
            % (allow_within_customer,)
        )
    try:
        return isolation_rules(ipm_vpn, allow_within_customer)
    except VpnPlanError as exc:
        raise AnsibleFilterError("ipm.fleet.vpn_isolation_rules: %s" % exc) from None


def vpn_may_reach(rules, source, destination):
    """Whether the policy lets a new flow from SOURCE to DESTINATION (addresses) through."""
    if not isinstance(rules, dict):
        raise AnsibleFilterError(
            "ipm.fleet.vpn_may_reach: expected the output of ipm.fleet.vpn_isolation_rules, got %r"
            % (type(rules).__name__,)
        )
    try:
        return may_reach(rules, source, destination)
    except (VpnPlanError, KeyError, TypeError) as exc:
        raise AnsibleFilterError("ipm.fleet.vpn_may_reach: %s" % exc) from None


class FilterModule:
    """ipm.fleet VPN filters."""

    def filters(self):
        return {"vpn_isolation_rules": vpn_isolation_rules, "vpn_may_reach": vpn_may_reach}
