# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filter ipm.fleet.compat: a release manifest against a terminal's facts (docs in compat.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.module_utils.compat import check_compatibility


def compat(manifest, facts, allow_downgrade=False):
    """Return {compatible, reasons} for one release manifest and one terminal's ipm_terminal fact."""
    if not isinstance(allow_downgrade, bool):
        raise AnsibleFilterError("ipm.fleet.compat: allow_downgrade must be true or false, got %r" % (allow_downgrade,))
    return check_compatibility(manifest, facts, allow_downgrade=allow_downgrade)


class FilterModule:
    """ipm.fleet compatibility filters."""

    def filters(self):
        return {"compat": compat}
