"""The authorization rule: policy validation (located errors, unknown keys refused), decide() per role,
customer boundaries, contract dates and types, on-demand runs, and the trusted identity."""

from __future__ import annotations

import datetime
import sys
import textwrap
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import authz
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry import load_fleet

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests" / "unit"))  # --import-mode=importlib: the registry builder of the unit tests
import registry_builder as rb  # noqa: E402

TODAY = datetime.date(2026, 6, 1)
CONTRACT = {"maintenance_types": ["preventive", "corrective"], "start": "2025-01-01", "end": "2026-12-31"}

POLICY = """\
version: 1
service_accounts: [awx]
roles:
  l1: {runbooks: [health_check, "restart_*"], playbooks: [snapshot]}
  l2: {runbooks: ["*"], playbooks: [snapshot, backup, parameters]}
  it: {runbooks: ["*"], playbooks: ["*"]}
  auditor: {runbooks: [health_check, reboot], playbooks: [snapshot, compat_report]}
people:
  partner: {roles: [l1], customers: [acme]}
  lena: {roles: [l2], customers: all, vendor: true}
  ivan: {roles: [it], customers: all, vendor: true}
  audrey: {roles: [auditor], customers: [acme, globex]}
"""


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    return authz.load_policy(str(path))


def write(tmp_path, text) -> str:
    path = tmp_path / "policy.yml"
    path.write_text(textwrap.dedent(text))
    return str(path)


# (person, action, customer, maintenance type, allowed, words of the reason)
TABLE = [
    ("partner", "runbook:health_check", "acme", "corrective", True, "may run"),
    ("partner", "runbook:restart_app", "acme", "corrective", True, "may run"),
    ("partner", "runbook:health_check", "globex", "corrective", False, "may not act on customer globex"),
    ("partner", "runbook:reboot", "acme", "corrective", False, "no role of partner (l1)"),
    ("partner", "playbook:rollout", "acme", "evolutive", False, "no role of partner"),
    ("partner", "playbook:snapshot", "acme", None, True, "may run"),
    ("lena", "runbook:reboot", "globex", "corrective", True, "(l2)"),
    ("lena", "playbook:parameters", "globex", "corrective", True, "(l2)"),
    ("lena", "playbook:rollout", "globex", "preventive", False, "no role of lena (l2)"),
    ("ivan", "playbook:rollout", "initech", "preventive", True, "(it)"),
    ("ivan", "playbook:vpn", "acme", "preventive", True, "(it)"),
    ("audrey", "playbook:compat_report", "acme", None, True, "(auditor)"),
    ("audrey", "playbook:backup", "acme", "preventive", False, "no role of audrey (auditor)"),
    ("audrey", "runbook:reboot", "acme", "corrective", False, "auditors run nothing that changes terminals"),
    ("audrey", "playbook:snapshot", "initech", None, False, "may not act on customer initech"),
    ("mallory", "playbook:snapshot", "acme", None, False, "not in the authorization policy"),
    ("ivan", "deploy:rollout", "acme", None, False, "unknown action"),
]


@pytest.mark.parametrize(("person", "action", "customer", "mtype", "allowed", "words"), TABLE)
def test_decide_table(policy, person, action, customer, mtype, allowed, words):
    decision = authz.decide(
        policy, person, action, customer=customer, maintenance_type=mtype, contract=CONTRACT, today=TODAY
    )
    assert decision.allowed is allowed, decision.reason
    assert words in decision.reason
    assert decision.on_demand is False


def test_auditor_may_run_a_read_only_runbook(policy):
    decision = authz.decide(
        policy,
        "audrey",
        "runbook:health_check",
        customer="acme",
        contract=CONTRACT,
        today=TODAY,
        changes_terminal=False,
    )
    assert decision.allowed
    unknown = authz.decide(policy, "audrey", "runbook:health_check", customer="acme", contract=CONTRACT, today=TODAY)
    assert not unknown.allowed


