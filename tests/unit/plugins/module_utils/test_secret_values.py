"""Which values are secrets and how they are shown (plugins/module_utils/secret_values.py)."""

from __future__ import annotations

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import secret_values as sv

SECRET_NAMES = (
    "password", "PASSWORD", "db_password", "passwd", "passphrase", "ansible_ssh_pass", "pass", "user_pwd",
    "secret", "client_secret", "payment_api_token", "apikey", "API_KEY", "private_key", "wg_privatekey",
    "credentials", "auth_key", "access_key", "session_key", "pin", "card_pin", "otp", "vpn_psk",
    "preshared_key", "cookie", "authorization", "bearer_token",
)  # fmt: skip
PLAIN_NAMES = (
    "currency", "listen_address", "terminal_label", "payment_enabled", "contactless_limit", "passenger_count",
    "bypass", "compass_heading", "spinner", "pinned", "hotplug", "timeout", "max_amount",
)  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name):
    assert sv.is_secret_name(name)
    assert sv.is_secret_parameter(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_plain_names(name):
    assert not sv.is_secret_name(name)
    assert not sv.is_secret_parameter(name, {"type": "str", "default": ""})


@pytest.mark.parametrize("name", [None, 3, ("password",)])
def test_a_name_that_is_not_a_string_is_not_a_secret_name(name):
    assert not sv.is_secret_name(name)


def test_secret_by_schema_whatever_the_name():
    assert sv.is_secret_parameter("terminal_label", {"type": "str", "default": "", "secret": True})
    assert not sv.is_secret_parameter("terminal_label", {"type": "str", "default": "", "secret": False})
    # A name that says secret stays secret even when a schema forgets to mark it.
    assert sv.is_secret_parameter("payment_api_token", {"type": "str", "default": ""})
    assert sv.is_secret_parameter("payment_api_token", "not a spec")


@pytest.mark.parametrize("value", ["s3cr3t", "x", "a" * 200, 1234, ["tok"]])
def test_a_set_secret_is_the_mask_whole(value):
    assert sv.mask(value) == sv.MASK == "********"


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_secret_is_shown_empty(value):
    assert sv.mask(value) == value


def test_mask_parameters_by_schema_and_by_name():
    schema = {
        "pairing_code": {"type": "str", "default": "", "secret": True},
        "payment_api_token": {"type": "str", "default": "", "secret": True},
        "currency": {"type": "str", "default": "EUR"},
    }
    values = {"pairing_code": "4711", "payment_api_token": "", "currency": "CHF", "wifi_psk": "hunter22", "pin": None}
    masked = sv.mask_parameters(values, schema)
    assert masked == {
        "pairing_code": sv.MASK,  # by schema
        "payment_api_token": "",  # empty: nothing to hide, and "not set" is worth seeing
        "currency": "CHF",
        "wifi_psk": sv.MASK,  # by name, not in the schema
        "pin": None,
    }
    assert values["pairing_code"] == "4711"  # a copy: the caller's mapping is untouched
    # Without a schema (or a schema that is not a mapping) the names decide.
    assert sv.mask_parameters(values) == dict(masked, pairing_code="4711")
    assert sv.mask_parameters(values, ["not", "a", "schema"]) == dict(masked, pairing_code="4711")
