# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The inventory a validated registry yields: hosts, groups and their variables.

:func:`inventory_plan` turns a :class:`~.registry.Fleet` into plain data (group variables, group
children, hosts with their variables and groups) that the ``ipm.fleet.registry`` inventory plugin
adds to Ansible's inventory; :func:`inventory_plan_for` is one terminal's share (``ipm-registry show``).
"""

from __future__ import annotations

import re

from ansible_collections.ipm.fleet.plugins.plugin_utils.registry import Fleet, desired_release
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import DEFAULTS

_UNSAFE = re.compile(r"[^a-z0-9_]")


def sanitize(value: str) -> str:
    """A group-name suffix: lower case, every other character turned into ``_``."""
    return _UNSAFE.sub("_", str(value).lower())


def customer_vars(customer) -> dict:
    """Variables of the ``customer_<id>`` group."""
    return {
        "ipm_customer_name": customer.get("name"),
        "ipm_customer_country": customer.get("country"),
        "ipm_customer_languages": customer.get("languages") or [],
        "ipm_contract": customer.get("contract") or {},
        "ipm_contacts": customer.get("contacts") or [],
        "ipm_customer_parameters": customer.get("parameters") or {},
    }


def site_vars(customer, site) -> dict:
    """Variables of the ``site_<id>`` group (country and language default to the customer's)."""
    languages = customer.get("languages") or []
    return {
        "ipm_site_name": site.get("name"),
        "ipm_site_city": site.get("city"),
        "ipm_site_country": site.get("country") or customer.get("country"),
        "ipm_site_timezone": site.get("timezone"),
        "ipm_site_language": site.get("language") or (languages[0] if languages else None),
        "ipm_site_windows": site.get("windows") or [],
        "ipm_site_network": site.get("network") or {},
        "ipm_site_address": site.get("address") or {},
        "ipm_site_parameters": site.get("parameters") or {},
    }


def host_vars(customer, site, terminal) -> dict:
    """Variables of one terminal's host."""
    return {
        "ansible_host": terminal["address"],
        "ipm_terminal_id": terminal["id"],
        "ipm_customer_id": customer["id"],
        "ipm_site_id": site["id"],
        "ipm_model": terminal["model"],
        "ipm_serial_number": terminal["serial_number"],
        "ipm_release": desired_release(customer, site, terminal),
        "ipm_ring": terminal.get("ring") or DEFAULTS["ring"],
        "ipm_status": terminal.get("status") or DEFAULTS["status"],
        "ipm_interfaces": terminal.get("interfaces") or {},
        "ipm_parameters": terminal.get("parameters") or {},
        "ipm_tags": terminal.get("tags") or [],
    }


def host_groups(site, variables) -> list[str]:
    """The groups a terminal's host is put in directly (its site, model, release, ring, status)."""
    return [
        "site_" + sanitize(site["id"]),
        "model_" + sanitize(variables["ipm_model"]),
        "release_" + sanitize(variables["ipm_release"]),
        "ring_" + sanitize(variables["ipm_ring"]),
        "status_" + sanitize(variables["ipm_status"]),
    ]


def site_parents(customer, site, variables) -> list[str]:
    """Groups a site group is a child of: its customer, country, time zone and language."""
    parents = ["customer_" + sanitize(customer["id"])]
    if variables["ipm_site_country"]:
        parents.append("country_" + sanitize(variables["ipm_site_country"]))
    if variables["ipm_site_timezone"]:
        parents.append("tz_" + sanitize(variables["ipm_site_timezone"]))
    if variables["ipm_site_language"]:
        parents.append("language_" + sanitize(variables["ipm_site_language"]))
    return parents


def inventory_plan_for(fleet: Fleet, customer, site, terminal) -> dict:
    """One terminal as the inventory shows it: host variables, every group it belongs to, site and customer facts."""
    variables = host_vars(customer, site, terminal)
    site_group_vars = site_vars(customer, site)
    groups = host_groups(site, variables) + site_parents(customer, site, site_group_vars)
    tier = (customer.get("contract") or {}).get("sla_tier")
    if tier:
        groups.append("sla_" + sanitize(tier))
    return {
        "host_vars": variables,
        "groups": groups,
        "site_vars": site_group_vars,
        "customer_vars": customer_vars(customer),
    }


def inventory_plan(fleet: Fleet, include_retired: bool = False) -> dict:
    """The inventory the registry yields, as plain data (JSON-serialisable, so the plugin can cache it).

    ``groups``: name -> variables; ``children``: [parent, child] pairs; ``hosts``: [name, variables,
    [group, ...]]. Site groups are children of their customer group and of the country, time zone
    and language groups; customer groups are children of their SLA group; hosts sit in their site,
    model, release, ring and status groups. Site and customer facts live on their groups only.
    """
    groups: dict[str, dict] = {}
    children: list[list[str]] = []
    hosts: list[list] = []
    for version, release in fleet.releases.items():
        groups["release_" + sanitize(version)] = {"ipm_release_defaults": release.defaults}
    for document in fleet.customers:
        customer = document["customer"]
        customer_group = "customer_" + sanitize(customer["id"])
        groups[customer_group] = customer_vars(customer)
        tier = (customer.get("contract") or {}).get("sla_tier")
        if tier:
            groups.setdefault("sla_" + sanitize(tier), {})
            children.append(["sla_" + sanitize(tier), customer_group])
        for site in document["sites"]:
            site_group = "site_" + sanitize(site["id"])
            variables = site_vars(customer, site)
            groups[site_group] = variables
            for parent in site_parents(customer, site, variables):
                groups.setdefault(parent, {})
                children.append([parent, site_group])
            for terminal in site["terminals"]:
                if terminal.get("status") == "retired" and not include_retired:
                    continue
                variables = host_vars(customer, site, terminal)
                hosts.append([terminal["id"], variables, host_groups(site, variables)])
    for host in hosts:
        for group in host[2]:
            if group not in groups:
                groups[group] = {}
    return {"groups": groups, "children": children, "hosts": hosts}
