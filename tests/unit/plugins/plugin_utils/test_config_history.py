"""Snapshot store, history, changes between dates and drift."""

from __future__ import annotations

import json

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import MASK
from ansible_collections.ipm.fleet.plugins.plugin_utils import config_history as ch

FACTS_231 = {
    "hardware": {"model": "PS-200", "serial_number": "PS2-1", "memory_available_mib": 100},
    "os": {"id": "debian-12", "pending_security_updates": {}},
    "application": {"current": "2.3.1", "releases": ["2.3.1"], "health": {"uptime_s": 5}},
    "parameters": {"values": {"currency": "EUR", "timeout": 60, "payment_api_token": "********"}, "sha256": "a"},
}


def facts(**changes):
    data = json.loads(json.dumps(FACTS_231))
    for dotted, value in changes.items():
        node = data
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return data


def test_snapshot_written_only_when_configuration_changes(tmp_path):
    store = str(tmp_path)
    first, changes = ch.write_snapshot(store, "t1", FACTS_231, "2026-11-01T10:00:00+00:00")
    assert first and changes
    # Only volatile readings differ: nothing new is stored.
    again, changes = ch.write_snapshot(
        store, "t1", facts(hardware__memory_available_mib=7, application__health__uptime_s=99), "2026-11-02T10:00:00Z"
    )
    assert again is None and changes == []
    later, changes = ch.write_snapshot(store, "t1", facts(application__current="2.4.0"), "2026-11-10T10:00:00Z")
    assert later and changes == [
        {"path": "application.current", "change": "changed", "before": "2.3.1", "after": "2.4.0"}
    ]
    assert [t.isoformat() for t, _ in ch.list_snapshots(store, "t1")] == [
        "2026-11-01T10:00:00+00:00",
        "2026-11-10T10:00:00+00:00",
    ]
    assert not list(tmp_path.glob("t1/.snapshot-*")), "no temporary file left behind"


def test_configuration_as_of_a_date_and_changes_between_dates(tmp_path):
    store = str(tmp_path)
    ch.write_snapshot(store, "t1", FACTS_231, "2026-11-01T10:00:00Z")
    ch.write_snapshot(
        store, "t1", facts(application__current="2.4.0", parameters__values__currency="CHF"), "2026-11-10T10:00:00Z"
    )
    assert ch.snapshot_as_of(store, "t1", "2026-10-31") is None
    assert ch.snapshot_as_of(store, "t1", "2026-11-05")["facts"]["application"]["current"] == "2.3.1"
    assert ch.snapshot_as_of(store, "t1", "2026-11-10")["facts"]["application"]["current"] == "2.4.0"
    # A date in a site's zone: 11:30 in Paris is 10:30 UTC, after the second snapshot.
    assert ch.snapshot_as_of(store, "t1", "2026-11-10T11:30:00+01:00")["facts"]["application"]["current"] == "2.4.0"
    changed = {
        c["path"]: (c["before"], c["after"]) for c in ch.changes_between(store, "t1", "2026-11-05", "2026-11-11")
    }
    assert changed == {"application.current": ("2.3.1", "2.4.0"), "parameters.values.currency": ("EUR", "CHF")}


def test_drift_against_the_registry():
    desired = {
        "release": "2.4.0",
        "parameters": {"currency": "CHF", "timeout": 60, "payment_api_token": "x"},
        "os": "debian-12",
    }
    differences = ch.drift(desired, facts(os__pending_security_updates={"openssl": {}}))
    assert [(d["aspect"], d["path"]) for d in differences] == [
        ("release", "application.current"),
        ("parameter", "parameters.values.currency"),
        ("patches", "os.pending_security_updates"),
    ]
    assert ch.drift({"release": "2.3.1", "parameters": {"currency": "EUR"}}, FACTS_231) == []


def test_drift_never_shows_a_secret():
    # Masked on the terminal (set there): its value is never read back, so it is not a difference.
    assert ch.drift({"parameters": {"payment_api_token": "s3cr3t-canary"}}, FACTS_231) == []
    assert FACTS_231["parameters"]["values"]["payment_api_token"] == MASK
    # Empty on the terminal but set in the registry: a difference, and the registry's value stays hidden.
    empty = facts(parameters__values={"payment_api_token": "", "currency": "EUR"})
    differences = ch.drift({"parameters": {"payment_api_token": "s3cr3t-canary", "currency": "EUR"}}, empty)
    assert differences == [
        {"aspect": "parameter", "path": "parameters.values.payment_api_token", "desired": MASK, "actual": ""}
    ]
    assert "s3cr3t-canary" not in json.dumps(differences)
    # A plain parameter's values are shown as they are.
    assert ch.drift({"parameters": {"currency": "CHF"}}, empty)[0]["desired"] == "CHF"


@pytest.mark.parametrize(("terminal", "date"), [("../etc", "2026-11-01"), ("t1", "last tuesday")])
def test_bad_terminal_or_date_is_a_clear_error(tmp_path, terminal, date):
    with pytest.raises(ch.HistoryError, match="expected"):
        ch.snapshot_as_of(str(tmp_path), terminal, date)
