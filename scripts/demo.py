"""The main job on the built-in demo fleet: `./run demo`.

Each stage runs a real capability of the project against the demo registry (inventories/demo) and
its terminals booted as lab terminals: validate the registry, boot the fleet, snapshot every
terminal's configuration, report compatibility, roll out a release ring by ring, show drift, put the
registry's parameters on the terminals ring by ring and show drift again (none), back up every
terminal into a signed store and list it, open a support ticket and run a runbook for it through
ansible-runner, show its SLA clocks and write the customer's maintenance report, verify the audit
trail and list the delivery ledger. The demo keeps its audit log and history under
build/demo. Lab terminals booted here are stopped at the end, also on failure, unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
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


def demo_terminals() -> list[str]:
    """Host names of the demo inventory (the terminals the demo boots)."""
    listing = subprocess.run(
        [tool("ansible"), "all", "--list-hosts"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [line.strip() for line in listing.stdout.splitlines()[1:] if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the demo's lab terminals running at the end")
    args = parser.parse_args()
    os.environ["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"

    banner("1. the registry: validate the demo fleet, show its groups")
    run([tool("ipm-registry"), "validate", str(DEMO_INVENTORY)])
    run([tool("ansible-inventory"), "--graph", "customer_parkcite"])
    run([tool("ipm-registry"), "addresses", "--customer", "parkcite"])
    lab_tool = tool("ipm-lab")

    banner("2. lab terminals: boot the demo fleet (real Debian + systemd, reached over SSH)")
    booted = False
    demo_dir = ROOT / "build" / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    # The demo keeps its own audit log and history, so that it never mixes with real runs.
    os.environ["IPM_AUDIT_LOG"] = str(demo_dir / "audit.jsonl")
    os.environ["IPM_HISTORY_STORE"] = str(demo_dir / "history")
    os.environ["IPM_BACKUP_STORE"] = str(demo_dir / "backups")
    try:
        run([lab_tool, "up", "--inventory", str(DEMO_INVENTORY)])
        booted = True
        run([lab_tool, "status"])

        banner("3. reach every terminal over SSH")
        run([tool("ansible"), "all", "-m", "ansible.builtin.ping"])

        banner("4. configuration: snapshot every terminal (ipm.fleet.terminal_facts -> history store)")
        run([tool("ansible-playbook"), "playbooks/snapshot.yml"])

        banner("5. compatibility: which terminals can take 3.0.0, and why not")
        run([tool("ansible-playbook"), "playbooks/compat_report.yml", "-e", "release=3.0.0"])

        banner("6. rollout of 2.4.0: rings canary -> pilot -> broad, health-checked switch, rollback, ledger")
        run([tool("ipm-release"), "build"])
        # Lab terminals are booted now, whatever the sites' local time: the windows are ignored for the
        # demo, with the justification the audit log keeps (a real rollout respects them).
        run(
            [
                tool("ansible-playbook"),
                "playbooks/rollout.yml",
                "-e",
                "release=2.4.0",
                "-e",
                "change_id=CHG-DEMO-1",
                "-e",
                "maintenance_type=evolutive",
                "-e",
                json.dumps({"window": "ignore", "window_justification": "demo on lab terminals, booted at any hour"}),
                # Some demo customers did not buy evolutive maintenance: on demand, with the reason audited.
                "-e",
                json.dumps({"justification": "demo: the new release on every lab terminal, billed on demand"}),
            ]
        )

        banner("7. drift: the registry against the terminals after the rollout")
        run([tool("ansible-playbook"), "playbooks/snapshot.yml"])
        subprocess.run([tool("ipm-config"), "drift"], cwd=ROOT, check=False)

        banner("8. parameters: the registry's parameters ring by ring (masked diff, bake, rollback), then drift again")
        run(
            [
                tool("ansible-playbook"),
                "playbooks/parameters.yml",
                "-e",
                "change_id=CHG-DEMO-2",
                "-e",
                json.dumps({"window": "ignore", "window_justification": "demo on lab terminals, booted at any hour"}),
            ]
        )
        run([tool("ansible-playbook"), "playbooks/snapshot.yml"])
        subprocess.run([tool("ipm-config"), "drift"], cwd=ROOT, check=False)

        banner("9. backups: a signed backup of every terminal (sqlite online backup), then the store")
        run(
            [
                tool("ansible-playbook"),
                "playbooks/backup.yml",
                "-e",
                "change_id=CHG-DEMO-3",
                "-e",
                json.dumps({"justification": "demo: one customer has no preventive maintenance, backed up on demand"}),
            ]
        )
        run([tool("ipm-backup"), "list"])
        run([tool("ipm-backup"), "verify"])

        banner("10. support: a ticket, a runbook through ansible-runner, the SLA clocks, the month's report")
        support = [
            tool("ipm-support"),
            "--support-dir",
            str(demo_dir / "support"),
            "-r",
            str(DEMO_INVENTORY),
        ]
        opened = subprocess.run(
            [
                *support,
                *("ticket", "new", "error", "--customer", "parkcite", "--terminal", "fr-pgl-001"),
                *("--severity", "major", "--symptoms", "receipt printer jams", "--contact", "Claire Martin", "--json"),
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        ticket = json.loads(opened.stdout)["id"]
        print(f"opened {ticket}", flush=True)
        run([*support, "runbooks", "--search", "printer"])
        run([*support, "run", "health_check", "--terminal", "fr-pgl-001", "--ticket", ticket])
        run([*support, "ticket", "show", ticket])
        run([*support, "sla", "--customer", "parkcite"])
        report = demo_dir / "report-parkcite.html"
        run(
            [
                *(
                    tool("ipm-report"),
                    "maintenance",
                    "--customer",
                    "parkcite",
                    "--period",
                    time.strftime("%Y-%m", time.gmtime()),
                ),
                *("--registry", str(ROOT / "registry" / "demo"), "--support-dir", str(demo_dir / "support")),
                *("--history", str(demo_dir / "history"), "--output", str(report)),
            ]
        )
        print(f"report (French, the customer's language): {report}", flush=True)

        audit_tool = tool("ipm-audit")
        banner("11. the audit trail: verify the chain, then who delivered what where")
        run([audit_tool, "verify"])
        run([audit_tool, "list", "--module", "ipm.fleet.delivery", "--change", "CHG-DEMO-1"])
        run([audit_tool, "deliveries", "--kind", "parameters"])
    finally:
        if booted and not args.keep:
            banner("12. stop the demo's lab terminals")
            subprocess.run([lab_tool, "down", "--missing-ok", *demo_terminals()], cwd=ROOT, check=False)
    banner("done")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as error:
        sys.exit(f"demo: `{' '.join(map(str, error.cmd))}` failed with exit code {error.returncode}")
