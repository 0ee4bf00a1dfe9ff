# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filter ipm.fleet.window: where now falls against a site's maintenance windows (docs in window.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.module_utils.maintenance_window import WindowError, window_state
from ansible_collections.ipm.fleet.plugins.plugin_utils.config_history import HistoryError, parse_when


def window(windows, timezone, now=None):
    """The window state of a site (open, window, closes_at, next_opens_at, local_time) at NOW (default: now)."""
    try:
        moment = parse_when(now) if now else None
        return window_state(windows or [], timezone, moment)
    except (WindowError, HistoryError) as exc:
        raise AnsibleFilterError("ipm.fleet.window: %s" % exc) from None


class FilterModule:
    """ipm.fleet maintenance window filters."""

    def filters(self):
        return {"window": window}
