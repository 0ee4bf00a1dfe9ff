# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where each of a terminal's parameters comes from, and what an upgrade would change (``ipm-config params``).

Everything here is read off the one layering rule (``module_utils/parameter_layers.py``): the
effective values and their winning layer are :func:`parameter_layers.layer_parameters` and
:func:`parameter_layers.effective_parameters` of all the layers together; what each layer does on
its own (applied, carried by a rename, staged, refused) is the same rule applied to that layer
alone. Nothing here decides precedence or acceptance by itself.

:func:`terminal_provenance` builds the table of one terminal of a :class:`~.registry.Fleet`: its
effective values with the layer that set it and, per parameter, every layer that sets it and why
it wins or is set aside (``explain``); the values staged for a later release, with the releases of
the catalog that have them; and, given a target release, what the terminal would run after the
upgrade (values carried, newly applied, now staged, problems the target would refuse, changes).
Values of secret parameters are masked (``module_utils/secret_values.py``). Controller-side only.
"""

from __future__ import annotations

import functools

from ansible_collections.ipm.fleet.plugins.module_utils import parameter_layers
from ansible_collections.ipm.fleet.plugins.module_utils.release_manifest import version_tuple
from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import is_secret_parameter, mask
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry import desired_release
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import display_path, suggest
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VaultValue

APPLIED, CARRIED, STAGED, REFUSED = "applied", "carried", "staged", "refused"


class ProvenanceError(ValueError):
    """A user mistake (unknown terminal or release): one line, for the tool to print."""


def release_order(fleet):
    """The catalog's release versions, oldest first (unparsable versions last, by name)."""
    return sorted(fleet.releases, key=lambda v: (version_tuple(v) is None, version_tuple(v) or (), v))


def find_release(fleet, version):
    """The catalog's release VERSION, else ProvenanceError naming the known ones."""
    release = fleet.releases.get(version)
    if release is None:
        known = ", ".join(release_order(fleet)) or "none"
        raise ProvenanceError(
            f"no release {version!r} in the catalog of {display_path(fleet.registry_dir)}"
            f"{suggest(version, fleet.releases)}; known releases: {known}"
        )
    return release


def find_terminal(fleet, terminal_id):
    """``(customer, site, terminal)`` of TERMINAL_ID, else ProvenanceError with the closest id."""
    found = fleet.find_terminal(terminal_id)
    if found is None:
        known = [
            terminal.get("id")
            for _customer, _site, terminal in fleet.terminals()
            if isinstance(terminal.get("id"), str)
        ]
        raise ProvenanceError(
            f"no terminal {terminal_id!r} in {display_path(fleet.registry_dir)}{suggest(terminal_id, known)}; "
            "`ipm-registry list` shows them"
        )
    return found


def secret_names(fleet):
    """Parameters some release of the catalog holds secret, and the old names renamed to one of them."""
    secret = {
        name
        for release in fleet.releases.values()
        for name, spec in release.parameters.items()
        if is_secret_parameter(name, spec)
    }
    secret.update(old for release in fleet.releases.values() for old, new in release.renamed.items() if new in secret)
    return secret


@functools.lru_cache(maxsize=4096)
def _named_like_a_secret(name):
    return is_secret_parameter(name)


def shown(name, value, secrets):
    """VALUE as it may be printed: masked for a secret parameter (or any vault value of the registry)."""
    if name in secrets or isinstance(value, VaultValue) or (isinstance(name, str) and _named_like_a_secret(name)):
        return mask(value)
    return value


def releases_having(fleet, name):
    """The releases of the catalog that apply a value under NAME: ``[{release, as}]`` (``as``: after a rename)."""
    having = []
    for version in release_order(fleet):
        release = fleet.releases[version]
        if name in release.parameters:
            having.append({"release": version, "as": name})
        elif name in release.renamed and release.renamed[name] in release.parameters:
            having.append({"release": version, "as": release.renamed[name]})
    return having


def _layer_values(customer, site, terminal):
    values = (customer.get("parameters"), site.get("parameters"), terminal.get("parameters"))
    return [
        (layer, given if isinstance(given, dict) else {})
        for layer, given in zip(parameter_layers.LAYERS, values, strict=True)
    ]


