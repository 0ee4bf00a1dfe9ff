# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet registry's model and rules: what a valid registry is, and loading one.

A registry is a directory holding ``catalog.yml`` (hardware models, and ``releases_dir``: where the
release definitions live) and one YAML file per customer (the customer, its sites, their terminals)
anywhere else below it. :func:`load_fleet` reads it and returns a :class:`Fleet` plus the list of
every :class:`~.registry_check.Problem` found in one pass; an empty list means the registry is valid.

This file holds the model (:class:`Fleet`, :class:`Release`, :func:`desired_release`,
:func:`layered_parameters`) and the registry's own rules on customers, sites and terminals (time
zones, releases, models, parameters, uniqueness across the fleet). The other jobs have files of
their own: reading YAML within the input limits (``registry_yaml``), the generic shape checker
(``registry_check``), the registry's files (``registry_paths``), the worker processes
(``registry_workers``) and the inventory (``registry_inventory``). Controller-side only.
"""

from __future__ import annotations

import datetime
import functools
import gc
import ipaddress
import os
import re

import yaml

from ansible_collections.ipm.fleet.plugins.module_utils import parameter_layers
from ansible_collections.ipm.fleet.plugins.module_utils.release_manifest import check_value
from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import is_secret_parameter
from ansible_collections.ipm.fleet.plugins.plugin_utils import registry_workers, vpn_plan
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import (
    Problem,
    check_fields,
    describe,
    display_path,
    good,
    key_path,
    reporter,
    suggest,
    type_ok,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_paths import (
    CATALOG_FILE,
    YAML_SUFFIXES,
    registry_files,
    resolve_registry_dir,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import DATE_PATTERN, ID_PATTERN, OBJECTS
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_yaml import InputLimitError, compose_file, load_file
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VaultValue, vault_format_fault

try:
    import zoneinfo
except ImportError:  # pragma: no cover - Python < 3.9
    zoneinfo = None

PARAMETER_TYPES = ("str", "int", "float", "bool")

_ID_RE = re.compile(ID_PATTERN)
_DATE_RE = re.compile(DATE_PATTERN)


@functools.cache
def valid_timezone(name: str) -> bool:
    """True for an IANA time zone name that this machine's tz database knows."""
    if zoneinfo is None or not name or name.startswith(("/", ".")) or "\\" in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError, IsADirectoryError, ...
        return False
    return True


@functools.lru_cache(maxsize=1)
def _all_timezones():
    return sorted(zoneinfo.available_timezones()) if zoneinfo else []


class Release:
    """What the registry needs of one release definition or manifest."""

    __slots__ = ("defaults", "definition", "file", "models", "parameters", "renamed", "version")

    def __init__(self, version, models, parameters, file, renamed=None):
        self.version = version
        self.models = models
        self.parameters = parameters
        self.renamed = renamed or {}
        self.defaults = {name: spec.get("default") for name, spec in parameters.items() if "default" in spec}
        self.file = file
        # What the layering rule (module_utils/parameter_layers.py) reads of a release.
        self.definition = {"version": version, "parameters": parameters, "renamed": self.renamed}


class Fleet:
    """The validated registry: catalog, releases, customers (each with sites and terminals)."""

    def __init__(self, registry_dir):
        self.registry_dir = registry_dir
        self.models: dict = {}
        self.releases: dict[str, Release] = {}
        self.customers: list[dict] = []
        self.vpn = None  # the VPN address plan's Layout (vpn_plan.py) when the catalog has a vpn: section

    def terminals(self):
        """Every terminal as ``(customer, site, terminal)``."""
        for customer_doc in self.customers:
            for site in customer_doc["sites"]:
                for terminal in site["terminals"]:
                    yield customer_doc["customer"], site, terminal

    def find_terminal(self, terminal_id):
        for customer, site, terminal in self.terminals():
            if terminal.get("id") == terminal_id:
                return customer, site, terminal
        return None


def desired_release(customer, site, terminal):
    """The desired release: the terminal's, else the site's, else the customer's."""
    return terminal.get("release") or site.get("release") or customer.get("release")


