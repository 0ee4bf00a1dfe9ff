"""The OS patch rules: scope, Debian version constraints, apt's policy, holds, reboots, outcome."""

from __future__ import annotations

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import os_patch_rules as rules
from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm

POLICY = """ipm-base-tools:
  Installed: 1.0
  Candidate: 1.1
  Version table:
     1.1 500
        500 http://127.0.72.250:8080 bookworm-ipm-updates/main all Packages
 *** 1.0 500
        500 http://127.0.72.250:8080 bookworm-ipm/main all Packages
        100 /var/lib/dpkg/status
ipm-openssl-sim:
  Installed: 1.0
  Candidate: 1.1
  Version table:
     1.1 500
        500 http://127.0.72.250:8080 bookworm-ipm-updates/main all Packages
     1.0+sec1 500
        500 http://127.0.72.250:8080 bookworm-ipm-security/main all Packages
 *** 1.0 500
        500 http://127.0.72.250:8080 bookworm-ipm/main all Packages
        100 /var/lib/dpkg/status
ipm-kernel-sim:
  Installed: 1.0
  Candidate: 1.1
  Version table:
     1.1 500
        500 http://127.0.72.250:8080 bookworm-ipm-security/main all Packages
 *** 1.0 500
        100 /var/lib/dpkg/status
ipm-runtime:
  Installed: 1.0
  Candidate: 2.0
  Version table:
     2.0 500
        500 http://127.0.72.250:8080 bookworm-ipm-updates/main all Packages
 *** 1.0 100
        100 /var/lib/dpkg/status
ipm-app-extras:
  Installed: 1
  Candidate: 2
  Version table:
     2 500
        500 http://127.0.72.250:8080 bookworm-ipm-security/main all Packages
 *** 1 100
        100 /var/lib/dpkg/status
bash:
  Installed: 5.2.15-2+b8
  Candidate: 5.2.15-2+b8
  Version table:
 *** 5.2.15-2+b8 100
        100 /var/lib/dpkg/status
python3-foo:
  Installed: (none)
  Candidate: 2.0
  Version table:
     2.0 500
        500 http://127.0.72.250:8080 bookworm-ipm-security/main all Packages
"""


@pytest.mark.parametrize(
    ("version", "constraint", "expected"),
    [
        ("3.11.2-1+b1", ">=3.11,<3.12", True),
        ("3.12.1-1", ">=3.11,<3.12", False),
        ("3.10.9", ">=3.11,<3.12", False),
        ("1.0", ">=1.0,<2.0", True),
        ("2.0", ">=1.0,<2.0", False),
        ("2.0~rc1", "<2.0", True),
        ("1:0.1", ">=2.0", True),
        ("1.5", "=1.5", True),
        ("1.5", "!=1.5", False),
        ("1.5", ">> 1.4, << 1.6", True),
    ],
)
def test_constraints_follow_debian_version_order(version, constraint, expected):
    assert rules.allows(version, constraint) is expected


def test_bad_constraint_is_one_line():
    with pytest.raises(rm.ReleaseError, match=r'expected version constraints like ">=3.11,<3.12"'):
        rules.allows("1.0", "about 3.11")


def test_scope_names_the_variable():
    assert rules.check_scope("security") == "security"
    with pytest.raises(rules.PatchRuleError) as error:
        rules.check_scope("everything")
    assert str(error.value).startswith("patch_scope: expected one of security, all, found 'everything'")
    assert "-e patch_scope=security" in str(error.value)


def test_seconds_setting():
    assert rules.check_seconds("300", "patch_reboot_budget_s") == 300.0
    for bad in (True, "soon", -1, float("nan")):
        with pytest.raises(rules.PatchRuleError, match="patch_reboot_budget_s: expected a number of seconds"):
            rules.check_seconds(bad, "patch_reboot_budget_s")


def test_security_suites_and_lists():
    assert rules.is_security_suite("bookworm-ipm-security")
    assert rules.is_security_suite("bookworm-security/")
    assert not rules.is_security_suite("bookworm-ipm-updates")
    assert rules.is_security_list("127.0.72.250:8080_dists_bookworm-ipm-security_main_binary-all_Packages")
    assert not rules.is_security_list("deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages")


