"""The optional ``os`` section of a release definition: validated like the rest, carried into the manifest."""

from __future__ import annotations

import copy
import tarfile
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm
from ipm_tools import release

RELEASES = Path(__file__).resolve().parents[4] / "app" / "releases"
EXPECTED = 'version constraints like ">=3.11,<3.12" (comma-separated, operators >=, <=, >, <, =, !=)'


@pytest.fixture(scope="module")
def definition() -> dict:
    return rm.load_definition(str(RELEASES / "2.4.0.yml"))


@pytest.mark.parametrize("version", ["2.3.1", "2.4.0", "2.4.1", "3.0.0"])
def test_shipped_releases_declare_python_and_the_runtime(version):
    needs = rm.os_requirements(rm.load_definition(str(RELEASES / f"{version}.yml")))
    assert needs == {"python3": ">=3.11,<3.12", "ipm-runtime": ">=1.0,<2.0"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"python3": "3.11"}, f"os.python3: expected {EXPECTED}, found '3.11' (str)"),
        ({"python3": ">=3.11,"}, f"os.python3: expected {EXPECTED}, found '>=3.11,' (str)"),
        ({"python3": 3.11}, f"os.python3: expected {EXPECTED}, found 3.11 (float)"),
        (
            {"Python3": ">=3"},
            "os.Python3: expected a Debian package name (lowercase letters, digits, + . -), found 'Python3' (str)",
        ),
        (
            ["python3"],
            'os: expected a mapping of Debian package name to version constraint (python3: ">=3.11,<3.12"), found a list',
        ),
        (
            {},
            'os: expected a mapping of Debian package name to version constraint (python3: ">=3.11,<3.12"), found an empty mapping',
        ),
    ],
)
def test_bad_os_section_is_one_line_naming_file_and_key(definition, section, message):
    broken = dict(copy.deepcopy(definition), os=section)
    with pytest.raises(rm.ReleaseError) as caught:
        rm.validate_definition(broken, source="app/releases/2.4.0.yml")
    assert str(caught.value) == "app/releases/2.4.0.yml: " + message


def test_constraint_forms():
    assert rm.parse_constraint(">=3.11,<3.12") == [(">=", "3.11"), ("<", "3.12")]
    assert rm.parse_constraint(">> 1:2.0-1, << 3~rc1, == 2") == [(">", "1:2.0-1"), ("<", "3~rc1"), ("=", "2")]
    assert rm.os_requirements({"version": "1.0.0"}) == {}


def test_os_section_is_carried_into_the_built_manifest(tmp_path):
    built = release.build_release("2.4.0", tmp_path)
    manifest = rm.load_definition(str(built.manifest))
    assert manifest["os"] == {"python3": ">=3.11,<3.12", "ipm-runtime": ">=1.0,<2.0"}
    with tarfile.open(built.artifact) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("manifest.yml"))
        inner = rm.load_yaml_text(tar.extractfile(member).read().decode(), "inner")
    assert inner["os"] == manifest["os"]