def layered_parameters(release: Release | None, customer, site, terminal, with_sources=False):
    """Parameters as the terminal must run them under RELEASE: release defaults < customer < site < terminal.

    The rule is :mod:`parameter_layers`' (values the release does not know are set aside, renamed
    ones carried, invalid ones left out: validation reports them). With ``with_sources`` each value
    comes as ``{"value": v, "source": "release 2.4.0" | "customer" | "site" | "terminal"}``.
    Without a release (unknown), the layers are merged as they are.
    """
    layers = [customer.get("parameters") or {}, site.get("parameters") or {}, terminal.get("parameters") or {}]
    if release is None:
        merged = {}
        for source, values in zip(parameter_layers.LAYERS, layers, strict=True):
            for name, value in values.items():
                merged[name] = {"value": value, "source": source} if with_sources else value
        return merged
    layered = parameter_layers.layer_parameters(release.definition, *layers)
    effective = parameter_layers.effective_parameters(release.definition, layered)
    if with_sources:
        return effective
    return {name: item["value"] for name, item in effective.items()}


def _load_releases(fleet, releases_dir, catalog_rel, problems):
    if not os.path.isdir(releases_dir):
        problems.append(
            Problem(
                catalog_rel,
                ("releases_dir",),
                "no such directory",
                "a directory of release definitions",
                repr(releases_dir),
            )
        )
        return
    for name in sorted(os.listdir(releases_dir)):
        if not name.endswith(YAML_SUFFIXES) or name.startswith("."):
            continue
        path = os.path.join(releases_dir, name)
        rel = display_path(path)
        data, ok = load_file(path, rel, problems)[:2]
        if not ok:
            continue
        _add_release(fleet, data, rel, problems)


