"""Registry YAML within input limits (plugins/plugin_utils/registry_yaml.py): alias bombs, deep nesting,
huge files and cyclic aliases are refused fast, as a problem naming file, line and limit; anchors and
aliases used as people use them load as before, shared instead of copied."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils import (
    registry_check,
    registry_inventory,
    registry_paths,
    registry_yaml,
)

sys.path.insert(0, str(Path(__file__).parents[2]))  # --import-mode=importlib: helpers in tests/unit
import registry_builder as rb

IPM_REGISTRY = Path(sys.executable).parent / "ipm-registry"


def _bomb(levels=10, width=9) -> str:
    """The "billion laughs": each level a list of ``width`` aliases to the level below (width**levels nodes)."""
    lines = ["a: &a [" + ", ".join(["x"] * width) + "]"]
    previous = "a"
    for index in range(1, levels):
        name = f"l{index}"
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * width) + "]")
        previous = name
    return "\n".join(lines) + "\n"


def _refused(path, **match):
    start = time.monotonic()
    with pytest.raises(registry_yaml.InputLimitError) as raised:
        registry_yaml.load_yaml(str(path))
    elapsed = time.monotonic() - start
    assert elapsed < 1.0, elapsed
    for name, value in match.items():
        assert getattr(raised.value, name) == value, (name, raised.value)
    return raised.value


def _one_problem(tmp_path, name, text):
    config = rb.write(tmp_path, raw={name: text})
    start = time.monotonic()
    _, problems = reg.load_fleet(str(config), workers=1)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0, elapsed
    (problem,) = [p for p in problems if p.file.endswith(name)]
    return problem


def test_alias_bomb_is_refused_in_under_a_second_naming_file_line_and_limit(tmp_path):
    path = tmp_path / "bomb.yml"
    path.write_text(_bomb())
    assert len(path.read_bytes()) < 600
    error = _refused(path)
    # 9**7 > 2,000,000: the seventh list (line 7) is the first node whose expansion crosses the limit.
    assert error.line == 7
    assert error.message.startswith("YAML aliases expand to more than 2,000,000 nodes (limit 2,000,000)")
    assert str(error).startswith(f"{path}:7: YAML aliases expand")


def test_alias_bomb_in_a_customer_file_is_one_problem(tmp_path):
    problem = _one_problem(tmp_path, "customers/x.yml", _bomb())
    text = str(problem)
    assert text.startswith(
        f"{problem.file}:7: (top): YAML aliases expand to more than 2,000,000 nodes (limit 2,000,000)"
    )
    assert problem.file.endswith(os.path.join("customers", "x.yml"))
    assert "expected a registry without alias bombs" in text


def test_bomb_through_the_slow_path_is_refused(tmp_path):
    # A merge key and an odd tag need PyYAML's own constructor: it is given the measured graph only.
    for extra in ("m: {<<: {q: 1}}\n", "s: !!set {a, b}\n", "t: 2024-01-02\n"):
        path = tmp_path / "slow.yml"
        path.write_text(_bomb() + extra)
        _refused(path, line=7)
        path.write_text(extra + _bomb())
        _refused(path, line=8)


def test_cyclic_alias_is_refused(tmp_path):
    path = tmp_path / "cycle.yml"
    path.write_text("a: 1\nb: &b\n  c: [1, *b]\n")
    error = _refused(path, line=2)  # the anchor's line
    assert "alias inside the mapping it names" in error.message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("x: " + "[" * 100_000 + "]" * 100_000 + "\n", 1),  # beyond libyaml's own 1,000 levels
        ("x: " + "[" * 500 + "]" * 500 + "\n", 1),  # composed, refused while built
        ("- " * 100_000 + "x\n", 1),
        ("".join(" " * i + f"k{i}:\n" for i in range(300)) + " " * 300 + "v\n", 65),
        ("- &a " + "[" * 40 + "1" + "]" * 40 + "\n- " + "[" * 40 + "*a" + "]" * 40 + "\n", 1),  # deep through an alias
        ("s: !!set {a}\nx: " + "[" * 100 + "]" * 100 + "\n", 2),  # PyYAML's constructor needed: measured first
    ],
    ids=["flow-100000", "flow-500", "block-100000", "mappings-300", "alias-40+40", "slow-path"],
)
def test_deep_nesting_is_refused_fast(tmp_path, text, line):
    path = tmp_path / "deep.yml"
    path.write_text(text)
    error = _refused(path, line=line)
    assert error.message == "YAML nested deeper than 64 levels (limit 64)"


def test_depth_limit_boundary(tmp_path):
    path = tmp_path / "deep.yml"
    path.write_text("[" * 64 + "]" * 64 + "\n")
    data = registry_yaml.load_yaml(str(path))
    for _ in range(63):
        (data,) = data
    assert data == []
    path.write_text("[" * 65 + "]" * 65 + "\n")
    _refused(path, line=1)


def test_deep_customer_file_is_one_problem(tmp_path):
    problem = _one_problem(tmp_path, "customers/x.yml", "sites: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert str(problem).startswith(f"{problem.file}:1: (top): YAML nested deeper than 64 levels (limit 64)")


def test_huge_file_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_yaml, "MAX_FILE_BYTES", 4096)
    problem = _one_problem(tmp_path, "customers/x.yml", "notes: " + "x" * 5000 + "\n")
    assert problem.line is None
    assert problem.message == "file of 5,008 bytes or more is larger than the limit (4,096 bytes)"
    # Something without a size (a device, a pipe) is read no further than the limit.
    error = _refused("/dev/zero")
    assert "larger than the limit (4,096 bytes)" in error.message


def test_the_bench_registry_is_far_below_the_limits():
    # bench/inventory.py writes one file per customer of 500 terminals: about 175 KB, 16,877 nodes.
    assert registry_yaml.MAX_FILE_BYTES >= 1000 * 175_000
    assert registry_yaml.MAX_NODES >= 100 * 16_877
    assert registry_yaml.MAX_DEPTH >= 64


def test_too_many_nodes_without_aliases(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_yaml, "MAX_NODES", 100)
    path = tmp_path / "big.yml"
    path.write_text("a: [" + ", ".join(["x"] * 60) + "]\nb: [" + ", ".join(["y"] * 60) + "]\n")
    error = _refused(path, line=1)
    assert error.message.startswith("YAML document of more than 100 nodes (limit 100)")
    path.write_text("s: !!set {a}\na: [" + ", ".join(["x"] * 60) + "]\nb: [" + ", ".join(["y"] * 60) + "]\n")
    _refused(path, line=1)  # the slow path (PyYAML's constructor) too
    path.write_text("a: [" + ", ".join(["x"] * 40) + "]\nb: [" + ", ".join(["y"] * 40) + "]\n")
    assert len(registry_yaml.load_yaml(str(path))["b"]) == 40


def test_limits_hold_in_the_worker_processes(tmp_path):
    catalog, customers = rb.base()
    config = rb.write(
        tmp_path,
        catalog,
        customers,
        raw={"customers/x.yml": _bomb(), "customers/y.yml": "a: [[[[" + "[" * 70 + "]" * 74 + "\n"},
    )
    serial = [str(p) for p in reg.load_fleet(str(config), workers=1)[1]]
    assert len(serial) == 2 and "limit 2,000,000" in serial[0] and "limit 64" in serial[1]
    assert [str(p) for p in reg.load_fleet(str(config), workers=2)[1]] == serial


def test_second_reading_for_line_numbers_and_the_catalog_and_config_readers_use_the_limits(tmp_path):
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(_bomb())
    with pytest.raises(registry_yaml.InputLimitError):
        registry_yaml.compose_file(str(bomb))
    problems = [registry_check.Problem(str(bomb), ("l3", 0), "something")]
    reg._locate(problems)  # pylint: disable=protected-access
    assert problems[0].line is None
    # The catalog read by fingerprint (for the plugin cache): no traceback, no hang.
    config = rb.write(tmp_path / "fleet", raw={"catalog.yml": _bomb()})
    start = time.monotonic()
    stamp = registry_paths.fingerprint(str(config.parent / "registry"))
    assert time.monotonic() - start < 1.0
    assert stamp[0][0].endswith("catalog.yml")
    # An inventory configuration file naming the registry.
    config.write_text("plugin: ipm.fleet.registry\nregistry: registry\n" + _bomb())
    start = time.monotonic()
    _, problems = reg.load_fleet(str(config))
    assert time.monotonic() - start < 1.0
    (problem,) = problems
    assert str(problem).startswith(
        f"{registry_check.display_path(str(config))}:9: (top): YAML aliases expand to more than"
    )


ANCHORED = """\
defaults: &defaults {idle: 60, currency: EUR}
night: &night
  - {days: [sat, sun], start: "23:00", duration_minutes: 120}
