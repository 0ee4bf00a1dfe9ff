# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filter ipm.fleet.slice_plan: whole sites per slice, rings in order (docs in slice_plan.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.plugin_utils.slicing import SlicingError
from ansible_collections.ipm.fleet.plugins.plugin_utils.slicing import slice_plan as _slice_plan


def slice_plan(terminals, slices, limit=None, ring=None):
    """The slicing plan of TERMINALS into SLICES slices (see plugins/plugin_utils/slicing.py)."""
    try:
        return _slice_plan(terminals, slices, limit=limit, ring=ring)
    except SlicingError as exc:
        raise AnsibleFilterError("ipm.fleet.slice_plan: %s" % exc) from None


class FilterModule:
    """ipm.fleet job slicing filters."""

    def filters(self):
        return {"slice_plan": slice_plan}
