"""Provenance of a terminal's parameters (ipm-config params): layers, staged values, an upgrade's effect."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import MASK
from ansible_collections.ipm.fleet.plugins.plugin_utils import parameter_provenance as pp
from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VaultValue

sys.path.insert(0, str(Path(__file__).parents[2]))  # --import-mode=importlib: helpers in tests/unit
import registry_builder as rb

# A later release of the test catalog: renames max_amount, adds tariff_zone, drops payment_enabled,
# accepts fewer currencies, supports the PS-300 only.
RELEASE_1_1 = {
    "version": "1.1.0",
    "compatibility": {"models": ["PS-300"], "os": ["debian-12"], "interfaces": ["payment"]},
    "parameters": {
        "currency": {"type": "str", "choices": ["EUR", "AUD"], "default": "EUR"},
        "idle_timeout_s": {"type": "int", "min": 5, "max": 600, "default": 60},
        "max_transaction_amount": {"type": "float", "min": 0.5, "max": 2000.0, "default": 200.0},
        "tariff_zone": {"type": "str", "default": "A"},
        "payment_api_token": {"type": "str", "default": "", "secret": True},
    },
    "renamed": {"max_amount": "max_transaction_amount"},
}


def fleet_of(tmp_path, customers=None):
    raw = {"releases/1.1.0.yml": yaml.safe_dump(RELEASE_1_1, sort_keys=False)}
    config = rb.write(tmp_path, None, customers, raw=raw)
    fleet, problems = reg.load_fleet(str(config))
    assert problems == []
    return fleet


def layered_customers():
    _catalog, customers = rb.base()
    alpha = customers["alpha.yml"]
    alpha["customer"]["parameters"] = {"currency": "EUR", "tariff_zone": "B", "payment_enabled": False}
    alpha["sites"][0]["parameters"] = {"idle_timeout_s": 90, "currency": "USD"}
    alpha["sites"][0]["terminals"][0]["parameters"] = {"max_amount": 150.0}
    return customers


def test_every_effective_value_names_the_layer_that_set_it(tmp_path):
    table = pp.terminal_provenance(fleet_of(tmp_path, layered_customers()), "a-001")
    current = table["current"]
    assert table["release"] == current["release"] == "1.0.0"
    sources = {name: (item["value"], item["source"]) for name, item in current["parameters"].items()}
    assert sources == {
        "currency": ("USD", "site"),
        "idle_timeout_s": (90, "site"),
        "max_amount": (150.0, "terminal"),
        "payment_enabled": (False, "customer"),
        "payment_api_token": ("", "release 1.0.0"),
    }
    layers = [(e["layer"], e["value"], e["status"]) for e in current["parameters"]["currency"]["layers"]]
    assert layers == [
        ("release 1.0.0", "EUR", "overridden"),
        ("customer", "EUR", "overridden"),
        ("site", "USD", "wins"),
    ]
    assert current["parameters"]["currency"]["layers"][1]["reason"] == "overridden by site"
    assert current["parameters"]["payment_api_token"]["layers"][0]["reason"].startswith("the release's default")


def test_staged_values_name_the_releases_that_have_them(tmp_path):
    current = pp.terminal_provenance(fleet_of(tmp_path, layered_customers()), "a-001")["current"]
    (staged,) = current["staged"]
    assert staged["name"] == "tariff_zone" and staged["layer"] == "customer" and staged["value"] == "B"
    assert staged["releases"] == [{"release": "1.1.0", "as": "tariff_zone"}]
    assert "not a parameter of release 1.0.0" in staged["reason"]
    assert "tariff_zone" not in current["parameters"]


def test_an_upgrade_carries_renamed_values_applies_staged_ones_and_names_what_it_refuses(tmp_path):
    table = pp.terminal_provenance(fleet_of(tmp_path, layered_customers()), "a-001", "1.1.0")
    after = table["upgrade"]
    assert after["release"] == "1.1.0"
    assert after["model"] == {"name": "PS-300", "supported": True, "models": ["PS-300"]}
    assert after["carried"] == [
        {"from": "max_amount", "to": "max_transaction_amount", "layer": "terminal", "value": 150.0, "new": True}
    ]
    # Applied under 1.0.0 already, carried under 1.1.0: not "newly applied".
    assert [(i["name"], i["parameter"], i["layer"]) for i in after["newly_applied"]] == [
        ("tariff_zone", "tariff_zone", "customer")
    ]
    assert after["now_staged"] == [{"name": "payment_enabled", "layer": "customer", "value": False}]
    (problem,) = after["problems"]
    assert problem["name"] == "currency" and problem["layer"] == "site" and problem["new"] is True
    assert "EUR" in problem["expected"] and "USD" in problem["found"]
    # The refused site value is out: the customer's applies, and the explanation says why.
    currency = after["parameters"]["currency"]
    assert (currency["value"], currency["source"]) == ("EUR", "customer")
    assert [e["status"] for e in currency["layers"]] == ["overridden", "wins", "refused"]
    assert after["parameters"]["max_transaction_amount"]["value"] == 150.0
    changes = {change["name"]: change for change in after["changes"]}
    assert changes["currency"]["before"] == {"value": "USD", "source": "site"}
    assert changes["payment_enabled"]["after"] is None
    assert changes["tariff_zone"]["after"] == {"value": "B", "source": "customer"}
    # The same default of both releases is no change, nor is a value carried to its new name.
    assert "payment_api_token" not in changes and "idle_timeout_s" not in changes
    assert "max_transaction_amount" not in changes and "max_amount" not in changes


def test_a_renamed_parameter_whose_value_changes_is_one_change_naming_the_old_name(tmp_path):
    customers = layered_customers()
    customers["alpha.yml"]["sites"][0]["terminals"][0]["parameters"] = {}
    customers["alpha.yml"]["sites"][0]["parameters"]["max_transaction_amount"] = 1500.0  # staged under 1.0.0
    after = pp.terminal_provenance(fleet_of(tmp_path, customers), "a-001", "1.1.0")["upgrade"]
    changes = {change["name"]: change for change in after["changes"]}
    assert changes["max_transaction_amount"] == {
        "name": "max_transaction_amount",
        "before": {"value": 200.0, "source": "release 1.0.0"},
        "after": {"value": 1500.0, "source": "site"},
        "renamed_from": "max_amount",
    }
    assert "max_amount" not in changes


def test_an_unsupported_model_is_said(tmp_path):
    _catalog, customers = rb.base()
    customers["bravo.yml"]["sites"][0]["terminals"][0]["model"] = "PS-200"
    customers["bravo.yml"]["customer"]["release"] = "1.0.0"
    after = pp.terminal_provenance(fleet_of(tmp_path, customers), "b-001", "1.1.0")["upgrade"]
    assert after["model"]["supported"] is False


def test_a_renamed_value_is_set_aside_when_the_same_layer_sets_the_new_name(tmp_path):
    customers = layered_customers()
    customers["alpha.yml"]["sites"][0]["terminals"][0]["parameters"] = {
        "max_amount": 150.0,
        "max_transaction_amount": 300.0,
    }
    after = pp.terminal_provenance(fleet_of(tmp_path, customers), "a-001", "1.1.0")["upgrade"]
    assert after["parameters"]["max_transaction_amount"]["value"] == 300.0
    (aside,) = [e for e in after["parameters"]["max_transaction_amount"]["layers"] if e["status"] == "set aside"]
    assert aside["given"] == "max_amount" and "which the same layer sets" in aside["reason"]
    assert after["carried"] == []


def test_secrets_are_masked_everywhere(tmp_path):
    fleet = fleet_of(tmp_path, layered_customers())
    customer, site, terminal = fleet.find_terminal("a-001")
    terminal["parameters"]["payment_api_token"] = "s3cr3t-token"
    site["parameters"]["token"] = "other-s3cr3t"  # named like a secret, known to no release: staged
    customer["parameters"]["payment_api_token"] = VaultValue("$ANSIBLE_VAULT;1.1;AES256\n6332336372337433")
    table = pp.terminal_provenance(fleet, "a-001", "1.1.0")
    text = json.dumps(table)
    assert "s3cr3t" not in text and "ANSIBLE_VAULT" not in text
    assert table["current"]["parameters"]["payment_api_token"]["value"] == MASK
    assert table["upgrade"]["parameters"]["payment_api_token"]["layers"][-1]["value"] == MASK


def test_unknown_terminal_and_release_are_one_line_errors(tmp_path):
    fleet = fleet_of(tmp_path)
    with pytest.raises(pp.ProvenanceError, match=r"no terminal 'a-01' .*did you mean 'a-001'\?"):
        pp.terminal_provenance(fleet, "a-01")
    with pytest.raises(pp.ProvenanceError, match=r"known releases: 1\.0\.0, 1\.1\.0, 2\.0\.0$") as error:
        pp.terminal_provenance(fleet, "a-001", "9.9.9")
    assert "\n" not in str(error.value)


def test_releases_are_ordered_by_version_not_by_text(tmp_path):
    fleet = fleet_of(tmp_path)
    fleet.releases["10.0.0"] = fleet.releases["2.0.0"]
    assert pp.release_order(fleet) == ["1.0.0", "1.1.0", "2.0.0", "10.0.0"]