sites:
  - {id: one, windows: *night, parameters: *defaults}
  - {id: two, windows: *night, parameters: {<<: *defaults, idle: 90}}
  - id: three
    windows: *night
    tags: &tags [a, b]
    more: *tags
"""


def test_anchors_and_aliases_load_as_pyyaml_loads_them(tmp_path):
    path = tmp_path / "anchored.yml"
    for text in (ANCHORED, ANCHORED.replace("<<: *defaults, ", "")):  # slow path (merge key) and fast path
        path.write_text(text)
        data = registry_yaml.load_yaml(str(path))
        assert data == yaml.load(text, Loader=yaml.SafeLoader)
        sites = data["sites"]
        assert sites[0]["windows"] is sites[1]["windows"] is sites[2]["windows"] is data["night"]
        assert sites[2]["tags"] is sites[2]["more"]
        assert registry_yaml.read_yaml(str(path))[1] is True
    path.write_text("a: [1, 2]\nb: '&*'\n")
    assert registry_yaml.read_yaml(str(path)) == ({"a": [1, 2], "b": "&*"}, False)


def _shared_fleet(sites=50):
    """The base fleet with one customer of ``sites`` sites sharing one windows list and one parameters mapping."""
    catalog, customers = rb.base()
    alpha = customers["alpha.yml"]
    template = alpha["sites"][0]
    windows = [{"days": ["sat", "sun"], "start": "23:00", "duration_minutes": 120}]
    parameters = {"idle_timeout_s": 90}
    alpha["sites"] = []
    for index in range(sites):
        site = copy.deepcopy(template)
        site["id"] = f"alpha-site-{index}"
        site["windows"] = windows
        site["parameters"] = parameters
        for number, terminal in enumerate(site["terminals"]):
            terminal["id"] = f"a-{index:03d}-{number}"
            terminal["address"] = f"127.0.{index}.{number + 1}"
            terminal["serial_number"] = f"SN-{index}-{number}"
        alpha["sites"].append(site)
    return catalog, customers


def _outcome(config):
    fleet, problems = reg.load_fleet(str(config), workers=1)
    plan = registry_inventory.inventory_plan(fleet, include_retired=True) if not problems else None
    return [str(p) for p in problems], [(d["customer"], d["sites"]) for d in fleet.customers], json.dumps(plan)


def test_a_registry_with_anchors_loads_identically_to_its_expanded_copy(tmp_path):
    catalog, customers = _shared_fleet()
    text = yaml.safe_dump(customers["alpha.yml"], sort_keys=False)
    assert text.count("*id001") == 49  # the dumper wrote the shared windows as an anchor and aliases
    anchored = rb.write(tmp_path / "anchored", catalog, customers)
    expanded = rb.write(tmp_path / "expanded", catalog, json.loads(json.dumps(customers)))
    assert "*id" not in (tmp_path / "expanded" / "registry" / "customers" / "alpha.yml").read_text()
    result = _outcome(anchored)
    assert result[0] == [] and result == _outcome(expanded)


def test_a_fault_in_a_shared_node_is_reported_once_at_its_first_place(tmp_path):
    catalog, customers = _shared_fleet(sites=5)
    customers["alpha.yml"]["sites"][0]["windows"][0]["duration_minutes"] = 0
    customers["alpha.yml"]["sites"][0]["windows"][0]["colour"] = "blue"
    anchored = [p for p in _outcome(rb.write(tmp_path / "anchored", catalog, customers))[0] if "windows" in p]
    assert len(anchored) == 2, anchored
    assert all("sites[0].windows[0]." in p for p in anchored)
    expanded = [p for p in _outcome(rb.write(tmp_path / "expanded", catalog, json.loads(json.dumps(customers))))[0]]
    assert len([p for p in expanded if "windows" in p]) == 10  # without aliases: at every site, as before


def test_the_checker_does_not_walk_a_shared_node_again(tmp_path, monkeypatch):
    # 30 sites sharing one list of 2,000 windows: the windows are checked once, not 30 times.
    catalog, customers = _shared_fleet(sites=30)
    windows = customers["alpha.yml"]["sites"][0]["windows"]
    windows[:] = [{"days": ["sat"], "start": "23:00", "duration_minutes": 60} for _ in range(2000)]
    config = rb.write(tmp_path, catalog, customers)
    walked = []
    walk = registry_check._check_items  # pylint: disable=protected-access

    def counting(field, value, keys, report, seen):
        walked.append(keys)
        return walk(field, value, keys, report, seen)

    monkeypatch.setattr(registry_check, "_check_items", counting)
    _, problems = reg.load_fleet(str(config), workers=1)
    assert problems == []
    in_windows = [keys for keys in walked if "windows" in keys]
    # Each window and its days once (2 * 2,000, plus the list), at the first site; not 30 times over
    # (the other customer's one window adds 3).
    assert len(in_windows) == 2 * 2000 + 1 + 3, len(in_windows)
    assert {keys[:2] for keys in in_windows} == {("sites", 0)}


def test_validate_command_on_a_bomb_exits_1_with_one_clear_line(tmp_path):
    config = rb.write(tmp_path, raw={"customers/x.yml": _bomb()})
    start = time.monotonic()
    result = subprocess.run(
        [str(IPM_REGISTRY), "validate", str(config.parent / "registry")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert lines[0] == "1 problem(s) in the fleet registry:", lines
    assert len(lines) == 2
    assert lines[1].startswith(
        "  registry/customers/x.yml:7: (top): YAML aliases expand to more than 2,000,000 nodes (limit 2,000,000)"
    ), lines
    assert elapsed < 30, elapsed  # the command's own start-up included; the refusal itself is milliseconds
