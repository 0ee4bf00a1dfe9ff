# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filter ipm.fleet.vaulted_parameters: which registry parameters of a terminal are vault-encrypted.

Read from the terminal's raw variables, so nothing is decrypted: the rollout and the parameters role
name them when the run's vault password cannot open them (docs in vaulted_parameters.yml).
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import is_vault_value

LAYER_VARIABLES = (
    ("customer", "ipm_customer_parameters"),
    ("site", "ipm_site_parameters"),
    ("terminal", "ipm_parameters"),
)


def vaulted_parameters(host, hostvars):
    """``["payment_api_token (customer layer)", ...]`` for HOST, without decrypting anything."""
    try:
        raw = hostvars.raw_get(host)
    except (AttributeError, KeyError, TypeError):
        return []
    found = []
    for layer, variable in LAYER_VARIABLES:
        values = raw.get(variable) if isinstance(raw, Mapping) else None
        if isinstance(values, Mapping):
            found.extend("%s (%s layer)" % (name, layer) for name, value in values.items() if is_vault_value(value))
    return found


class FilterModule:
    """ipm.fleet vault filters."""

    def filters(self):
        return {"vaulted_parameters": vaulted_parameters}
