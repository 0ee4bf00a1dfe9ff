"""ipm-registry: validate, list, show (run as the installed command would be, through main())."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # --import-mode=importlib: helpers in tests/unit
import registry_builder as rb

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
    catalog, customers = rb.base()
    customers["alpha.yml"]["sites"][0]["terminals"][0]["parameters"]["payment_api_token"] = "s3cr3t-token"
    config = rb.write(tmp_path, catalog, customers)
    assert tool.main(["show", "a-001", "-r", str(config)]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t-token" not in out
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
