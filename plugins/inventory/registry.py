# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: registry
short_description: The terminal fleet from the ipm.fleet registry (customers, sites, terminals)
version_added: 0.1.0
author:
  - ipm.fleet maintainers (@ipm-fleet)
description:
  - Reads the fleet registry, a directory of YAML files kept in git (C(catalog.yml) plus one file per
    customer with its sites and terminals), validates all of it in one pass and turns it into hosts and groups.
  - Every terminal becomes a host named by its id; C(retired) terminals are left out unless O(include_retired=true).
  - "Host variables: C(ansible_host), C(ipm_terminal_id), C(ipm_customer_id), C(ipm_site_id), C(ipm_model),
    C(ipm_serial_number), C(ipm_release), C(ipm_ring), C(ipm_status), C(ipm_interfaces), C(ipm_parameters), C(ipm_tags),
    and the VPN address plan's C(ipm_vpn_address) (null until assigned), C(ipm_vpn_prefix) (its site's prefix) and
    C(ipm_vpn_customer_prefix) (null when the catalog has no C(vpn) section)."
  - "When the catalog has a C(vpn) section, group C(all) gets C(ipm_vpn): the catalog's VPN settings (C(supernet),
    C(support_prefix), C(hub_address), C(hub_endpoint), C(listen_port), C(keepalive_s), ...) plus C(customers)
    (each customer's C(prefix) and its C(sites) prefixes), from which the C(ipm.fleet.vpn_hub) role builds its
    peers and the filter C(ipm.fleet.vpn_isolation_rules) the forwarding policy."
  - "Groups: C(customer_<id>), C(site_<id>) (children of their customer group), C(country_<cc>), C(tz_<zone>),
    C(language_<ll>) (parents of site groups), C(sla_<tier>) (parent of customer groups), C(model_<model>),
    C(release_<version>), C(ring_<ring>), C(status_<status>). Names are lower case, other characters become C(_)."
  - Site facts (C(ipm_site_*)) live on the site groups, customer facts (C(ipm_customer_*), C(ipm_contract),
    C(ipm_contacts)) on the customer groups, release parameter defaults (C(ipm_release_defaults)) on the
    release groups; none is copied into the hosts.
  - Any problem in the registry fails the inventory with the full validation report (file, line, key path,
    what was expected, what was found); C(ipm-registry validate) prints the same report.
  - The configuration file name must end in C(.ipm_registry.yml) or C(.ipm_registry.yaml).
  - The variables C(compose), C(groups) and C(keyed_groups) can use are the host variables plus the facts of
    its site and customer groups.
  - "Secret parameters (a release's C(secret: true), such as C(payment_api_token)) take Ansible Vault values in
    the registry (C(!vault |), the output of C(ansible-vault encrypt_string)); a plain-text value fails the
    inventory. They reach Ansible encrypted (C(EncryptedString)) and are decrypted only when a task uses them,
    with the run's vault password (C(--vault-password-file) or C(--ask-vault-pass)); the inventory itself
    never needs the password, and its cache keeps them encrypted."
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; it should always be set to V(ipm.fleet.registry) for this plugin to recognize it as its own.
    required: true
    type: str
    choices: [ipm.fleet.registry]
  registry:
    description:
      - The registry directory (the one holding C(catalog.yml)), relative to this configuration file unless absolute.
    required: true
    type: str
  include_retired:
    description: Also make hosts of terminals whose status is C(retired) (they go into group C(status_retired)).
    type: bool
    default: false
  workers:
    description:
      - How many processes read and check the customer files at once.
      - V(0) picks one per CPU (at most 8) when the customer files add up to 4 MiB or more (about 12,000
        terminals), and reads smaller registries in the Ansible process. V(1) never starts another process.
      - The inventory is the same whatever the number; only the time to build it changes.
    type: int
    default: 0
    env:
      - name: IPM_REGISTRY_WORKERS
  connect_via:
    description:
      - Which address C(ansible_host) is.
      - V(address) is the terminal's C(address) in the registry.
      - V(vpn) is its address in the VPN address plan (C(vpn-plan.yml) beside the registry, see
        C(ipm-registry addresses)), so that every playbook reaches the terminals through the tunnel. Needs a
        C(vpn) section in the catalog. A maintained terminal without an address in the plan fails the
        inventory with a message naming it and saying to run C(ipm-registry addresses --assign), unless
        O(vpn_unassigned=skip). Retired terminals (O(include_retired=true)) keep their registry address.
    type: str
    choices: [address, vpn]
    default: address
    env:
      - name: IPM_REGISTRY_CONNECT_VIA
  vpn_unassigned:
    description:
      - With O(connect_via=vpn), what happens to a terminal that has no address in the VPN plan yet.
      - V(fail) fails the inventory (naming every such terminal); V(skip) leaves those terminals out of the
        inventory with one warning naming them.
    type: str
    choices: [fail, skip]
    default: fail
  slices:
    description:
      - Make groups C(slice_<k>_of_<n>) for an AWX workflow that runs one job per slice (C(limit) V(slice_2_of_4),
        or V(slice_2_of_4:&ring_canary) for one ring stage); V(0) makes none.
      - Each site is in exactly one slice (its site group is a child of the slice group), slices are balanced by
        terminal count (largest site first, into the slice with the fewest terminals; deterministic), and slice
        groups carry C(ipm_slice) and C(ipm_slice_count). More slices than sites leaves some empty, with a warning.
      - The plan is C(plugins/plugin_utils/slicing.py), the same as the filter C(ipm.fleet.slice_plan) and
        C(ipm-registry slices); see docs/scale.md for rings, windows and ring gates under slicing.
    type: int
    default: 0
"""

EXAMPLES = r"""
# inventories/demo/fleet.ipm_registry.yml: the whole fleet, grouped by customer, site, country, ...
plugin: ipm.fleet.registry
registry: ../../registry/demo

---
# inventories/prod/fleet.ipm_registry.yml: a real fleet kept in its own git checkout,
# with extra groups made from the registry's variables.
plugin: ipm.fleet.registry
registry: /srv/fleet-registry
strict: true
compose:
  # connect by the terminal's name on the VPN rather than by the registry's address
  ansible_host: ipm_terminal_id ~ '.vpn.ipm.example'
  # site-local time zone as a host variable of its own
  ipm_local_zone: ipm_site_timezone
groups:
  # canaries of the gold and platinum contracts go first
  premium_canary: ipm_ring == 'canary' and ipm_contract.sla_tier in ['gold', 'platinum']
keyed_groups:
  - key: ipm_tags
    prefix: tag
  - key: ipm_site_timezone.split('/')[0]
    prefix: region

---
# Every playbook over the VPN: ansible_host is each terminal's planned tunnel address
# (ipm-registry addresses --assign records them in vpn-plan.yml beside the registry).
plugin: ipm.fleet.registry
registry: /srv/fleet-registry
connect_via: vpn

---
# For AWX: 4 slice groups (slice_1_of_4 ... slice_4_of_4), whole sites each, for a workflow of one job per slice.
plugin: ipm.fleet.registry
registry: registry
slices: 4

---
# Retired terminals too (for an audit of the whole history), cached for an hour.
plugin: ipm.fleet.registry
registry: /srv/fleet-registry
include_retired: true
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/ipm-fleet-inventory
cache_timeout: 3600
"""

# Imports follow the documentation blocks, as in every Ansible plugin.
import gc  # noqa: E402
import os  # noqa: E402

from ansible import constants as C  # noqa: E402
from ansible.errors import AnsibleParserError  # noqa: E402
from ansible.inventory.host import Host  # noqa: E402
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable  # noqa: E402
from ansible.template import trust_as_template  # noqa: E402
from ansible.utils.path import basedir  # noqa: E402

from ansible_collections.ipm.fleet.plugins.plugin_utils.registry import load_fleet  # noqa: E402
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import format_report  # noqa: E402
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_inventory import inventory_plan  # noqa: E402
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_paths import fingerprint  # noqa: E402
from ansible_collections.ipm.fleet.plugins.plugin_utils.slicing import inventory_slice_groups  # noqa: E402
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import (  # noqa: E402
    VaultValue,
    is_vault_value,
    to_encrypted,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.vpn_plan import VpnPlanError, apply_to_inventory  # noqa: E402

CONFIG_SUFFIXES = (".ipm_registry.yml", ".ipm_registry.yaml")
FREEZE_MIN_HOSTS = 10000


# The plan's parameter mappings, the only places the registry allows vault values: (group variable, ...).
_GROUP_PARAMETERS = ("ipm_customer_parameters", "ipm_site_parameters")


def encrypt_vaults(plan) -> list:
    """Make the plan's vault values (secret parameters) Ansible ``EncryptedString`` values; return where they are.

    Ansible decrypts them only when a task uses them, with the run's vault password. The places,
    ``["g", group, variable, parameter]`` or ``["h", host index, parameter]``, go into the cache
    beside the plan: Ansible's cache encoding stores an ``EncryptedString`` as its ciphertext but reads
    it back as a plain string (ansible-core 2.19), and :func:`restore_vaults` makes it encrypted again.
    """
    places = []
    for name, group_vars in plan["groups"].items():
        for key in _GROUP_PARAMETERS:
            for parameter, value in (group_vars.get(key) or {}).items():
                if isinstance(value, VaultValue):
                    group_vars[key][parameter] = to_encrypted(value)
                    places.append(["g", name, key, parameter])
    for index, host in enumerate(plan["hosts"]):
        parameters = host[1].get("ipm_parameters") or {}
        for parameter, value in parameters.items():
            if isinstance(value, VaultValue):
                parameters[parameter] = to_encrypted(value)
                places.append(["h", index, parameter])
    return places


def restore_vaults(plan, places) -> bool:
    """Make the vault values of a plan read from the cache encrypted again; False when the entry does not fit."""
    try:
        for place in places:
            if place[0] == "g":
                container, key = plan["groups"][place[1]][place[2]], place[3]
            else:
                container, key = plan["hosts"][place[1]][1]["ipm_parameters"], place[2]
            value = container[key]
            if not is_vault_value(value):
                if not isinstance(value, str) or not value.startswith("$ANSIBLE_VAULT;"):
                    return False
                container[key] = to_encrypted(VaultValue(value))
    except (KeyError, IndexError, TypeError, ValueError):
        return False
    return True


def _trust_in_place(container, trusted):
    """Tag every string inside ``container`` (dicts and lists, changed in place) as trusted."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    for key, value in items:
        kind = type(value)
        if kind is str:
            tagged = trusted.get(value)
            if tagged is None:
                tagged = trusted[value] = trust_as_template(value)
            container[key] = tagged
        elif kind is dict or kind is list:
            _trust_in_place(value, trusted)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "ipm.fleet.registry"

    def verify_file(self, path):
        """Only configuration files named ``*.ipm_registry.yml`` or ``*.ipm_registry.yaml``."""
        return super().verify_file(path) and path.endswith(CONFIG_SUFFIXES)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)

        registry_dir = self.get_option("registry")
        if not os.path.isabs(registry_dir):
            registry_dir = os.path.join(os.path.dirname(os.path.abspath(path)), registry_dir)
        registry_dir = os.path.normpath(registry_dir)
        include_retired = self.get_option("include_retired")
        vpn_options = (self.get_option("connect_via"), self.get_option("vpn_unassigned"))
        workers = self.get_option("workers")
        if workers < 0:
            raise AnsibleParserError(
                "ipm.fleet.registry: option workers in %s: expected 0 (one process per CPU for large registries), "
                "1 (no extra process) or a larger number; found %d" % (path, workers)
            )

        slices = self.get_option("slices")
        if slices < 0:
            raise AnsibleParserError(
                "ipm.fleet.registry: option slices in %s: expected 0 (no slice groups) or a number of slices, "
                "found %d" % (path, slices)
            )

        cache_key = self.get_cache_key(path)
        user_cache_setting = self.get_option("cache")
        attempt_to_read_cache = user_cache_setting and cache
        cache_needs_update = user_cache_setting and not cache

        plan = None
        stamp = None
        if attempt_to_read_cache or cache_needs_update:
            # The cache holds the plan with the registry's file sizes and times: an edit invalidates it.
            stamp = [registry_dir, include_retired, *vpn_options, fingerprint(registry_dir)]
        if attempt_to_read_cache:
            try:
                cached = self._cache[cache_key]
                if cached.get("stamp") == stamp:
                    plan = cached["plan"]
                else:
                    cache_needs_update = True
            except (KeyError, AttributeError, TypeError):
                cache_needs_update = True

        vaults = (cached.get("vaults") or []) if plan is not None else None
        if plan is not None and not restore_vaults(plan, vaults):
            plan = None  # an entry whose vault values cannot be made encrypted again: read the registry
            cache_needs_update = True
        if plan is None:
            plan = self._plan(registry_dir, include_retired, workers, vpn_options)
            vaults = encrypt_vaults(plan)
        if cache_needs_update:
            self._cache[cache_key] = {"stamp": stamp, "plan": plan, "vaults": vaults}

        if plan.get("vpn_skipped"):
            self.display.warning(
                "ipm.fleet.registry: %d terminal(s) left out (vpn_unassigned: skip), without an address in the VPN "
                "plan: %s; run ipm-registry addresses --assign"
                % (len(plan["vpn_skipped"]), ", ".join(plan["vpn_skipped"]))
            )
        if slices:
            plan = self._with_slices(plan, slices)
        self._populate(plan)

    def _with_slices(self, plan, slices):
        """The plan plus the slice groups (a new plan: the cached one stays as it is)."""
        groups, children, messages = inventory_slice_groups(plan["hosts"], slices)
        for message in messages:
            self.display.warning("ipm.fleet.registry: %s" % message)
        return dict(plan, groups={**plan["groups"], **groups}, children=plan["children"] + children)

    def _plan(self, registry_dir, include_retired, workers, vpn_options=("address", "fail")):
        if not os.path.isdir(registry_dir):
            raise AnsibleParserError(
                "ipm.fleet.registry: option registry: no such directory %r; set it to the directory holding catalog.yml"
                % registry_dir
            )
        fleet, problems = load_fleet(registry_dir, workers)
        if problems:
            raise AnsibleParserError(format_report(problems))
        plan = inventory_plan(fleet, include_retired)
        try:
            plan["vpn_skipped"] = apply_to_inventory(plan, fleet.vpn, *vpn_options)
        except VpnPlanError as exc:
            raise AnsibleParserError("ipm.fleet.registry: %s" % exc) from None
        return plan

    def _populate(self, plan):
        # Tens of thousands of Host objects and dicts, no cycles to find: keep the cyclic GC out of it.
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._add_everything(plan)
        finally:
            if collecting:
                gc.enable()
        if len(plan["hosts"]) >= FREEZE_MIN_HOSTS:
            # The inventory lives as long as the process: move it (and everything else alive now) to the
            # collector's permanent generation, so later collections stop rescanning millions of objects
            # (ansible-inventory gathers 100,000 hosts' variables in half the time) and forked workers
            # share its pages instead of copying them (see gc.freeze in the Python documentation).
            gc.freeze()

    def _add_everything(self, plan):
        # Registry values are trusted like those of a static inventory file kept in git (and then print as
        # plain strings in ansible-inventory's output). Strings repeat a lot (models, rings, releases,
        # devices): each distinct one is tagged once and shared, in place, without copying containers.
        trusted: dict = {}
        inventory = self.inventory
        # Plain InventoryData underneath Ansible's proxy: its set_variable walks and re-tags every value,
        # which is most of the cost at 10,000 hosts; registry values are plain YAML data already.
        data = getattr(inventory, "__wrapped__", inventory)
        groups = data.groups
        for name, group_vars in plan["groups"].items():
            data.add_group(name)
            if group_vars:
                _trust_in_place(group_vars, trusted)
                groups[name].vars.update(group_vars)
        for parent, child in plan["children"]:
            data.add_child(parent, child)

        compose = self.get_option("compose")
        composed_groups = self.get_option("groups")
        keyed_groups = self.get_option("keyed_groups")
        strict = self.get_option("strict")
        constructed = bool(compose or composed_groups or keyed_groups)

        # What InventoryData.add_host and Group.add_host do, without their per-host costs (the source's
        # directory resolved again for every host, every ancestor group walked and its host cache
        # cleared again for every membership): hosts are made here, group lineages computed once and
        # the host caches cleared once at the end.
        hosts = data.hosts
        source = data.current_source
        source_vars = {"inventory_file": source, "inventory_dir": basedir(source) if source else None}
        lineages: dict = {}
        for name, host_vars, host_groups in plan["hosts"]:
            host = hosts.get(name)
            if host is None:
                if name in C.LOCALHOST:
                    data.add_host(name)  # Ansible's bookkeeping of the implicit localhost
                    host = hosts[name]
                else:
                    host = hosts[name] = Host(name)
                    host.vars.update(source_vars)
            _trust_in_place(host_vars, trusted)
            host.vars.update(host_vars)
            host_group_list = host.groups
            for group_name in host_groups:
                group = groups[group_name]
                members = group.host_names
                if name in members:
                    continue
                group.hosts.append(host)
                members.add(name)
                lineage = lineages.get(group_name)
                if lineage is None:
                    lineage = lineages[group_name] = [*group.get_ancestors(), group]
                for member_of in lineage:
                    if member_of not in host_group_list:
                        host_group_list.append(member_of)
            if constructed:
                self._construct(name, host_vars, host_groups, compose, composed_groups, keyed_groups, strict)
        for group_name in lineages:
            groups[group_name].clear_hosts_cache()
        data._groups_dict_cache = {}

    def _construct(self, name, host_vars, host_groups, compose, composed_groups, keyed_groups, strict):
        """compose, groups and keyed_groups see the host's variables plus its site and customer facts."""
        variables = {}
        site_group = self.inventory.groups[host_groups[0]]
        customer_group = None
        for parent in site_group.parent_groups:
            if parent.name.startswith("customer_"):
                customer_group = parent
        if customer_group is not None:
            variables.update(customer_group.vars)
        variables.update(site_group.vars)
        variables.update(self.inventory.hosts[name].vars)
        self._set_composite_vars(compose, variables, name, strict=strict)
        self._add_host_to_composed_groups(composed_groups, variables, name, strict=strict)
        self._add_host_to_keyed_groups(keyed_groups, variables, name, strict=strict)
