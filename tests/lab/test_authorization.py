"""Authorization on real lab terminals: a denied and an allowed run, and four-eyes past the canary ring.

Two terminals of two customers (acme: the canary, globex: the pilot) in a registry generated here, with
its own policy; root plays AWX (a service account in that policy) and names the person in
``awx_user_name``, as AWX does. Every decision is checked in the audit log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.lab

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TARGETS = {s: {"response_hours": 4, "repair_hours": 24} for s in ("critical", "major", "minor", "temporary")}
INTERFACES = {"payment": {"device": "ingenico-self-5000"}, "printer": {"device": "custom-vkp80"}}
POLICY = {
    "version": 1,
    "service_accounts": ["root"],
    "roles": {
        "l1": {"runbooks": ["health_check"], "playbooks": ["snapshot"]},
        "it": {"runbooks": ["*"], "playbooks": ["*"]},
    },
    "people": {
        "partner": {"roles": ["l1"], "customers": []},  # filled in with acme's id
        "ivan": {"roles": ["it"], "customers": "all", "vendor": True},
        "ines": {"roles": ["it"], "customers": "all", "vendor": True},
    },
}


def write_registry(directory: Path) -> dict:
    tag = uuid.uuid4().hex[:4]
    registry = directory / "registry"
    (registry / "customers").mkdir(parents=True)
    catalog = yaml.safe_load((PROJECT_ROOT / "registry" / "demo" / "catalog.yml").read_text())
    catalog["releases_dir"] = str(PROJECT_ROOT / "app" / "releases")
    (registry / "catalog.yml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    terminals = {}
    customers = {}
    for index, (name, ring, types) in enumerate(
        (("acme", "canary", ["preventive", "corrective"]), ("globex", "pilot", ["corrective"])), start=1
    ):
        customer_id = f"{name}-{tag}"
        terminal_id = f"az-{tag}-{name[:3]}1"
        address = f"127.0.81.{index}"
        terminals[terminal_id] = {"address": address, "customer": customer_id, "ring": ring}
        customers[name] = customer_id
        document = {
            "customer": {
                "id": customer_id,
                "name": name.title(),
                "country": "FR",
                "languages": ["fr"],
                "release": "2.4.0",
                "contract": {
                    "sla_tier": "gold",
                    "coverage": {"days": DAYS, "start": "00:00", "end": "24:00"},
                    "maintenance_types": types,
                    "start": "2024-01-01",
                    "targets": TARGETS,
                },
            },
            "sites": [
                {
                    "id": f"{name}-site-{tag}",
                    "name": name.title(),
                    "city": "Paris",
                    "timezone": "Europe/Paris",
                    "windows": [{"days": DAYS, "start": "00:00", "duration_minutes": 1440}],
                    "terminals": [
                        {
                            "id": terminal_id,
                            "serial_number": f"PS300-{tag}-{name}",
                            "model": "PS-300",
                            "ring": ring,
                            "address": address,
                            "interfaces": INTERFACES,
                            "parameters": {"listen_address": address, "currency": "EUR"},
                        }
                    ],
                }
            ],
        }
        (registry / "customers" / f"{name}.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    policy = json.loads(json.dumps(POLICY))
    policy["people"]["partner"]["customers"] = [customers["acme"]]
    (registry / "policy.yml").write_text(yaml.safe_dump(policy, sort_keys=False))
    inventory = directory / "inventory"
    inventory.mkdir()
    (inventory / "fleet.ipm_registry.yml").write_text(
        yaml.safe_dump({"plugin": "ipm.fleet.registry", "registry": str(registry)})
    )
    (inventory / "group_vars").mkdir()
    (inventory / "group_vars" / "all.yml").write_text(
        (PROJECT_ROOT / "inventories" / "demo" / "group_vars" / "all.yml").read_text()
    )
    return {"inventory": inventory, "registry": registry, "terminals": terminals, "customers": customers}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, run_lab_command):
    if os.geteuid() != 0:
        pytest.skip("lab terminals need root")
    directory = tmp_path_factory.mktemp("authz")
    fleet = write_registry(directory)
    fleet["audit"] = directory / "audit.jsonl"
    fleet["key"] = directory / "audit.key"
    fleet["history"] = directory / "history"
    try:
        run_lab_command("up", "--inventory", str(fleet["inventory"]))
        yield fleet
    finally:
        run_lab_command("down", "--missing-ok", *fleet["terminals"], check=False)


def env(lab, **extra) -> dict[str, str]:
    variables = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT_ROOT / "ansible.cfg"))
    variables.pop("IPM_POLICY_FILE", None)  # the registry's own policy.yml applies
    variables.pop("IPM_OPERATOR", None)
    variables.update(
        IPM_AUDIT_LOG=str(lab["audit"]), IPM_AUDIT_KEY_FILE=str(lab["key"]), IPM_HISTORY_STORE=str(lab["history"])
    )
    variables["PATH"] = f"{BIN}{os.pathsep}{variables.get('PATH', '')}"
    variables.update(extra)
    return variables


def playbook(lab, name, *options) -> subprocess.CompletedProcess:
    command = [str(BIN / "ansible-playbook"), "-i", str(lab["inventory"]), str(PROJECT_ROOT / "playbooks" / name)]
    result = subprocess.run(
        [*command, *options], capture_output=True, text=True, env=env(lab), cwd=PROJECT_ROOT, timeout=900, check=False
    )
    result.stdout = " ".join(result.stdout.split())
    return result


def ipm_change(lab, person, *args) -> subprocess.CompletedProcess:
    variables = env(lab, IPM_OPERATOR=person, IPM_POLICY_FILE=str(lab["registry"] / "policy.yml"))
    return subprocess.run(
        [str(BIN / "ipm-change"), *args], capture_output=True, text=True, env=variables, timeout=120, check=False
    )


def records(lab, since=0) -> list[dict]:
    lines = lab["audit"].read_text().splitlines() if lab["audit"].exists() else []
    return [json.loads(line) for line in lines[since:]]


def mark(lab) -> int:
    return len(records(lab))


def group(lab, name) -> str:
    return "customer_" + lab["customers"][name].replace("-", "_")


def by(terminal_id, lab):
    return next(t for t, v in lab["terminals"].items() if v["customer"] == lab["customers"][terminal_id])


def test_1_a_partner_is_denied_another_customers_terminal_and_nothing_runs(lab):
    start = mark(lab)
    result = playbook(lab, "snapshot.yml", "-e", "awx_user_name=partner")
    assert result.returncode != 0
    globex = by("globex", lab)
    assert (
        f"DENIED: partner may not run playbook:snapshot on terminal(s) {globex}: partner may not act on customer "
        f"{lab['customers']['globex']}"
    ) in result.stdout, result.stdout[-3000:]
    new = records(lab, start)
    (denied,) = [r["data"] for r in new if r["kind"] == "authorization_denied"]
    assert denied["operator"] == "partner" and denied["operator_source"] == "extra_var:awx_user_name"
    assert denied["terminals"] == [globex] and denied["customer"] == lab["customers"]["globex"]
    modules = {r["data"].get("module") for r in new if r["kind"] == "task"}
    assert "ipm.fleet.terminal_facts" not in modules and "ipm.fleet.snapshot" not in modules, modules


def test_2_within_its_customer_the_partner_is_allowed(lab):
    start = mark(lab)
    result = playbook(lab, "snapshot.yml", "-e", "awx_user_name=partner", "-l", group(lab, "acme"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    new = records(lab, start)
    (allowed,) = [r["data"] for r in new if r["kind"] == "authorized"]
    assert allowed["operator"] == "partner" and allowed["customers"] == [lab["customers"]["acme"]]
    facts = [r for r in new if r["kind"] == "task" and r["data"].get("module") == "ipm.fleet.terminal_facts"]
    assert [r["data"]["host"] for r in facts] == [by("acme", lab)]
    assert not [r for r in new if r["kind"] == "authorization_denied"]


def test_3_outside_the_contract_needs_a_justification_and_is_marked_on_demand(lab):
    # globex bought corrective maintenance only: a backup (preventive) of its terminal is on demand.
    limit = ["-l", group(lab, "globex"), "-e", "awx_user_name=ivan"]
    start = mark(lab)
    refused = playbook(lab, "backup.yml", *limit, "-e", f"backup_store={lab['registry'].parent / 'backups'}")
    assert refused.returncode != 0 and "does not include preventive maintenance" in refused.stdout
    assert "justification" in refused.stdout
    justified = playbook(
        lab,
        "backup.yml",
        *limit,
        "-e",
        f"backup_store={lab['registry'].parent / 'backups'}",
        "-e",
        '{"justification": "customer asked before replacing the SSD, billed on demand"}',
    )
    assert justified.returncode == 0, justified.stdout[-3000:]
    new = records(lab, start)
    assert [r["kind"] for r in new if r["kind"].startswith("authoriz")] == ["authorization_denied", "authorized"]
    on_demand = next(r["data"] for r in new if r["kind"] == "authorized")
    assert on_demand["on_demand"] is True and "replacing the SSD" in on_demand["justification"]


def test_4_four_eyes_stops_parameters_after_canary_until_another_it_approves(lab):
    options = ["-e", "awx_user_name=ivan", "-e", "change_id=CHG-8101", "-e", "rollout_bake_s=0"]
    start = mark(lab)
    halted = playbook(lab, "parameters.yml", *options)
    assert halted.returncode != 0
    assert "DENIED: ivan may not take playbook:parameters past the canary ring" in halted.stdout, halted.stdout[-3000:]
    assert "CHG-8101 was never requested" in halted.stdout
    new = records(lab, start)
    hosts = {
        r["data"].get("host") for r in new if r["kind"] == "task" and r["data"].get("module") == "ipm.fleet.delivery"
    }
    assert by("globex", lab) not in hosts, "the pilot ring was not touched"
    assert [r for r in new if r["kind"] == "authorization_denied" and r["data"].get("stage") == "past_canary"]

    assert (
        ipm_change(lab, "ivan", "request", "CHG-8101", "--summary", "currency", "--playbook", "parameters").returncode
        == 0
    )
    own = ipm_change(lab, "ivan", "approve", "CHG-8101")
    assert own.returncode == 1 and "may not approve it" in own.stderr
    assert ipm_change(lab, "ines", "approve", "CHG-8101").returncode == 0
    start = mark(lab)
    passed = playbook(lab, "parameters.yml", *options)
    assert passed.returncode == 0, passed.stdout[-4000:] + passed.stderr[-2000:]
    new = records(lab, start)
    assert not [r for r in new if r["kind"] == "authorization_denied"]
    (past,) = [r["data"] for r in new if r["kind"] == "authorized" and r["data"].get("stage") == "past_canary"]
    assert past["approved_by"] == "ines" and past["operator"] == "ivan" and past["change_id"] == "CHG-8101"
    assert past["terminals"] == [by("globex", lab)]
    delivered = {
        r["data"].get("host") for r in new if r["kind"] == "task" and r["data"].get("module") == "ipm.fleet.delivery"
    }
    assert by("globex", lab) in delivered, "the pilot ring ran once approved"


def test_5_a_malformed_policy_denies_everything_before_any_task(lab, tmp_path):
    broken = tmp_path / "policy.yml"
    broken.write_text("version: 1\nroles: {}\npeople:\n  ivan: {roles: [it], customers: all, vendor: yes, team: ops}\n")
    start = mark(lab)
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(lab["inventory"]),
        str(PROJECT_ROOT / "playbooks" / "snapshot.yml"),
    ]
    result = subprocess.run(
        [*command, "-e", "awx_user_name=ivan"],
        capture_output=True,
        text=True,
        env=env(lab, IPM_POLICY_FILE=str(broken)),
        cwd=PROJECT_ROOT,
        timeout=600,
        check=False,
    )
    output = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "DENIED: root may not run playbook:snapshot on 2 terminal(s):" in output, output[-2000:]
    assert f"{broken}:4: people.ivan.team: unknown key" in output
    new = records(lab, start)
    (denied,) = [r["data"] for r in new if r["kind"] == "authorization_denied"]
    assert denied["terminals"] == sorted(lab["terminals"]) and "unknown key" in denied["reason"]
    assert not [r for r in new if r["kind"] == "task" and r["data"].get("module") == "ipm.fleet.terminal_facts"]
