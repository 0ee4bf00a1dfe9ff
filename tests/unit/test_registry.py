"""The registry validator, layering and inventory plan (plugins/plugin_utils/registry.py)."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils import (
    registry_check,
    registry_inventory,
    registry_paths,
    registry_workers,
)
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import json_schema

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
import registry_builder as rb

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "registry" / "demo"


def problems_of(tmp_path, catalog=None, customers=None, raw=None):
    config = rb.write(tmp_path, catalog, customers, raw)
    fleet, problems = reg.load_fleet(str(config))
    return fleet, problems


def test_base_fleet_is_valid(tmp_path):
    fleet, problems = problems_of(tmp_path)
    assert problems == []
    assert sorted(t["id"] for _, _, t in fleet.terminals()) == ["a-001", "a-002", "b-001", "b-002"]
    assert sorted(fleet.releases) == ["1.0.0", "2.0.0"]


def test_demo_fleet_is_valid():
    fleet, problems = reg.load_fleet(str(ROOT / "inventories" / "demo"))
    assert [str(p) for p in problems] == []
    terminals = list(fleet.terminals())
    assert len(fleet.customers) >= 3 and len(terminals) >= 12
    assert len({c["customer"]["country"] for c in fleet.customers}) >= 3
    zones = {site["timezone"] for document in fleet.customers for site in document["sites"]}
    assert {"Australia/Sydney", "America/Santiago", "Europe/Paris"} <= zones
    assert {t["model"] for _, _, t in terminals} == {"PS-200", "PS-300", "TK-110"}


# Each case: (what it breaks, mutation of (catalog, customers), file, key path, words in the message).
def _set(path, value):
    def mutate(catalog, customers):
        target = customers if path[0].endswith(".yml") else catalog
        keys = path if path[0].endswith(".yml") else path[1:]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def _delete(path):
    def mutate(catalog, customers):
        target = customers
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


T0 = ("alpha.yml", "sites", 0, "terminals", 0)
S0 = ("alpha.yml", "sites", 0)

CASES = [
    (
        "unknown terminal key",
        _set((*T0, "modle"), "PS-300"),
        "alpha.yml",
        "sites[0].terminals[0].modle",
        "unknown key (did you mean 'model'?)",
    ),
    (
        "unknown customer key",
        _set(("alpha.yml", "customer", "contrat"), {}),
        "alpha.yml",
        "customer.contrat",
        "did you mean 'contract'",
    ),
    ("missing time zone", _delete((*S0, "timezone")), "alpha.yml", "sites[0].timezone", "missing required key"),
    (
        "unknown model",
        _set((*T0, "model"), "PS-301"),
        "alpha.yml",
        "sites[0].terminals[0].model",
        "unknown model (did you mean",
    ),
    (
        "unknown release",
        _set((*T0, "release"), "1.0.9"),
        "alpha.yml",
        "sites[0].terminals[0].release",
        "unknown release",
    ),
    (
        "unknown customer release",
        _set(("alpha.yml", "customer", "release"), "9.9.9"),
        "alpha.yml",
        "customer.release",
        "unknown release",
    ),
    (
        "invalid time zone",
        _set((*S0, "timezone"), "Europe/Pariss"),
        "alpha.yml",
        "sites[0].timezone",
        "unknown IANA time zone (did you mean 'Europe/Paris'?)",
    ),
    (
        "window start",
        _set((*S0, "windows"), [{"days": ["sat"], "start": "25:00", "duration_minutes": 60}]),
        "alpha.yml",
        "sites[0].windows[0].start",
        "malformed value",
    ),
    (
        "window duration",
        _set((*S0, "windows"), [{"days": ["sat"], "start": "23:00", "duration_minutes": 2000}]),
        "alpha.yml",
        "sites[0].windows[0].duration_minutes",
        "too large",
    ),
    (
        "window day",
        _set((*S0, "windows"), [{"days": ["sat", "funday"], "start": "23:00", "duration_minutes": 60}]),
        "alpha.yml",
        "sites[0].windows[0].days[1]",
        "unknown value",
    ),
    (
        "window no day",
        _set((*S0, "windows"), [{"days": [], "start": "23:00", "duration_minutes": 60}]),
        "alpha.yml",
        "sites[0].windows[0].days",
        "empty list",
    ),
    (
        "window unknown key",
        _set((*S0, "windows"), [{"days": ["sat"], "start": "23:00", "duration": 60}]),
        "alpha.yml",
        "sites[0].windows[0].duration",
        "unknown key (did you mean 'duration_minutes'?)",
    ),
    (
        "unknown country",
        _set(("alpha.yml", "customer", "country"), "XX"),
        "alpha.yml",
        "customer.country",
        "unknown value",
    ),
    (
        "lower-case country",
        _set(("alpha.yml", "customer", "country"), "fr"),
        "alpha.yml",
        "customer.country",
        "did you mean 'FR'",
    ),
    ("unquoted NO", _set((*S0, "country"), False), "alpha.yml", "sites[0].country", "wrong type"),
    (
        "unknown language",
        _set(("alpha.yml", "customer", "languages"), ["fr", "xx"]),
        "alpha.yml",
        "customer.languages[1]",
        "unknown value",
    ),
    ("site language", _set((*S0, "language"), "french"), "alpha.yml", "sites[0].language", "unknown value"),
    (
        "parameter above max",
        _set((*T0, "parameters"), {"max_amount": 5000.0}),
        "alpha.yml",
        "sites[0].terminals[0].parameters.max_amount",
        "outside release 1.0.0's schema",
    ),
    (
        "parameter wrong type",
        _set((*S0, "parameters"), {"idle_timeout_s": "ninety"}),
        "alpha.yml",
        "sites[0].parameters.idle_timeout_s",
        "outside release 1.0.0's schema",
    ),
    (
        "parameter choice",
        _set(("alpha.yml", "customer", "parameters"), {"currency": "JPY"}),
        "alpha.yml",
        "customer.parameters.currency",
        "schema",
    ),
    (
        "unknown parameter",
        _set((*T0, "parameters"), {"idle_timeout": 30}),
        "alpha.yml",
        "sites[0].terminals[0].parameters.idle_timeout",
        "has no parameter 'idle_timeout' (did you mean 'idle_timeout_s'?)",
    ),
    (
        "unsupported model",
        _set(("bravo.yml", "sites", 0, "terminals", 1, "release"), "2.0.0"),
        "bravo.yml",
        "sites[0].terminals[1].model",
        "release 2.0.0 does not support model PS-200",
    ),
    (
        "interface of model",
        _set((*T0, "interfaces"), {"coin_acceptor": {}}),
        "alpha.yml",
        "sites[0].terminals[0].interfaces.coin_acceptor",
        "model PS-300 has no such interface",
    ),
    (
        "bad address",
        _set((*T0, "address"), "127.0.0.999"),
        "alpha.yml",
        "sites[0].terminals[0].address",
        "not an IP address or DNS name",
    ),
    (
        "bad VPN subnet",
        _set((*S0, "network"), {"vpn_subnet": "10.1.2.3/24"}),
        "alpha.yml",
        "sites[0].network.vpn_subnet",
        "not a network",
    ),
    ("bad ring", _set((*T0, "ring"), "canari"), "alpha.yml", "sites[0].terminals[0].ring", "did you mean 'canary'"),
    ("bad id", _set((*T0, "id"), "A_001"), "alpha.yml", "sites[0].terminals[0].id", "malformed value"),
    (
        "repair before response",
        _set(("alpha.yml", "customer", "contract", "targets", "major", "repair_hours"), 1),
        "alpha.yml",
        "customer.contract.targets.major.repair_hours",
        "shorter than the response",
    ),
    (
        "no release at all",
        _delete(("alpha.yml", "customer", "release")),
        "alpha.yml",
        "sites[0].terminals[0].release",
        "no desired release",
    ),
    ("catalog unknown key", _set(("catalog", "model"), {}), "catalog.yml", "model", "did you mean 'models'"),
    (
        "catalog interface name",
        _set(("catalog", "models", "PS-300", "interfaces"), ["payment", "Camera Port"]),
        "catalog.yml",
        "models.PS-300.interfaces[1]",
        "malformed value",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "file", "path", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_each_kind_of_problem_is_reported_with_file_and_key_path(tmp_path, mutate, file, path, words):
    catalog, customers = rb.base()
    mutate(catalog, customers)
    _, problems = problems_of(tmp_path, catalog, customers)
    matching = [p for p in problems if p.file.endswith(file) and p.path == path]
    assert matching, f"no problem at {file} {path}; got: {[str(p) for p in problems]}"
    assert any(words in p.message for p in matching), [str(p) for p in matching]
    problem = matching[0]
    assert isinstance(problem.line, int) and problem.line > 0
    assert problem.expected and problem.found
    assert str(problem).startswith(f"{problem.file}:{problem.line}: {path}: ")


def test_duplicates_across_files_name_both_places(tmp_path):
    catalog, customers = rb.base()
    customers["bravo.yml"]["sites"][0]["terminals"][0]["id"] = "a-001"
    customers["bravo.yml"]["sites"][0]["terminals"][1]["address"] = "127.0.99.1"
    customers["bravo.yml"]["sites"][0]["id"] = "alpha-paris"
    _, problems = problems_of(tmp_path, catalog, customers)
    text = "\n".join(map(str, problems))
    assert "sites[0].terminals[0].id: duplicate terminal id" in text and "already at" in text and "alpha.yml" in text
    assert "sites[0].terminals[1].address: duplicate terminal address" in text
    assert "sites[0].id: duplicate site id" in text
    assert all(p.file.endswith("bravo.yml") for p in problems)


def test_one_pass_reports_every_problem(tmp_path):
    catalog, customers = rb.base()
    customers["alpha.yml"]["sites"][0]["timezone"] = "Mars/Olympus"
    customers["alpha.yml"]["sites"][0]["terminals"][0]["model"] = "PS-999"
    customers["bravo.yml"]["customer"]["country"] = "ZZ"
    customers["bravo.yml"]["sites"][0]["terminals"][0]["colour"] = "blue"
    _, problems = problems_of(tmp_path, catalog, customers)
    assert len(problems) == 4, [str(p) for p in problems]
    report = registry_check.format_report(problems)
    assert report.splitlines()[0] == "4 problem(s) in the fleet registry:"


def test_yaml_traps_are_explained(tmp_path):
    text = (
        "customer: {id: gamma, name: G, country: NO, languages: [nb], contract: {}}\n"
        "sites:\n"
        "  - id: gamma-oslo\n"
        "    name: Oslo\n"
        "    city: Oslo\n"
        "    timezone: Europe/Oslo\n"
        "    windows: [{days: [sun], start: 23:30, duration_minutes: 60}]\n"
        "    release: 1.0\n"
    )
    _, problems = problems_of(tmp_path, raw={"customers/gamma.yml": text})
    by_path = {p.path: p for p in problems if p.file.endswith("gamma.yml")}
    assert "quote it" in by_path["customer.country"].found and by_path["customer.country"].line == 1
    assert (
        "integer 1410" in by_path["sites[0].windows[0].start"].found and by_path["sites[0].windows[0].start"].line == 7
    )
    assert "quote versions" in by_path["sites[0].release"].found


def test_yaml_syntax_error_has_its_line(tmp_path):
    _, problems = problems_of(tmp_path, raw={"customers/broken.yml": "customer:\n  id: x\n  name: [unclosed\n"})
    problem = next(p for p in problems if p.file.endswith("broken.yml"))
    assert "YAML syntax error" in problem.message and problem.line and problem.line >= 3


def test_missing_catalog_and_missing_releases_dir(tmp_path):
    _, problems = problems_of(tmp_path / "a", catalog=...)
    assert [p.message for p in problems] == ["no catalog"]
    catalog, _ = rb.base()
    catalog["releases_dir"] = "nowhere"
    _, problems = problems_of(tmp_path / "b", catalog=catalog)
    assert any(p.path == "releases_dir" and p.message == "no such directory" for p in problems)


def test_window_crossing_midnight_is_valid(tmp_path):
    catalog, customers = rb.base()
    site = customers["alpha.yml"]["sites"][0]
    site["windows"] = [{"days": ["sat"], "start": "23:30", "duration_minutes": 240}]
    assert problems_of(tmp_path / "ok", catalog, customers)[1] == []
    site["windows"] = [{"days": ["sat"], "start": "7:30", "duration_minutes": 0}]
    paths = {p.path for p in problems_of(tmp_path / "bad", catalog, customers)[1]}
    assert paths == {"sites[0].windows[0].start", "sites[0].windows[0].duration_minutes"}


def test_layering_release_customer_site_terminal(tmp_path):
    fleet, problems = problems_of(tmp_path)
    assert problems == []
    customer, site, terminal = fleet.find_terminal("a-001")
    release = fleet.releases["1.0.0"]
    customer["parameters"]["plate_recognition_enabled"] = False  # a 2.0.0 parameter: not for this release
    site["parameters"]["currency"] = "USD"
    merged = reg.layered_parameters(release, customer, site, terminal, with_sources=True)
    assert merged["currency"] == {"value": "USD", "source": "site"}
    assert merged["idle_timeout_s"] == {"value": 90, "source": "site"}
    assert merged["max_amount"] == {"value": 150.0, "source": "terminal"}
    assert merged["payment_enabled"] == {"value": True, "source": "release 1.0.0"}
    assert "plate_recognition_enabled" not in merged
    assert reg.layered_parameters(release, customer, site, terminal)["currency"] == "USD"


def test_customer_parameter_for_another_release_is_accepted(tmp_path):
    catalog, customers = rb.base()
    customers["bravo.yml"]["customer"]["parameters"] = {"plate_recognition_enabled": False}
    _, problems = problems_of(tmp_path, catalog, customers)
    assert problems == []  # b-002 runs 1.0.0, which lacks it; b-001 runs 2.0.0, which has it


def test_inventory_plan_groups_and_vars(tmp_path):
    fleet, _ = problems_of(tmp_path)
    plan = registry_inventory.inventory_plan(fleet)
    hosts = {name: (variables, groups) for name, variables, groups in plan["hosts"]}
    assert sorted(hosts) == ["a-001", "b-001", "b-002"]  # a-002 is retired
    variables, groups = hosts["a-001"]
    assert variables["ansible_host"] == "127.0.99.1" and variables["ipm_release"] == "1.0.0"
    assert groups == ["site_alpha_paris", "model_ps_300", "release_1_0_0", "ring_canary", "status_active"]
    assert not any(
        key.startswith(("ipm_site_", "ipm_customer_")) and key not in ("ipm_site_id", "ipm_customer_id")
        for key in variables
    )
    assert ["customer_alpha", "site_alpha_paris"] in plan["children"]
    assert ["tz_europe_paris", "site_alpha_paris"] in plan["children"]
    assert ["sla_gold", "customer_alpha"] in plan["children"]
    assert plan["groups"]["site_alpha_paris"]["ipm_site_language"] == "fr"  # the customer's first language
    assert plan["groups"]["customer_bravo"]["ipm_contract"]["sla_tier"] == "silver"
    assert "a-002" in {name for name, *_ in registry_inventory.inventory_plan(fleet, include_retired=True)["hosts"]}
    json.dumps(plan)  # cacheable as JSON


def test_committed_json_schema_is_the_generated_one():
    committed = json.loads((ROOT / "registry" / "registry.schema.json").read_text())
    assert committed == json_schema()


def test_demo_files_validate_under_the_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "registry" / "registry.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    # The authorization policy sits next to the registry but is not part of it (docs/authorization.md).
    files = sorted(p for p in DEMO.rglob("*.yml") if p.name != "policy.yml")
    assert len(files) >= 4
    for path in files:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert errors == [], f"{path}: {errors[0].message}"
    _, customers = rb.base()
    customers["alpha.yml"]["sites"][0]["terminals"][0]["modle"] = "PS-300"
    assert list(validator.iter_errors(customers["alpha.yml"]))


def _many_files_with_faults():
    """Six customer files with faults inside each and duplicates within and across files."""
    catalog, customers = rb.base()
    for index in range(4):
        document = copy.deepcopy(customers["bravo.yml"])
        document["customer"]["id"] = f"extra-{index}"
        site = document["sites"][0]
        site["id"] = f"extra-{index}-site"
        for number, terminal in enumerate(site["terminals"]):
            terminal["id"] = f"x{index}-{number}"
            terminal["address"] = f"127.0.98.{index * 10 + number}"
        customers[f"extra-{index}.yml"] = document
    customers["extra-0.yml"]["sites"][0]["terminals"][0]["id"] = "a-001"  # already in alpha.yml
    customers["extra-1.yml"]["sites"][0]["terminals"][1]["address"] = "127.0.99.1"  # alpha's address
    customers["extra-2.yml"]["sites"][0]["id"] = "alpha-paris"  # alpha's site
    customers["extra-3.yml"]["sites"][0]["terminals"][1]["id"] = "x3-0"  # twice in its own file
    customers["extra-3.yml"]["sites"][0]["terminals"][0]["address"] = "127.0.98.0"  # extra-0's address
    customers["extra-1.yml"]["sites"][0]["timezone"] = "Europe/Pariss"
    customers["extra-2.yml"]["sites"][0]["terminals"][0]["modle"] = "PS-300"
    customers["alpha.yml"]["customer"]["country"] = "ZZ"
    return catalog, customers


def _outcome(fleet, problems):
    return [str(p) for p in problems], [(d["file"], d["customer"], d["sites"]) for d in fleet.customers]


def test_several_processes_find_the_same_fleet_and_problems(tmp_path, monkeypatch):
    config = rb.write(tmp_path, *_many_files_with_faults())
    serial = _outcome(*reg.load_fleet(str(config), workers=1))
    assert len(serial[0]) == 8, serial[0]
    assert any("x3-0" in line and "extra-3.yml" in line and "already at" in line for line in serial[0])
    assert any("'a-001', already at" in line and "alpha.yml" in line for line in serial[0])
    # From here on no file may be read in this process: the workers really read them all.
    parent = os.getpid()
    read = reg._read_customer_file

    def only_in_a_worker(fleet, path):
        assert os.getpid() != parent, "read in the parent: the workers did not run"
        return read(fleet, path)

    monkeypatch.setattr(reg, "_read_customer_file", only_in_a_worker)
    for workers in (2, 3, 6):
        assert _outcome(*reg.load_fleet(str(config), workers=workers)) == serial, workers


def test_processes_only_for_large_registries(tmp_path, monkeypatch):
    config = rb.write(tmp_path, *_many_files_with_faults())
    paths = registry_paths.registry_files(str(tmp_path / "registry"), [str(tmp_path / "registry" / "releases")])
    assert len(paths) == 6
    assert registry_workers.worker_count(paths) == 1  # a few KiB: read in this process
    assert (
        registry_workers.worker_count(paths, 4) == 4
        and registry_workers.worker_count(paths, 1) == 1
        and registry_workers.worker_count(paths[:1], 4) == 1
    )
    monkeypatch.setattr(registry_workers, "PARALLEL_MIN_BYTES", 1)
    cpus = len(os.sched_getaffinity(0))
    assert registry_workers.worker_count(paths) == min(cpus, registry_workers.MAX_WORKERS, 6)
    assert _outcome(*reg.load_fleet(str(config))) == _outcome(*reg.load_fleet(str(config), workers=1))


def test_a_killed_worker_falls_back_to_reading_here(tmp_path, monkeypatch):
    config = rb.write(tmp_path, *_many_files_with_faults())
    expected = _outcome(*reg.load_fleet(str(config), workers=1))
    parent = os.getpid()
    read = reg._read_customer_file

    def dies_in_a_worker(fleet, path):
        if os.getpid() != parent:
            os._exit(9)
        return read(fleet, path)

    monkeypatch.setattr(reg, "_read_customer_file", dies_in_a_worker)
    assert _outcome(*reg.load_fleet(str(config), workers=2)) == expected


@pytest.mark.parametrize("value", ["2024-13-01", "!!int abc", "!!float nothing"])
def test_values_yaml_cannot_build_are_reported_not_raised(tmp_path, value):
    text = (
        f"customer: {{id: gamma, name: G, country: FR, languages: [fr], release: 1.0.0}}\nnotes: {value}\nsites: []\n"
    )
    _, problems = problems_of(tmp_path, raw={"customers/gamma.yml": text})
    (problem,) = [p for p in problems if p.file.endswith("gamma.yml")]
    assert "a value YAML cannot build" in problem.message and "quote" in problem.expected


def test_a_parameter_of_a_later_release_is_staged_at_every_layer_and_a_typo_is_not(tmp_path):
    # a-001 runs 1.0.0; plate_recognition_enabled exists from 2.0.0 only: staged, not an error, at
    # customer, site and terminal level alike, and never applied to the 1.0.0 terminal.
    catalog, customers = rb.base()
    alpha = customers["alpha.yml"]
    alpha["customer"]["parameters"] = {"plate_recognition_enabled": False}
    alpha["sites"][0]["parameters"] = {"plate_recognition_enabled": True}
    alpha["sites"][0]["terminals"][0]["parameters"] = {"max_amount": 150.0, "plate_recognition_enabled": False}
    fleet, problems = problems_of(tmp_path / "staged", catalog, customers)
    assert problems == []
    customer, site, terminal = fleet.find_terminal("a-001")
    assert "plate_recognition_enabled" not in reg.layered_parameters(fleet.releases["1.0.0"], customer, site, terminal)

    alpha["sites"][0]["terminals"][0]["parameters"] = {"plate_recognitoin_enabled": False}
    _, problems = problems_of(tmp_path / "typo", catalog, customers)
    assert [p.path for p in problems] == ["sites[0].terminals[0].parameters.plate_recognitoin_enabled"]
    assert problems[0].message.startswith("release 1.0.0 has no parameter 'plate_recognitoin_enabled'")


def test_an_invalid_value_of_a_known_parameter_is_an_error_for_every_terminal_against_its_release(tmp_path):
    catalog, customers = rb.base()
    # bravo: b-001 runs 2.0.0 (which has plate_recognition_enabled), b-002 runs 1.0.0 (staged there)
    customers["bravo.yml"]["customer"]["parameters"] = {"plate_recognition_enabled": "maybe"}
    _, problems = problems_of(tmp_path, catalog, customers)
    assert [(p.path, p.message) for p in problems] == [
        ("customer.parameters.plate_recognition_enabled", "value outside release 2.0.0's schema")
    ]
    assert problems[0].line is not None
