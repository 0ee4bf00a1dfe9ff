"""Four-eyes changes: the rule on a real audit chain, and ``ipm-change`` run by different real OS users.

The OS users (az-it1, az-it2 with role it, az-l2 with role l2) are created for the module with useradd and
removed afterwards; the tool is run as each of them with ``runuser -u NAME --``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import authz, four_eyes
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditWriter, generate_key, load_key

ROOT = Path(__file__).resolve().parents[3]
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
# The venv's interpreter may live in root's home: the other users run the system's python of the same version.
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"
# The checkout may sit in root's home (mode 0700), out of the other users' reach: they run a readable copy of
# the tool, the collection's plugins and the two libraries it imports (PyYAML, netaddr) under the shared folder.
THIRD_PARTY = ("yaml", "_yaml", "netaddr")
USERS = ("az-it1", "az-it2", "az-l2")
POLICY = """\
version: 1
service_accounts: [awx]
roles:
  l2: {runbooks: ["*"], playbooks: [snapshot]}
  it: {runbooks: ["*"], playbooks: ["*"]}
people:
  az-it1: {roles: [it], customers: all, vendor: true}
  az-it2: {roles: [it], customers: all, vendor: true}
  az-l2: {roles: [l2], customers: all, vendor: true}
"""


def chain(tmp_path, *records):
    log, key_file = str(tmp_path / "audit.jsonl"), str(tmp_path / "audit.key")
    if not os.path.exists(key_file):
        generate_key(key_file)
    with AuditWriter(log, key=load_key(key_file)) as writer:
        for kind, data in records:
            writer.append(kind, data)
    return log, key_file


@pytest.fixture
def policy(tmp_path):
    (tmp_path / "policy.yml").write_text(POLICY)
    return authz.load_policy(str(tmp_path / "policy.yml"))


REQ = ("change_requested", {"change_id": "CHG-7", "requester": "az-it1", "playbook": "rollout", "summary": "2.4.0"})


def test_no_request_no_approval_means_no_pass(tmp_path, policy):
    log, key = chain(tmp_path, ("task", {"x": 1}))
    assert "never requested" in four_eyes.check(policy, None, "CHG-7", "rollout", log, key).reason
    log, key = chain(tmp_path, REQ)
    verdict = four_eyes.check(policy, None, "CHG-7", "rollout", log, key)
    assert not verdict.allowed and "no approval by another it person" in verdict.reason
    assert "no change id" in four_eyes.check(policy, None, None, "rollout", log, key).reason


def test_self_and_l2_approvals_do_not_count_another_it_does(tmp_path, policy):
    log, key = chain(
        tmp_path,
        REQ,
        ("change_approved", {"change_id": "CHG-7", "approver": "az-it1"}),
        ("change_approved", {"change_id": "CHG-7", "approver": "az-l2"}),
    )
    assert not four_eyes.check(policy, None, "CHG-7", "rollout", log, key).allowed
    state = four_eyes.state_of(four_eyes.read_chain(log, key)[0], "CHG-7")
    assert "may not approve it" in four_eyes.refuse_approval(policy, "az-it1", state)
    assert "approvers need the role it" in four_eyes.refuse_approval(policy, "az-l2", state)
    assert four_eyes.refuse_approval(policy, "az-it2", state) is None
    chain(tmp_path, ("change_approved", {"change_id": "CHG-7", "approver": "az-it2"}))
    verdict = four_eyes.check(policy, None, "CHG-7", "rollout", log, key)
    assert verdict.allowed and verdict.approver == "az-it2"
    assert (
        "requested for playbook rollout, not patch" in four_eyes.check(policy, None, "CHG-7", "patch", log, key).reason
    )
    assert not four_eyes.check(None, "policy broken", "CHG-7", "rollout", log, key).allowed


def test_a_tampered_chain_is_not_trusted(tmp_path, policy):
    log, key = chain(tmp_path, REQ, ("change_approved", {"change_id": "CHG-7", "approver": "az-it2"}))
    text = Path(log).read_text().replace('"approver":"az-it2"', '"approver":"az-it9"')
    Path(log).write_text(text)
    verdict = four_eyes.check(policy, None, "CHG-7", "rollout", log, key)
    assert not verdict.allowed and "does not verify" in verdict.reason


# ------------------------------------------------------------------------------ ipm-change as real OS users


@pytest.fixture(scope="module")
def os_users():
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root, useradd and runuser to run ipm-change as different OS users")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"needs {SYSTEM_PYTHON} for the other OS users")
    created = []
    try:
        for name in USERS:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
            created.append(name)
        yield USERS
    finally:
        for name in created:
            subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def shared(os_users):
    directory = Path(tempfile.mkdtemp(prefix="az-four-eyes-", dir="/tmp"))
    try:
        directory.chmod(0o777)
        lib = directory / "lib"
        shutil.copytree(ROOT / "tools" / "ipm_tools", lib / "ipm_tools")
        shutil.copytree(ROOT / "plugins", lib / "ansible_collections" / "ipm" / "fleet" / "plugins")
        for name in THIRD_PARTY:
            if (SITE / name).is_dir():
                shutil.copytree(SITE / name, lib / name)
        for path in [lib, *lib.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (directory / "policy.yml").write_text(POLICY)
        key_file = directory / "audit.key"
        generate_key(str(key_file))
        key_file.chmod(0o644)
        for name in ("audit.jsonl", "audit.jsonl.lock"):
            (directory / name).touch()
            (directory / name).chmod(0o666)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def ipm_change(shared, user, *args):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(shared),
        "PYTHONPATH": str(shared / "lib"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "IPM_POLICY_FILE": str(shared / "policy.yml"),
        "IPM_AUDIT_LOG": str(shared / "audit.jsonl"),
        "IPM_AUDIT_KEY_FILE": str(shared / "audit.key"),
    }
    command = ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in env.items()]]
    command += [SYSTEM_PYTHON, "-m", "ipm_tools.change", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd="/")


def kinds(shared):
    return [json.loads(line)["kind"] for line in (shared / "audit.jsonl").read_text().splitlines()]


def test_ipm_change_four_eyes_between_real_users(shared):
    done = ipm_change(shared, "az-it1", "request", "CHG-12", "--summary", "release 2.4.0", "--playbook", "rollout")
    assert done.returncode == 0, done.stderr
    assert "CHG-12 requested by az-it1" in done.stdout
    own = ipm_change(shared, "az-it1", "approve", "CHG-12")
    assert own.returncode == 1 and "az-it1 requested CHG-12 and may not approve it" in own.stderr
    assert "Traceback" not in own.stderr
    l2 = ipm_change(shared, "az-l2", "approve", "CHG-12")
    assert l2.returncode == 1 and "approvers need the role it" in l2.stderr
    show = ipm_change(shared, "az-l2", "show", "CHG-12")
    assert show.returncode == 0 and "NOT APPROVED" in show.stdout
    other = ipm_change(shared, "az-it2", "approve", "CHG-12", "--comment", "looked at the canary plan")
    assert other.returncode == 0, other.stderr
    show = ipm_change(shared, "az-it1", "show", "CHG-12", "--json")
    data = json.loads(show.stdout)
    assert data["approved"] is True and data["requested"]["requester"] == "az-it1"
    assert [a["approver"] for a in data["approvals"]] == ["az-it2"]
    assert kinds(shared) == [
        "change_requested",
        "authorization_denied",
        "authorization_denied",
        "change_approved",
    ]


def test_ipm_change_refuses_a_claimed_identity_and_bad_ids(shared):
    env_claim = ipm_change(shared, "az-l2", "request", "CHG-13", "--summary", "x")
    assert env_claim.returncode == 0
    spoof = subprocess.run(
        ["runuser", "-u", "az-l2", "--", "env", "IPM_OPERATOR=az-it1", f"IPM_POLICY_FILE={shared / 'policy.yml'}",
         f"IPM_AUDIT_LOG={shared / 'audit.jsonl'}", f"IPM_AUDIT_KEY_FILE={shared / 'audit.key'}",
         f"PYTHONPATH={shared / 'lib'}", SYSTEM_PYTHON, "-m", "ipm_tools.change", "approve", "CHG-13"],
        capture_output=True, text=True, timeout=120, check=False, cwd="/",
    )  # fmt: skip
    assert spoof.returncode == 1 and "claims to be 'az-it1' through env:IPM_OPERATOR" in spoof.stderr
    bad = ipm_change(shared, "az-it1", "approve", "change-1")
    assert bad.returncode == 2 and "malformed" in bad.stderr
    assert "change_approved" not in kinds(shared)
