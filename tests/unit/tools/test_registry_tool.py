"""ipm-registry: validate, list, show (run as the installed command would be, through main())."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # --import-mode=importlib: helpers in tests/unit
import registry_builder as rb
import vault_fixtures as vf

from ipm_tools import registry as tool

ROOT = Path(__file__).resolve().parents[3]


def test_validate_demo_prints_a_summary(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert tool.main(["validate", "inventories/demo"]) == 0
    out = capsys.readouterr().out
    assert "valid: 5 customers, 8 sites, 18 terminals" in out


def test_validate_reports_every_problem_and_exits_1(tmp_path, capsys):
    catalog, customers = rb.base()
    customers["alpha.yml"]["sites"][0]["timezone"] = "Europe/Pariss"
    customers["bravo.yml"]["customer"]["country"] = "XX"
    config = rb.write(tmp_path, catalog, customers)
    assert tool.main(["validate", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("2 problem(s) in the fleet registry:")
    assert "alpha.yml:" in err and "sites[0].timezone: unknown IANA time zone" in err
    assert "bravo.yml:" in err and "customer.country: unknown value" in err


def test_validate_json(tmp_path, capsys):
    catalog, customers = rb.base()
    customers["alpha.yml"]["sites"][0]["terminals"][0]["model"] = "PS-999"
    config = rb.write(tmp_path, catalog, customers)
    assert tool.main(["validate", "--format", "json", str(config.parent / "registry")]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["valid"] is False
    (problem,) = document["problems"]
    assert problem["path"] == "sites[0].terminals[0].model" and problem["line"] and problem["found"] == "'PS-999'"


def test_list_and_show(tmp_path, capsys):
    config = rb.write(tmp_path)
    assert tool.main(["list", "-r", str(config), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["terminal"] for row in rows} == {"a-001", "a-002", "b-001", "b-002"}
    assert tool.main(["show", "a-001", "-r", str(config), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["host_vars"]["ipm_release"] == "1.0.0"
    assert "customer_alpha" in shown["groups"] and "tz_europe_paris" in shown["groups"]
    assert shown["effective_parameters"]["idle_timeout_s"] == {"value": 90, "source": "site"}
    assert tool.main(["show", "a-001", "-r", str(config)]) == 0
    text = capsys.readouterr().out
    assert "effective parameters (release defaults < customer < site < terminal)" in text


def test_show_secret_is_redacted(tmp_path, capsys):
    # Secrets are vault-encrypted in the registry (a plain-text one is refused): show masks them.
    catalog, customers = rb.base()
    token = vf.ciphertext("s3cr3t-token", vf.password_file(tmp_path))
    customers["alpha.yml"]["sites"][0]["terminals"][0]["parameters"]["payment_api_token"] = token
    alpha = customers.pop("alpha.yml")
    config = rb.write(tmp_path, catalog, customers)
    (config.parent / "registry" / "customers" / "alpha.yml").write_text(vf.dump(alpha))
    assert tool.main(["show", "a-001", "-r", str(config)]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t-token" not in out and "$ANSIBLE_VAULT" not in out
    assert '"********"' in out.split("effective parameters")[1]


def test_show_unknown_terminal_suggests(tmp_path, capsys):
    config = rb.write(tmp_path)
    assert tool.main(["show", "a-01", "-r", str(config)]) == 2
    assert "did you mean 'a-001'?" in capsys.readouterr().err


def test_installed_command_help():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ipm-registry"), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "validate" in result.stdout and "show" in result.stdout


def test_workers_option_and_its_bad_values(tmp_path, capsys, monkeypatch):
    catalog, customers = rb.base()
    customers["bravo.yml"]["customer"]["country"] = "XX"
    config = rb.write(tmp_path, catalog, customers)
    assert tool.main(["validate", "--workers", "2", str(config)]) == 1
    assert "customer.country: unknown value" in capsys.readouterr().err
    monkeypatch.setenv("IPM_REGISTRY_WORKERS", "-1")
    with pytest.raises(SystemExit) as stop:
        tool.main(["validate", str(config)])
    assert stop.value.code == 2
    assert "$IPM_REGISTRY_WORKERS); found '-1'" in capsys.readouterr().err


def test_validate_release_demo_metro_transit_can_move_to_3_0_0(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert tool.main(["validate", "inventories/demo", "--release", "3.0.0", "--customer", "metro-transit"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("release 3.0.0 for 4 maintained terminal(s) of customer metro-transit: 0 would break")
    assert "us-nyp-001 (customer metro-transit, site new-york-penn, model TK-110, now 3.0.0): ok" in out


def test_validate_release_names_terminal_layer_file_and_line(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert tool.main(["validate", "inventories/demo", "--release", "2.4.0", "--customer", "metro-transit"]) == 1
    out = capsys.readouterr().out
    block = out.split("us-nyp-003 ")[1].split("\n  us-")[0]
    assert "BREAKS" in block
    assert (
        "registry/demo/customers/metro-transit.yml:25: customer.parameters.receipt_mode: "
        "value outside release 2.4.0's schema (customer layer); expected one of" in block
    )
    assert "staged: tariff_zone (terminal layer): not a parameter of release 2.4.0, set aside" in block
    assert tool.main(["validate", "inventories/demo", "--release", "3.0.0", "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["release"] == "3.0.0" and document["breaks"] is True
    unsupported = {row["terminal"] for row in document["terminals"] if not row["model_supported"]}
    assert unsupported == {"cl-scc-001", "cl-scc-002", "fr-pgl-003", "fr-lpd-002"}
    assert all(p["file"] and p["line"] and p["expected"] and p["found"] for p in document["problems"])


def test_validate_release_user_mistakes_are_one_line(tmp_path, capsys):
    config = rb.write(tmp_path)
    assert tool.main(["validate", str(config), "--release", "9.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith("known releases: 1.0.0, 2.0.0")
    assert tool.main(["validate", str(config), "--release", "2.0.0", "--site", "alpha-pari"]) == 2
    assert "did you mean 'alpha-paris'?" in capsys.readouterr().err
    assert tool.main(["validate", str(config), "--customer", "alpha"]) == 2
    assert "add --release" in capsys.readouterr().err


def test_validate_release_on_a_broken_registry_reports_the_registry_first(tmp_path, capsys):
    catalog, customers = rb.base()
    customers["alpha.yml"]["sites"][0]["timezone"] = "Europe/Pariss"
    config = rb.write(tmp_path, catalog, customers)
    assert tool.main(["validate", str(config), "--release", "2.0.0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("the registry has problems as it is") and "unknown IANA time zone" in err


def test_validate_help_names_release_customer_site():
    result = subprocess.run(
        [sys.executable, "-m", "ipm_tools.registry", "validate", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={"PYTHONPATH": str(ROOT / "tools"), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    assert "--release X.Y.Z" in result.stdout and "--customer ID" in result.stdout and "--site ID" in result.stdout
