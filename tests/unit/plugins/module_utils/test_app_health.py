"""Where ipm-app answers /health (plugins/module_utils/app_health.py): the one rule every caller uses."""

from __future__ import annotations

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import app_health


@pytest.mark.parametrize(
    ("listen_address", "host", "url"),
    [
        ("", "127.0.0.1", "http://127.0.0.1:8080/health"),
        (None, "127.0.0.1", "http://127.0.0.1:8080/health"),
        ("0.0.0.0", "127.0.0.1", "http://127.0.0.1:8080/health"),
        (" 0.0.0.0 ", "127.0.0.1", "http://127.0.0.1:8080/health"),
        ("::", "::1", "http://[::1]:8080/health"),
        ("[::]", "::1", "http://[::1]:8080/health"),
        ("::1", "::1", "http://[::1]:8080/health"),
        ("[::1]", "::1", "http://[::1]:8080/health"),
        ("fd00:79::3", "fd00:79::3", "http://[fd00:79::3]:8080/health"),
        ("127.0.9.3", "127.0.9.3", "http://127.0.9.3:8080/health"),
        (
            "pay01.terminals.example.net",
            "pay01.terminals.example.net",
            "http://pay01.terminals.example.net:8080/health",
        ),
        (8080, "127.0.0.1", "http://127.0.0.1:8080/health"),  # not an address at all: the default one
    ],
)
def test_health_host_and_url(listen_address, host, url):
    assert app_health.health_host(listen_address) == host
    assert app_health.health_url(listen_address) == url


def test_health_url_on_another_port():
    assert app_health.health_url("::1", 9000) == "http://[::1]:9000/health"
    assert app_health.health_url("127.0.9.3", "18080") == "http://127.0.9.3:18080/health"
    assert app_health.health_url(None, app_health.HEALTH_PORT).endswith(":8080" + app_health.HEALTH_PATH)
