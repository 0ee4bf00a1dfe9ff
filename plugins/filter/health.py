# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 filter ipm.fleet.health_url: where ipm-app answers /health (docs in health_url.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.module_utils.app_health import HEALTH_PORT
from ansible_collections.ipm.fleet.plugins.module_utils.app_health import health_url as _health_url


def health_url(listen_address, port=HEALTH_PORT):
    """The health URL of an application bound to LISTEN_ADDRESS (a wildcard is asked on loopback)."""
    try:
        return _health_url(listen_address, int(port))
    except (TypeError, ValueError):
        raise AnsibleFilterError("ipm.fleet.health_url: port must be a number, got %r" % (port,)) from None


class FilterModule:
    """ipm.fleet health filters."""

    def filters(self):
        return {"health_url": health_url}
