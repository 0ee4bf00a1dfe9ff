"""What a parameters change changes (masked, per parameter) and how it ends in the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.ipm.fleet.plugins.filter.parameters import (
    parameter_diff,
    parameters_bake_outcome,
    parameters_outcome,
)
from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm
from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import MASK
from ansible_collections.ipm.fleet.plugins.plugin_utils import parameter_diff as pd

RELEASE = yaml.safe_load((Path(__file__).resolve().parents[4] / "app" / "releases" / "2.4.0.yml").read_text())


def wanted(**values):
    complete = rm.defaults(RELEASE)
    complete.update(listen_address="127.0.0.5", **values)
    return complete


def test_only_the_parameters_that_change_are_listed_from_what_to_what():
    current = {"listen_address": "127.0.0.5", "currency": "EUR", "max_amount": 150}
    diff = pd.parameter_diff(RELEASE, current, wanted(currency="CHF", max_amount=150.0, language="fr"))
    assert diff["differs"] is True
    assert diff["changed_names"] == ["currency", "language"]
    assert diff["lines"] == ["currency: EUR -> CHF", "language: en -> fr"], "150 and 150.0 are the same amount"
    assert diff["diff"]["before"] == "currency: EUR\nlanguage: en\n"
    assert diff["diff"]["after"] == "currency: CHF\nlanguage: fr\n"
    assert diff["before_sha256"] != diff["after_sha256"]
    expected = rm.effective_parameters(RELEASE, wanted(currency="CHF", language="fr", max_amount=150))
    assert diff["after_sha256"] == rm.parameters_digest(expected), "the digest /health reports"


def test_a_file_that_only_looks_different_is_no_change():
    # The factory file sets few values: the rest are the release's defaults, as the application reads them.
    diff = pd.parameter_diff(RELEASE, {"listen_address": "127.0.0.5", "max_amount": 200}, wanted())
    assert diff["differs"] is False and diff["changes"] == [] and diff["lines"] == []
    assert diff["before_sha256"] == diff["after_sha256"]


def test_secrets_are_masked_in_every_form():
    token = "tok-very-secret-123"
    diff = pd.parameter_diff(RELEASE, {"payment_api_token": "old-secret-456"}, wanted(payment_api_token=token))
    text = repr(diff)
    assert token not in text and "old-secret-456" not in text
    (change,) = [c for c in diff["changes"] if c["name"] == "payment_api_token"]
    assert change == {"name": "payment_api_token", "before": MASK, "after": MASK, "secret": True}
    assert "payment_api_token: ******** -> ******** (secret, value not shown)" in diff["lines"]
    assert diff["secrets_changed"] == ["payment_api_token"]
    # setting a secret where there was none: "not set" is worth seeing, the value is not
    first = pd.parameter_diff(RELEASE, {}, wanted(payment_api_token=token))
    assert 'payment_api_token: "" -> ******** (secret, value not shown)' in first["lines"]
    assert token not in repr(first)
    # an unchanged secret is no change
    assert (
        pd.parameter_diff(RELEASE, wanted(payment_api_token=token), wanted(payment_api_token=token))["differs"] is False
    )


def test_a_missing_file_an_unreadable_one_and_one_the_release_refuses():
    assert pd.parameter_diff(RELEASE, None, wanted())["differs"] is True  # the file must be written
    broken = pd.parameter_diff(RELEASE, ["not", "a", "mapping"], wanted())
    assert broken["differs"] is True and broken["before_sha256"] is None
    assert broken["lines"][0].startswith("the current parameters file is not a mapping")
    old = pd.parameter_diff(RELEASE, {"listen_address": "127.0.0.5", "timeout": 30}, wanted(idle_timeout_s=30))
    assert old["before_sha256"] is None, "2.4.0 refuses timeout: no digest"
    assert "timeout: 30 -> (not set)" in old["lines"] and "idle_timeout_s: 60 -> 30" in old["lines"]


def test_the_filter_checks_its_input():
    with pytest.raises(AnsibleFilterError, match="definition must be the release's manifest"):
        parameter_diff({}, {}, None)
    with pytest.raises(AnsibleFilterError, match="wanted parameters as a mapping"):
        parameter_diff("x", {}, RELEASE)
    assert parameter_diff(wanted(), "", RELEASE, "t1")["diff"]["after_header"] == "parameters on t1 (after)"


@pytest.mark.parametrize(
    ("state", "result", "reason"),
    [
        ({"unreachable": True, "msg": "ssh: connect\nrefused"}, "not_reached", "unreachable: ssh: connect refused"),
        (
            {"failed": True, "msg": "refused the new parameters", "written": False},
            "failed",
            "refused the new parameters",
        ),
        (
            {"failed": True, "msg": "not healthy", "written": True, "restored": True, "restored_healthy": True},
            "rolled_back",
            "not healthy",
        ),
        (
            {"failed": True, "msg": "not healthy", "restored": True, "restored_healthy": None},
            "rolled_back",
            "not healthy",
        ),
        (
            {"failed": True, "msg": "not healthy", "restored": True, "restored_healthy": False},
            "failed",
            "did NOT answer",
        ),
        (
            {"written": True, "diff": {"changed_names": ["currency", "language"]}},
            "delivered",
            "2 parameter(s) changed: currency, language",
        ),
        ({"written": False}, "already_current", ""),
        ({}, "already_current", ""),
    ],
)
def test_outcome_of_a_change(state, result, reason):
    outcome = parameters_outcome(state)
    assert outcome["result"] == result and reason in outcome["reason"]
    assert outcome["result"] in ("not_reached", "failed", "rolled_back", "delivered", "already_current")


def test_outcome_of_a_bake():
    assert parameters_bake_outcome({"healthy": True, "watched_s": 2.0, "probes": 3}) == {
        "result": "baked",
        "reason": "healthy for 2.0s (3 probes)",
    }
    failing = {"failed": True, "healthy": False, "reason": "health answered 503 status failing after 4.0 s"}
    back = parameters_bake_outcome(failing, {"restored": True, "healthy": True})
    assert back["result"] == "rolled_back" and back["reason"].startswith("failed during bake: health answered 503")
    assert parameters_bake_outcome(failing, {"restored": True, "healthy": False})["result"] == "failed"
    assert (
        "could NOT be put back" in parameters_bake_outcome(failing, {"restored": False, "msg": "disk full"})["reason"]
    )
    assert parameters_bake_outcome({"unreachable": True, "msg": "gone"})["result"] == "not_reached"
