# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the terminal application answers its health check: the one rule for every caller.

ipm-app serves ``/health`` on port 8080 of its ``listen_address`` parameter. A wildcard address
(empty, ``0.0.0.0``, ``::``) is asked on the loopback of its own family; any other address as it is,
IPv6 in brackets. Standard library only: this runs on terminals.
"""

from __future__ import annotations

HEALTH_PORT = 8080
HEALTH_PATH = "/health"

_IPV4_WILDCARDS = ("", "0.0.0.0", "*")
_IPV6_WILDCARDS = ("::", "[::]")


def health_host(listen_address):
    """The host to ask for the health of an application bound to LISTEN_ADDRESS (None, '' included)."""
    address = listen_address.strip() if isinstance(listen_address, str) else ""
    if address in _IPV4_WILDCARDS:
        return "127.0.0.1"
    if address in _IPV6_WILDCARDS:
        return "::1"
    return address.strip("[]")


def health_url(listen_address, port=HEALTH_PORT):
    """``http://HOST:PORT/health`` for an application bound to LISTEN_ADDRESS."""
    host = health_host(listen_address)
    return "http://%s:%d%s" % ("[%s]" % host if ":" in host else host, int(port), HEALTH_PATH)
