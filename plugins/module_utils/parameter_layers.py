# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parameter layering: the one rule for what a terminal's parameters are under a given release.

Precedence, lowest first: the release's defaults < customer < site < terminal (the registry's three
layers). Against the *target* release:

* a value the target knows is taken (a higher layer wins);
* a value under a name the target renamed is carried to the new name, unless the same layer also
  sets the new name;
* a value the target does not know (a parameter of a later release staged ahead of the upgrade, or
  of an older one still run by the customer's other terminals) is **set aside**: it is not applied,
  and it is reported as a note, never as a failure;
* a value the target knows but does not accept (type, range, choice) is a problem: the registry
  reports it at validation time, the rollout and the parameters role before anything changes.

The rollout, the parameters role (through the ``ipm.fleet.parameters`` filter), the registry and
``ipm-config`` all call :func:`layer_parameters`. Standard library only: this runs on terminals too.
"""

from __future__ import annotations

from ansible_collections.ipm.fleet.plugins.module_utils.release_manifest import check_value

LAYERS = ("customer", "site", "terminal")


def _definition_parts(definition):
    definition = definition if isinstance(definition, dict) else {}
    schema = definition.get("parameters")
    renamed = definition.get("renamed")
    return (
        str(definition.get("version") or "?"),
        schema if isinstance(schema, dict) else {},
        renamed if isinstance(renamed, dict) else {},
    )


def _fault(name, value, spec):
    """(expected, found) when VALUE does not fit SPEC, else None (a malformed schema accepts nothing)."""
    if not isinstance(spec, dict):
        return None
    try:
        fault = check_value(name, value, spec)
    except (TypeError, KeyError, ValueError):
        return "a value the release's (malformed) schema accepts", "(not checked)"
    return (fault.expected, fault.found) if fault is not None else None


def layer_parameters(definition, customer=None, site=None, terminal=None):
    """Layer the registry's values of one terminal against the target release DEFINITION.

    DEFINITION is a release definition or manifest (``version``, ``parameters``: the schema,
    optionally ``renamed``); CUSTOMER, SITE and TERMINAL are the registry's mappings (None or empty
    for none). Returns a dict:

    ``registry_values``
        {name: value}: what the registry sets for this release, highest layer winning (no defaults).
    ``registry_sources``
        {name: layer}: the layer each of ``registry_values`` comes from.
    ``staged``
        [{name, layer}]: values set aside because the target release has no such parameter.
    ``problems``
        [{name, given, layer, expected, found, text}]: values the target knows (``given``: the
        name as the layer wrote it, before a rename) but does not accept
        (secrets' values are never shown in ``found`` or ``text``).
    ``notes``
        One line in words per staged or renamed value.
    """
    version, schema, renamed = _definition_parts(definition)
    values, sources, staged, problems, notes = {}, {}, [], [], []
    for layer, given in (("customer", customer), ("site", site), ("terminal", terminal)):
        if not isinstance(given, dict):
            continue
        for name in sorted(given, key=str):
            value = given[name]
            target = name
            if name not in schema and name in renamed:
                target = renamed[name]
                if target in given:
                    notes.append(
                        "%s (%s): renamed %s in %s, which the same layer sets: set aside"
                        % (name, layer, target, version)
                    )
                    staged.append({"name": name, "layer": layer})
                    continue
                notes.append("%s (%s): renamed %s in %s, value carried" % (name, layer, target, version))
            if target not in schema:
                staged.append({"name": name, "layer": layer})
                notes.append(
                    "%s (%s): not a parameter of release %s, set aside for the release that has it"
                    % (name, layer, version)
                )
                continue
            fault = _fault(target, value, schema[target])
            if fault is not None:
                expected, found = fault
                problems.append(
                    {
                        "name": target,
                        "given": name,
                        "layer": layer,
                        "expected": expected,
                        "found": found,
                        "text": "%s: expected %s, found %s (%s layer)" % (target, expected, found, layer),
                    }
                )
                continue
            values[target] = value
            sources[target] = layer
    return {
        "registry_values": values,
        "registry_sources": sources,
        "staged": staged,
        "problems": problems,
        "notes": notes,
    }


def effective_parameters(definition, layered, kept=None):
    """The complete parameters a terminal runs: release defaults < KEPT < the layered registry values.

    LAYERED is :func:`layer_parameters`' result (or its ``registry_values``); KEPT holds values that belong
    to the terminal itself (read from its current file) and are kept unless a layer sets them.
    Names the release does not know are left out of KEPT. Returns ``{name: {value, source}}`` in
    schema order, source being ``release X.Y.Z``, ``terminal file`` or a layer.
    """
    version, schema, _renamed = _definition_parts(definition)
    if isinstance(layered, dict) and isinstance(layered.get("registry_values"), dict):
        values, sources = layered["registry_values"], layered.get("registry_sources") or {}
    else:
        values, sources = (layered if isinstance(layered, dict) else {}), {}
    result = {}
    for name, spec in schema.items():
        if name in values:
            result[name] = {"value": values[name], "source": sources.get(name, "registry")}
        elif isinstance(kept, dict) and name in kept:
            result[name] = {"value": kept[name], "source": "terminal file"}
        elif isinstance(spec, dict) and "default" in spec:
            result[name] = {"value": spec["default"], "source": "release %s" % version}
    return result