def _layer_records(fleet, release, layer, values, secrets):
    """What LAYER's VALUES do on their own under RELEASE, by the layering rule: one record per name.

    ``(status, name, parameter, value shown, detail)``: detail is the reason of a staged value (with
    the releases having it), the fault of a refused one, or None.
    """
    version = release.version
    alone = parameter_layers.layer_parameters(release.definition, **{layer: values})
    staged_names = {item["name"] for item in alone["staged"]}
    refused = {item["given"]: item for item in alone["problems"]}
    records = []
    for name in sorted(values, key=str):
        value = shown(name, values[name], secrets)
        target = name if name in release.parameters else release.renamed.get(name, name)
        if name in staged_names:
            if target != name and target in values:
                reason = f"renamed {target} in {version}, which the same layer sets: set aside"
            else:
                reason, target = f"not a parameter of release {version}: set aside", name
            records.append((STAGED, name, target, value, (reason, releases_having(fleet, name))))
        elif name in refused:
            records.append((REFUSED, name, refused[name]["name"], value, refused[name]))
        else:
            records.append((CARRIED if target != name else APPLIED, name, target, value, None))
    return records


def resolve(fleet, release, customer, site, terminal, secrets=None, cache=None):
    """The terminal's parameters under RELEASE, with the provenance of each value.

    Returns ``{release, parameters, staged, problems, carried, notes, given}``:

    ``parameters``
        {name: {value, source, layers}} in schema order: the effective value, the layer (or
        ``release X.Y.Z``) that set it, and every layer that sets it: ``[{layer, given, value,
        status, reason}]``, ``status`` one of wins, overridden, refused, set aside.
    ``staged``
        [{name, layer, value, reason, releases}]: values set aside (``releases``: which of the
        catalog apply them).
    ``problems``
        [{name, given, layer, value, expected, found}]: values the release refuses.
    ``carried``
        [{from, to, layer, value}]: values carried to a renamed parameter.
    ``given``
        {(layer, name as written): (status, parameter)}, for comparing two releases.

    CACHE, a dict kept while the fleet does not change, saves working out again what one customer
    or site layer does under one release (the terminals of a site share them).
    """
    secrets = secret_names(fleet) if secrets is None else secrets
    version = release.version
    layers = _layer_values(customer, site, terminal)
    together = parameter_layers.layer_parameters(release.definition, *(values for _layer, values in layers))
    effective = parameter_layers.effective_parameters(release.definition, together)
    entries = {name: [] for name in release.parameters}
    for name, spec in release.parameters.items():
        if "default" in spec:
            entries[name].append(
                {"layer": f"release {version}", "given": name, "value": shown(name, spec["default"], secrets)}
            )
    staged, problems, carried, given_status = [], [], [], {}
    for layer, values in layers:
        key = (version, layer, id(values))
        kept = cache.get(key) if cache is not None and layer != "terminal" else None
        if kept is not None and kept[0] is values:
            records = kept[1]
        else:
            records = _layer_records(fleet, release, layer, values, secrets)
            if cache is not None and layer != "terminal":
                cache[key] = (values, records)  # the values are kept too: their id stays theirs
        for status, name, target, value, detail in records:
            given_status[layer, name] = (status, target)
            if status == STAGED:
                reason, having = detail
                staged.append({"name": name, "layer": layer, "value": value, "reason": reason, "releases": having})
                if target != name:
                    entries.setdefault(target, []).append(
                        {"layer": layer, "given": name, "value": value, "status": "set aside", "reason": reason}
                    )
            elif status == REFUSED:
                problems.append(
                    {
                        "name": target,
                        "given": name,
                        "layer": layer,
                        "value": value,
                        "expected": detail["expected"],
                        "found": detail["found"],
                    }
                )
                entries.setdefault(target, []).append(
                    {
                        "layer": layer,
                        "given": name,
                        "value": value,
                        "status": "refused",
                        "reason": f"release {version} expects {detail['expected']}, found {detail['found']}",
                    }
                )
            elif status == CARRIED:
                carried.append({"from": name, "to": target, "layer": layer, "value": value})
                entries.setdefault(target, []).append(
                    {
                        "layer": layer,
                        "given": name,
                        "value": value,
                        "reason": f"carried: {name} is renamed {target} in {version}",
                    }
                )
            else:
                entries.setdefault(target, []).append({"layer": layer, "given": name, "value": value})
    parameters = {}
    for name, item in effective.items():
        source = item["source"]
        layered = entries.get(name, [])
        winner = None
        for entry in layered:
            if "status" not in entry and entry["layer"] == source:
                winner = entry  # the last one of the winning layer, as the rule applies them in that order
        for entry in layered:
            if "status" in entry:
                continue
            if entry is winner:
                entry["status"] = "wins"
                entry.setdefault(
                    "reason",
                    "the release's default: no layer sets it"
                    if source.startswith("release ")
                    else "the highest layer that sets it",
                )
            else:
                entry["status"] = "overridden"
                entry["reason"] = (entry["reason"] + "; " if "reason" in entry else "") + f"overridden by {source}"
        parameters[name] = {"value": shown(name, item["value"], secrets), "source": source, "layers": layered}
    return {
        "release": version,
        "parameters": parameters,
        "staged": staged,
        "problems": problems,
        "carried": carried,
        "notes": together["notes"],
        "given": given_status,
    }


