"""ipm-registry addresses: the VPN plan printed, --assign recording it (through main(), as the command runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parents[1]))  # --import-mode=importlib: helpers in tests/unit
import vpn_fixtures as vf

from ipm_tools import registry as tool

ROOT = Path(__file__).resolve().parents[3]


def test_unassigned_terminals_are_listed_and_the_exit_code_says_so(tmp_path, capsys):
    config = vf.vpn_registry(tmp_path)
    assert tool.main(["addresses", "-r", str(config)]) == tool.EXIT_INCOMPLETE == 3
    out = capsys.readouterr().out
    assert "customer alpha  10.60.0.0/20  (customer.vpn_prefix)" in out
    assert "customer bravo  no prefix yet  (unassigned)" in out
    assert "site alpha-paris  10.60.1.0/28  (network.vpn_subnet): 1 terminal(s), 13 of 13 address(es) free" in out
    assert "a-001  unassigned" in out and "a-002" not in out  # retired: no address
    assert "3 terminal(s) unassigned: a-001, b-001, b-002; run: ipm-registry addresses --assign" in out
    assert not vf.plan_file(config).exists()


def test_assign_records_once_and_a_second_run_changes_nothing(tmp_path, capsys):
    config = vf.vpn_registry(tmp_path)
    assert tool.main(["addresses", "--assign", "-r", str(config)]) == 0
    out = capsys.readouterr().out
    assert "customer bravo: prefix 10.61.0.0/20" in out
    assert "assigned a-001 10.60.1.2 (site alpha-paris, customer alpha)" in out
    assert "assigned b-002 10.61.1.3 (site bravo-sydney, customer bravo)" in out
    assert "wrote " in out and "every maintained terminal has its address" in out
    plan = vf.read_plan(config)
    assert (
        plan["terminals"]["b-001"]["address"] == "10.61.1.2" and plan["customers"]["bravo"]["prefix"] == "10.61.0.0/20"
    )
    text = vf.plan_file(config).read_text()
    assert text.startswith("# VPN address plan")
    assert [
        p.name for p in vf.plan_file(config).parent.iterdir() if p.name.startswith(".vpn-plan")
    ] == []  # no temp file
    yamllint = Path(sys.executable).parent / "yamllint"
    subprocess.run([str(yamllint), "--strict", str(vf.plan_file(config))], check=True)

    assert tool.main(["addresses", "--assign", "-r", str(config)]) == 0
    assert "nothing to assign" in capsys.readouterr().out
    assert vf.plan_file(config).read_text() == text
    assert tool.main(["addresses", "-r", str(config)]) == 0
    assert tool.main(["validate", str(config)]) == 0


def test_json_and_customer_filter(tmp_path, capsys):
    config = vf.vpn_registry(tmp_path)
    tool.main(["addresses", "--assign", "-r", str(config)])
    capsys.readouterr()
    assert tool.main(["addresses", "--customer", "bravo", "--json", "-r", str(config)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [c["customer"] for c in document["customers"]] == ["bravo"]
    (site,) = document["customers"][0]["sites"]
    assert site["prefix"] == "10.61.1.0/28" and site["capacity"] == 13 and site["free"] == 11
    assert [(t["terminal"], t["address"], t["state"]) for t in site["terminals"]] == [
        ("b-001", "10.61.1.2", "assigned"),
        ("b-002", "10.61.1.3", "assigned"),
    ]
    assert document["settings"]["support_prefix"] == "10.59.0.0/24" and document["complete"] is True
    assert tool.main(["addresses", "--customer", "brav", "-r", str(config)]) == 2
    assert "no customer 'brav'" in capsys.readouterr().err


def test_retired_and_moved_terminals_are_held_and_readdressed(tmp_path, capsys):
    config = vf.vpn_registry(tmp_path)
    tool.main(["addresses", "--assign", "-r", str(config)])
    registry = config.parent / "registry" / "customers"
    bravo = yaml.safe_load((registry / "bravo.yml").read_text())
    bravo["sites"][0]["terminals"][0]["status"] = "retired"  # b-001 retired
    (registry / "bravo.yml").write_text(yaml.safe_dump(bravo, sort_keys=False))
    alpha = yaml.safe_load((registry / "alpha.yml").read_text())
    moved = bravo["sites"][0]["terminals"].pop(1)  # b-002 moves to alpha's site
    alpha["sites"][0]["terminals"].append(moved)
    alpha["sites"][0]["terminals"].append(dict(moved, id="a-003", serial_number="SN-A-003", address="127.0.99.9"))
    (registry / "alpha.yml").write_text(yaml.safe_dump(alpha, sort_keys=False))
    (registry / "bravo.yml").write_text(yaml.safe_dump(bravo, sort_keys=False))
    capsys.readouterr()

    assert tool.main(["validate", str(config)]) == 1
    err = capsys.readouterr().err
    assert (
        "vpn-plan.yml:" in err
        and "terminals.b-002.address: terminal moved from site bravo-sydney to alpha-paris" in err
    )
    assert "ipm-registry addresses --assign" in err

    assert tool.main(["addresses", "--assign", "-r", str(config)]) == 0
    out = capsys.readouterr().out
    assert "retired b-001: 10.61.1.2 held until" in out
    assert "re-addressing b-002 (moved or renumbered): 10.61.1.3 held until" in out
    assert "assigned b-002 10.60.1.3 (site alpha-paris, customer alpha)" in out
    assert "assigned a-003 10.60.1.4" in out
    assert "held addresses (given to no one before the hold ends):" in out
    assert "10.61.1.2  b-001 (site bravo-sydney), retired" in out
    plan = vf.read_plan(config)
    assert plan["terminals"]["a-001"]["address"] == "10.60.1.2"  # untouched
    assert {entry["address"] for entry in plan["retired"]} == {"10.61.1.2", "10.61.1.3"}
    assert tool.main(["validate", str(config)]) == 0


def test_a_terminal_gone_from_the_registry_is_retired_by_assign(tmp_path, capsys):
    config = vf.vpn_registry(tmp_path)
    tool.main(["addresses", "--assign", "-r", str(config)])
    registry = config.parent / "registry" / "customers"
    bravo = yaml.safe_load((registry / "bravo.yml").read_text())
    del bravo["sites"][0]["terminals"][1]
    (registry / "bravo.yml").write_text(yaml.safe_dump(bravo, sort_keys=False))
    capsys.readouterr()
    assert tool.main(["addresses", "-r", str(config)]) == 3
    assert "in the plan but no longer maintained (--assign retires them): b-002" in capsys.readouterr().out
    assert tool.main(["addresses", "--assign", "-r", str(config)]) == 0
    assert "retired b-002: 10.61.1.3 held until" in capsys.readouterr().out


def test_problems_block_assign_and_no_vpn_section_is_explained(tmp_path, capsys):
    catalog, customers = vf.vpn_base()
    customers["bravo.yml"]["customer"]["vpn_prefix"] = "10.60.0.0/16"
    config = vf.vpn_registry(tmp_path, catalog, customers)
    assert tool.main(["addresses", "--assign", "-r", str(config)]) == 1
    err = capsys.readouterr().err
    assert "the registry or its VPN plan has problems: fix them, then assign" in err
    assert "customer.vpn_prefix: customer prefix overlaps customer" in err
    assert not vf.plan_file(config).exists()

    del catalog["vpn"]
    other = vf.vpn_registry(tmp_path / "other", catalog, vf.vpn_base()[1])
    assert tool.main(["addresses", "-r", str(other)]) == 2
    assert "has no vpn: section" in capsys.readouterr().err


def test_demo_plan_is_complete_and_stable(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert tool.main(["addresses", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    rows = {t["terminal"]: t["address"] for c in document["customers"] for s in c["sites"] for t in s["terminals"]}
    assert len(rows) == 17 and rows["fr-pgl-001"] == "10.60.1.2" and rows["jp-tsh-001"] == "10.60.17.2"
    assert {c["customer"]: c["prefix"] for c in document["customers"]}["kansai-mobility"] == "10.60.16.0/20"


def test_the_installed_command_runs(tmp_path):
    config = vf.vpn_registry(tmp_path)
    command = Path(sys.executable).parent / "ipm-registry"
    result = subprocess.run(
        [str(command), "addresses", "-r", str(config)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "unassigned" in result.stdout