@pytest.mark.parametrize(
    ("contract", "today", "words"),
    [
        ({"maintenance_types": ["corrective"]}, TODAY, "does not include preventive maintenance"),
        (dict(CONTRACT, end="2026-05-31"), TODAY, "the contract ended on 2026-05-31"),
        (dict(CONTRACT, start="2026-06-02"), TODAY, "the contract starts on 2026-06-02"),
        ({}, TODAY, "no contract"),
    ],
)
def test_outside_the_contract_is_refused_without_justification(policy, contract, today, words):
    decision = authz.decide(
        policy, "ivan", "playbook:patch", customer="acme", maintenance_type="preventive", contract=contract, today=today
    )
    assert not decision.allowed and words in decision.reason and "justification" in decision.reason
    on_demand = authz.decide(
        policy,
        "ivan",
        "playbook:patch",
        customer="acme",
        maintenance_type="preventive",
        contract=contract,
        today=today,
        justification="broken kiosk at the airport, customer called",
    )
    assert on_demand.allowed and on_demand.on_demand and "customer called" in on_demand.reason


def test_contract_bounds_are_inclusive_and_end_is_optional(policy):
    for day in ("2025-01-01", "2026-12-31"):
        today = datetime.date.fromisoformat(day)
        kwargs = dict(customer="acme", maintenance_type="corrective", contract=CONTRACT, today=today)
        assert authz.decide(policy, "lena", "runbook:reboot", **kwargs).allowed
    open_ended = {"maintenance_types": ["corrective"], "start": "2020-01-01"}
    far = datetime.date(2099, 1, 1)
    kwargs = dict(customer="acme", maintenance_type="corrective", contract=open_ended, today=far)
    assert authz.decide(policy, "lena", "runbook:reboot", **kwargs).allowed


def test_l1_may_not_intervene_on_demand(policy):
    decision = authz.decide(
        policy,
        "partner",
        "runbook:health_check",
        customer="acme",
        maintenance_type="evolutive",
        contract=CONTRACT,
        today=TODAY,
        justification="asked by the customer",
    )
    assert not decision.allowed and "on-demand interventions are for l2 or it" in decision.reason


def test_no_policy_denies_everything(tmp_path):
    policy, error = authz.load_or_deny(str(tmp_path / "missing.yml"))
    assert policy is None and "missing.yml" in error and "everything is denied" in error
    decision = authz.decide(policy, "root", "playbook:snapshot", customer=None, policy_error=error)
    assert not decision.allowed and "missing.yml" in decision.reason
    assert authz.load_or_deny(None)[0] is None


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("roles: {}\npeople: {}\nextra: 1\n", ":3: extra", "unknown key"),
        (
            "roles:\n  l1: {runbook: [a]}\npeople: {}\n",
            ":2: roles.l1.runbook",
            "unknown key (did you mean 'runbooks'?)",
        ),
        ("roles:\n  boss: {}\npeople: {}\n", ":2: roles.boss", "unknown role"),
        (
            "roles:\n  auditor: {playbooks: ['*']}\npeople: {}\n",
            ":2: roles.auditor.playbooks",
            "auditors run nothing that changes terminals",
        ),
        ("roles: {}\npeople:\n  p: {roles: [l1], customers: all}\n", ":3: people.p.customers", "vendor's own staff"),
        ("roles: {}\npeople:\n  p: {roles: [it], customers: [a]}\n", ":3: people.p.roles", "role it is for the vendor"),
        ("roles: {}\npeople:\n  p: {roles: [l3], customers: [a]}\n", "people.p.roles[0]", "unknown role"),
        ("roles: {}\npeople:\n  p: {roles: [l1]}\n", "people.p.customers", "missing or malformed customers"),
        ("roles: {}\n", "people", "missing required key"),
        ("roles: [\n", ":", "YAML syntax error"),
        ("- a\n", "(top)", "wrong type"),
        ("roles: {}\npeople: {}\nfour_eyes: {playbooks: rollout}\n", "four_eyes.playbooks", "malformed list"),
    ],
)
def test_malformed_policies_are_located_and_deny(tmp_path, text, where, words):
    path = write(tmp_path, text)
    with pytest.raises(authz.PolicyError) as caught:
        authz.load_policy(path)
    message = str(caught.value)
    assert "policy.yml" in message and where in message and words in message, message
    assert "Traceback" not in message
    policy, error = authz.load_or_deny(path)
    assert policy is None
    assert not authz.decide(policy, "root", "playbook:snapshot", customer=None, policy_error=error).allowed


