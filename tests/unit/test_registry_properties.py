"""Property tests: malformed registries get a report, never a traceback (validator and plugin)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils import registry_inventory, registry_yaml

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
import registry_builder as rb

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

KEYS = st.sampled_from(
    [
        "id",
        "name",
        "model",
        "release",
        "timezone",
        "windows",
        "start",
        "days",
        "country",
        "parameters",
        "terminals",
        "sites",
        "customer",
        "x",
    ]
) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["PS-300", "1.0.0", "Europe/Paris", "23:30", "FR", "canary"])
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=8
)


def _paths(document, prefix=()):
    """Every (container, key) pair inside a document."""
    found = []
    items = (
        document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) else ()
    )
    for key, value in items:
        found.append((document, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@st.composite
def mutated_customers(draw):
    _, customers = rb.base()
    customers = copy.deepcopy(customers)
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(sorted(customers)))
        spots = _paths(customers[name])
        action = draw(st.sampled_from(["replace", "delete", "add", "whole"]))
        if action == "whole" or not spots:
            customers[name] = draw(VALUES)
            continue
        container, key = draw(st.sampled_from(spots))
        if action == "replace":
            container[key] = draw(VALUES)
        elif action == "delete" and isinstance(container, dict):
            del container[key]
        elif isinstance(container, dict):
            container[draw(KEYS)] = draw(VALUES)
        else:
            container.append(draw(VALUES))
    return customers


def _check(fleet, problems):
    assert isinstance(problems, list)
    for problem in problems:
        text = str(problem)
        assert problem.file and problem.message and "\n" not in text
        json.dumps(problem.as_dict())
    if not problems:
        json.dumps(registry_inventory.inventory_plan(fleet, include_retired=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(customers=mutated_customers())
def test_mutated_registries_never_raise(customers):
    with tempfile.TemporaryDirectory() as directory:
        config = rb.write(Path(directory), customers=customers)
        _check(*reg.load_fleet(str(config)))


@settings(max_examples=80, deadline=None)
@given(
    text=st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")), catalog_text=st.booleans()
)
def test_arbitrary_file_text_never_raises(text, catalog_text):
    with tempfile.TemporaryDirectory() as directory:
        raw = {"catalog.yml": text} if catalog_text else {"customers/odd.yml": text}
        config = rb.write(Path(directory), raw=raw)
        _check(*reg.load_fleet(str(config)))


@settings(max_examples=120, deadline=None)
@given(document=VALUES)
def test_arbitrary_yaml_documents_never_raise(document):
    with tempfile.TemporaryDirectory() as directory:
        config = rb.write(Path(directory), raw={"customers/odd.yml": yaml.safe_dump(document)})
        _check(*reg.load_fleet(str(config)))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(customers=mutated_customers())
def test_plugin_reports_malformed_registries_without_traceback(customers):
    with tempfile.TemporaryDirectory() as directory:
        config = rb.write(Path(directory), customers=customers)
        _, problems = reg.load_fleet(str(config))
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1",
            ANSIBLE_NOCOLOR="1",
        )
        result = subprocess.run(
            [str(BIN / "ansible-inventory"), "-i", str(config), "--list"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "Traceback" not in result.stderr
        if problems:
            assert result.returncode != 0
            assert f"{len(problems)} problem(s) in the fleet registry" in result.stderr
        else:
            assert result.returncode == 0, result.stderr


TRICKY = st.sampled_from(
    [
        "yes",
        "No",
        "on",
        "OFF",
        "~",
        "null",
        "",
        "0x1F",
        "0o17",
        "017",
        "1_000",
        "23:30",
        "1:20:30",
        "-.inf",
        "2024-01-31",
        "2024-01-31 10:00:00",
        "<<",
        "=",
        "+1",
        "-",
        "y",
        "n",
        "Europe/Paris",
        "1.0",
        "1e3",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    document=st.recursive(
        SCALARS | TRICKY,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS | TRICKY, inner, max_size=3),
        max_leaves=10,
    ),
    style=st.sampled_from([None, "'", '"']),
)
def test_fast_yaml_loader_reads_what_pyyaml_reads(document, style):
    text = yaml.safe_dump(document, default_style=style)
    plain = (
        "\n".join(line.replace("'", "") for line in text.splitlines()) if style == "'" else text
    )  # unquoted variants too
    with tempfile.TemporaryDirectory() as directory:
        for content in (text, plain):
            path = Path(directory) / "doc.yml"
            path.write_text(content)
            try:
                expected = yaml.safe_load(content)
            except yaml.YAMLError:
                continue
            assert registry_yaml.load_yaml(str(path)) == expected