def upgrade(fleet, current, target_release, customer, site, terminal, secrets=None):
    """What the terminal would run under TARGET_RELEASE, against CURRENT (:func:`resolve` of its release, or None).

    Returns the target's :func:`resolve` plus ``model`` ({name, supported, models}), ``newly_applied``
    (staged now, applied or carried by the target), ``now_staged`` (applied now, set aside by the
    target), ``changes`` ([{name, before, after}], each side None or {value, source}) and, on each
    carried value and problem, ``new`` (not so under the current release).
    """
    secrets = secret_names(fleet) if secrets is None else secrets
    target = resolve(fleet, target_release, customer, site, terminal, secrets)
    before = current["given"] if current else {}
    after = target["given"]
    model = terminal.get("model")
    target["model"] = {
        "name": model,
        "supported": model in target_release.models,
        "models": list(target_release.models),
    }
    layers = dict(_layer_values(customer, site, terminal))
    newly_applied, now_staged = [], []
    for (layer, name), (status, parameter) in after.items():
        was = before.get((layer, name), (None, None))[0]
        value = shown(name, layers[layer].get(name), secrets)
        if status in (APPLIED, CARRIED) and was in (STAGED, None):
            newly_applied.append({"name": name, "parameter": parameter, "layer": layer, "value": value})
        elif status == STAGED and was in (APPLIED, CARRIED):
            now_staged.append({"name": name, "layer": layer, "value": value})
    for item in target["carried"]:
        item["new"] = before.get((item["layer"], item["from"]), (None,))[0] != CARRIED
    for item in target["problems"]:
        item["new"] = before.get((item["layer"], item["given"]), (None,))[0] != REFUSED
    target["newly_applied"] = newly_applied
    target["now_staged"] = now_staged
    old = current["parameters"] if current else {}
    new = target["parameters"]
    # A parameter the target renamed is compared with its old name's value (one change, or none).
    renamed_from = {
        new_name: old_name
        for old_name, new_name in target_release.renamed.items()
        if old_name in old and old_name not in new and new_name in new and new_name not in old
    }
    changes = []
    for name in [*new, *(n for n in old if n not in new and n not in renamed_from.values())]:
        was = old.get(renamed_from.get(name, name))
        now = new.get(name)
        was_brief = {"value": was["value"], "source": was["source"]} if was else None
        now_brief = {"value": now["value"], "source": now["source"]} if now else None
        if was_brief is None or now_brief is None or _differ(was_brief, now_brief):
            change = {"name": name, "before": was_brief, "after": now_brief}
            if name in renamed_from:
                change["renamed_from"] = renamed_from[name]
            changes.append(change)
    target["changes"] = changes
    return target


def _differ(before, after):
    """True unless the value is the same and so is its layer (one release's default and the next's count as one)."""
    if before["value"] != after["value"] or type(before["value"]) is not type(after["value"]):
        return True
    defaults = before["source"].startswith("release ") and after["source"].startswith("release ")
    return not defaults and before["source"] != after["source"]


def _public(resolved):
    return {key: value for key, value in resolved.items() if key != "given"}


def terminal_provenance(fleet, terminal_id, target=None):
    """The provenance table of one terminal (see the module's docstring); ProvenanceError for a user mistake.

    TARGET is a release version of the catalog (or None): the terminal's parameters after an
    upgrade to it are added under ``upgrade``.
    """
    customer, site, terminal = find_terminal(fleet, terminal_id)
    target_release = find_release(fleet, target) if target is not None else None
    secrets = secret_names(fleet)
    version = desired_release(customer, site, terminal)
    release = fleet.releases.get(version) if isinstance(version, str) else None
    current = resolve(fleet, release, customer, site, terminal, secrets) if release is not None else None
    table = {
        "terminal": terminal_id,
        "customer": customer.get("id"),
        "site": site.get("id"),
        "model": terminal.get("model"),
        "status": terminal.get("status") or "active",
        "release": version,
        "current": _public(current) if current else None,
        "upgrade": None,
    }
    if target_release is not None:
        table["upgrade"] = _public(upgrade(fleet, current, target_release, customer, site, terminal, secrets))
    return table
