"""Parsers and collectors of the ipm_terminal fact, on real files laid out in a temporary tree."""

from __future__ import annotations

import gzip
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import terminal_facts as tf


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("1.0", "1.0", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0-1", -1),
        ("1:0.9", "2.0", 1),
        ("2.36-9+deb12u7", "2.36-9+deb12u4", 1),
        ("3.0.11-1~deb12u2", "3.0.14-1~deb12u1", -1),
        ("1.2.10", "1.2.9", 1),
        ("1.0a", "1.0", 1),
        ("1.0+b1", "1.0", 1),
        ("252.30-1~deb12u2", "252.31-1~deb12u1", -1),
    ],
)
def test_debian_version_order(first, second, expected):
    assert tf.compare_debian_versions(first, second) == expected
    assert tf.compare_debian_versions(second, first) == -expected


STATUS = """Package: openssl
Status: install ok installed
Version: 3.0.11-1~deb12u2

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: systemd
Status: install ok installed
Version: 252.30-1~deb12u2
"""

INDEX = """Package: openssl
Version: 3.0.14-1~deb12u1
Description: x

Package: other
Version: 9.9

Package: systemd
Version: 252.31-1~deb12u1
"""


def lay_out(root: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def test_installed_packages_and_pending_updates(tmp_path):
    root = lay_out(
        tmp_path,
        {
            "etc/os-release": 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
            "var/lib/dpkg/status": STATUS,
            "var/lib/apt/lists/deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages": INDEX,
            "var/lib/apt/lists/deb_debian_bookworm_main_binary-amd64_Packages.gz": gzip.compress(
                b"Package: systemd\nVersion: 252.30-1~deb12u2\n"
            ),
        },
    )
    facts = tf.collect_os(str(root))
    assert facts["id"] == "debian-12"
    assert facts["packages"] == {"openssl": "3.0.11-1~deb12u2", "systemd": "252.30-1~deb12u2"}
    assert facts["pending_updates"]["openssl"] == {"installed": "3.0.11-1~deb12u2", "candidate": "3.0.14-1~deb12u1"}
    assert set(facts["pending_security_updates"]) == {"openssl", "systemd"}
    assert "updates_unknown" not in facts


def test_corrupt_apt_list_is_unknown_with_reason_not_a_failure(tmp_path):
    root = lay_out(
        tmp_path,
        {
            "etc/os-release": "ID=debian\nVERSION_ID=12\n",
            "var/lib/dpkg/status": STATUS,
            "var/lib/apt/lists/broken_Packages": "Package: openssl\nDescription: lost its version\n",
        },
    )
    facts = tf.collect_os(str(root))
    assert "broken_Packages: corrupt index, 1 packages but 0 versions" in facts["updates_unknown"]
    assert facts["package_count"] == 2


def test_missing_identity_and_application_are_reported_as_unknown(tmp_path):
    facts = tf.collect(str(tmp_path), query_service=False)
    assert facts["hardware"]["model"] is None
    assert facts["hardware"]["unknown"] == "/etc/ipm/hardware.yml is missing"
    assert facts["application"]["unknown"].startswith("no application installed")
    assert facts["parameters"]["unknown"] == "/etc/ipm/app.yml is missing"
    assert facts["interfaces"]["unknown"] == "/etc/ipm/interfaces.yml is missing"
    assert "unknown" in facts["os"]


def test_application_parameters_and_interfaces(tmp_path):
    root = lay_out(
        tmp_path,
        {
            "etc/ipm/hardware.yml": "model: PS-300\nserial_number: PS3-0001\n",
            "etc/ipm/app.yml": "currency: EUR\npayment_api_token: s3cr3t-canary\n",
            "etc/ipm/interfaces.yml": "interfaces:\n  - {name: payment, type: payment}\n  - {name: printer, type: printer}\n",
            "dev/ipm/payment": "",
            "opt/ipm/app/releases/2.3.1/manifest.yml": "version: '2.3.1'\n",
            "opt/ipm/app/releases/2.4.0/manifest.yml": "version: '2.4.0'\n",
        },
    )
    (root / "opt/ipm/app/current").symlink_to("releases/2.4.0")
    facts = tf.collect(str(root), query_service=False)
    assert facts["hardware"]["model"] == "PS-300"
    assert facts["application"]["releases"] == ["2.3.1", "2.4.0"]
    assert facts["application"]["current"] == "2.4.0"
    # The manifest has no parameter schema here: the secret is still redacted by its key name.
    assert facts["parameters"]["values"]["payment_api_token"] == "********"
    assert len(facts["parameters"]["sha256"]) == 64
    assert "s3cr3t-canary" not in repr(facts)
    assert facts["interfaces"]["devices"]["payment"]["present"] is True
    assert facts["interfaces"]["devices"]["printer"]["present"] is False


def test_corrupt_parameter_file_is_unknown(tmp_path):
    root = lay_out(tmp_path, {"etc/ipm/app.yml": "currency: [EUR\n"})
    facts = tf.collect_parameters(str(root))
    assert facts["values"] is None
    assert "/etc/ipm/app.yml" in facts["unknown"]


def test_pending_updates_are_cached_until_a_list_changes(tmp_path, monkeypatch):
    index = "var/lib/apt/lists/deb_debian_bookworm_main_binary-amd64_Packages"
    root = lay_out(
        tmp_path, {"etc/os-release": "ID=debian\nVERSION_ID=12\n", "var/lib/dpkg/status": STATUS, index: INDEX}
    )
    first = tf.collect_os(str(root))
    assert (root / tf.UPDATES_CACHE).is_file()
    scan = tf._pending_updates

    def no_scan(*args):
        raise AssertionError("the apt lists were scanned again although the cache matches")

    monkeypatch.setattr(tf, "_pending_updates", no_scan)
    assert tf.collect_os(str(root))["pending_updates"] == first["pending_updates"]
    monkeypatch.setattr(tf, "_pending_updates", scan)
    # apt-get update brings a newer openssl: the cache no longer matches and the lists are read again.
    (root / index).write_text(INDEX.replace("3.0.14-1~deb12u1", "3.0.15-1~deb12u1"))
    assert tf.collect_os(str(root))["pending_updates"]["openssl"]["candidate"] == "3.0.15-1~deb12u1"


def test_parameters_are_redacted_by_the_release_schema_and_by_name(tmp_path):
    manifest = (Path(__file__).resolve().parents[4] / "app" / "releases" / "2.4.0.yml").read_text()
    # The installed release marks terminal_label secret here: the schema decides, whatever the name.
    manifest = manifest.replace(
        'terminal_label: {type: str, default: ""', 'terminal_label: {type: str, default: "", secret: true'
    )
    root = lay_out(
        tmp_path,
        {
            "etc/ipm/app.yml": "terminal_label: Gate 3\npayment_api_token: ''\ncurrency: CHF\n",
            "opt/ipm/app/releases/2.4.0/manifest.yml": manifest,
        },
    )
    (root / "opt/ipm/app/current").symlink_to("releases/2.4.0")
    values = tf.collect_parameters(str(root))["values"]
    assert values["terminal_label"] == "********"
    assert values["payment_api_token"] == ""  # an empty secret is shown empty: "not set" is worth seeing
    assert values["currency"] == "CHF"
    assert "Gate 3" not in repr(values)
    # Without a readable schema, names decide, with the same rule as the audit log (psk, pin, ...).
    assert tf.redact_parameters({"wifi_psk": "hunter22", "card_pin": "1234", "currency": "EUR"}, None) == {
        "wifi_psk": "********",
        "card_pin": "********",
        "currency": "EUR",
    }


def _serve_health(host):
    """A stand-in for ipm-app answering /health on HOST and a free port: (server, port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = type("Server", (ThreadingHTTPServer,), {"address_family": family})((host, 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, server.server_address[1]


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("listen_address", "serve_on", "url_host"),
    [
        (None, "127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        pytest.param("::", "::1", "[::1]", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 ::1")),
        pytest.param("[::1]", "::1", "[::1]", marks=pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 ::1")),
    ],
)
def test_health_is_asked_where_app_health_says(listen_address, serve_on, url_host):
    server, port = _serve_health(serve_on)
    try:
        answer = tf._health(listen_address, port, 2.0)
    finally:
        server.shutdown()
        server.server_close()
    assert answer == {"status": "ok", "path": "/health", "http_status": 200, "url": f"http://{url_host}:{port}/health"}


def test_no_health_answer_is_unknown_with_the_url(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on (bound, never listening)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        answer = tf._health("", port, 1.0)
    assert answer["url"] == f"http://127.0.0.1:{port}/health"
    assert answer["unknown"].startswith(f"no health answer from http://127.0.0.1:{port}/health: ")
