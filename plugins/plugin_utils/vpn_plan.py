# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet's VPN address plan: the supernet, customer and site prefixes, one address per terminal.

The rules, once for every reader (``ipm-registry validate`` and ``addresses``, the
``ipm.fleet.registry`` inventory plugin, the ``ipm.fleet.vpn_*`` filters and roles):

- the catalog's ``vpn`` section (:func:`check_settings`) names the fleet ``supernet`` (every
  terminal address lies in it), the ``support_prefix`` (the support centre and the hub, outside the
  supernet), the ``hub_address`` (inside the support prefix) and the sizes used when a prefix is
  assigned rather than declared;
- each customer has one prefix inside the supernet: declared in its file (``customer.vpn_prefix``)
  or assigned once by :func:`assign` and recorded in the plan file; customers' prefixes never
  overlap;
- each site has one prefix inside its customer's: declared (``network.vpn_subnet``) or assigned once
  and recorded; sites never overlap; a site holds at most its prefix's size minus three terminals
  (the network and broadcast addresses and the first host address, reserved for the site's own
  equipment, are never given to a terminal);
- each maintained terminal (status active or spare) has one address inside its site's prefix,
  assigned once by :func:`assign` (the lowest free one) and recorded in the plan file
  (``<registry>/vpn-plan.yml``, :data:`PLAN_FILE`), never recomputed from the order of the
  terminals: adding terminals never changes the others' addresses;
- a terminal that leaves the registry (or turns ``retired``) gives its address back only after
  ``address_hold_days``: until then the address is *held* (listed under ``retired:`` with
  ``retired_at``) and given to no one else; a terminal moved to another site (or whose site was
  renumbered) gets a new address in its site's prefix, and its old one is held the same way. A
  terminal that comes back within the hold gets its held address again when it still fits.

:func:`evaluate` checks a registry against its plan and says where each terminal stands;
:func:`assign` records what is missing. Both are pure: they take a :class:`View` of the registry
(:func:`fleet_view` makes it from a :class:`~.registry.Fleet`), the plan's data and the time.
:func:`check_fleet` is the hook of :func:`~.registry.load_fleet`; :func:`write_plan` writes the
file atomically. :func:`host_vars` and :func:`fleet_vars` are what the inventory exposes;
:func:`isolation_rules` and :func:`may_reach` are the forwarding policy (support reaches every
terminal, nothing crosses between customers) that the hub's firewall applies and the lab tests
expect. Controller side only; needs the ``netaddr`` package (a clear problem, not a traceback,
when it is missing).
"""

from __future__ import annotations

import copy
import datetime
import os
import tempfile

import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import (
    Problem,
    check_fields,
    describe,
    display_path,
    key_path,
    reporter,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_paths import PLAN_FILE
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import OBJECTS, VPN_DEFAULTS
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_yaml import load_file

try:
    import netaddr
except ImportError:  # pragma: no cover - the controller's requirements have it (pyproject.toml)
    netaddr = None

__all__ = [
    "PLAN_FILE",
    "Layout",
    "Settings",
    "View",
    "VpnPlanError",
    "assign",
    "check_fleet",
    "check_settings",
    "empty_plan",
    "evaluate",
    "fleet_vars",
    "fleet_view",
    "host_vars",
    "isolation_rules",
    "may_reach",
    "read_plan",
    "write_plan",
]

NEEDS_NETADDR = "the Python package netaddr (pip install netaddr; it is in the controller's requirements)"
ASSIGN_HINT = "run: ipm-registry addresses --assign (then commit vpn-plan.yml with the registry)"
_STAMP = "%Y-%m-%dT%H:%M:%SZ"
PLAN_HEADER = (
    "# VPN address plan of this registry, written by `ipm-registry addresses --assign` (docs/registry.md).\n"
    "# Addresses are assigned once and kept: review and commit this file with the registry; do not reorder it.\n"
)


class VpnPlanError(ValueError):
    """Input the plan functions cannot work with (the message says what was expected)."""


def _require_netaddr():
    if netaddr is None:
        raise VpnPlanError("the VPN address plan needs " + NEEDS_NETADDR)


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def stamp(moment: datetime.datetime) -> str:
    """A time as the plan file writes it: ``2026-12-02T07:00:00Z``."""
    return moment.astimezone(datetime.timezone.utc).strftime(_STAMP)


def parse_stamp(text) -> datetime.datetime | None:
    if isinstance(text, datetime.datetime):
        return text if text.tzinfo else text.replace(tzinfo=datetime.timezone.utc)
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.strptime(text, _STAMP).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def _network(text):
    """``(IPNetwork, None)`` for an IPv4 CIDR with no host bits, else ``(None, why)``."""
    if not isinstance(text, str) or "/" not in text:
        return None, "not a CIDR network"
    try:
        exact = netaddr.IPNetwork(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None, "not a CIDR network"
    if exact.version != 4:
        return None, "not an IPv4 network"
    if exact.ip != exact.network:
        return None, f"host bits set (the network is {exact.cidr})"
    return exact.cidr, None


def _address(text):
    if not isinstance(text, str):
        return None
    try:
        address = netaddr.IPAddress(text)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    return address if address.version == 4 else None


def _overlap(a, b) -> bool:
    return a.first <= b.last and b.first <= a.last


def _inside(inner, outer) -> bool:
    return outer.first <= inner.first and inner.last <= outer.last


def capacity(prefix) -> int:
    """Terminal addresses a site prefix holds: its size minus network, broadcast and the reserved first host."""
    return max(0, prefix.size - 3)


def _host_range(prefix):
    """First and last address a terminal may get in a site prefix (ints)."""
    return prefix.first + 2, prefix.last - 1


# --- the catalog's vpn section -------------------------------------------------------------------


class Settings:
    """The catalog's ``vpn`` section, checked (networks as ``netaddr.IPNetwork``)."""

    __slots__ = (
        "address_hold_days",
        "customer_prefix_length",
        "hub_address",
        "hub_endpoint",
        "keepalive_s",
        "listen_port",
        "site_prefix_length",
        "supernet",
        "support_prefix",
    )

    def __init__(self, supernet, support_prefix, hub_address=None, **values):
        self.supernet = supernet
        self.support_prefix = support_prefix
        self.hub_address = hub_address
        for key in ("address_hold_days", "customer_prefix_length", "site_prefix_length", "listen_port", "keepalive_s"):
            setattr(self, key, values.get(key, VPN_DEFAULTS[key]))
        self.hub_endpoint = values.get("hub_endpoint")

    def as_vars(self) -> dict:
        return {
            "supernet": str(self.supernet),
            "support_prefix": str(self.support_prefix),
            "hub_address": str(self.hub_address) if self.hub_address is not None else None,
            "hub_endpoint": self.hub_endpoint,
            "listen_port": self.listen_port,
            "keepalive_s": self.keepalive_s,
            "customer_prefix_length": self.customer_prefix_length,
            "site_prefix_length": self.site_prefix_length,
            "address_hold_days": self.address_hold_days,
        }


