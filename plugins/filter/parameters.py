# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filters of the parameters: the one layering rule (ipm.fleet.terminal_parameters), what a change
changes (ipm.fleet.parameter_diff) and how it ended (ipm.fleet.parameters_outcome,
ipm.fleet.parameters_bake_outcome; logic in plugin_utils/parameter_diff.py). Docs beside, one .yml each."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.module_utils import parameter_layers
from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import is_secret_parameter
from ansible_collections.ipm.fleet.plugins.plugin_utils import parameter_diff as changes
from ansible_collections.ipm.fleet.plugins.plugin_utils.filter_data import plain


def terminal_parameters(definition, customer=None, site=None, terminal=None, kept=None, current=None, preserve=None):
    """A terminal's parameters under the release DEFINITION, from the registry's three layers.

    KEPT, or the names PRESERVE picks from the terminal's CURRENT file, are values of the terminal
    itself that stay unless a layer sets them.
    """
    if kept is None and isinstance(current, Mapping) and preserve:
        kept = {name: current[name] for name in preserve if name in current}
    if not isinstance(definition, Mapping) or not isinstance(definition.get("parameters"), Mapping):
        raise AnsibleFilterError(
            "ipm.fleet.terminal_parameters: expected a release definition or manifest (with parameters), got %s"
            % type(definition).__name__
        )
    for name, layer in (("customer", customer), ("site", site), ("terminal", terminal), ("kept", kept)):
        if layer not in (None, "") and not isinstance(layer, Mapping):
            raise AnsibleFilterError(
                "ipm.fleet.terminal_parameters: %s parameters must be a mapping of name: value, got %r" % (name, layer)
            )
    definition = plain(definition)
    layered = parameter_layers.layer_parameters(
        definition, plain(customer or {}), plain(site or {}), plain(terminal or {})
    )
    effective = parameter_layers.effective_parameters(definition, layered, plain(kept or {}))
    layered["effective"] = {name: item["value"] for name, item in effective.items()}
    layered["effective_sources"] = {name: item["source"] for name, item in effective.items()}
    layered["secret_names"] = [
        name for name, spec in definition["parameters"].items() if is_secret_parameter(name, spec)
    ]
    layered["secrets_set"] = [
        name for name in layered["secret_names"] if layered["effective"].get(name) not in (None, "")
    ]
    return layered


def parameter_diff(wanted, current=None, definition=None, host=""):
    """Which parameters change when WANTED replaces the CURRENT file under release DEFINITION, secrets masked."""
    if not isinstance(definition, Mapping) or not isinstance(definition.get("parameters"), Mapping):
        raise AnsibleFilterError(
            "ipm.fleet.parameter_diff: definition must be the release's manifest (with parameters), got %s"
            % type(definition).__name__
        )
    if not isinstance(wanted, Mapping):
        raise AnsibleFilterError(
            "ipm.fleet.parameter_diff: expected the wanted parameters as a mapping, got %s" % type(wanted).__name__
        )
    current = plain(current)
    if current == "":
        current = None  # an empty or missing file
    return changes.parameter_diff(plain(definition), current, plain(wanted), str(host or ""))


def parameters_outcome(state):
    """The ledger entry (result, reason) of one terminal's parameters change, from the role's results."""
    return changes.parameters_outcome(plain(state) if isinstance(state, Mapping) else {})


def parameters_bake_outcome(result, restore=None):
    """The ledger entry (result, reason) of the ring's bake of a terminal whose parameters changed."""
    return changes.parameters_bake_outcome(
        plain(result) if isinstance(result, Mapping) else {}, plain(restore) if isinstance(restore, Mapping) else {}
    )


class FilterModule:
    """ipm.fleet parameter filters."""

    def filters(self):
        return {
            "terminal_parameters": terminal_parameters,
            "parameter_diff": parameter_diff,
            "parameters_outcome": parameters_outcome,
            "parameters_bake_outcome": parameters_bake_outcome,
        }
