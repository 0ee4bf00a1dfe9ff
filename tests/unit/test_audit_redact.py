"""Redaction: secrets never reach the audit log."""

from __future__ import annotations

import json

from ansible_collections.ipm.fleet.plugins.module_utils import secret_values
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_redact import MASK, Redactor, is_secret_key

CANARY = "canary-7f3a9e"


class Vaulted(str):
    """Stands in for a vault-tagged value: the redactor only sees it through the is_vaulted hook."""


def test_secret_looking_keys_are_masked_recursively():
    redactor = Redactor()
    data = {
        "name": "app",
        "password": CANARY,
        "nested": {"api_key": CANARY, "list": [{"client_secret": CANARY}, {"db_passwd": CANARY}]},
        "ansible_become_pass": CANARY,
        "private_key": {"pem": CANARY},
        "secret": True,  # a schema flag, not a secret
        "token": None,
    }
    clean = redactor.value(data)
    assert CANARY not in json.dumps(clean)
    assert clean["password"] == MASK
    assert clean["nested"]["list"][0]["client_secret"] == MASK
    assert clean["private_key"] == MASK
    assert clean["secret"] is True
    assert clean["token"] is None
    assert clean["name"] == "app"


def test_key_names():
    for key in (
        "password",
        "PASSWORD",
        "db_password",
        "passwd",
        "secret_key",
        "api_token",
        "private_key",
        "apikey",
        "credentials",
        "ansible_ssh_pass",
        "vpn_psk",
        "wg_private_key",
    ):
        assert is_secret_key(key), key
    for key in ("name", "dest", "mode", "state", "port", "timeout", "compass_heading"):
        assert not is_secret_key(key), key


def test_known_secret_values_are_masked_inside_any_string():
    redactor = Redactor()
    redactor.collect({"db_password": CANARY, "site": {"wifi_psk": "psk-canary-1"}, "other": "visible"})
    clean = redactor.value({"diff": [{"after": f"line\nconn=postgres://u:{CANARY}@db\n"}], "msg": "psk-canary-1 set"})
    text = json.dumps(clean)
    assert CANARY not in text and "psk-canary-1" not in text
    assert MASK in clean["diff"][0]["after"]
    assert redactor.value("visible") == "visible"


def test_vaulted_values_are_masked_and_their_plaintext_learnt():
    redactor = Redactor(is_vaulted=lambda v: isinstance(v, Vaulted))
    redactor.collect({"app_settings": {"token_like": Vaulted(CANARY)}}, plaintext=str)
    assert redactor.value(Vaulted(CANARY)) == MASK
    assert redactor.value({"content": f"x {CANARY} y"}) == {"content": f"x {MASK} y"}


def test_secrets_in_free_text_and_vault_ciphertext():
    redactor = Redactor()
    text = redactor.text("mysql -u root --password=hunter22 -e 'select 1'; API_TOKEN: abc123456")
    assert "hunter22" not in text and "abc123456" not in text
    cipher = "$ANSIBLE_VAULT;1.1;AES256\n6162636465\n3132333435"
    assert "6162636465" not in redactor.text(f"value: {cipher}")


def test_long_strings_are_cut_and_short_secrets_not_substituted_everywhere():
    redactor = Redactor(max_string=100)
    assert len(redactor.text("x" * 1000)) < 140
    redactor.collect({"pin": "12"})  # too short to mask inside other strings
    assert redactor.value({"msg": "12 files"}) == {"msg": "12 files"}
    assert redactor.value({"pin": "12"}) == {"pin": MASK}


def test_a_known_secret_across_the_cut_leaves_no_part_of_it():
    redactor = Redactor(max_string=100)
    redactor.collect({"api_password": "s3cr3t-canary-value"})
    text = redactor.text("x" * 91 + " s3cr3t-canary-value and more text after it " * 3)
    assert "s3cr3t" not in text and "canary" not in text
    assert "[cut " in text


def test_free_text_keys_start_at_a_word_boundary():
    redactor = Redactor()
    assert redactor.text("db.password = hunter22") == f"db.password = {MASK}"
    word = "certificate-authority-data: " + "QUJD" * 50
    assert redactor.text(word) == word  # not a secret-looking key: left as it is
    assert redactor.text("x_token=abc12345") == f"x_token={MASK}"


def test_the_audit_log_uses_the_one_secret_rule():
    """Keys and the mask come from module_utils/secret_values.py, shared with terminal facts and drift."""
    assert MASK == secret_values.MASK
    names = ("payment_api_token", "wifi_psk", "card_pin", "otp", "session_key", "bypass", "compass", "currency")
    assert [is_secret_key(name) for name in names] == [secret_values.is_secret_name(name) for name in names]
    clean = Redactor().value({"payment_api_token": CANARY, "card_pin": "4711", "currency": "EUR"})
    assert clean == {"payment_api_token": MASK, "card_pin": MASK, "currency": "EUR"}


def test_free_text_masks_long_secret_names_only():
    """The free-text pattern keeps the long names: the short ones would match inside ordinary words."""
    redactor = Redactor()
    for text in ("bypass=1", "spin: 3", "hotplug=on", "compass: north"):
        assert redactor.text(text) == text
    assert redactor.text("client_secret=abc12345 passphrase: xyz98765") == f"client_secret={MASK} passphrase: {MASK}"
