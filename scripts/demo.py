"""The main job on the built-in demo fleet: `./run demo`.

Each stage runs a real capability of the project against the demo registry and lab terminals. A stage
whose capability is not built yet says so (and which issue brings it) instead of pretending.
Lab terminals booted here are stopped at the end, also on failure, unless --keep is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_INVENTORY = ROOT / "inventories" / "demo"
VENV_BIN = Path(sys.executable).parent


def banner(text: str) -> None:
    print(f"\n\033[1m-- {text}\033[0m", flush=True)


def tool(name: str) -> str | None:
    """Path of a project command-line tool or Ansible command, if installed."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def run(command: list[str], **kwargs) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, **kwargs)


def not_built(what: str, issue: int) -> None:
    print(f"   not built yet: {what} (issue {issue}); skipped", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the demo's lab terminals running at the end")
    args = parser.parse_args()
    os.environ["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"

    banner("1. the registry: validate the demo fleet")
    registry_tool = tool("ipm-registry")
    if registry_tool and any(DEMO_INVENTORY.glob("*.ipm_registry.y*ml")):
        run([registry_tool, "validate", str(DEMO_INVENTORY)])
        run([tool("ansible-inventory"), "--graph"])
    else:
        not_built("registry and ipm.fleet.registry inventory plugin", 4)

    lab_tool = tool("ipm-lab")
    if not lab_tool:
        not_built("lab terminals (ipm-lab)", 3)
        banner("done: the demo ran every stage that exists so far")
        return 0

    banner("2. lab terminals: boot the demo fleet (real Debian + systemd, reached over SSH)")
    booted = False
    try:
        run([lab_tool, "up", "--inventory", str(DEMO_INVENTORY)])
        booted = True
        run([lab_tool, "status"])

        banner("3. reach every terminal over SSH")
        run([tool("ansible"), "all", "-m", "ansible.builtin.ping", "-o"])

        parameters_playbook = ROOT / "playbooks" / "parameters.yml"
        banner("4. apply application parameters from the registry (ipm.fleet.app_parameters)")
        if parameters_playbook.exists():
            run(
                [
                    tool("ansible-playbook"),
                    str(parameters_playbook),
                    "-e",
                    "change_id=CHG-DEMO-1",
                    "-e",
                    "maintenance_type=preventive",
                ]
            )
        else:
            not_built("parameters playbook", 3)

        audit_tool = tool("ipm-audit")
        banner("5. the audit trail: verify the chain, list what changed")
        if audit_tool:
            run([audit_tool, "verify"])
            run([audit_tool, "list", "--changed"])
        else:
            not_built("audit callback and ipm-audit", 5)
    finally:
        if booted and not args.keep:
            banner("6. stop the demo's lab terminals")
            subprocess.run([lab_tool, "down"], cwd=ROOT, check=False)
    banner("done")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as error:
        sys.exit(f"demo: `{' '.join(map(str, error.cmd))}` failed with exit code {error.returncode}")
