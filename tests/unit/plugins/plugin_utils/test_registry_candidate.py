"""What breaks if terminals move to a candidate release (ipm-registry validate --release X)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils import registry_candidate as rc

sys.path.insert(0, str(Path(__file__).parents[2]))  # --import-mode=importlib: helpers in tests/unit
import registry_builder as rb

ROOT = Path(__file__).resolve().parents[4]

RELEASE_1_1 = {
    "version": "1.1.0",
    "compatibility": {"models": ["PS-300"], "os": ["debian-12"], "interfaces": ["payment"]},
    "parameters": {
        "currency": {"type": "str", "choices": ["EUR", "AUD"], "default": "EUR"},
        "idle_timeout_s": {"type": "int", "min": 5, "max": 120, "default": 60},
        "max_transaction_amount": {"type": "float", "min": 0.5, "max": 2000.0, "default": 200.0},
        "tariff_zone": {"type": "str", "default": "A"},
    },
    "renamed": {"max_amount": "max_transaction_amount"},
}


def fleet_of(tmp_path, customers=None):
    raw = {"releases/1.1.0.yml": yaml.safe_dump(RELEASE_1_1, sort_keys=False)}
    config = rb.write(tmp_path, None, customers, raw=raw)
    fleet, problems = reg.load_fleet(str(config))
    assert problems == []
    return fleet


def two_site_customers():
    """alpha with a second site of two terminals whose site layer 1.1.0 refuses (idle_timeout_s 300)."""
    _catalog, customers = rb.base()
    alpha = customers["alpha.yml"]
    second = {
        "id": "alpha-lyon",
        "name": "Lyon",
        "city": "Lyon",
        "timezone": "Europe/Paris",
        "windows": [{"days": ["sun"], "start": "02:00", "duration_minutes": 60}],
        "parameters": {"idle_timeout_s": 300},
        "terminals": [
            {"id": "a-101", "serial_number": "SN-A-101", "model": "PS-300", "address": "127.0.99.11"},
            {"id": "a-102", "serial_number": "SN-A-102", "model": "PS-300", "address": "127.0.99.12"},
        ],
    }
    alpha["sites"].append(second)
    alpha["customer"]["parameters"] = {"currency": "EUR", "tariff_zone": "B"}
    return customers


def test_model_support_terminal_by_terminal_with_file_and_line(tmp_path):
    result = rc.check_release(fleet_of(tmp_path), "1.1.0")
    rows = {row["terminal"]: row for row in result["terminals"]}
    assert set(rows) == {"a-001", "b-001", "b-002"}  # a-002 is retired: not maintained
    assert rows["a-001"]["breaks"] is False and rows["b-001"]["breaks"] is False
    (item,) = rows["b-002"]["problems"]
    problem = item["problem"]
    assert item["parameter"] is None and rows["b-002"]["model_supported"] is False
    assert problem.file.endswith("bravo.yml") and problem.line is not None
    assert problem.path == "sites[0].terminals[1].model"
    assert problem.message == "release 1.1.0 does not support model PS-200"
    assert "PS-300" in problem.expected and problem.found == "'PS-200'"
    assert result["breaks"] is True


def test_a_site_fault_is_one_problem_shared_by_its_terminals_at_the_site_layer(tmp_path):
    result = rc.check_release(fleet_of(tmp_path, two_site_customers()), "1.1.0", customer="alpha")
    rows = {row["terminal"]: row for row in result["terminals"]}
    assert set(rows) == {"a-001", "a-101", "a-102"}
    (first,) = rows["a-101"]["problems"]
    (second,) = rows["a-102"]["problems"]
    assert first["problem"] is second["problem"]
    assert first["parameter"] == "idle_timeout_s" and first["layer"] == "site"
    problem = first["problem"]
    assert problem.path == "sites[1].parameters.idle_timeout_s"
    assert problem.message == "value outside release 1.1.0's schema (site layer)"
    assert "120" in problem.expected and "300" in problem.found
    text = (tmp_path / "registry" / "customers" / "alpha.yml").read_text().splitlines()
    assert text[problem.line - 1].strip().startswith("idle_timeout_s: 300")
    assert len(result["problems"]) == 1
    # a-001 carries its renamed max_amount, and is fine.
    assert rows["a-001"]["breaks"] is False
    assert rows["a-001"]["carried"] == ["max_amount (terminal): renamed max_transaction_amount in 1.1.0, value carried"]


def test_values_the_candidate_does_not_know_are_staged_notes_not_problems(tmp_path):
    result = rc.check_release(fleet_of(tmp_path, two_site_customers()), "1.0.0", site="alpha-paris")
    (row,) = result["terminals"]
    assert row["terminal"] == "a-001" and row["breaks"] is False and result["breaks"] is False
    (note,) = row["staged"]
    assert note["name"] == "tariff_zone" and note["layer"] == "customer" and note["releases"] == ["1.1.0"]
    assert "not a parameter of release 1.0.0, set aside (release 1.1.0 has it)" in note["text"]


def test_a_name_no_release_knows_is_a_problem_with_the_closest_name(tmp_path):
    fleet = fleet_of(tmp_path)
    _customer, _site, terminal = fleet.find_terminal("b-001")
    terminal["parameters"] = {"curency": "EUR"}
    result = rc.check_release(fleet, "1.1.0", customer="bravo")
    (item,) = next(row for row in result["terminals"] if row["terminal"] == "b-001")["problems"]
    assert "has no parameter 'curency' (did you mean 'currency'?)" in item["problem"].message


def test_vault_values_are_not_judged_by_their_ciphertext(tmp_path):
    from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VaultValue

    fleet = fleet_of(tmp_path)
    _customer, _site, terminal = fleet.find_terminal("b-001")
    terminal["parameters"] = {"currency": VaultValue("$ANSIBLE_VAULT;1.1;AES256\n6162")}
    result = rc.check_release(fleet, "1.1.0", customer="bravo")
    row = next(row for row in result["terminals"] if row["terminal"] == "b-001")
    assert row["problems"] == []


def test_unknown_release_customer_or_site_are_one_line_errors(tmp_path):
    fleet = fleet_of(tmp_path)
    with pytest.raises(rc.CandidateError, match=r"known releases: 1\.0\.0, 1\.1\.0, 2\.0\.0$"):
        rc.check_release(fleet, "3.0.0")
    with pytest.raises(rc.CandidateError, match=r"no customer 'alfa' .*did you mean 'alpha'\?"):
        rc.check_release(fleet, "1.1.0", customer="alfa")
    with pytest.raises(rc.CandidateError, match=r"no site 'bravo-sydney' of customer alpha"):
        rc.check_release(fleet, "1.1.0", customer="alpha", site="bravo-sydney")


def test_json_form_and_summary(tmp_path):
    result = rc.check_release(fleet_of(tmp_path, two_site_customers()), "1.1.0")
    document = json.loads(json.dumps(rc.as_json(result)))
    assert document["breaks"] is True
    assert document["summary"] == {
        "terminals": 5,
        "breaking": 3,
        "unsupported_model": 1,
        "with_staged": 0,
        "problems": 2,
    }
    b002 = next(row for row in document["terminals"] if row["terminal"] == "b-002")
    assert b002["problems"][0]["path"] == "sites[0].terminals[1].model" and b002["problems"][0]["layer"] == "terminal"


def test_demo_metro_transit_can_take_3_0_0_but_not_2_4_0(monkeypatch):
    monkeypatch.chdir(ROOT)
    fleet, problems = reg.load_fleet("inventories/demo")
    assert problems == []
    assert rc.check_release(fleet, "3.0.0", customer="metro-transit")["breaks"] is False
    back = rc.check_release(fleet, "2.4.0", customer="metro-transit")
    assert back["breaks"] is True
    (problem,) = [p for p in back["problems"] if "receipt_mode" in p.path]
    assert problem.path == "customer.parameters.receipt_mode" and problem.file.endswith("metro-transit.yml")
    assert all(row["staged"] for row in back["terminals"])  # tariff_zone: a 3.0.0 parameter
