"""authorize_run: the playbooks' decision from Python, recorded in the audit chain before a job starts."""

from __future__ import annotations

import json
from pathlib import Path

from ipm_tools import authz_check

ROOT = Path(__file__).resolve().parents[3]
POLICY = """\
version: 1
service_accounts: [svc-support]
roles:
  l1: {runbooks: [health_check], playbooks: []}
  it: {runbooks: ["*"], playbooks: ["*"]}
people:
  partner: {roles: [l1], customers: [andes-parking]}
  ivan: {roles: [it], customers: all, vendor: true}
"""


def environ(tmp_path):
    (tmp_path / "policy.yml").write_text(POLICY)
    return {
        "IPM_POLICY_FILE": str(tmp_path / "policy.yml"),
        "IPM_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "IPM_AUDIT_KEY_FILE": str(tmp_path / "missing.key"),
        "IPM_REGISTRY": str(ROOT / "inventories" / "demo"),
    }


def records(tmp_path):
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def test_denials_and_on_demand_runs_are_recorded_with_the_registry_contract(tmp_path, monkeypatch):
    env = environ(tmp_path)
    monkeypatch.setattr(authz_check.authz, "os_user", lambda: "svc-support")
    denied = authz_check.authorize_run(
        "partner", "runbook:health_check", customer="parkcite", maintenance_type="corrective", environ=env
    )
    assert not denied.allowed and "may not act on customer parkcite" in denied.reason
    assert denied.operator == "partner" and denied.operator_source == "extra_var:ipm_operator"
    # andes-parking's contract (demo registry) has corrective maintenance only.
    outside = authz_check.authorize_run(
        "ivan",
        "runbook:reboot",
        customer="andes-parking",
        maintenance_type="preventive",
        environ=env,
        ticket_id="INC-3",
    )
    assert not outside.allowed and "does not include preventive maintenance" in outside.reason
    on_demand = authz_check.authorize_run(
        "ivan",
        "runbook:reboot",
        customer="andes-parking",
        maintenance_type="preventive",
        justification="customer asked, billed",
        environ=env,
        terminals=["cl-scc-001"],
    )
    assert on_demand.allowed and on_demand.on_demand
    kinds = [(r["kind"], r["data"]["operator"]) for r in records(tmp_path)]
    assert kinds == [("authorization_denied", "partner"), ("authorization_denied", "ivan"), ("authorized", "ivan")]
    last = records(tmp_path)[-1]["data"]
    assert last["justification"] == "customer asked, billed" and last["terminals"] == ["cl-scc-001"]
    assert records(tmp_path)[1]["data"]["ticket_id"] == "INC-3"


def test_a_claimed_identity_from_a_plain_user_is_refused(tmp_path, monkeypatch):
    env = environ(tmp_path)
    monkeypatch.setattr(authz_check.authz, "os_user", lambda: "partner")
    refused = authz_check.authorize_run("ivan", "runbook:reboot", customer="andes-parking", environ=env)
    assert not refused.allowed and "OS user 'partner' claims to be 'ivan'" in refused.reason
    assert records(tmp_path)[-1]["kind"] == "authorization_denied"


def test_a_broken_policy_denies_everything(tmp_path):
    env = environ(tmp_path)
    (tmp_path / "policy.yml").write_text("people: [\n")
    result = authz_check.authorize_run(None, "runbook:health_check", customer="andes-parking", environ=env)
    assert not result.allowed and "policy.yml" in result.reason and "YAML syntax error" in result.reason