def test_four_eyes_defaults_to_the_three_ring_playbooks(tmp_path):
    policy = authz.load_policy(write(tmp_path, "roles: {}\npeople: {}\n"))
    assert policy.four_eyes == ("rollout", "parameters", "patch")


def test_the_demo_and_test_policies_load():
    demo = authz.load_policy(str(ROOT / "registry" / "demo" / "policy.yml"))
    assert {"partner-andes", "lena", "ivan", "ines", "audrey", "root"} <= set(demo.people)
    assert authz.decide(
        demo,
        "partner-andes",
        "runbook:health_check",
        customer="andes-parking",
        contract={"maintenance_types": ["corrective"]},
        maintenance_type="corrective",
    ).allowed
    assert not authz.decide(
        demo,
        "partner-andes",
        "runbook:health_check",
        customer="parkcite",
        contract={"maintenance_types": ["corrective"]},
        maintenance_type="corrective",
    ).allowed
    authz.load_policy(str(ROOT / "tests" / "policy.yml"))


def test_identity_is_the_os_user_unless_a_service_account_delegates(policy):
    assert authz.trusted_identity(policy, {}, {}, user="ivan") == ("ivan", "os_user")
    assert authz.trusted_identity(policy, {"ipm_operator": "ivan"}, {}, user="ivan") == ("ivan", "os_user")
    with pytest.raises(authz.IdentityError, match="OS user 'lena' claims to be 'ivan'"):
        authz.trusted_identity(policy, {"ipm_operator": "ivan"}, {}, user="lena")
    with pytest.raises(authz.IdentityError, match="IPM_OPERATOR"):
        authz.trusted_identity(policy, {}, {"IPM_OPERATOR": "ivan"}, user="lena")
    with pytest.raises(authz.IdentityError, match="awx_user_name"):
        authz.trusted_identity(policy, {"awx_user_name": "ivan"}, {}, user="lena")
    assert authz.trusted_identity(policy, {"awx_user_name": "ivan"}, {}, user="awx") == (
        "ivan",
        "extra_var:awx_user_name",
    )


# ------------------------------------------------------------------------------ contract dates in the registry


def _registry_problems(tmp_path, **contract):
    _catalog, customers = rb.base()
    customers["alpha.yml"]["customer"]["contract"].update(contract)
    config = rb.write(tmp_path, None, customers)
    return [str(p) for p in load_fleet(str(config))[1]]


def test_registry_contract_dates(tmp_path):
    assert _registry_problems(tmp_path / "ok", start="2024-01-01", end="2024-12-31") == []
    assert _registry_problems(tmp_path / "open", start="2024-01-01") == []
    (backwards,) = _registry_problems(tmp_path / "back", start="2025-01-01", end="2024-12-31")
    assert "customer.contract.end: the contract ends before it starts; expected 2025-01-01 or later" in backwards
    (impossible,) = _registry_problems(tmp_path / "day", end="2025-02-30")
    assert "customer.contract.end: no such day" in impossible
    (unquoted,) = _registry_problems(tmp_path / "date", start=datetime.date(2025, 1, 1))
    assert "customer.contract.start: wrong type; expected a string, found date 2025-01-01 (quote it)" in unquoted
    (malformed,) = _registry_problems(tmp_path / "fmt", start="1/1/2025")
    assert "customer.contract.start: malformed value" in malformed