def test_policy_parse():
    policy = rules.parse_policy(POLICY)
    assert policy["ipm-openssl-sim"]["installed"] == "1.0"
    assert policy["ipm-openssl-sim"]["candidate"] == "1.1"
    assert [v["version"] for v in policy["ipm-openssl-sim"]["versions"]] == ["1.1", "1.0+sec1", "1.0"]
    assert policy["ipm-openssl-sim"]["versions"][1]["suites"] == ["bookworm-ipm-security"]
    assert policy["ipm-openssl-sim"]["versions"][2] == {"version": "1.0", "suites": ["bookworm-ipm"], "installed": True}
    assert policy["ipm-kernel-sim"]["versions"][1]["suites"] == []  # dpkg's status is no suite
    assert policy["python3-foo"]["installed"] is None


def test_security_scope_takes_the_newest_security_version_only():
    selection = rules.select_upgrades(rules.parse_policy(POLICY), "security", held={"ipm-runtime"})
    assert [(u["name"], u["from"], u["to"]) for u in selection["upgrades"]] == [
        ("ipm-kernel-sim", "1.0", "1.1"),
        ("ipm-openssl-sim", "1.0", "1.0+sec1"),
    ]
    assert all(u["security"] for u in selection["upgrades"])
    reasons = {s["name"]: s["reason"] for s in selection["skipped"]}
    assert reasons["ipm-base-tools"] == "not a security update (bookworm-ipm-updates)"
    assert reasons["ipm-runtime"] == "not a security update (bookworm-ipm-updates)"
    assert reasons["ipm-app-extras"] == "the vendor application is never patched"
    assert "bash" not in reasons and "python3-foo" not in reasons  # nothing newer; not installed


def test_all_scope_takes_apts_candidate_but_never_a_held_package():
    selection = rules.select_upgrades(rules.parse_policy(POLICY), "all", held={"ipm-runtime"})
    assert [(u["name"], u["to"]) for u in selection["upgrades"]] == [
        ("ipm-base-tools", "1.1"),
        ("ipm-kernel-sim", "1.1"),
        ("ipm-openssl-sim", "1.1"),
    ]
    assert {"name": "ipm-runtime", "to": "2.0", "reason": "held"} in selection["skipped"]
    with pytest.raises(rules.PatchRuleError):
        rules.select_upgrades({}, "some")


def test_hold_plan_holds_reports_drift_and_violations():
    required = {"python3": ">=3.11,<3.12", "ipm-runtime": ">=1.0,<2.0", "ipm-missing": ">=1"}
    plan = rules.hold_plan(
        required,
        held_now={"python3", "vim", "old-lib"},
        installed={"python3": "3.12.0-1", "ipm-runtime": "1.0", "vim": "9"},
        managed={"ipm-runtime", "old-lib"},
        release="2.4.0",
    )
    assert plan["hold"] == ["ipm-runtime"]
    assert plan["unhold"] == ["old-lib"]
    assert plan["held"]["ipm-runtime"] == {"constraint": ">=1.0,<2.0", "installed": "1.0", "satisfied": True}
    assert plan["violations"] == ["python3 3.12.0-1 is outside >=3.11,<3.12, which release 2.4.0 needs"]
    assert "ipm-runtime was no longer held (release 2.4.0 needs >=1.0,<2.0): held again" in plan["drift"]
    assert "ipm-missing is not installed (release 2.4.0 needs >=1)" in plan["drift"]
    assert "vim is held on the terminal, not by release 2.4.0" in plan["drift"]
    again = rules.hold_plan({"ipm-runtime": ">=1.0,<2.0"}, {"ipm-runtime"}, {"ipm-runtime": "1.0"}, {"ipm-runtime"})
    assert again["hold"] == again["unhold"] == again["drift"] == again["violations"] == []


def test_reboot_needed():
    assert rules.reboot_needed() == {"required": False, "why": "", "packages": []}
    needed = rules.reboot_needed(True, "ipm-kernel-sim\n\n")
    assert needed["required"] and needed["packages"] == ["ipm-kernel-sim"]
    assert needed["why"] == "/var/run/reboot-required (ipm-kernel-sim)"
    kernel = rules.parse_needrestart(
        "NEEDRESTART-VER: 3.6\nNEEDRESTART-KCUR: 6.1.0-1\nNEEDRESTART-KEXP: 6.1.0-2\nNEEDRESTART-KSTA: 3\n"
    )
    assert kernel == {"status": 3, "running": "6.1.0-1", "expected": "6.1.0-2"}
    assert rules.reboot_needed(False, "", kernel)["why"] == "needrestart: kernel 6.1.0-1 running, 6.1.0-2 expected"
    assert not rules.reboot_needed(False, "", rules.parse_needrestart("NEEDRESTART-KSTA: 1"))["required"]


WINDOW = {"open": True, "closes_at": "2026-12-02T03:00:00+00:00", "next_opens_at": "2026-12-03T01:00:00+00:00"}


