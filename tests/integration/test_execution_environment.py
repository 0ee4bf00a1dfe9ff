"""The execution environment's build context, for real: ``ipm-awx ee`` builds the collection tarball and runs
``ansible-builder create`` (no network, nothing pulled); the context is checked against pyproject.toml and the
collection's metadata, and builder's own introspection script (from the context) is run on the collection
installed from the context's tarball. A bad EE file gives one clear line. See docs/awx.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def ipm_awx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ipm_tools.awx", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT / "tools")},
    )


def pyproject_dependencies() -> dict[str, str]:
    """Normalized distribution name -> requirement line, from pyproject.toml's [project] dependencies."""
    data = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    out = {}
    for line in data["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", line).group(0)
        out[re.sub(r"[-_.]+", "-", name).lower()] = line.strip()
    return out


def collection_needs() -> dict[str, str]:
    """The pyproject requirements whose modules some file under plugins/ imports (a plain scan of the source)."""
    import importlib.metadata

    imported = set()
    for path in (PROJECT_ROOT / "plugins").rglob("*.py"):
        imported.update(re.findall(r"^\s*(?:import|from)\s+(\w+)", path.read_text(encoding="utf-8"), flags=re.M))
    provided = importlib.metadata.packages_distributions()
    deps = pyproject_dependencies()
    needed = {}
    for module in imported:
        for dist in provided.get(module, []):
            name = re.sub(r"[-_.]+", "-", dist).lower()
            if name in deps and name not in ("ansible-core", "ansible-runner"):
                needed[name] = deps[name]
    return needed


def requirement_lines(path: Path) -> list[str]:
    return [
        line.split("#")[0].strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.split("#")[0].strip()
    ]


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    ctx = tmp_path_factory.mktemp("ee") / "context"
    done = ipm_awx("ee", "--context", str(ctx))
    assert done.returncode == 0, done.stderr
    assert f"build context in {ctx}" in done.stdout
    return ctx


def test_context_has_the_containerfile_with_the_base_image_and_pinned_ansible(context):
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    ee = yaml.safe_load((PROJECT_ROOT / "execution-environment.yml").read_text(encoding="utf-8"))
    assert f'ARG EE_BASE_IMAGE="{ee["images"]["base_image"]["name"]}"' in containerfile
    assert "3.11" in ee["images"]["base_image"]["name"]
    deps = pyproject_dependencies()
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="(.*)"$', containerfile, flags=re.M).group(1)
    # the EE installs ansible-core and ansible-runner exactly as pyproject.toml pins them
    assert deps["ansible-core"].replace(" ", "") in refs.replace(" ", "")
    assert deps["ansible-runner"].replace(" ", "") in refs.replace(" ", "")
    assert 'ARG PKGMGR="/usr/bin/apt-get"' in containerfile
    assert "useradd --uid 1000" in containerfile and "USER 1000" in containerfile


def test_context_carries_the_built_collection_tarball(context):
    tarball = context / "_build" / "collections" / "ipm-fleet.tar.gz"
    galaxy = yaml.safe_load((PROJECT_ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("ipm", "fleet", galaxy["version"])
    assert {"plugins/callback/audit.py", "plugins/inventory/registry.py", "meta/execution-environment.yml"} <= names
    assert not any(name.startswith(("tools/", "bench/", "collections/")) for name in names)
    galaxy_requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text(encoding="utf-8"))
    assert galaxy_requirements == {"collections": [{"name": "/build/collections/ipm-fleet.tar.gz", "type": "file"}]}


def test_every_python_requirement_of_the_collection_is_in_the_context(context):
    needed = collection_needs()
    assert needed, "the collection's plugins import some of pyproject.toml's dependencies"
    lines = requirement_lines(context / "_build" / "requirements.txt")
    for requirement in needed.values():
        assert requirement.replace(" ", "") in [line.replace(" ", "") for line in lines]


def test_bindep_packages_are_in_the_context(context):
    lines = requirement_lines(context / "_build" / "bindep.txt")
    packages = {line.split()[0] for line in lines}
    assert {"openssh-client", "git"} <= packages
    assert all("platform:" in line for line in lines)


def test_builder_introspection_finds_the_collections_own_requirements(context, tmp_path):
    """What the image's builder stage runs: introspect.py over the collection installed from the context."""
    installed = tmp_path / "collections"
    done = subprocess.run(
        [
            *(str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p", str(installed)),
            str(context / "_build" / "collections" / "ipm-fleet.tar.gz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pip_out, bindep_out = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    done = subprocess.run(
        [
            *(sys.executable, str(context / "_build" / "scripts" / "introspect.py"), "introspect", str(installed)),
            *("--user-pip", str(context / "_build" / "requirements.txt")),
            *("--user-bindep", str(context / "_build" / "bindep.txt")),
            *("--write-pip", str(pip_out), "--write-bindep", str(bindep_out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    from_collection = [line for line in pip_out.read_text().splitlines() if "from collection ipm.fleet" in line]
    assert from_collection, "builder found the collection's meta/execution-environment.yml"
    final = [line.split("#")[0].replace(" ", "") for line in pip_out.read_text().splitlines()]
    for requirement in collection_needs().values():
        assert requirement.replace(" ", "") in final
    assert any(
        line.startswith("openssh-client ") and "ipm.fleet" in line for line in bindep_out.read_text().splitlines()
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("version: 3\ndependencies:\n  pyhton: requirements.txt\n", "'pyhton' was unexpected"),
        ("version: 3\ndependencies:\n  python: nowhere.txt\n", "nowhere.txt does not exist"),
        ("version: 2\n", "version: expected 3"),
        ("version: [3\n", "not valid YAML"),
    ],
)
def test_a_bad_ee_file_gives_one_clear_line(tmp_path, content, expected):
    bad = tmp_path / "execution-environment.yml"
    bad.write_text(content, encoding="utf-8")
    done = ipm_awx("ee", "--file", str(bad), "--context", str(tmp_path / "ctx"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ipm-awx: {bad}") and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "ctx").exists()
