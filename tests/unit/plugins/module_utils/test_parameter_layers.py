"""The one layering rule: release defaults < customer < site < terminal, staged values set aside."""

from __future__ import annotations

from ansible_collections.ipm.fleet.plugins.module_utils.parameter_layers import effective_parameters, layer_parameters

R240 = {
    "version": "2.4.0",
    "parameters": {
        "currency": {"type": "str", "choices": ["EUR", "AUD"], "default": "EUR"},
        "idle_timeout_s": {"type": "int", "min": 5, "max": 600, "default": 60},
        "payment_api_token": {"type": "str", "default": "", "secret": True},
        "listen_address": {"type": "str", "default": "0.0.0.0"},
    },
    "renamed": {"timeout": "idle_timeout_s"},
}


def test_higher_layers_win_and_sources_are_kept():
    layered = layer_parameters(
        R240, {"currency": "EUR", "idle_timeout_s": 30}, {"currency": "AUD"}, {"idle_timeout_s": 90}
    )
    assert layered["registry_values"] == {"currency": "AUD", "idle_timeout_s": 90}
    assert layered["registry_sources"] == {"currency": "site", "idle_timeout_s": "terminal"}
    assert layered["staged"] == [] and layered["problems"] == [] and layered["notes"] == []


def test_a_parameter_of_a_later_release_is_staged_not_failed():
    layered = layer_parameters(R240, {"tariff_zone": "B", "currency": "EUR"}, None, None)
    assert layered["registry_values"] == {"currency": "EUR"}
    assert layered["staged"] == [{"name": "tariff_zone", "layer": "customer"}]
    assert layered["problems"] == []
    assert layered["notes"] == [
        "tariff_zone (customer): not a parameter of release 2.4.0, set aside for the release that has it"
    ]


def test_a_renamed_parameter_is_carried_to_its_new_name_unless_the_layer_sets_it():
    carried = layer_parameters(R240, {"timeout": 45}, {}, {})
    assert carried["registry_values"] == {"idle_timeout_s": 45}
    assert carried["notes"] == ["timeout (customer): renamed idle_timeout_s in 2.4.0, value carried"]
    both = layer_parameters(R240, {}, {"timeout": 45, "idle_timeout_s": 50}, {})
    assert both["registry_values"] == {"idle_timeout_s": 50} and both["staged"] == [
        {"name": "timeout", "layer": "site"}
    ]


def test_an_invalid_value_of_a_known_parameter_is_a_problem_and_a_secret_is_never_shown():
    layered = layer_parameters(R240, {}, {"currency": "XYZ"}, {"payment_api_token": 12345})
    assert {p["name"] for p in layered["problems"]} == {"currency", "payment_api_token"}
    secret = next(p for p in layered["problems"] if p["name"] == "payment_api_token")
    assert "12345" not in str(secret) and secret["layer"] == "terminal"
    assert layered["registry_values"] == {}


def test_effective_parameters_fill_defaults_and_keep_terminal_values():
    layered = layer_parameters(R240, {"currency": "AUD"}, {}, {})
    effective = effective_parameters(R240, layered, kept={"listen_address": "127.0.9.1", "gone": 1})
    assert {name: item["value"] for name, item in effective.items()} == {
        "currency": "AUD",
        "idle_timeout_s": 60,
        "payment_api_token": "",
        "listen_address": "127.0.9.1",
    }
    assert effective["currency"]["source"] == "customer"
    assert effective["listen_address"]["source"] == "terminal file"
    assert effective["idle_timeout_s"]["source"] == "release 2.4.0"


def test_bad_shapes_do_not_raise():
    assert layer_parameters(None, "x", ["y"], 3)["registry_values"] == {}
    assert effective_parameters({"version": "1.0.0", "parameters": "oops"}, {}) == {}