def test_reboot_only_when_the_window_has_the_time():
    now = "2026-12-02T02:00:00+00:00"
    assert rules.reboot_decision(True, WINDOW, 600, now=now)["reboot"] is True
    late = rules.reboot_decision(True, WINDOW, 600, now="2026-12-02T02:55:00+00:00")
    assert late["reboot"] is False and late["pending"] is True and late["seconds_left"] == 300.0
    assert late["reason"].startswith("reboot pending: the window closes in 300 s")
    closed = rules.reboot_decision(True, {"open": False, "next_opens_at": "2026-12-03T01:00:00+00:00"}, 60, now=now)
    assert closed["pending"] and "window is closed (next opens 2026-12-03T01:00:00+00:00 UTC)" in closed["reason"]
    assert rules.reboot_decision(True, {"open": False}, 60, window_ignored=True)["reboot"] is True
    assert rules.reboot_decision(False, WINDOW, 60) == {
        "reboot": False,
        "pending": False,
        "reason": "no reboot needed",
        "seconds_left": None,
    }
    with pytest.raises(rules.PatchRuleError, match="patch_reboot_budget_s"):
        rules.reboot_decision(True, WINDOW, "long")


UPGRADED = [{"name": "ipm-kernel-sim", "from": "1.0", "to": "1.1"}]


def test_patch_outcomes():
    assert rules.patch_outcome({"unreachable": True, "msg": "timeout"})["result"] == "not_reached"
    failed = rules.patch_outcome({"failed": True, "msg": "dpkg: error processing package ipm-broken (--configure)"})
    assert failed == {"result": "failed", "reason": "dpkg: error processing package ipm-broken (--configure)"}
    pending = rules.patch_outcome(
        {"changed": True, "upgraded": UPGRADED}, {"decision": {"pending": True, "reason": "reboot pending: closed"}}
    )
    assert pending == {
        "result": "reboot_pending",
        "reason": "upgraded ipm-kernel-sim 1.0 -> 1.1; reboot pending: closed",
    }
    rebooted = rules.patch_outcome({"changed": True, "upgraded": UPGRADED}, {"rebooted": True})
    assert rebooted["result"] == "delivered" and rebooted["reason"].endswith("rebooted, ipm-app healthy")
    later = rules.patch_outcome({"changed": False, "upgraded": []}, {"rebooted": True})
    assert later["result"] == "delivered" and "pending since an earlier run" in later["reason"]
    lost = rules.patch_outcome({"upgraded": UPGRADED}, {"failed": True, "msg": "not back within 120 s"})
    assert lost["result"] == "failed" and lost["reason"].endswith("not back within 120 s")
    nothing = rules.patch_outcome({"scope": "all", "holds": {"drift": ["x was no longer held: held again"]}})
    assert nothing == {
        "result": "already_current",
        "reason": "nothing to upgrade (all scope); hold drift: x was no longer held: held again",
    }
    assert (
        rules.describe_upgrades([{"name": str(i), "from": "1", "to": "2"} for i in range(8)], 2)
        == "0 1 -> 2, 1 1 -> 2, +6 more"
    )


def test_bake_outcomes():
    assert rules.patch_bake_outcome({"healthy": True, "watched_s": 5, "probes": 2})["result"] == "baked"
    failed = rules.patch_bake_outcome({"failed": True, "healthy": False, "reason": "health answered 503"})
    assert failed["result"] == "failed" and failed["reason"].startswith("failed during bake: health answered 503")
    assert rules.patch_bake_outcome({"unreachable": True, "msg": "x"})["result"] == "not_reached"


def test_vendor_application_is_protected():
    assert rules.is_protected("ipm-app") and rules.is_protected("ipm-app-data")
    assert not rules.is_protected("ipm-apparmor") and not rules.is_protected("ipm-runtime")


def test_patch_request_defaults_and_errors():
    assert rules.patch_request({}) == {
        "scope": "security",
        "reboot_budget_s": 600.0,
        "reboot_timeout_s": 600.0,
        "health_timeout_s": 120.0,
        "lock_timeout_s": 300.0,
    }
    assert rules.patch_request({"patch_scope": "all", "patch_reboot_budget_s": "90"})["reboot_budget_s"] == 90.0
    with pytest.raises(rules.PatchRuleError, match=r"^patch_scope: expected one of security, all, found 'full'"):
        rules.patch_request({"patch_scope": "full"})
    with pytest.raises(rules.PatchRuleError, match=r"^patch_reboot_timeout_s: expected a number of seconds >= 1"):
        rules.patch_request({"patch_reboot_timeout_s": 0})
