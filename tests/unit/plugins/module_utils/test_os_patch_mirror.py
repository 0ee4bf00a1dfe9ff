"""The vendor mirror's files, the deferred entry and the ledger details of OS patching (os_patch_rules)."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import os_patch_rules as rules

# A throw-away ed25519 public key: gpg --armor --export, and its gpg --dearmor.
ARMORED = """-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxA9FhYJKwYBBAHaRw8BAQdAfIktgcpq8HoKj6AN1IMa+2ZA0hzoJefFsfSv
vvn9Z5i0GGlwbSB0ZXN0IDx0QGV4YW1wbGUubmV0PoiQBBMWCAA4FiEE/ru4ujeS
9BqbPfP18tv6xOJX7AgFAmsQPRYCGwMFCwkIBwIGFQoJCAsCBBYCAwECHgECF4AA
CgkQ8tv6xOJX7AgmQAD+ORPQutGq+4mV70z5pmpRDOBXlUFkXmXPIgaLGf1ofngA
/iDz1RL5RuqKdsQWbwFyIeKNr6/L34UD9fbWj7x+VgEP
=XiTf
-----END PGP PUBLIC KEY BLOCK-----
"""
BINARY = base64.b64decode(
    "mDMEaxA9FhYJKwYBBAHaRw8BAQdAfIktgcpq8HoKj6AN1IMa+2ZA0hzoJefFsfSvvvn9Z5i0GGlwbSB0ZXN0IDx0QGV4YW1wbGUubmV0PoiQBBMWCAA4FiEE/ru4ujeS9BqbPfP18tv6xOJX7AgFAmsQPRYCGwMFCwkIBwIGFQoJCAsCBBYCAwECHgECF4AACgkQ8tv6xOJX7AgmQAD+ORPQutGq+4mV70z5pmpRDOBXlUFkXmXPIgaLGf1ofngA/iDz1RL5RuqKdsQWbwFyIeKNr6/L34UD9fbWj7x+VgEP"
)


def test_an_armored_key_is_dearmored_as_gpg_does():
    assert rules.keyring_bytes(ARMORED) == BINARY


def test_the_base64_of_a_binary_keyring_is_taken_as_is():
    assert rules.keyring_bytes(base64.b64encode(BINARY).decode()) == BINARY


def test_a_damaged_armored_key_is_refused_by_its_checksum():
    lines = ARMORED.splitlines()
    body = next(index for index, line in enumerate(lines) if len(line) > 40)
    lines[body] = lines[body][:10] + ("A" if lines[body][10] != "A" else "B") + lines[body][11:]
    with pytest.raises(rules.PatchRuleError, match="checksum does not match"):
        rules.keyring_bytes("\n".join(lines))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "found nothing"),
        ("not base64 at all!", "expected an armored public key block"),
        (base64.b64encode(b"hello world").decode(), "not an OpenPGP public key"),
        ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nabc\n", "has no -----END PGP PUBLIC KEY BLOCK----- line"),
    ],
)
def test_what_is_not_a_public_key_is_refused_naming_the_option(text, words):
    with pytest.raises(rules.PatchRuleError, match="^mirror_key: .*" + words.split("(")[0]):
        rules.keyring_bytes(text)


def test_the_mirror_source_is_deb822_signed_by_the_mirror_keyring():
    text = rules.mirror_source("http://127.0.0.1:8000/", ["bookworm-ipm", "bookworm-ipm-security"], ["main"])
    assert text.splitlines()[1:] == [
        "Types: deb",
        "URIs: http://127.0.0.1:8000/",
        "Suites: bookworm-ipm bookworm-ipm-security",
        "Components: main",
        "Signed-By: /etc/apt/keyrings/ipm-mirror.gpg",
    ]
    assert text.startswith("# ")


@pytest.mark.parametrize(
    ("url", "suites", "components", "words"),
    [
        ("ftp://mirror", ["a"], ["main"], "os_patch_mirror_url: expected an http"),
        ("http://mirror/", [], ["main"], "os_patch_mirror_suites: expected a list"),
        ("http://mirror/", ["a b"], ["main"], "os_patch_mirror_suites: expected a list"),
        ("http://mirror/", ["a"], [], "os_patch_mirror_components: expected a list"),
    ],
)
def test_a_bad_mirror_setting_names_the_variable(url, suites, components, words):
    with pytest.raises(rules.PatchRuleError, match="^" + words):
        rules.mirror_source(url, suites, components)


def test_a_deferred_terminal_is_recorded_deferred_without_details():
    result = {"deferred": True, "reason": "site window closed at 12:00 (UTC); next opens 2026-12-03T02:00:00+00:00 UTC"}
    assert rules.patch_outcome(result, {}) == {"result": "deferred", "reason": result["reason"]}
    assert rules.patch_details(result, {}) is None
    assert rules.reboot_after_patch(dict(result, reboot_required=True), {"open": False})["reboot"] is False


def test_the_details_of_a_patched_terminal():
    upgraded = [{"name": "ipm-kernel-sim", "from": "1.0", "to": "1.1", "suites": ["bookworm-ipm-security"]}]
    result = {
        "scope": "security",
        "upgraded": upgraded,
        "versions_before": {"ipm-kernel-sim": "1.0"},
        "versions_after": {"ipm-kernel-sim": "1.1"},
        "holds": {"held": {"python3": {"constraint": ">=3.11"}}, "drift": ["x"], "violations": []},
        "reboot_why": "/var/run/reboot-required",
        "window": {"open": True, "window": "mon-sun 00:00+1440min"},
    }
    decision = {"reboot": False, "pending": True, "reason": "reboot pending: the window closes in 60 s"}
    details = rules.patch_details(result, {"decision": decision}, "all", "")
    assert details["scope"] == "security" and details["upgraded"] == upgraded
    assert details["reboot"] == "pending" and details["reboot_decision"] == decision["reason"]
    assert details["held"] == {"python3": {"constraint": ">=3.11"}} and details["hold_drift"] == ["x"]
    assert details["window"] == "mon-sun 00:00+1440min"
    assert rules.patch_details(result, {"decision": decision, "rebooted": True})["reboot"] == "done"
    ignored = dict(result, window={"open": False}, window_ignored=True)
    assert rules.patch_details(ignored, {}, "all", "outage fix")["window"] == "ignored: outage fix"
    unreachable = rules.patch_details({"unreachable": True}, {}, "all")
    assert unreachable["scope"] == "all" and unreachable["reboot"] == "not needed"


def test_a_failed_run_never_reboots():
    window = {"open": True, "closes_at": "2999-01-01T00:00:00+00:00"}
    assert rules.reboot_after_patch({"reboot_required": True}, window, 60)["reboot"] is True
    assert rules.reboot_after_patch({"reboot_required": True, "failed": True}, window, 60)["reboot"] is False
