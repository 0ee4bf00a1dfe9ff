"""Rules of release definitions and parameters (plugins/module_utils/release_manifest.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm

RELEASES = Path(__file__).resolve().parents[4] / "app" / "releases"
VERSIONS = ("2.3.1", "2.4.0", "2.4.1", "3.0.0")


@pytest.fixture(scope="module")
def releases() -> dict[str, dict]:
    return {version: rm.load_definition(str(RELEASES / f"{version}.yml")) for version in VERSIONS}


SCHEMA = {
    "version": "9.0.0",
    "compatibility": {
        "models": ["PS-300"],
        "os": ["debian-12"],
        "upgrades_from": "8.0.0",
        "interfaces": ["payment"],
        "min_free_disk_mib": 10,
    },
    "parameters": {
        "idle_timeout_s": {"type": "int", "min": 5, "max": 600, "default": 60},
        "max_amount": {"type": "float", "min": 0.5, "max": 1000.0, "default": 200.0},
        "currency": {"type": "str", "choices": ["EUR", "CHF"], "default": "EUR"},
        "payment_enabled": {"type": "bool", "default": True},
        "payment_api_token": {"type": "str", "default": "", "secret": True},
    },
    "renamed": {"timeout": "idle_timeout_s"},
    "removed": ["modem_port"],
}


@pytest.mark.parametrize(
    ("parameters", "key", "expected", "found"),
    [
        ({"idle_timeout_s": "60"}, "idle_timeout_s", "an integer between 5 and 600", "'60' (str)"),
        ({"idle_timeout_s": 4}, "idle_timeout_s", "an integer between 5 and 600", "4 (int)"),
        ({"idle_timeout_s": 601}, "idle_timeout_s", "an integer between 5 and 600", "601 (int)"),
        ({"idle_timeout_s": 60.0}, "idle_timeout_s", "an integer between 5 and 600", "60.0 (float)"),
        ({"idle_timeout_s": True}, "idle_timeout_s", "an integer between 5 and 600", "true (bool)"),
        ({"max_amount": 0.1}, "max_amount", "a number between 0.5 and 1000.0", "0.1 (float)"),
        ({"max_amount": 1001}, "max_amount", "a number between 0.5 and 1000.0", "1001 (int)"),
        ({"max_amount": None}, "max_amount", "a number between 0.5 and 1000.0", "null"),
        ({"currency": "JPY"}, "currency", "one of EUR, CHF", "'JPY' (str)"),
        ({"currency": ["EUR"]}, "currency", "one of EUR, CHF", "a list"),
        ({"payment_enabled": "yes"}, "payment_enabled", "true or false", "'yes' (str)"),
        ({"payment_enabled": 1}, "payment_enabled", "true or false", "1 (int)"),
        ({"payment_api_token": 1234}, "payment_api_token", "a string", "(secret of type int)"),
        ({"colour": "red"}, "colour", "a parameter of release 9.0.0", "unknown key"),
        ({"timeout": 30}, "timeout", "idle_timeout_s (renamed in 9.0.0)", "the old name"),
        ({"modem_port": "/dev/ttyS0"}, "modem_port", "nothing (removed in 9.0.0)", "a value"),
    ],
)
def test_invalid_parameter_names_key_expected_and_found(parameters, key, expected, found):
    assert rm.validate_parameters(SCHEMA, parameters) == [rm.ParameterError(key, expected, found)]


@pytest.mark.parametrize(
    "parameters",
    [
        {},
        None,
        {"idle_timeout_s": 5},
        {"idle_timeout_s": 600},
        {"max_amount": 3},  # an int is a valid float
        {"max_amount": 0.5, "currency": "CHF", "payment_enabled": False, "payment_api_token": "s3cr3t"},
    ],
)
def test_valid_parameters_have_no_error(parameters):
    assert rm.validate_parameters(SCHEMA, parameters) == []


def test_every_problem_is_reported_not_only_the_first():
    errors = rm.validate_parameters(SCHEMA, {"currency": "JPY", "idle_timeout_s": 1, "colour": 1})
    assert [error.key for error in errors] == ["colour", "currency", "idle_timeout_s"]


def test_parameters_that_are_not_a_mapping():
    errors = rm.validate_parameters(SCHEMA, ["currency", "EUR"])
    assert errors == [rm.ParameterError("(top level)", "a mapping of parameter: value", "a list")]


def test_secret_value_never_appears_in_errors():
    errors = rm.validate_parameters(SCHEMA, {"payment_api_token": ["tok-123"]})
    assert "tok-123" not in str(errors[0])


def test_effective_parameters_fill_defaults_and_normalise_floats():
    effective = rm.effective_parameters(SCHEMA, {"max_amount": 3, "currency": "CHF"})
    assert effective == {
        "idle_timeout_s": 60,
        "max_amount": 3.0,
        "currency": "CHF",
        "payment_enabled": True,
        "payment_api_token": "",
    }
    assert isinstance(effective["max_amount"], float)


def test_effective_parameters_refuse_invalid_with_every_reason():
    with pytest.raises(rm.ReleaseError, match=r"currency: expected one of EUR, CHF.*idle_timeout_s: expected"):
        rm.effective_parameters(SCHEMA, {"currency": "JPY", "idle_timeout_s": 1})


def test_digest_is_order_independent_and_value_sensitive():
    first = rm.parameters_digest({"a": 1, "b": "x"})
    assert first == rm.parameters_digest({"b": "x", "a": 1})
    assert first != rm.parameters_digest({"a": 2, "b": "x"})
    assert len(first) == 64


# --- definitions ------------------------------------------------------------------------------


def test_shipped_definitions_are_valid_and_named_after_their_version(releases):
    for version, definition in releases.items():
        assert definition["version"] == version


def test_schemas_differ_between_releases_as_documented(releases):
    old, new, broken, major = (releases[v] for v in VERSIONS)
    assert "timeout" in old["parameters"]
    assert new["renamed"] == {"timeout": "idle_timeout_s"}
    assert new["removed"] == ["modem_port"]
    assert set(new["parameters"]) - set(old["parameters"]) >= {"contactless_enabled", "receipt_mode"}
    assert broken["defect"] == "health-fails-after-start"  # the plain form: the default 5 seconds
    assert rm.defect_of(broken) == {"kind": "health-fails-after-start", "healthy_for_s": 5.0}
    assert rm.defect_of(new) is None
    assert broken["parameters"] == new["parameters"]
    assert "defect" not in new
    assert "PS-200" not in major["compatibility"]["models"]
    assert set(major["compatibility"]["models"]) == {"PS-300", "TK-110"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("version"), r"version: expected a value, found \(missing\)"),
        (lambda d: d.update(version=2.4), r"version: expected a quoted \"MAJOR.MINOR.PATCH\" string, found 2.4"),
        (lambda d: d.update(colour="red"), r"colour: expected one of version, .*found unknown key"),
        (lambda d: d["compatibility"].update(models=[]), r"compatibility.models: expected a non-empty list"),
        (lambda d: d["compatibility"].update(models=["ps300"]), r"compatibility.models\[0\]: expected hardware"),
        (lambda d: d["compatibility"].pop("os"), r"compatibility.os: expected a value, found \(missing\)"),
        (lambda d: d["compatibility"].update(upgrades_from="2.4"), r"compatibility.upgrades_from: expected"),
        (
            lambda d: d["compatibility"].update(min_free_disk_mib=-1),
            r"compatibility.min_free_disk_mib: expected an integer >= 0",
        ),
        (lambda d: d["parameters"]["currency"].update(type="string"), r"parameters.currency.type: expected one of"),
        (lambda d: d["parameters"]["currency"].pop("default"), r"parameters.currency.default: expected a default"),
        (lambda d: d["parameters"]["currency"].update(default="JPY"), r"parameters.currency.default: expected one"),
        (lambda d: d["parameters"]["currency"].update(min=1), r"parameters.currency.min: expected no bound"),
        (
            lambda d: d["parameters"]["idle_timeout_s"].update(min=700),
            r"parameters.idle_timeout_s.min: expected min <= max",
        ),
        (
            lambda d: d["parameters"]["idle_timeout_s"].update(unit="s"),
            r"parameters.idle_timeout_s.unit: expected one of",
        ),
        (lambda d: d["parameters"].update({"Bad-Name": {"type": "str", "default": ""}}), r"parameters.Bad-Name"),
        (lambda d: d["renamed"].update(timeout="nowhere"), r"renamed.timeout: expected the new name"),
        (lambda d: d["removed"].append("currency"), r"removed\[1\]: expected a name that is neither"),
        (lambda d: d.update(defect="explodes"), r"defect: expected one of health-fails-after-start"),
        (lambda d: d.update(sha256="abc"), r"sha256: expected 64 lowercase hexadecimal digits"),
    ],
)
def test_malformed_definition_names_the_key_path(mutate, message):
    definition = copy.deepcopy(SCHEMA)
    mutate(definition)
    with pytest.raises(rm.ReleaseError, match=r"^app/releases/x.yml: " + message):
        rm.validate_definition(definition, source="app/releases/x.yml")


KIND = "health-fails-after-start"


SECONDS = "a number of seconds > 0"
KIND_OR_MAPPING = "one of health-fails-after-start (or a mapping with kind and healthy_for_s)"


@pytest.mark.parametrize(
    ("defect", "path", "expected", "found"),
    [
        ({"kind": "explodes"}, "defect.kind", "one of health-fails-after-start", "'explodes' (str)"),
        ({"healthy_for_s": 20}, "defect.kind", "one of health-fails-after-start", "(missing)"),
        ({"kind": KIND, "after_s": 3}, "defect.after_s", "one of kind, healthy_for_s", "unknown key 'after_s'"),
        ({"kind": KIND, "healthy_for_s": 0}, "defect.healthy_for_s", SECONDS, "0 (int)"),
        ({"kind": KIND, "healthy_for_s": -2.5}, "defect.healthy_for_s", SECONDS, "-2.5 (float)"),
        ({"kind": KIND, "healthy_for_s": "20"}, "defect.healthy_for_s", SECONDS, "'20' (str)"),
        ({"kind": KIND, "healthy_for_s": True}, "defect.healthy_for_s", SECONDS, "true (bool)"),
        ({"kind": KIND, "healthy_for_s": None}, "defect.healthy_for_s", SECONDS, "null"),
        ({"kind": KIND, "healthy_for_s": float("inf")}, "defect.healthy_for_s", SECONDS, "inf (float)"),
        ({"kind": KIND, "healthy_for_s": float("nan")}, "defect.healthy_for_s", SECONDS, "nan (float)"),
        ([KIND], "defect", KIND_OR_MAPPING, "a list"),
        (5, "defect", KIND_OR_MAPPING, "5 (int)"),
    ],
)
def test_malformed_defect_names_source_key_path_expected_and_found(defect, path, expected, found):
    definition = dict(copy.deepcopy(SCHEMA), defect=defect)
    with pytest.raises(rm.ReleaseError) as caught:
        rm.validate_definition(definition, source="app/releases/9.0.0.yml")
    assert str(caught.value) == f"app/releases/9.0.0.yml: {path}: expected {expected}, found {found}"


@pytest.mark.parametrize(
    ("defect", "healthy_for_s", "words"),
    [
        (KIND, 5.0, "health-fails-after-start after 5 s"),  # the plain form keeps its meaning
        ({"kind": KIND}, 5.0, "health-fails-after-start after 5 s"),
        ({"kind": KIND, "healthy_for_s": 20}, 20.0, "health-fails-after-start after 20 s"),
        ({"kind": KIND, "healthy_for_s": 2.5}, 2.5, "health-fails-after-start after 2.5 s"),
    ],
)
def test_defect_forms_and_their_healthy_time(defect, healthy_for_s, words):
    definition = dict(copy.deepcopy(SCHEMA), defect=defect)
    rm.validate_definition(definition, source="x.yml")
    assert rm.defect_of(definition) == {"kind": KIND, "healthy_for_s": healthy_for_s}
    assert rm.describe_defect(definition) == words


def test_no_defect():
    assert rm.defect_of(SCHEMA) is None
    assert rm.describe_defect(SCHEMA) == ""


def test_defect_mapping_survives_the_manifest_round_trip(tmp_path):
    """What ipm-release build does with a definition: dump it as the manifest, ipm-app loads it back."""
    text = rm.dump_yaml(dict(copy.deepcopy(SCHEMA), defect={"kind": KIND, "healthy_for_s": 20}))
    path = tmp_path / "manifest.yml"
    path.write_text("---\n" + text)
    assert rm.defect_of(rm.load_definition(str(path))) == {"kind": KIND, "healthy_for_s": 20.0}
    # The flow form of the documentation, read from YAML text.
    written = text.replace("defect:\n  kind: health-fails-after-start\n  healthy_for_s: 20\n", "")
    assert written != text
    flow = written + "defect: {kind: health-fails-after-start, healthy_for_s: 20}\n"
    definition = rm.load_yaml_text(flow, "flow.yml")
    rm.validate_definition(definition, source="flow.yml")
    assert rm.defect_of(definition)["healthy_for_s"] == 20.0


def test_definition_file_with_bad_yaml_is_one_line_error(tmp_path):
    path = tmp_path / "1.0.0.yml"
    path.write_text("version: [unclosed\n")
    with pytest.raises(rm.ReleaseError, match=r"1.0.0.yml: not valid YAML: ") as caught:
        rm.load_definition(str(path))
    assert "\n" not in str(caught.value)


def test_missing_definition_file(tmp_path):
    with pytest.raises(rm.ReleaseError, match=r"nope.yml: cannot read: No such file"):
        rm.load_definition(str(tmp_path / "nope.yml"))


# --- versions and migration -------------------------------------------------------------------


def test_version_order_is_numeric_not_textual():
    assert rm.parse_version("2.10.0") > rm.parse_version("2.9.9")


def test_migration_renames_removes_and_adds_defaults(releases):
    installed = {"timeout": 90, "modem_port": "/dev/ttyS1", "currency": "CHF"}
    migrated, notes = rm.migrate_parameters(installed, releases["2.4.0"], releases["2.3.1"])
    assert migrated["idle_timeout_s"] == 90
    assert migrated["currency"] == "CHF"
    assert "timeout" not in migrated
    assert "modem_port" not in migrated
    assert migrated["contactless_enabled"] is True
    assert migrated["receipt_mode"] == "on_request"
    assert set(migrated) == set(releases["2.4.0"]["parameters"])
    assert "timeout: renamed to idle_timeout_s" in notes
    assert "modem_port: removed in 2.4.0" in notes
    assert 'receipt_mode: new, default "on_request"' in notes
    assert not any(note.startswith("currency") for note in notes)


def test_migration_keeps_a_value_already_set_under_the_new_name(releases):
    migrated, notes = rm.migrate_parameters({"timeout": 90, "idle_timeout_s": 30}, releases["2.4.0"])
    assert migrated["idle_timeout_s"] == 30
    assert "timeout: dropped, idle_timeout_s is already set" in notes


def test_migration_drops_keys_the_target_does_not_know(releases):
    migrated, notes = rm.migrate_parameters({"colour": "red"}, releases["2.4.0"])
    assert "colour" not in migrated
    assert "colour: not a parameter of 2.4.0, dropped" in notes


def test_migration_to_major_release_renames_amount_limit(releases):
    current, _notes = rm.migrate_parameters({"max_amount": 350.0, "language": "fr"}, releases["2.4.0"])
    migrated, notes = rm.migrate_parameters(current, releases["3.0.0"], releases["2.4.0"])
    assert migrated["max_transaction_amount"] == 350.0
    assert migrated["language"] == "fr"
    assert migrated["plate_recognition_enabled"] is True
    assert "max_amount: renamed to max_transaction_amount" in notes


def test_migration_refuses_a_value_the_target_does_not_accept(releases):
    target = copy.deepcopy(releases["2.4.0"])
    target["parameters"]["idle_timeout_s"]["max"] = 120
    with pytest.raises(rm.ReleaseError, match=r"idle_timeout_s: expected an integer between 5 and 120, found 300"):
        rm.migrate_parameters({"timeout": 300}, target)


def test_migration_is_stable_when_repeated(releases):
    once, _notes = rm.migrate_parameters({"timeout": 90}, releases["2.4.0"], releases["2.3.1"])
    twice, notes = rm.migrate_parameters(once, releases["2.4.0"], releases["2.4.0"])
    assert twice == once
    assert notes == []