def check_settings(section, report, keys=("vpn",)) -> Settings | None:
    """Check the catalog's ``vpn`` mapping (shape by ``registry_spec``); report faults; the settings or None.

    ``report(keys, message, expected, found)`` as :func:`~.registry_check.reporter` makes.
    """
    if not isinstance(section, dict):
        return None
    if netaddr is None:
        report(keys, "the VPN address plan cannot be checked", NEEDS_NETADDR, "no netaddr module")
        return None
    keys = tuple(keys)
    bad = False
    networks = {}
    for key in ("supernet", "support_prefix"):
        value = section.get(key)
        if not isinstance(value, str):
            bad = True  # missing or wrong type: the shape check reported it
            continue
        network, why = _network(value)
        if network is None:
            report((*keys, key), why, "an IPv4 network in CIDR form, e.g. 10.60.0.0/14", describe(value))
            bad = True
        networks[key] = network
    supernet, support = networks.get("supernet"), networks.get("support_prefix")
    if supernet is not None and support is not None and _overlap(support, supernet):
        report(
            (*keys, "support_prefix"),
            f"the support prefix overlaps the fleet supernet {supernet}",
            "a prefix outside the supernet (terminal addresses), e.g. 10.59.0.0/24",
            describe(section["support_prefix"]),
        )
        bad = True
    hub = None
    if isinstance(section.get("hub_address"), str):
        hub = _address(section["hub_address"])
        if hub is None:
            report((*keys, "hub_address"), "not an IPv4 address", "e.g. 10.59.0.1", describe(section["hub_address"]))
            bad = True
        elif support is not None and not (support.first < int(hub) < support.last):
            report(
                (*keys, "hub_address"),
                f"the hub address is not a host address of the support prefix {support}",
                f"an address between {netaddr.IPAddress(support.first + 1)} and {netaddr.IPAddress(support.last - 1)}",
                describe(section["hub_address"]),
            )
            bad = True
    values = {}
    for key in ("address_hold_days", "customer_prefix_length", "site_prefix_length", "listen_port", "keepalive_s"):
        value = section.get(key, VPN_DEFAULTS[key])
        if not isinstance(value, int) or isinstance(value, bool):
            bad = True
            continue
        values[key] = value
    customer_length = values.get("customer_prefix_length")
    site_length = values.get("site_prefix_length")
    if supernet is not None and customer_length is not None and customer_length < supernet.prefixlen:
        report(
            (*keys, "customer_prefix_length"),
            f"customer prefixes would be larger than the supernet {supernet}",
            f"at least {supernet.prefixlen}",
            describe(customer_length),
        )
        bad = True
    if customer_length is not None and site_length is not None and site_length <= customer_length:
        report(
            (*keys, "site_prefix_length"),
            "site prefixes must be smaller than customer prefixes",
            f"more than customer_prefix_length ({customer_length})",
            describe(site_length),
        )
        bad = True
    if bad:
        return None
    if isinstance(section.get("hub_endpoint"), str):
        values["hub_endpoint"] = section["hub_endpoint"]
    return Settings(supernet, support, hub, **values)


# --- the registry as the plan sees it ----------------------------------------------------------------


class View:
    """What the plan needs of a registry, each item with the file and key path it comes from.

    ``customers``: ``{"id", "prefix" (declared text or None), "file", "keys"}``; ``sites``: ``{"id",
    "customer", "prefix" (declared text or None), "file", "keys" (of vpn_subnet), "site_keys"}``;
    ``terminals``: ``{"id", "site", "customer", "maintained" (bool), "file", "keys"}``.
    """

    __slots__ = ("customers", "sites", "terminals")

    def __init__(self, customers=(), sites=(), terminals=()):
        self.customers = list(customers)
        self.sites = list(sites)
        self.terminals = list(terminals)


