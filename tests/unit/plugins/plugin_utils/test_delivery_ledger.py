"""Delivery ledger from audit records: entries, filters, and what each terminal runs since when."""

from __future__ import annotations

from ansible_collections.ipm.fleet.plugins.plugin_utils import delivery_ledger as dl


def record(
    terminal,
    result,
    release,
    from_version=None,
    ended="2026-11-01T02:00:00Z",
    operator="alice",
    change="CHG-1",
    status="ok",
    module="ipm.fleet.delivery",
):
    return {
        "kind": "task",
        "module": module,
        "status": status,
        "terminal": terminal,
        "customer": "parkcite",
        "site": "lyon",
        "site_timezone": "Europe/Paris",
        "site_time": ended.replace("Z", "+01:00"),
        "ended": ended,
        "operator": operator,
        "change_id": change,
        "args": {"release": release, "result": result, "from_version": from_version, "reason": ""},
    }


RECORDS = [
    record("t1", "delivered", "2.4.0", "2.3.1", "2026-11-01T02:00:00Z"),
    record("t2", "deferred", "2.4.0", None, "2026-11-01T02:00:01Z"),
    record("t3", "rolled_back", "2.4.1", "2.3.1", "2026-11-01T02:00:02Z"),
    record("t1", "already_current", "2.4.0", "2.4.0", "2026-11-02T02:00:00Z", operator="bob", change="CHG-2"),
    record("t2", "delivered", "2.4.0", "2.3.1", "2026-11-02T02:05:00Z", operator="bob", change="CHG-2"),
    record("t1", "delivered", "2.4.0", "2.3.1", status="skipped"),  # a skipped record task is no attempt
    record("t9", "delivered", "9.9.9", module="ansible.builtin.debug"),  # not a ledger record
]


def test_entries_keep_every_attempt_and_only_them():
    ledger = dl.entries(RECORDS)
    assert [(e["terminal"], e["result"]) for e in ledger] == [
        ("t1", "delivered"),
        ("t2", "deferred"),
        ("t3", "rolled_back"),
        ("t1", "already_current"),
        ("t2", "delivered"),
    ]
    assert ledger[0]["site_time"] == "2026-11-01T02:00:00+01:00" and ledger[0]["operator"] == "alice"


def test_filters():
    ledger = dl.entries(RECORDS)
    assert len([e for e in ledger if dl.matches(e, release="2.4.0")]) == 4
    assert [e["terminal"] for e in ledger if dl.matches(e, result="rolled_back")] == ["t3"]
    assert [e["terminal"] for e in ledger if dl.matches(e, customer="other")] == []


def test_what_runs_where_since_when_by_whom():
    running = dl.running_releases(dl.entries(RECORDS))
    assert running["t1"]["release"] == "2.4.0" and running["t1"]["since"] == "2026-11-01T02:00:00Z"
    assert running["t1"]["operator"] == "alice", "a later already_current does not move the delivery"
    assert running["t2"]["release"] == "2.4.0" and running["t2"]["change_id"] == "CHG-2"
    assert running["t3"]["release"] == "2.3.1", "a rolled-back terminal stays on the release it came from"


def test_check_mode_records_are_not_deliveries():
    # `rollout.yml --check` records what it would do; the ledger must not say the terminal got it.
    dry = dict(record("t9", "delivered", "2.4.0", "2.3.1"), check_mode=True)
    real = dict(record("t9", "deferred", "2.4.0"), check_mode=False)
    assert [e["result"] for e in dl.entries([dry, real])] == ["deferred"]
    assert dl.running_releases(dl.entries([dry])) == {}


def test_a_record_whose_arguments_were_hidden_still_reads():
    hidden = dict(record("t9", "delivered", "2.4.0"), args="the output has been hidden due to no_log")
    (entry,) = dl.entries([hidden])
    assert entry["terminal"] == "t9" and entry["result"] is None and entry["release"] is None


def test_a_bake_that_passed_changes_nothing_and_a_bake_rollback_puts_the_terminal_back():
    ledger = dl.entries(
        [
            record("t1", "delivered", "2.4.2", "2.4.0", "2026-11-03T02:00:00Z"),
            record("t1", "baked", "2.4.2", "2.4.0", "2026-11-03T02:10:00Z"),
            record("t2", "delivered", "2.4.2", "2.4.0", "2026-11-03T02:00:00Z"),
            record("t2", "rolled_back", "2.4.2", "2.4.0", "2026-11-03T02:04:00Z", operator="carol"),
        ]
    )
    running = dl.running_releases(ledger)
    assert running["t1"]["release"] == "2.4.2" and running["t1"]["since"] == "2026-11-03T02:00:00Z"
    assert running["t2"]["release"] == "2.4.0" and running["t2"]["since"] == "2026-11-03T02:04:00Z"
    assert running["t2"]["operator"] == "carol"
    assert [e["result"] for e in ledger if dl.matches(e, result="baked")] == ["baked"]


def test_parameters_entries_have_their_kind_and_never_move_what_a_terminal_runs():
    parameters = dict(record("t1", "delivered", "2.4.0", "2.4.0", "2026-11-04T02:00:00Z", operator="dave"))
    parameters["args"] = dict(parameters["args"], kind="parameters")
    failed = dict(record("t4", "rolled_back", "2.4.0", "2.4.0", "2026-11-04T02:00:01Z"))
    failed["args"] = dict(failed["args"], kind="parameters")
    ledger = dl.entries([*RECORDS, parameters, failed])
    assert [e["kind"] for e in ledger] == ["release"] * 5 + ["parameters"] * 2, "an entry without a kind is a release's"
    assert [e["terminal"] for e in ledger if dl.matches(e, kind="parameters")] == ["t1", "t4"]
    assert len([e for e in ledger if dl.matches(e, kind="release")]) == 5
    running = dl.running_releases(ledger)
    assert running["t1"]["operator"] == "alice" and running["t1"]["since"] == "2026-11-01T02:00:00Z"
    assert "t4" not in running, "a parameters rollback says nothing about the release a terminal runs"
