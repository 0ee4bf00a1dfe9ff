"""Build the collection artifact, install it into a clean path, and check that ansible-doc lists every plugin.

Run by `./run build`. Exits non-zero with one line per problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# plugins/<folder> -> ansible-doc's plugin type
PLUGIN_TYPES = {
    "modules": "module",
    "inventory": "inventory",
    "callback": "callback",
    "filter": "filter",
    "test": "test",
    "lookup": "lookup",
    "connection": "connection",
}
# Never part of the artifact: project tooling, local state, the self-referencing symlink.
FORBIDDEN_PREFIXES = ("collections/", ".venv/", "build/", "tools/", "bench/", "scripts/", "app/", ".ci/", ".git/")


def expected_plugins() -> dict[str, set[str]]:
    """Plugins present in the source tree, by ansible-doc type, as fully qualified names."""
    found: dict[str, set[str]] = {}
    for folder, plugin_type in PLUGIN_TYPES.items():
        names = set()
        for path in (ROOT / "plugins" / folder).glob("*.py"):
            if path.name == "__init__.py":
                continue
            if plugin_type in ("filter", "test"):
                # Jinja2 plugins are documented one per YAML file beside the Python file holding them.
                continue
            names.add(f"ipm.fleet.{path.stem}")
        if plugin_type in ("filter", "test"):
            names |= {f"ipm.fleet.{p.stem}" for p in (ROOT / "plugins" / folder).glob("*.yml")}
        if names:
            found[plugin_type] = names
    roles = {f"ipm.fleet.{p.parent.parent.name}" for p in (ROOT / "roles").glob("*/meta/argument_specs.yml")}
    if roles:
        found["role"] = roles
    return found


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"check_build: `{' '.join(command)}` failed ({result.returncode}):\n{result.stderr.strip()}")
    return result.stdout


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="ipm-fleet-build-") as scratch:
        scratch_path = Path(scratch)
        # A clean environment: no project ansible.cfg, no project collections path.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env["ANSIBLE_COLLECTIONS_PATH"] = str(scratch_path / "installed")
        env["ANSIBLE_CONFIG"] = str(scratch_path / "none.cfg")
        env["ANSIBLE_LOCAL_TEMP"] = str(scratch_path / "tmp")
        run(
            ["ansible-galaxy", "collection", "build", str(ROOT), "--output-path", str(scratch_path / "dist")], ROOT, env
        )
        tarballs = list((scratch_path / "dist").glob("ipm-fleet-*.tar.gz"))
        if len(tarballs) != 1:
            sys.exit(f"check_build: expected one ipm-fleet-*.tar.gz, found {tarballs}")
        tarball = tarballs[0]
        with tarfile.open(tarball) as archive:
            members = archive.getnames()
        leaked = sorted({m.split("/")[0] for m in members if m.startswith(FORBIDDEN_PREFIXES)})
        if leaked:
            sys.exit(
                f"check_build: {tarball.name} contains project tooling {leaked}: add them to build_ignore in galaxy.yml"
            )
        run(
            [
                "ansible-galaxy",
                "collection",
                "install",
                str(tarball),
                "-p",
                str(scratch_path / "installed"),
                "--offline",
            ],
            scratch_path,
            env,
        )
        problems = []
        expected = expected_plugins()
        for plugin_type, names in sorted(expected.items()):
            listing = json.loads(
                run(["ansible-doc", "-t", plugin_type, "-l", "ipm.fleet", "--json"], scratch_path, env)
            )
            missing = sorted(names - set(listing))
            if missing:
                problems.append(f"ansible-doc -t {plugin_type} -l ipm.fleet does not list {', '.join(missing)}")
            for name in sorted(names & set(listing)):
                run(["ansible-doc", "-t", plugin_type, name], scratch_path, env)
        if problems:
            sys.exit("check_build: " + "\ncheck_build: ".join(problems))
        total = sum(len(n) for n in expected.values())
        kinds = ", ".join(f"{len(n)} {t}" for t, n in sorted(expected.items())) or "none yet"
        print(
            f"check_build: {tarball.name} ({len(members)} files) installs cleanly; ansible-doc lists all {total} plugins and roles ({kinds})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
