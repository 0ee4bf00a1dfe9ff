"""Patch compliance: one status per terminal by precedence, the details, counts per customer and site."""

from __future__ import annotations

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import patch_compliance as pc

TAKEN = "2026-12-01T03:00:00+00:00"


def os_facts(pending=None, security=None, held=None, reboot=None, **extra):
    def updates(names):
        return {name: {"installed": "1.0", "candidate": version} for name, version in (names or {}).items()}

    facts = {
        "id": "debian-12",
        "pending_updates": updates(pending),
        "pending_security_updates": updates(security),
        "held_packages": held or [],
        "reboot_required": reboot or {"required": False, "packages": [], "since": None},
    }
    facts.update(extra)
    return {"os": facts}


REBOOT = {"required": True, "packages": ["ipm-kernel-sim"], "since": "2026-11-30T22:15:07Z"}


@pytest.mark.parametrize(
    ("facts", "status"),
    [
        (os_facts(), "up-to-date"),
        (os_facts(pending={"ipm-base-tools": "1.1"}), "pending"),
        (os_facts(pending={"ipm-kernel-sim": "1.1"}, security={"ipm-kernel-sim": "1.1"}), "pending-security"),
        (os_facts(reboot=REBOOT), "reboot-pending"),
        (os_facts(held=["ipm-runtime"]), "held"),
        (os_facts(pending={"ipm-runtime": "2.0"}, held=["ipm-runtime"]), "held"),
        # precedence: security over a reboot over regular updates over holds
        (os_facts(pending={"a": "2"}, security={"a": "2"}, reboot=REBOOT, held=["b"]), "pending-security"),
        (os_facts(pending={"a": "2"}, reboot=REBOOT, held=["b"]), "reboot-pending"),
        (os_facts(pending={"a": "2"}, held=["b"]), "pending"),
        # a held package's security update is reported, not counted as pending: the hold is a decision
        (os_facts(pending={"python3": "3.12"}, security={"python3": "3.11.9"}, held=["python3"]), "held"),
    ],
)
def test_one_status_by_precedence(facts, status):
    assert pc.terminal_compliance(facts, TAKEN)["status"] == status


def test_the_details_of_a_terminal_with_everything():
    facts = os_facts(
        pending={"ipm-openssl-sim": "1.1", "ipm-base-tools": "1.1", "ipm-runtime": "2.0", "ipm-kernel-sim": "1.1"},
        security={"ipm-openssl-sim": "1.0+sec1", "ipm-kernel-sim": "1.1"},
        held=["ipm-runtime", "python3"],
        reboot=REBOOT,
    )
    row = pc.terminal_compliance(facts, TAKEN)
    assert row["status"] == "pending-security"
    assert row["pending"] == 3 and row["security"] == 2
    assert row["pending_packages"] == ["ipm-base-tools", "ipm-kernel-sim", "ipm-openssl-sim"]
    assert row["security_packages"] == ["ipm-kernel-sim", "ipm-openssl-sim"]
    assert row["held"] == ["ipm-runtime", "python3"]
    assert row["held_behind"] == {"ipm-runtime": {"installed": "1.0", "candidate": "2.0", "security": False}}
    assert row["reboot_pending"] is True and row["reboot_since"] == "2026-11-30T22:15:07Z"
    assert row["reboot_packages"] == ["ipm-kernel-sim"]
    assert row["snapshot"] == TAKEN
    assert row["reason"] == (
        "2 security updates (ipm-kernel-sim, ipm-openssl-sim); 1 other update (ipm-base-tools); "
        "reboot pending since 2026-11-30T22:15:07Z for ipm-kernel-sim; "
        "held: ipm-runtime (1.0, 2.0 available), python3"
    )


def test_up_to_date_says_so():
    row = pc.terminal_compliance(os_facts(), TAKEN)
    assert row["reason"] == "all updates installed"
    assert row["pending"] == 0 and row["security"] == 0 and row["reboot_pending"] is False


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (None, "no snapshot: run playbooks/snapshot.yml"),
        ({"hardware": {}}, "the snapshot has no os facts"),
        ({"os": {"unknown": "TypeError: boom"}}, "os facts: TypeError: boom"),
        (
            os_facts(updates_unknown="no apt lists under /var/lib/apt/lists (run apt-get update)"),
            "os facts: no apt lists under /var/lib/apt/lists (run apt-get update)",
        ),
        ({"os": {"packages_unknown": "/var/lib/dpkg/status unreadable"}}, "os facts: /var/lib/dpkg/status unreadable"),
        ({"os": {"id": "debian-12"}}, "the snapshot's os facts have no pending updates"),
    ],
)
def test_facts_that_cannot_tell_are_unknown_with_the_reason(facts, reason):
    row = pc.terminal_compliance(facts, TAKEN if facts else None)
    assert row["status"] == "unknown"
    assert row["reason"] == reason
    assert row["pending"] is None


def test_facts_of_snapshots_before_holds_and_reboots_were_read():
    facts = {"os": {"pending_updates": {}, "pending_security_updates": {}}}
    assert pc.terminal_compliance(facts)["status"] == "up-to-date"


def test_counts_per_customer_and_site():
    rows = {
        "t1": {"customer": "parkcite", "site": "lyon", "status": "pending-security"},
        "t2": {"customer": "parkcite", "site": "lyon", "status": "up-to-date"},
        "t3": {"customer": "parkcite", "site": "nice", "status": "held"},
        "t4": {"customer": "citypark", "site": "bern", "status": "up-to-date"},
    }
    summary = pc.summarize(rows)
    assert summary["fleet"]["terminals"] == 4 and summary["fleet"]["up-to-date"] == 2
    assert summary["customers"]["parkcite"]["counts"]["terminals"] == 3
    assert summary["customers"]["parkcite"]["sites"]["lyon"] == dict(
        pc.empty_counts(), terminals=2, **{"pending-security": 1, "up-to-date": 1}
    )
    assert pc.counts_line(summary["customers"]["parkcite"]["counts"]) == (
        "3 terminals: 1 pending-security, 1 held, 1 up-to-date"
    )
    assert pc.counts_line(pc.empty_counts()) == "0 terminals"
    assert set(summary["fleet"]) == {*pc.STATUSES, "terminals"}


def test_csv_record():
    row = pc.terminal_compliance(
        os_facts(pending={"ipm-runtime": "2.0", "a": "2"}, held=["ipm-runtime"], reboot=REBOOT), TAKEN
    )
    row.update(customer="parkcite", site="lyon")
    record = dict(zip(pc.CSV_COLUMNS, pc.csv_row("t1", row), strict=True))
    assert record["terminal"] == "t1" and record["status"] == "reboot-pending"
    assert record["pending"] == "1" and record["pending_packages"] == "a"
    assert record["held"] == "ipm-runtime" and record["held_behind"] == "ipm-runtime=2.0"
    assert record["reboot_since"] == "2026-11-30T22:15:07Z" and record["reboot_packages"] == "ipm-kernel-sim"
