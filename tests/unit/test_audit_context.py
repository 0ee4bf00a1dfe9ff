"""Operator identity chain and site-local time."""

from __future__ import annotations

import datetime
import getpass

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_context import (
    normalise_maintenance_type,
    resolve_operator,
    utc_and_site_time,
)


def test_operator_chain_order():
    env = {"IPM_OPERATOR": "env-op"}
    assert resolve_operator({"ipm_operator": "alice", "awx_user_name": "awx"}, env) == (
        "alice",
        "extra_var:ipm_operator",
    )
    assert resolve_operator({"awx_user_name": "awx"}, env) == ("env-op", "env:IPM_OPERATOR")
    assert resolve_operator({"awx_user_name": "awx"}, {}) == ("awx", "extra_var:awx_user_name")
    assert resolve_operator({"tower_user_name": "tower"}, {}) == ("tower", "extra_var:tower_user_name")
    assert resolve_operator({"ipm_operator": "  "}, {}) == (getpass.getuser(), "os_user")


def test_site_time_in_the_sites_zone_and_utc_fallback():
    july = datetime.datetime(2026, 7, 1, 12, tzinfo=datetime.UTC).timestamp()
    january = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC).timestamp()
    assert utc_and_site_time(july, "Europe/Paris")[1] == "2026-07-01T14:00:00.000000+02:00"
    assert utc_and_site_time(january, "Australia/Sydney")[1] == "2026-01-01T23:00:00.000000+11:00"
    assert utc_and_site_time(january, None)[1] == "2026-01-01T12:00:00.000000+00:00"
    assert utc_and_site_time(january, "Not/AZone")[1] == "2026-01-01T12:00:00.000000+00:00"


def test_maintenance_type():
    assert normalise_maintenance_type("Corrective") == "corrective"
    assert normalise_maintenance_type(None) is None
    with pytest.raises(ValueError, match="preventive, corrective, evolutive"):
        normalise_maintenance_type("urgent")


def test_utc_and_site_time_from_a_timestamp():
    assert utc_and_site_time(0.25, "Asia/Kolkata") == (
        "1970-01-01T00:00:00.250000Z",
        "1970-01-01T05:30:00.250000+05:30",
    )