def fleet_view(fleet) -> View:
    """The :class:`View` of a loaded :class:`~.registry.Fleet` (terminals with status retired are not maintained)."""
    view = View()
    for document in fleet.customers:
        customer, rel = document["customer"], document["file"]
        customer_id = customer.get("id")
        declared = customer.get("vpn_prefix")
        view.customers.append(
            {
                "id": customer_id,
                "prefix": declared if isinstance(declared, str) else None,
                "file": rel,
                "keys": ("customer", "vpn_prefix"),
            }
        )
        for index, site in enumerate(document["sites"]):
            network = site.get("network")
            subnet = network.get("vpn_subnet") if isinstance(network, dict) else None
            if not isinstance(site.get("id"), str):
                continue
            view.sites.append(
                {
                    "id": site["id"],
                    "customer": customer_id,
                    "prefix": subnet if isinstance(subnet, str) else None,
                    "file": rel,
                    "keys": ("sites", index, "network", "vpn_subnet"),
                    "site_keys": ("sites", index),
                }
            )
            for position, terminal in enumerate(site.get("terminals") or []):
                if not isinstance(terminal, dict) or not isinstance(terminal.get("id"), str):
                    continue
                view.terminals.append(
                    {
                        "id": terminal["id"],
                        "site": site["id"],
                        "customer": customer_id,
                        "maintained": terminal.get("status") != "retired",
                        "file": rel,
                        "keys": ("sites", index, "terminals", position, "id"),
                    }
                )
    return view


# --- the plan file -----------------------------------------------------------------------------------


def empty_plan() -> dict:
    return {"version": 1, "customers": {}, "sites": {}, "terminals": {}, "retired": []}


def read_plan(path, rel, problems) -> dict | None:
    """The plan file's data (an empty plan when there is no file), or None when it is unusable.

    Faults of its shape are appended to ``problems`` (file ``rel``, key path, expected, found).
    """
    if not os.path.exists(path):
        return empty_plan()
    data, ok = load_file(path, rel, problems)[:2]
    if not ok:
        return None
    if data is None:
        return empty_plan()
    if not check_fields(data, OBJECTS["vpn_plan"], (), reporter(rel, problems)):
        return None
    plan = empty_plan()
    for key in ("customers", "sites", "terminals"):
        plan[key] = dict(data.get(key) or {})
    plan["retired"] = list(data.get("retired") or [])
    return plan


def plan_text(plan) -> str:
    """The plan file's text: the header, then the data in a stable order (terminals as recorded)."""
    document = {
        "version": 1,
        "customers": {k: dict(v) for k, v in plan["customers"].items()},
        "sites": {k: dict(v) for k, v in plan["sites"].items()},
        "terminals": {k: dict(v) for k, v in plan["terminals"].items()},
        "retired": [dict(item) for item in plan["retired"]],
    }
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=200, allow_unicode=True)
    return PLAN_HEADER + "---\n" + body


