"""ipm-backup on a real store written through the store's API: list, show, verify, prune, hostile input."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import generate_key, load_key
from ansible_collections.ipm.fleet.plugins.plugin_utils.backup_store import BackupStore
from ipm_tools.backup import main

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins"))  # --import-mode=importlib: shared helpers
from backup_fixtures import UTC, file_of, flip_byte, make_backup

DB = "var/lib/ipm/app/transactions.sqlite3"
T0 = datetime.datetime(2026, 12, 2, 7, 15, tzinfo=UTC)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A store with two terminals' backups signed by a real key file; the environment points at both."""
    key_file = tmp_path / "audit.key"
    generate_key(str(key_file))
    key = load_key(str(key_file))
    store = BackupStore(str(tmp_path / "store"))
    monkeypatch.setenv("IPM_BACKUP_STORE", store.root)
    monkeypatch.setenv("IPM_AUDIT_KEY_FILE", str(key_file))
    monkeypatch.delenv("IPM_BACKUP_KEY_FILE", raising=False)
    par = [make_backup(store, tmp_path, when=T0 + datetime.timedelta(days=d), key=key) for d in range(3)]
    syd = make_backup(store, tmp_path, terminal="SYD01-T1", site="syd01", when=T0, timezone="Australia/Sydney", key=key)
    return {"store": store, "key": key, "key_file": key_file, "par": par, "syd": syd, "tmp": tmp_path}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *words):
    assert err.startswith("ipm-backup: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


def test_list_shows_backups_and_reports_partials(env, capsys):
    partial = env["store"].begin("acme", "par01", "PAR01-T1", T0 + datetime.timedelta(days=5))
    code, out, err = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert len([line for line in lines if line.startswith(("PAR01-T1", "SYD01-T1"))]) == 4
    assert "2026-12-02T07:15:00Z" in out and "2026-12-02T08:15:00+01:00" in out and "release 2.4.0" in out
    assert "2026-12-02T18:15:00+11:00" in out  # Sydney's site time
    assert "partial " in out and "a backup in progress" in out and "20261207" not in out.split("partial")[0]
    assert "4 backup(s)" in err
    code, out, _err = run(capsys, "list", "--json", "--terminal", "SYD01-T1")
    data = json.loads(out)
    assert [b["terminal"] for b in data["backups"]] == ["SYD01-T1"] and data["partials"] == []
    assert data["backups"][0]["timezone"] == "Australia/Sydney" and data["backups"][0]["signed"]
    partial.abort()


def test_show_newest_or_by_time(env, capsys):
    code, out, _err = run(capsys, "show", "PAR01-T1")
    assert code == 0 and "20261204T071500Z" in out and DB in out and re.search(r"signature +key [0-9a-f]{16}", out)
    code, out, _err = run(capsys, "show", "PAR01-T1", "2026-12-03T07:15:00Z", "--json")
    data = json.loads(out)
    assert data["manifest"]["time_utc"] == "2026-12-03T07:15:00Z" and data["signature"]["key_id"]
    code, _out, err = run(capsys, "show", "PAR01-T9")
    assert code == 2
    one_line_error(err, "PAR01-T9", "terminals with backups: PAR01-T1, SYD01-T1")
    code, _out, err = run(capsys, "show", "PAR01-T1", "20260101T000000Z")
    assert code == 2
    one_line_error(err, "no backup at 20260101T000000Z", "20261204T071500Z")


def test_verify_all_good_then_each_damage_named_with_exit_1(env, capsys):
    code, out, err = run(capsys, "verify")
    assert code == 0 and out.count("OK ") == 4 and "0 with problems" in err
    first, second, third = env["par"]
    flip_byte(file_of(first, DB))
    with open(file_of(second, "etc/ipm/app.yml"), "r+b") as handle:
        handle.truncate(3)
    os.unlink(third.signature_path)
    code, out, _err = run(capsys, "verify")
    assert code == 1
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    assert "wrong sha256" in lines[f"FAIL {first.name}"]
    assert "truncated" in lines[f"FAIL {second.name}"]
    assert "unsigned" in lines[f"FAIL {third.name}"]
    assert lines[f"OK   {env['syd'].name}"]
    code, out, _err = run(capsys, "verify", "SYD01-T1", "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    # A backup that never completed is a partial: named on stderr, not a backup to verify or restore.
    partial = env["store"].begin("acme", "syd01", "SYD01-T1", T0 + datetime.timedelta(days=1))
    partial._unlock()
    code, out, err = run(capsys, "verify", "SYD01-T1")
    assert code == 0 and out.count("OK ") == 1 and f"partial {partial.path}: stale" in err
    code, out, _err = run(capsys, "verify", "PAR01-T1", "--latest", "--json")
    data = json.loads(out)
    assert code == 1 and [b["backup"] for b in data["backups"]] == [third.name]


def test_verify_subset_checks_signatures_and_sizes_always(env, capsys):
    first = env["par"][0]
    os.unlink(first.signature_path)
    code, out, err = run(capsys, "verify", "PAR01-T1", "--subset", "10%", "--seed", "3")
    assert code == 1 and "unsigned" in out and "re-hashing 10% (seed 3)" in err
    code, out, _err = run(capsys, "verify", "--subset", "1/2", "--json")
    assert json.loads(out)["subset"] == 0.5
    for bad in ("0%", "150%", "ten", "1/0", "-0.1"):
        code, _out, err = run(capsys, "verify", "--subset", bad)
        assert code == 2
        one_line_error(err, "--subset", "10%")


def test_verify_with_the_wrong_or_no_key(env, capsys, tmp_path, monkeypatch):
    other = tmp_path / "other.key"
    generate_key(str(other))
    code, out, _err = run(capsys, "--key-file", str(other), "verify", "SYD01-T1")
    assert code == 1 and "signed with key" in out
    monkeypatch.setenv("IPM_BACKUP_KEY_FILE", str(other))  # overrides the audit key
    code, out, _err = run(capsys, "verify", "SYD01-T1")
    assert code == 1 and "signed with key" in out
    code, _out, err = run(capsys, "verify", "--key-file", str(tmp_path / "nope.key"))
    assert code == 2
    one_line_error(err, "nope.key", "key file not found", "IPM_BACKUP_KEY_FILE")


def test_prune_refuses_without_rule_dry_run_names_rules_then_removes(env, capsys):
    code, _out, err = run(capsys, "prune")
    assert code == 2
    one_line_error(err, "no keep rule", "--keep-daily")
    store = env["store"]
    stale = store.begin("acme", "par01", "PAR01-T1", T0 + datetime.timedelta(days=9))
    stale._unlock()  # its writer is gone: nobody holds the lock any more
    before = sorted(e.path for e in store.entries())
    code, out, err = run(capsys, "prune", "--keep-last", "1", "--dry-run")
    assert code == 0 and sorted(e.path for e in store.entries()) == before
    assert f"keep          {env['par'][2].name}  (keep_last 1)" in out
    assert f"would remove  {env['par'][0].name}  (no rule keeps it)" in out
    assert f"keep          {env['syd'].name}  (keep_last 1)" in out  # per terminal
    assert "stale partial" in out and os.path.isdir(stale.path)
    assert "2 would go" in err
    code, out, _err = run(capsys, "prune", "--keep-daily", "2", "--json")
    data = json.loads(out)
    assert code == 0 and not data["dry_run"]
    assert {b["backup"]: b["reasons"] for b in data["backups"]}[env["par"][2].name] == ["daily 2026-12-04"]
    assert [e.name for e in store.entries(terminal="PAR01-T1")] == [e.name for e in env["par"][1:]]
    assert store.partials() == []
    code, out, _err = run(capsys, "verify")
    assert code == 0


def test_prune_days_are_the_sites(env, capsys, tmp_path):
    store = env["store"]
    # 12:30Z, 13:30Z and 20:30Z on 1 Dec (one UTC day) are 23:30 on 1 Dec, 00:30 and 07:30 on 2 Dec in Sydney.
    for hour in (12, 13, 20):
        make_backup(
            store,
            tmp_path,
            terminal="SYD01-T2",
            site="syd01",
            when=datetime.datetime(2026, 12, 1, hour, 30, tzinfo=UTC),
            timezone="Australia/Sydney",
            key=env["key"],
        )
    code, out, _err = run(capsys, "prune", "--terminal", "SYD01-T2", "--keep-daily", "5", "--dry-run")
    assert code == 0
    assert "keep          acme/syd01/SYD01-T2/20261201T123000Z  (daily 2026-12-01)" in out
    assert "would remove  acme/syd01/SYD01-T2/20261201T133000Z" in out
    assert "keep          acme/syd01/SYD01-T2/20261201T203000Z  (daily 2026-12-02)" in out


def test_hostile_input_is_one_line(env, capsys, tmp_path):
    store_file = tmp_path / "store-is-a-file"
    store_file.write_text("x")
    code, _out, err = run(capsys, "--store", str(store_file), "list")
    assert code == 2
    one_line_error(err, "store-is-a-file", "not a directory")
    code, _out, err = run(capsys, "list", "--store", str(tmp_path / "nowhere"))
    assert code == 2
    one_line_error(err, "nowhere", "no backup store there", "IPM_BACKUP_STORE")
    for argv in (("show", "../acme"), ("verify", "../../etc"), ("list", "--terminal", "a/b")):
        code, _out, err = run(capsys, *argv)
        assert code == 2
        one_line_error(err, "not an id")
    code, _out, err = run(capsys, "show", "PAR01-T1", "yesterday")
    assert code == 2
    one_line_error(err, "expected 20261202T071500Z")
    # A manifest that is not JSON and a directory name that is not a time: reported, never a traceback.
    first = env["par"][0]
    Path(first.manifest_path).write_text("{not json")
    os.mkdir(os.path.join(os.path.dirname(first.path), "not-a-time"))
    code, out, _err = run(capsys, "list")
    assert code == 0 and "damaged:" in out and "manifest is not JSON" in out
    assert "stray " in out and "not-a-time" in out
    code, out, _err = run(capsys, "verify", "PAR01-T1")
    assert code == 1 and f"FAIL {first.name}: manifest.json: manifest is not JSON" in out
    code, _out, err = run(capsys, "show", "PAR01-T1", first.time_text)
    assert code == 2
    one_line_error(err, "manifest is not JSON")


def test_console_script_help():
    for argv in ([], ["list"], ["show"], ["verify"], ["prune"]):
        result = subprocess.run(
            [sys.executable, "-m", "ipm_tools.backup", *argv, "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0 and "usage: ipm-backup" in result.stdout, result.stderr
    result = subprocess.run([sys.executable, "-m", "ipm_tools.backup"], capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