def _add_release(fleet, data, rel, problems):
    if not isinstance(data, dict):
        problems.append(Problem(rel, (), "wrong type", "a release definition (mapping)", describe(data)))
        return
    version = data.get("version")
    if not isinstance(version, str):
        problems.append(
            Problem(rel, ("version",), "missing or not a string", 'a quoted version, e.g. "2.4.0"', describe(version))
        )
        return
    compatibility = data.get("compatibility")
    models = compatibility.get("models") if isinstance(compatibility, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        problems.append(
            Problem(rel, ("compatibility", "models"), "wrong type", "a list of model names", describe(models))
        )
        models = []
    parameters = data.get("parameters", {})
    good_parameters = {}
    if not isinstance(parameters, dict):
        problems.append(
            Problem(rel, ("parameters",), "wrong type", "a mapping of parameter schemas", describe(parameters))
        )
    else:
        for name, spec in parameters.items():
            if not isinstance(spec, dict) or spec.get("type") not in PARAMETER_TYPES:
                problems.append(
                    Problem(
                        rel,
                        ("parameters", name),
                        "bad parameter schema",
                        "{type: str|int|float|bool, ...}",
                        describe(spec),
                    )
                )
                continue
            good_parameters[str(name)] = spec
    if version in fleet.releases:
        # A definition and its built manifest describe the same release: keep the first.
        return
    renamed = data.get("renamed")
    renamed = {str(k): str(v) for k, v in renamed.items()} if isinstance(renamed, dict) else {}
    fleet.releases[version] = Release(version, models, good_parameters, rel, renamed)


def _parameter_problem(name, spec, value):
    """(expected, found) when ``value`` does not fit the release's parameter schema, else None.

    The rules are the application's own (``module_utils/release_manifest.py``), so the registry
    accepts exactly what a terminal will.
    """
    try:
        fault = check_value(name, value, spec)
    except (TypeError, KeyError, ValueError):
        return "a value the release's (malformed) schema accepts", describe(value)
    return (fault.expected, fault.found) if fault else None


def load_fleet(path: str, workers: int = 0) -> tuple[Fleet, list[Problem]]:
    """Load and validate the registry at ``path``; return the fleet and every problem found.

    ``path`` is the registry directory (or its catalog, or an inventory config file naming it). The
    problems come sorted by file, then line; each names the file, the key path, what was expected
    and what was found.

    ``workers`` is how many processes read the customer files at once: ``0`` picks one per CPU (at
    most ``registry_workers.MAX_WORKERS``) when the files add up to
    ``registry_workers.PARALLEL_MIN_BYTES`` or more, ``1`` reads
    them all in this process. The result is the same either way.
    """
    # Hundreds of thousands of small containers, none cyclic: the cyclic collector would rescan them
    # over and over while they are built (a third of the load time at 10,000 terminals).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_fleet(path, workers)
    finally:
        if collecting:
            gc.enable()


def _load_fleet(path: str, workers: int) -> tuple[Fleet, list[Problem]]:
    problems: list[Problem] = []
    try:
        registry_dir = resolve_registry_dir(path)
    except InputLimitError as exc:  # the inventory configuration file naming the registry
        return Fleet(path), [Problem(display_path(exc.path), (), exc.message, exc.expected, "", exc.line)]
    except (OSError, yaml.YAMLError) as exc:
        return Fleet(path), [Problem(str(path), (), f"cannot read: {exc}", "a registry directory")]
    fleet = Fleet(registry_dir)
    catalog_path = os.path.join(registry_dir, CATALOG_FILE)
    catalog_rel = display_path(catalog_path)
    if not os.path.isfile(catalog_path):
        problems.append(
            Problem(catalog_rel, (), "no catalog", f"a registry directory holding {CATALOG_FILE}", repr(registry_dir))
        )
        return fleet, problems

    releases_dir = None
    vpn_section = None
    catalog, ok, shared = load_file(catalog_path, catalog_rel, problems)
    if ok:
        report = reporter(catalog_rel, problems)
        check_fields(catalog, OBJECTS["catalog"], (), report, {} if shared else None)
        if isinstance(catalog, dict):
            models = good(catalog.get("models"), OBJECTS["catalog"]["models"]) or {}
            fleet.models = {name: model for name, model in models.items() if isinstance(model, dict)}
            vpn_section = good(catalog.get("vpn"), OBJECTS["catalog"]["vpn"])
            relative = good(catalog.get("releases_dir"), OBJECTS["catalog"]["releases_dir"])
            if relative is not None:
                releases_dir = os.path.normpath(os.path.join(registry_dir, relative))
                _load_releases(fleet, releases_dir, catalog_rel, problems)

    # Each customer file is read and checked on its own (possibly in another process); what must be
    # unique across the fleet (ids, addresses) is checked here afterwards, in file order, so the
    # first occurrence is the one the others are reported against.
    seen: dict[str, dict] = {}
    paths = registry_files(registry_dir, [releases_dir] if releases_dir else [])
    for rel, document, file_problems, occurrences in registry_workers.read_all(
        fleet, paths, workers, _read_customer_file
    ):
        problems.extend(file_problems)
        report = reporter(rel, problems)
        for what, value, keys in occurrences:
            _duplicate(seen.setdefault(what, {}), value, rel, keys, what, report)
        if document is not None:
            fleet.customers.append(document)

    vpn_plan.check_fleet(fleet, vpn_section, catalog_rel, problems)  # the VPN address plan, if any
    _locate(problems)
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return fleet, problems


# Registries whose customer files add up to this much are read by several processes at once: parsing
def _read_customer_file(fleet, path):
    """One customer file, loaded and checked: ``(rel, document or None, problems, occurrences)``.

    ``occurrences`` lists ``(what, value, keys)`` for every id and address that must be unique
    across the fleet, in file order.
    """
    rel = display_path(path)
    problems: list[Problem] = []
    occurrences: list[tuple] = []
    document = None
    data, ok, shared = load_file(path, rel, problems)
    if ok:
        report = reporter(rel, problems)
        # A node reached through several aliases is checked once, at its first place ({} remembers it).
        if check_fields(data, OBJECTS["customer_file"], (), report, {} if shared else None) or isinstance(data, dict):
            document = _check_customer_file(fleet, data, rel, report, occurrences.append)
    return rel, document, problems, occurrences


def _duplicate(seen, value, rel, keys, what, report):
    first = seen.get(value)
    if first is None:
        seen[value] = (rel, keys)
        return False
    report(
        keys,
        f"duplicate {what}",
        f"a {what} used once in the fleet",
        f"{value!r}, already at {first[0]} {key_path(first[1])}",
    )
    return True


def _check_contract_dates(contract, report):
    """``contract.start`` / ``contract.end``: real calendar days, the end not before the start."""
    days = {}
    for key in ("start", "end"):
        value = good(contract.get(key), OBJECTS["contract"][key])
        if value is None or not _DATE_RE.match(value):
            continue
        try:
            days[key] = datetime.date.fromisoformat(value)
        except ValueError:
            report(("customer", "contract", key), "no such day", "a real date, YYYY-MM-DD", describe(value))
    if "start" in days and "end" in days and days["end"] < days["start"]:
        report(
            ("customer", "contract", "end"),
            "the contract ends before it starts",
            f"{days['start'].isoformat()} or later",
            describe(contract["end"]),
        )


def _check_customer_file(fleet, data, rel, report, occur):
    """Check one customer file's data; return its document (customer, clean sites, file) or None."""
    spec = OBJECTS["customer_file"]
    customer = data.get("customer")
    if not isinstance(customer, dict):
        customer = {}
    cspec = OBJECTS["customer"]
    customer_id = good(customer.get("id"), cspec["id"])
    if customer_id and _ID_RE.match(customer_id):
        occur(("customer id", customer_id, ("customer", "id")))
    _check_secret_values(fleet, customer.get("parameters"), ("customer", "parameters"), report)
    customer_release = good(customer.get("release"), cspec["release"])
    if customer_release is not None:
        _check_release_name(fleet, customer_release, ("customer", "release"), report)
    contract = customer.get("contract")
    if isinstance(contract, dict):
        _check_contract_dates(contract, report)
    if isinstance(contract, dict) and isinstance(contract.get("targets"), dict):
        for severity, target in contract["targets"].items():
            if isinstance(target, dict):
                response, repair = target.get("response_hours"), target.get("repair_hours")
                if type_ok("number", response) and type_ok("number", repair) and repair < response:
                    report(
                        ("customer", "contract", "targets", severity, "repair_hours"),
                        "repair target shorter than the response target",
                        f"at least {response}",
                        describe(repair),
                    )
    if isinstance(contract, dict):
        _check_contract_changes(contract, report)
    sites = good(data.get("sites"), spec["sites"]) or []
    clean_sites = []
    for site_index, site in enumerate(sites):
        if not isinstance(site, dict):
            continue
        clean_sites.append(site)
        _check_site(fleet, customer, site, ("sites", site_index), report, occur)
    if customer_id:
        return {"customer": customer, "sites": clean_sites, "file": rel}
    return None


def _check_contract_changes(contract, report):
    """contract.changes: real dates, in order, each changing something (the SLA clock reads them)."""
    changes = contract.get("changes")
    if not isinstance(changes, list):
        return
    previous = None
    for index, change in enumerate(changes):
        if not isinstance(change, dict) or not isinstance(change.get("from"), str):
            continue
        keys = ("customer", "contract", "changes", index)
        try:
            effective = datetime.date.fromisoformat(change["from"])
        except ValueError:
            report((*keys, "from"), "not a date", "a date YYYY-MM-DD", describe(change["from"]))
            continue
        if previous is not None and effective <= previous:
            report(
                (*keys, "from"), "contract changes out of order", f"a date after {previous}", describe(change["from"])
            )
        previous = effective
        if "coverage" not in change and "targets" not in change:
            report(keys, "contract change that changes nothing", "coverage and/or targets", "neither")


def _check_release_name(fleet, version, keys, report):
    if fleet.releases and version not in fleet.releases:
        report(
            keys,
            "unknown release" + suggest(version, fleet.releases),
            "one of " + ", ".join(sorted(fleet.releases)),
            describe(version),
        )
        return False
    return version in fleet.releases


def _check_site(fleet, customer, site, base, report, occur):
    sspec = OBJECTS["site"]
    base = tuple(base)
    site_id = good(site.get("id"), sspec["id"])
    if site_id and _ID_RE.match(site_id):
        occur(("site id", site_id, (*base, "id")))
    timezone = good(site.get("timezone"), sspec["timezone"])
    if timezone is not None and not valid_timezone(timezone):
        hint = suggest(timezone, _all_timezones())
        report(
            (*base, "timezone"),
            "unknown IANA time zone" + hint,
            "a zone such as Europe/Paris or Australia/Sydney",
            describe(timezone),
        )
    network = site.get("network")
    if isinstance(network, dict) and isinstance(network.get("vpn_subnet"), str):
        try:
            ipaddress.ip_network(network["vpn_subnet"], strict=True)
        except ValueError as exc:
            report(
                (*base, "network", "vpn_subnet"),
                f"not a network ({exc})",
                "a CIDR such as 10.20.1.0/24",
                describe(network["vpn_subnet"]),
            )
    windows = site.get("windows")
    if isinstance(windows, list):
        for index, window in enumerate(windows):
            if (
                isinstance(window, dict)
                and isinstance(window.get("days"), list)
                and len(set(map(str, window["days"]))) != len(window["days"])
            ):
                report(
                    (*base, "windows", index, "days"), "a day listed twice", "each day once", describe(window["days"])
                )
    _check_secret_values(fleet, site.get("parameters"), (*base, "parameters"), report)
    site_release = good(site.get("release"), sspec["release"])
    if site_release is not None:
        _check_release_name(fleet, site_release, (*base, "release"), report)
    terminals = good(site.get("terminals"), sspec["terminals"]) or []
    clean = []
    tspec = OBJECTS["terminal"]
    for index, terminal in enumerate(terminals):
        if not isinstance(terminal, dict):
            continue
        keys = (*base, "terminals", index)
        clean.append(terminal)
        terminal_id = good(terminal.get("id"), tspec["id"])
        if terminal_id and _ID_RE.match(terminal_id):
            occur(("terminal id", terminal_id, (*keys, "id")))
        address = good(terminal.get("address"), tspec["address"])
        if address is not None:
            _check_address(address, (*keys, "address"), report)
            occur(("terminal address", address, (*keys, "address")))
        model_name = good(terminal.get("model"), tspec["model"])
        model = None
        if model_name is not None:
            model = fleet.models.get(model_name)
            if model is None and fleet.models:
                report(
                    (*keys, "model"),
                    "unknown model" + suggest(model_name, fleet.models),
                    "one of " + ", ".join(sorted(fleet.models)),
                    describe(model_name),
                )
        interfaces = terminal.get("interfaces")
        if model is not None and isinstance(interfaces, dict) and isinstance(model.get("interfaces"), list):
            for name in interfaces:
                if isinstance(name, str) and name not in model["interfaces"]:
                    report(
                        (*keys, "interfaces", name),
                        f"model {model_name} has no such interface" + suggest(name, model["interfaces"]),
                        "one of " + ", ".join(map(str, model["interfaces"])),
                        describe(name),
                    )
        _check_secret_values(fleet, terminal.get("parameters"), (*keys, "parameters"), report)
        version = desired_release(customer, site, terminal)
        release = None
        if version is None:
            report(
                (*keys, "release"),
                "no desired release",
                "release: on the terminal, its site or its customer",
                "nothing",
            )
        elif isinstance(version, str):
            if "release" in terminal:
                if isinstance(terminal["release"], str) and _check_release_name(
                    fleet, version, (*keys, "release"), report
                ):
                    release = fleet.releases[version]
            else:
                release = fleet.releases.get(version)
        if terminal.get("status") == "retired":
            continue  # not maintained any more: its release and parameters are history
        if release is not None and model_name is not None and model is not None and model_name not in release.models:
            report(
                (*keys, "model"),
                f"release {version} does not support model {model_name}",
                "a model among " + (", ".join(release.models) or "none") + f", or another release than {version}",
                describe(model_name),
            )
        if release is not None:
            _check_parameters(fleet, release, customer, site, terminal, keys, base, report)
    site["terminals"] = clean


def _check_address(address, keys, report):
    try:
        ipaddress.ip_address(address)
        return
    except ValueError:
        pass
    if (
        not re.match(
            r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
            address,
        )
        or address.replace(".", "").isdigit()
    ):
        report(keys, "not an IP address or DNS name", "e.g. 127.0.10.1 or ps-001.example.net", describe(address))


def _known_elsewhere(name, fleet):
    return any(name in release.parameters for release in fleet.releases.values())


def _check_parameters(fleet, release, customer, site, terminal, keys, site_keys, report):
    """Each layer's values against the desired release, by the one layering rule (module_utils/parameter_layers.py).

    A value the release knows but does not accept is a problem; a value it does not know is staged
    for the release that has it (no problem), unless no release of the catalog has such a parameter
    (a typo, reported with the closest name). Customer and site faults are reported once each.
    """
    given = [customer.get("parameters"), site.get("parameters"), terminal.get("parameters")]
    layered = parameter_layers.layer_parameters(release.definition, *(v if isinstance(v, dict) else {} for v in given))
    where = {
        "customer": ("customer", "parameters"),
        "site": (*site_keys, "parameters"),
        "terminal": (*keys, "parameters"),
    }
    for problem in layered["problems"]:
        layer = given[parameter_layers.LAYERS.index(problem["layer"])]
        if isinstance(layer, dict) and isinstance(layer.get(problem["given"]), VaultValue):
            continue  # a vault value is checked as one (_check_secret_values), its plain value never seen
        report(
            (*where[problem["layer"]], problem["given"]),
            f"value outside release {release.version}'s schema",
            problem["expected"],
            problem["found"],
        )
    for staged in layered["staged"]:
        name = staged["name"]
        if _known_elsewhere(name, fleet):
            continue  # staged for a release of the catalog that has it: a note where it is applied
        report(
            (*where[staged["layer"]], name),
            f"release {release.version} has no parameter {name!r}" + suggest(name, release.parameters),
            "a parameter of " + release.file + " (or of another release of the catalog, to stage it)",
            describe(name),
        )


def _secret_names(fleet) -> frozenset:
    """Names of the parameters a release of the catalog holds secret (marked so, or named like one).

    A name some release renames to a secret one counts too: its value is carried to the secret.
    """
    names = fleet.__dict__.get("_secret_names")
    if names is None:
        secret = {
            name
            for release in fleet.releases.values()
            for name, spec in release.parameters.items()
            if is_secret_parameter(name, spec)
        }
        secret.update(
            old for release in fleet.releases.values() for old, new in release.renamed.items() if new in secret
        )
        names = fleet.__dict__["_secret_names"] = frozenset(secret)
    return names


def _known(name, fleet) -> bool:
    return any(name in release.parameters or name in release.renamed for release in fleet.releases.values())


def _check_secret_values(fleet, values, keys, report):
    """Secrets take Ansible Vault values only, and vault values are for secrets only, at any layer.

    A secret parameter's value must be ``!vault`` ciphertext (``ansible-vault encrypt_string``) or empty
    (not set); a vault value must be well-formed ciphertext of a secret parameter (anything else is
    compared with the terminal by drift, which cannot read ciphertext). Nothing is decrypted, and no
    message ever quotes a plain value. Names no release knows are left to the layering check (a typo).
    """
    if not isinstance(values, dict) or not fleet.releases:
        return
    secret = _secret_names(fleet)
    for name, value in values.items():
        if not isinstance(name, str):
            continue
        if isinstance(value, VaultValue):
            fault = vault_format_fault(value)
            if fault is not None:
                report(
                    (*keys, name),
                    "malformed vault value",
                    f"the output of: ansible-vault encrypt_string --name {name} 'VALUE'",
                    fault,
                )
            elif name not in secret and _known(name, fleet):
                report(
                    (*keys, name),
                    "vault value for a parameter that is not secret",
                    "a plain value (only secret parameters such as "
                    + (", ".join(sorted(n for n in secret if _known_directly(n, fleet))) or "none")
                    + " are vault-encrypted; drift compares the others with the terminal)",
                    "a vault-encrypted value",
                )
        elif name in secret and value not in (None, ""):
            report(
                (*keys, name),
                "secret parameter in plain text",
                f"a vault-encrypted value: ansible-vault encrypt_string --name {name} 'VALUE' "
                "(paste its output here), or an empty string for none",
                f"a plain {_kind_of(value)} (not shown)",
            )


def _known_directly(name, fleet) -> bool:
    return any(name in release.parameters for release in fleet.releases.values())


def _kind_of(value) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _locate(problems):
    """Fill in line numbers by walking each file's YAML node tree (only when problems exist)."""
    by_file: dict[str, list[Problem]] = {}
    for problem in problems:
        if problem.line is None and problem.keys:
            by_file.setdefault(problem.file, []).append(problem)
    for rel, items in by_file.items():
        try:
            root = compose_file(rel)
        except Exception:  # the file was unreadable or broken: those problems are already reported
            continue
        for problem in items:
            problem.line = _node_line(root, problem.keys)
    # Deduplicate: a customer-level parameter fault is found once per terminal using it.
    seen = set()
    unique = []
    for problem in problems:
        identity = (problem.file, problem.keys, problem.message, problem.expected, problem.found)
        if identity not in seen:
            seen.add(identity)
            unique.append(problem)
    problems[:] = unique


def _node_line(node, keys):
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(key) or (
                    isinstance(key, bool) and key_node.value.lower() in ("yes", "no", "true", "false", "on", "off")
                ):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line if line is not None else node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line