def write_plan(path, plan) -> None:
    """Write the plan file atomically (a temporary file beside it, then renamed over it)."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".vpn-plan.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(plan_text(plan))
            stream.flush()
            os.fsync(stream.fileno())
        if os.path.exists(path):
            os.chmod(temporary, os.stat(path).st_mode & 0o777)
        else:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# --- evaluation --------------------------------------------------------------------------------------


class Layout:
    """Where every customer, site and terminal stands against the plan.

    ``customers``: id -> ``{"prefix": IPNetwork or None, "source": "declared" | "recorded" | None}``;
    ``sites``: id -> ``{"prefix", "source", "customer", "capacity", "used"}``; ``terminals``: id ->
    ``{"address": text or None, "site", "customer", "state": "assigned" | "unassigned" | "stale" |
    "retired"}`` (``stale``: recorded outside its site's prefix, moved or renumbered); ``held``: the
    retired entries whose hold runs (each with ``held_until``); ``leaving``: plan entries of terminals
    no longer maintained (retired by the next :func:`assign`). ``problems`` block :func:`assign`;
    ``stale_problems`` are the stale addresses it fixes.
    """

    def __init__(self, settings, plan, plan_rel):
        self.settings = settings
        self.plan = plan
        self.plan_rel = plan_rel
        self.customers: dict = {}
        self.sites: dict = {}
        self.terminals: dict = {}
        self.held: list = []
        self.leaving: list = []
        self.problems: list[Problem] = []
        self.stale_problems: list[Problem] = []

    @property
    def unassigned(self) -> list[str]:
        return [t for t, item in self.terminals.items() if item["state"] in ("unassigned", "stale")]

    @property
    def complete(self) -> bool:
        """Nothing for :func:`assign` to do: every maintained terminal has its address, nothing to retire."""
        return not self.unassigned and not self.leaving and not self.problems


def _held_until(settings, entry):
    retired_at = parse_stamp(entry.get("retired_at"))
    if retired_at is None:
        return None
    return retired_at + datetime.timedelta(days=settings.address_hold_days)


def _check_overlaps(items, what, problem):
    """Report each item (``(network, id, (file, keys))``) overlapping an earlier one, once: ``what`` prefix overlaps ..."""
    ordered = sorted(items, key=lambda item: (item[0].first, -item[0].size))
    widest = None
    for item in ordered:
        network = item[0]
        if widest is not None and network.first <= widest[0].last:
            file, keys = widest[2]
            problem(
                *item[2],
                f"{what} prefix overlaps {what} {widest[1]}'s {widest[0]} ({file} {key_path(keys)})",
                f"{what} prefixes that share no address",
                str(network),
            )
        if widest is None or network.last > widest[0].last:
            widest = item


def _prefix_of(what, item, plan, plan_rel, supernet, problem, report_malformed):
    """A customer's or site's prefix: declared in its file, else recorded in the plan; ``(prefix, source, where)``.

    The prefix is None when there is none, or when it is malformed or outside the supernet (reported).
    """
    recorded = plan["customers" if what == "customer" else "sites"].get(item["id"])
    if item["prefix"] is not None:
        where, source, text = (item["file"], item["keys"]), "declared", item["prefix"]
    elif recorded is not None:
        where, source = (plan_rel, ("customers" if what == "customer" else "sites", item["id"], "prefix")), "recorded"
        text, report_malformed = recorded.get("prefix"), True
    else:
        return None, None, None
    prefix, why = _network(text)
    if prefix is None:
        if report_malformed:
            problem(*where, why, "an IPv4 network in CIDR form, e.g. 10.60.0.0/20", describe(text))
    elif not _inside(prefix, supernet):
        problem(
            *where, f"{what} prefix outside the fleet supernet {supernet}", f"a prefix inside {supernet}", str(prefix)
        )
        prefix = None
    return prefix, source, where


def evaluate(settings: Settings, view: View, plan: dict, plan_rel: str = PLAN_FILE, now=None) -> Layout:
    """Check the registry (``view``) against its plan at time ``now``; the :class:`Layout`, with its problems.

    Problems name the customer file and key path (declared prefixes) or the plan file and key path
    (recorded ones), say what was expected and what was found.
    """
    _require_netaddr()
    now = now or now_utc()
    layout = Layout(settings, plan, plan_rel)
    problems = layout.problems
    supernet = settings.supernet

    def problem(file, keys, message, expected="", found=""):
        problems.append(Problem(file, keys, message, expected, found))

    # Customers' prefixes: declared in the customer file, else recorded in the plan.
    located = {}
    for customer in view.customers:
        customer_id = customer["id"]
        if not isinstance(customer_id, str):
            continue
        prefix, source, where = _prefix_of("customer", customer, plan, plan_rel, supernet, problem, True)
        layout.customers[customer_id] = {"prefix": prefix, "source": source if prefix is not None else None}
        if prefix is not None:
            located[customer_id] = where

    _check_overlaps(
        [(c["prefix"], cid, located[cid]) for cid, c in layout.customers.items() if c["prefix"] is not None],
        "customer",
        problem,
    )

    # Sites' prefixes: declared network.vpn_subnet, else recorded; inside the customer's and the supernet.
    counts: dict[str, int] = {}
    for terminal in view.terminals:
        if terminal["maintained"]:
            counts[terminal["site"]] = counts.get(terminal["site"], 0) + 1
    site_where = {}
    for site in view.sites:
        site_id, customer_id = site["id"], site["customer"]
        # A malformed declared vpn_subnet is already the registry check's problem ("not a network").
        prefix, source, where = _prefix_of("site", site, plan, plan_rel, supernet, problem, False)
        customer_prefix = (layout.customers.get(customer_id) or {}).get("prefix")
        if prefix is not None and customer_prefix is not None and not _inside(prefix, customer_prefix):
            origin = located[customer_id]
            problem(
                *where,
                f"site prefix outside its customer {customer_id}'s prefix {customer_prefix} ({origin[0]} {key_path(origin[1])})",
                f"a prefix inside {customer_prefix}",
                str(prefix),
            )
            prefix = None
        if prefix is not None and customer_prefix is None:
            for other_id, other in layout.customers.items():
                if other_id != customer_id and other["prefix"] is not None and _overlap(prefix, other["prefix"]):
                    problem(
                        *where,
                        f"site prefix inside another customer's prefix: {other_id}'s {other['prefix']}",
                        "a prefix outside every other customer's prefix",
                        str(prefix),
                    )
                    prefix = None
                    break
        used = counts.get(site_id, 0)
        entry = {"prefix": prefix, "source": source if prefix is not None else None, "customer": customer_id}
        entry["capacity"] = capacity(prefix) if prefix is not None else 0
        entry["used"] = used
        layout.sites[site_id] = entry
        if prefix is not None:
            site_where[site_id] = where
            if used > entry["capacity"]:
                file, keys = (site["file"], site["keys"]) if source == "declared" else (site["file"], site["site_keys"])
                problem(
                    file,
                    keys,
                    f"site prefix {prefix} full: {used} maintained terminals, room for {entry['capacity']} "
                    "(its size minus the network, broadcast and reserved first addresses)",
                    f"at most {entry['capacity']} terminals, or a larger network.vpn_subnet",
                    f"{used} terminals",
                )

    _check_overlaps(
        [(s["prefix"], sid, site_where[sid]) for sid, s in layout.sites.items() if s["prefix"] is not None],
        "site",
        problem,
    )

    # Terminals: the recorded address inside its site's prefix, each address once (held ones included).
    maintained = {}
    for terminal in view.terminals:
        if terminal["maintained"]:
            maintained[terminal["id"]] = terminal
        else:
            layout.terminals[terminal["id"]] = {
                "address": None,
                "site": terminal["site"],
                "customer": terminal["customer"],
                "state": "retired",
            }
    owners: dict[int, tuple] = {}
    for terminal_id, entry in plan["terminals"].items():
        keys = ("terminals", terminal_id, "address")
        address = _address(entry.get("address"))
        if address is None:
            problem(plan_rel, keys, "not an IPv4 address", "e.g. 10.60.1.2", describe(entry.get("address")))
            continue
        first = owners.get(int(address))
        if first is not None:
            problem(
                plan_rel,
                keys,
                f"duplicate address: {address} is already {first[0]}'s ({plan_rel} {key_path(first[1])})",
                "each address given to one terminal",
                str(address),
            )
        else:
            owners[int(address)] = (terminal_id, keys)
        if terminal_id not in maintained:
            layout.leaving.append(terminal_id)
    for index, entry in enumerate(plan["retired"]):
        keys = ("retired", index, "address")
        until = _held_until(settings, entry)
        if until is None:
            problem(
                plan_rel,
                ("retired", index, "retired_at"),
                "not a time",
                "e.g. 2026-12-02T07:00:00Z",
                describe(entry.get("retired_at")),
            )
            continue
        address = _address(entry.get("address"))
        if address is None:
            problem(plan_rel, keys, "not an IPv4 address", "e.g. 10.60.1.2", describe(entry.get("address")))
            continue
        if now >= until:
            continue  # the hold is over: the address is free again
        first = owners.get(int(address))
        if first is not None:
            problem(
                plan_rel,
                keys,
                f"duplicate address: {address}, held until {stamp(until)}, is also {first[0]}'s ({plan_rel} {key_path(first[1])})",
                "a held address given to no terminal before its hold ends",
                str(address),
            )
        else:
            owners[int(address)] = (entry.get("terminal"), keys)
        layout.held.append(dict(entry, held_until=stamp(until)))
    for terminal_id, terminal in maintained.items():
        site = layout.sites.get(terminal["site"]) or {}
        prefix = site.get("prefix")
        entry = plan["terminals"].get(terminal_id)
        state, address = "unassigned", None
        if entry is not None:
            address = _address(entry.get("address"))
            state = "assigned" if address is not None else "unassigned"
            if address is not None and prefix is not None:
                low, high = _host_range(prefix)
                keys = ("terminals", terminal_id, "address")
                if not (prefix.first <= int(address) <= prefix.last):
                    state = "stale"
                    recorded_site = entry.get("site")
                    moved = isinstance(recorded_site, str) and recorded_site != terminal["site"]
                    reason = (
                        f"terminal moved from site {recorded_site} to {terminal['site']}: its address {address} is "
                        f"outside {terminal['site']}'s prefix {prefix}"
                        if moved
                        else f"address outside its site {terminal['site']}'s prefix {prefix}"
                    )
                    layout.stale_problems.append(
                        Problem(
                            plan_rel,
                            keys,
                            reason,
                            f"an address in {prefix}: {ASSIGN_HINT} (gives it one; {address} is then held "
                            f"{settings.address_hold_days} days)",
                            str(address),
                        )
                    )
                elif not (low <= int(address) <= high):
                    problem(
                        plan_rel,
                        keys,
                        f"reserved address of site {terminal['site']}'s prefix {prefix} (network, broadcast or first host)",
                        f"an address between {netaddr.IPAddress(low)} and {netaddr.IPAddress(high)}",
                        str(address),
                    )
        layout.terminals[terminal_id] = {
            "address": str(address) if address is not None and state == "assigned" else None,
            "site": terminal["site"],
            "customer": terminal["customer"],
            "state": state,
        }
    return layout


# --- assignment --------------------------------------------------------------------------------------


def _free_block(container, length, taken):
    """The lowest prefix of ``length`` inside ``container`` overlapping none of ``taken``, or None."""
    if length < container.prefixlen:
        return None
    for candidate in container.subnet(length):
        if not any(_overlap(candidate, other) for other in taken):
            return candidate
    return None


def assign(settings: Settings, view: View, plan: dict, now=None) -> tuple[dict, list[dict], list[Problem]]:
    """Record what the plan lacks; return ``(new plan, changes, problems)`` (the input plan is not changed).

    Existing addresses are never changed. Terminals no longer maintained are retired (their address
    held ``address_hold_days``); a stale address (moved terminal, renumbered site) is held and a new
    one given; holds that ended are released; customers and sites without a prefix get the lowest
    free one of the configured length; every maintained terminal without an address gets the lowest
    free address of its site's prefix (its own held address first, when it comes back). When
    ``problems`` is not empty (the registry or plan has faults :func:`evaluate` reports, or there is
    no room), the new plan is None and nothing should be written.
    """
    now = now or now_utc()
    layout = evaluate(settings, view, plan, now=now)
    if layout.problems:
        return None, [], list(layout.problems)
    new = copy.deepcopy(plan)
    changes: list[dict] = []
    when = stamp(now)
    problems: list[Problem] = []

    # Retire what left, re-address what is stale (both addresses held), release ended holds.
    stale = [terminal_id for terminal_id, item in layout.terminals.items() if item["state"] == "stale"]
    held_until = stamp(now + datetime.timedelta(days=settings.address_hold_days))
    for action, terminal_ids in (("retired", layout.leaving), ("held", stale)):
        for terminal_id in terminal_ids:
            entry = new["terminals"].pop(terminal_id)
            new["retired"].append({"terminal": terminal_id, **entry, "retired_at": when})
            changes.append(
                {"action": action, "terminal": terminal_id, "address": entry.get("address"), "held_until": held_until}
            )
    kept = []
    for entry in new["retired"]:
        until = _held_until(settings, entry)
        if until is not None and now >= until:
            changes.append({"action": "released", "terminal": entry.get("terminal"), "address": entry.get("address")})
        else:
            kept.append(entry)
    new["retired"] = kept

    # Customer prefixes.
    known_customers = {c["id"] for c in view.customers}
    for customer_id in [c for c in new["customers"] if c not in known_customers]:
        del new["customers"][customer_id]
    taken = [c["prefix"] for c in layout.customers.values() if c["prefix"] is not None]
    declared_sites: dict[str, list] = {}
    for site in view.sites:
        prefix = layout.sites.get(site["id"], {}).get("prefix")
        if prefix is not None:
            declared_sites.setdefault(site["customer"], []).append(prefix)
    customer_prefixes = {cid: c["prefix"] for cid, c in layout.customers.items()}
    for customer in view.customers:
        customer_id = customer["id"]
        if customer["prefix"] is not None:
            new["customers"].pop(customer_id, None)  # declared in the customer file: that wins
            continue
        if customer_prefixes.get(customer_id) is not None:
            continue
        own = declared_sites.get(customer_id, [])
        others = [p for cid, sites in declared_sites.items() if cid != customer_id for p in sites]
        chosen = None
        if own:
            candidate = netaddr.IPNetwork(f"{own[0].network}/{settings.customer_prefix_length}").cidr
            if (
                _inside(candidate, settings.supernet)
                and all(_inside(p, candidate) for p in own)
                and not any(_overlap(candidate, p) for p in taken + others)
            ):
                chosen = candidate
        if chosen is None:
            chosen = _free_block(settings.supernet, settings.customer_prefix_length, taken + others)
            if chosen is not None and own and not all(_inside(p, chosen) for p in own):
                chosen = None
        if chosen is None:
            problems.append(
                Problem(
                    customer["file"],
                    customer["keys"],
                    f"no free /{settings.customer_prefix_length} in the supernet {settings.supernet} for customer {customer_id}"
                    + (" holding its sites' vpn_subnet" if own else ""),
                    "customer.vpn_prefix declared in the customer file, or a larger vpn.supernet in the catalog",
                    "nothing",
                )
            )
            continue
        taken.append(chosen)
        customer_prefixes[customer_id] = chosen
        new["customers"][customer_id] = {"prefix": str(chosen), "assigned_at": when}
        changes.append({"action": "customer_prefix", "customer": customer_id, "prefix": str(chosen)})

    # Site prefixes.
    known_sites = {s["id"] for s in view.sites}
    for site_id in [s for s in new["sites"] if s not in known_sites]:
        del new["sites"][site_id]
    site_prefixes = {sid: s["prefix"] for sid, s in layout.sites.items()}
    taken_sites = [p for p in site_prefixes.values() if p is not None]
    for site in view.sites:
        site_id = site["id"]
        if site["prefix"] is not None:
            new["sites"].pop(site_id, None)
            continue
        if site_prefixes.get(site_id) is not None:
            continue
        customer_prefix = customer_prefixes.get(site["customer"])
        if customer_prefix is None:
            continue  # reported above
        chosen = _free_block(customer_prefix, settings.site_prefix_length, taken_sites)
        needed = layout.sites.get(site_id, {}).get("used", 0)
        if chosen is None or capacity(chosen) < needed:
            problems.append(
                Problem(
                    site["file"],
                    site["site_keys"],
                    (
                        f"no free /{settings.site_prefix_length} left in customer {site['customer']}'s prefix {customer_prefix}"
                        if chosen is None
                        else f"{needed} maintained terminals do not fit a /{settings.site_prefix_length} (room for {capacity(chosen)})"
                    ),
                    "network.vpn_subnet declared for the site, or another vpn.site_prefix_length in the catalog",
                    "nothing",
                )
            )
            continue
        taken_sites.append(chosen)
        site_prefixes[site_id] = chosen
        new["sites"][site_id] = {"prefix": str(chosen), "assigned_at": when}
        changes.append({"action": "site_prefix", "site": site_id, "customer": site["customer"], "prefix": str(chosen)})
    if problems:
        return None, [], problems

    # Terminal addresses.
    used = {int(netaddr.IPAddress(entry["address"])) for entry in new["terminals"].values()}
    for entry in new["retired"]:
        used.add(int(netaddr.IPAddress(entry["address"])))
    for terminal in view.terminals:
        terminal_id = terminal["id"]
        if not terminal["maintained"] or terminal_id in new["terminals"]:
            continue
        prefix = site_prefixes.get(terminal["site"])
        if prefix is None:
            continue
        low, high = _host_range(prefix)
        chosen = None
        for index, entry in enumerate(new["retired"]):  # coming back within the hold: its own address again
            if entry.get("terminal") == terminal_id:
                value = int(netaddr.IPAddress(entry["address"]))
                if low <= value <= high:
                    chosen = value
                    del new["retired"][index]
                    used.discard(value)
                    break
        if chosen is None:
            chosen = next((value for value in range(low, high + 1) if value not in used), None)
        if chosen is None:
            problems.append(
                Problem(
                    terminal["file"],
                    terminal["keys"],
                    f"no free address left in site {terminal['site']}'s prefix {prefix} (held addresses included)",
                    "a larger network.vpn_subnet, or wait for held addresses to be released",
                    terminal_id,
                )
            )
            continue
        used.add(chosen)
        address = str(netaddr.IPAddress(chosen))
        new["terminals"][terminal_id] = {
            "address": address,
            "site": terminal["site"],
            "customer": terminal["customer"],
            "assigned_at": when,
        }
        changes.append(
            {
                "action": "assigned",
                "terminal": terminal_id,
                "address": address,
                "site": terminal["site"],
                "customer": terminal["customer"],
            }
        )
    if problems:
        return None, [], problems
    return new, changes, []


# --- the registry hook, the inventory's variables ----------------------------------------------------


def plan_path(registry_dir) -> str:
    return os.path.join(registry_dir, PLAN_FILE)


def check_fleet(fleet, section, catalog_rel, problems, now=None) -> None:
    """The hook of ``load_fleet``: check the catalog's ``vpn`` section, the plan file and the prefixes.

    Sets ``fleet.vpn`` (the :class:`Layout`, or None when the catalog has no usable ``vpn`` section)
    and appends every problem (stale addresses too: the plan must be brought up to date with
    ``ipm-registry addresses --assign``).
    """
    fleet.vpn = None
    if section is None:
        return
    settings = check_settings(section, reporter(catalog_rel, problems))
    if settings is None:
        return
    path = plan_path(fleet.registry_dir)
    rel = display_path(path)
    plan = read_plan(path, rel, problems)
    if plan is None:
        return
    layout = evaluate(settings, fleet_view(fleet), plan, rel, now)
    problems.extend(layout.problems)
    problems.extend(layout.stale_problems)
    fleet.vpn = layout


def host_vars(layout, terminal_id) -> dict:
    """``ipm_vpn_address`` (None until assigned), ``ipm_vpn_prefix`` (its site's), ``ipm_vpn_customer_prefix``."""
    item = layout.terminals.get(terminal_id) if layout is not None else None
    if item is None:
        return {"ipm_vpn_address": None, "ipm_vpn_prefix": None, "ipm_vpn_customer_prefix": None}
    site = layout.sites.get(item["site"]) or {}
    customer = layout.customers.get(item["customer"]) or {}
    return {
        "ipm_vpn_address": item["address"],
        "ipm_vpn_prefix": str(site["prefix"]) if site.get("prefix") is not None else None,
        "ipm_vpn_customer_prefix": str(customer["prefix"]) if customer.get("prefix") is not None else None,
    }


def fleet_vars(layout) -> dict | None:
    """The group variable ``ipm_vpn`` of ``all``: the catalog's settings plus every customer's and site's prefix.

    ``{"supernet", "support_prefix", "hub_address", "hub_endpoint", "listen_port", "keepalive_s",
    "customer_prefix_length", "site_prefix_length", "address_hold_days", "customers": {id: {"prefix",
    "sites": {site id: prefix}}}}``; None when the registry has no VPN plan.
    """
    if layout is None:
        return None
    result = layout.settings.as_vars()
    customers = {}
    for customer_id, item in layout.customers.items():
        customers[customer_id] = {
            "prefix": str(item["prefix"]) if item["prefix"] is not None else None,
            "sites": {
                site_id: str(site["prefix"]) if site["prefix"] is not None else None
                for site_id, site in layout.sites.items()
                if site["customer"] == customer_id
            },
        }
    result["customers"] = customers
    return result


# --- the forwarding policy ---------------------------------------------------------------------------


def isolation_rules(ipm_vpn, allow_within_customer=False) -> dict:
    """The hub's forwarding policy, as data, from the ``ipm_vpn`` variable (:func:`fleet_vars`).

    Default deny (``policy: drop``); replies of accepted flows pass (``established: true``, nftables'
    ``ct state established,related``); ``accept`` lists ``{source, destination, customer, comment}``:
    the support prefix to every customer's prefix, and with ``allow_within_customer`` each customer's
    prefix to itself. Nothing ever goes from one customer's prefix to another's. ``customers`` lists
    ``{customer, prefix}`` sorted by customer. Raises :class:`VpnPlanError` for input that is not an
    ``ipm_vpn`` mapping.
    """
    _require_netaddr()
    if not isinstance(ipm_vpn, dict) or not isinstance(ipm_vpn.get("customers"), dict):
        raise VpnPlanError(
            "expected the ipm_vpn variable of the ipm.fleet.registry inventory (a catalog with a vpn: section), "
            f"found {describe(ipm_vpn)}"
        )
    support = _network(ipm_vpn.get("support_prefix"))[0]
    if support is None:
        raise VpnPlanError(
            f"ipm_vpn.support_prefix: expected an IPv4 CIDR, found {describe(ipm_vpn.get('support_prefix'))}"
        )
    customers = []
    for customer_id in sorted(ipm_vpn["customers"]):
        item = ipm_vpn["customers"][customer_id]
        prefix = _network(item.get("prefix") if isinstance(item, dict) else None)[0]
        if prefix is None:
            continue  # no prefix yet: no terminal of it has an address either
        customers.append({"customer": customer_id, "prefix": str(prefix)})
    accept = [
        {
            "source": str(support),
            "destination": item["prefix"],
            "customer": item["customer"],
            "comment": f"support reaches customer {item['customer']}",
        }
        for item in customers
    ]
    if allow_within_customer:
        accept += [
            {
                "source": item["prefix"],
                "destination": item["prefix"],
                "customer": item["customer"],
                "comment": f"terminals of customer {item['customer']} reach each other",
            }
            for item in customers
        ]
    return {
        "policy": "drop",
        "established": True,
        "support_prefix": str(support),
        "supernet": ipm_vpn.get("supernet"),
        "hub_address": ipm_vpn.get("hub_address"),
        "customers": customers,
        "accept": accept,
    }


def may_reach(rules, source, destination) -> bool:
    """Whether the policy (:func:`isolation_rules`) lets a new flow from ``source`` to ``destination`` through.

    The lab's probe matrix expects exactly this: True for the support prefix to any terminal, False
    between customers.
    """
    _require_netaddr()
    src, dst = _address(str(source).partition("/")[0]), _address(str(destination).partition("/")[0])
    if src is None or dst is None:
        raise VpnPlanError(f"expected two IPv4 addresses, found {describe(source)} and {describe(destination)}")
    for rule in rules.get("accept") or []:
        if src in netaddr.IPNetwork(rule["source"]) and dst in netaddr.IPNetwork(rule["destination"]):
            return True
    return False


# --- the inventory ---------------------------------------------------------------------------------

CONNECT_VIA = ("address", "vpn")
UNASSIGNED = ("fail", "skip")


def apply_to_inventory(plan, layout, connect_via="address", unassigned="fail") -> list[str]:
    """Add the VPN variables to an inventory plan (``registry_inventory.inventory_plan``'s), in place.

    Every host gets :func:`host_vars`; group ``all`` gets ``ipm_vpn`` (:func:`fleet_vars`) when the
    registry has a plan. With ``connect_via="vpn"`` each maintained terminal's ``ansible_host``
    becomes its VPN address; a terminal without one fails the whole inventory (:class:`VpnPlanError`
    naming them and saying to run ``ipm-registry addresses --assign``), or with ``unassigned="skip"``
    is left out: the ids of the terminals left out are returned (the caller warns). Retired
    terminals (``include_retired``) keep their registry address: they have no tunnel.
    """
    if connect_via not in CONNECT_VIA:
        raise VpnPlanError(f"option connect_via: expected one of {', '.join(CONNECT_VIA)}, found {connect_via!r}")
    if unassigned not in UNASSIGNED:
        raise VpnPlanError(f"option vpn_unassigned: expected one of {', '.join(UNASSIGNED)}, found {unassigned!r}")
    if connect_via == "vpn" and layout is None:
        raise VpnPlanError(
            "option connect_via: vpn needs the VPN address plan: a vpn: section in the registry's catalog.yml "
            "(supernet, support_prefix; see docs/registry.md) and addresses recorded by ipm-registry addresses --assign"
        )
    vpn = fleet_vars(layout)
    if vpn is not None:
        plan["groups"].setdefault("all", {})["ipm_vpn"] = vpn
    missing = []
    for host in plan["hosts"]:
        name, variables = host[0], host[1]
        variables.update(host_vars(layout, name))
        if connect_via != "vpn" or variables.get("ipm_status") == "retired":
            continue
        if variables["ipm_vpn_address"]:
            variables["ansible_host"] = variables["ipm_vpn_address"]
        else:
            missing.append(name)
    if not missing:
        return []
    shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
    if unassigned == "fail":
        raise VpnPlanError(
            f"connect_via: vpn: {len(missing)} terminal(s) without an address in the VPN plan "
            f"{layout.plan_rel}: {shown}; {ASSIGN_HINT}, or set vpn_unassigned: skip to leave them out"
        )
    left_out = set(missing)
    plan["hosts"] = [host for host in plan["hosts"] if host[0] not in left_out]
    return missing


# --- the plan as ipm-registry addresses shows it ---------------------------------------------------


def report(layout, view, customer=None) -> dict:
    """The plan as data (JSON-serialisable): per customer its prefix, per site its prefix, room and terminals.

    ``{"settings", "customers": [{"customer", "prefix", "source", "sites": [{"site", "prefix", "source",
    "capacity", "used", "free", "terminals": [{"terminal", "address", "state"}]}]}], "held": [...],
    "unassigned": [ids], "leaving": [ids], "complete": bool}``; ``customer`` keeps only that customer.
    ``free`` counts the addresses of the site's prefix that no terminal has and no hold keeps;
    ``state`` is ``assigned``, ``unassigned`` or ``stale`` (outside its site's prefix: moved or renumbered).
    """
    taken = set()
    for entry in layout.plan["terminals"].values():
        address = _address(entry.get("address"))
        if address is not None:
            taken.add(int(address))
    for entry in layout.held:
        address = _address(entry.get("address"))
        if address is not None:
            taken.add(int(address))
    sites_of: dict[str, list] = {}
    for site in view.sites:
        sites_of.setdefault(site["customer"], []).append(site["id"])
    terminals_of: dict[str, list] = {}
    for terminal in view.terminals:
        if terminal["maintained"]:
            terminals_of.setdefault(terminal["site"], []).append(terminal["id"])
    customers = []
    for item in view.customers:
        customer_id = item["id"]
        if customer is not None and customer_id != customer:
            continue
        entry = layout.customers.get(customer_id) or {}
        sites = []
        for site_id in sites_of.get(customer_id, []):
            site = layout.sites.get(site_id) or {}
            prefix = site.get("prefix")
            in_use = 0
            if prefix is not None:
                low, high = _host_range(prefix)
                in_use = sum(1 for value in taken if low <= value <= high)
            sites.append(
                {
                    "site": site_id,
                    "prefix": str(prefix) if prefix is not None else None,
                    "source": site.get("source"),
                    "capacity": site.get("capacity", 0),
                    "used": in_use,
                    "free": max(0, site.get("capacity", 0) - in_use),
                    "terminals": [
                        {
                            "terminal": terminal_id,
                            "address": layout.terminals[terminal_id]["address"]
                            or (layout.plan["terminals"].get(terminal_id) or {}).get("address"),
                            "state": layout.terminals[terminal_id]["state"],
                        }
                        for terminal_id in terminals_of.get(site_id, [])
                    ],
                }
            )
        customers.append(
            {
                "customer": customer_id,
                "prefix": str(entry["prefix"]) if entry.get("prefix") is not None else None,
                "source": entry.get("source"),
                "sites": sites,
            }
        )
    shown = {c["customer"] for c in customers}
    unassigned = [
        row["terminal"]
        for c in customers
        for s in c["sites"]
        for row in s["terminals"]
        if row["state"] in ("unassigned", "stale")
    ]
    leaving = [
        terminal_id
        for terminal_id in layout.leaving
        if customer is None or (layout.plan["terminals"].get(terminal_id) or {}).get("customer") in shown
    ]
    held = [
        {key: entry.get(key) for key in ("address", "terminal", "site", "customer", "retired_at", "held_until")}
        for entry in layout.held
        if customer is None or entry.get("customer") in shown
    ]
    return {
        "settings": layout.settings.as_vars(),
        "plan_file": layout.plan_rel,
        "customers": customers,
        "held": held,
        "unassigned": unassigned,
        "leaving": leaving,
        "complete": not unassigned and not leaving,
    }
