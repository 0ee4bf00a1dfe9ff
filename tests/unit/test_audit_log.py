"""The audit chain: hashes, checkpoints, head file, tampering, concurrent writers, crashes."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import (
    GENESIS,
    AuditLogError,
    AuditWriter,
    canonical_bytes,
    generate_key,
    head_path,
    load_key,
    parse_tail,
    verify_log,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def write_log(path, count, interval=4, key=KEY, final_checkpoint=True):
    with AuditWriter(str(path), key=key, checkpoint_interval=interval) as writer:
        for i in range(count):
            writer.append("task", {"host": f"t{i % 3}", "i": i, "msg": f"result {i}", "changed": i % 2 == 0})
        if final_checkpoint:
            writer.checkpoint("run_end")
    return path.read_bytes().splitlines(keepends=True)


def rehash(records, key=None):
    """What a forger without the real key can do: rebuild every hash and prev (and sign with another key)."""
    from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import checkpoint_mac

    prev = GENESIS
    lines = []
    for seq, record in enumerate(records):
        record = {k: v for k, v in record.items() if k != "hash"}
        record["seq"], record["prev"] = seq, prev
        if record["kind"] == "checkpoint" and key is not None:
            record["data"]["mac"] = checkpoint_mac(key, seq, prev)
        body = canonical_bytes(record)
        prev = hashlib.sha256(body).hexdigest()
        lines.append(body[:-1] + b',"hash":"' + prev.encode() + b'"}\n')
    return lines


def test_written_log_verifies_and_lines_are_canonical(tmp_path):
    log = tmp_path / "audit.jsonl"
    lines = write_log(log, 10)
    report = verify_log(str(log), KEY)
    assert report.ok, report.problem
    # 10 task records; interval checkpoints at seq 4, 8 and 12; the final one at 13.
    assert report.records == len(lines) == 14
    assert report.checkpoints == 4
    assert report.unsigned_tail == 0
    for line in lines:
        record = json.loads(line)
        assert canonical_bytes(record)[:-1] + b',"hash":"' + record["hash"].encode() + b'"}\n' == line
        assert parse_tail(line)[2] == record["seq"]
    head = json.loads((tmp_path / "audit.jsonl.head").read_text())
    assert head["seq"] == 13


def test_wrong_key_is_detected(tmp_path):
    log = tmp_path / "audit.jsonl"
    write_log(log, 5)
    report = verify_log(str(log), OTHER_KEY)
    assert not report.ok
    assert "signature invalid" in report.problem.why


def test_without_key_only_the_chain_is_checked_and_said_so(tmp_path):
    log = tmp_path / "audit.jsonl"
    write_log(log, 5)
    report = verify_log(str(log), None)
    assert report.ok
    assert any("no key" in w for w in report.warnings)


TAMPERS = ("change_field", "change_and_rehash_one", "delete", "insert", "reorder", "cut_tail", "forge_rehashed")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    count=st.integers(min_value=2, max_value=25),
    tamper=st.sampled_from(TAMPERS),
    pick=st.integers(min_value=0, max_value=10_000),
    pick2=st.integers(min_value=0, max_value=10_000),
    new_value=st.text(min_size=1, max_size=20),
)
def test_every_tampering_is_detected(tmp_path_factory, count, tamper, pick, pick2, new_value):
    log = tmp_path_factory.mktemp("tamper") / "audit.jsonl"
    lines = write_log(log, count, interval=4)
    n = len(lines)
    i = pick % n
    records = [json.loads(line) for line in lines]
    if tamper == "change_field":
        record = records[i]
        record["data"]["tampered"] = new_value
        lines[i] = canonical_bytes(record)[:-1] + b',"hash":"' + record["hash"].encode() + b'"}\n'
    elif tamper == "change_and_rehash_one":
        record = {k: v for k, v in records[i].items() if k != "hash"}
        record["data"]["tampered"] = new_value
        body = canonical_bytes(record)
        lines[i] = body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'
    elif tamper == "delete":
        del lines[i]
    elif tamper == "insert":
        lines.insert(i, lines[pick2 % n])
    elif tamper == "reorder":
        j = pick2 % n
        if i == j:
            j = (i + 1) % n
        lines[i], lines[j] = lines[j], lines[i]
    elif tamper == "cut_tail":
        lines = lines[: pick % n]  # keeps 0 .. n-1 lines
    elif tamper == "forge_rehashed":
        records[i]["data"]["tampered"] = new_value
        lines = rehash(records, key=OTHER_KEY if pick2 % 2 else None)
    log.write_bytes(b"".join(lines))
    report = verify_log(str(log), KEY)
    assert not report.ok, f"{tamper} at {i} not detected"
    assert report.problem.line >= 1


def test_forger_who_also_drops_checkpoints_and_head_is_caught(tmp_path):
    log = tmp_path / "audit.jsonl"
    lines = write_log(log, 8)
    records = [json.loads(line) for line in lines if b'"kind":"checkpoint"' not in line]
    records[2]["data"]["msg"] = "nothing happened"
    log.write_bytes(b"".join(rehash(records)))
    os.unlink(head_path(str(log)))
    report = verify_log(str(log), KEY)
    assert not report.ok
    assert "head file" in report.problem.why


def test_first_bad_record_is_named(tmp_path):
    log = tmp_path / "audit.jsonl"
    lines = write_log(log, 10)
    record = json.loads(lines[6])
    record["data"]["changed"] = not record["data"].get("changed")
    lines[6] = canonical_bytes(record)[:-1] + b',"hash":"' + record["hash"].encode() + b'"}\n'
    log.write_bytes(b"".join(lines))
    report = verify_log(str(log), KEY)
    assert (report.problem.line, report.problem.seq) == (7, 6)
    assert "altered" in report.problem.why
    assert str(report.problem).startswith("line 7 (seq 6):")


def test_partial_last_line_is_reported_then_recovered_by_the_next_writer(tmp_path):
    log = tmp_path / "audit.jsonl"
    lines = write_log(log, 5)
    with open(log, "ab") as handle:
        handle.write(lines[0][:40])  # a writer died mid-line
    report = verify_log(str(log), KEY)
    assert not report.ok
    assert report.problem.line == len(lines) + 1
    assert "partial last line" in report.problem.why
    with AuditWriter(str(log), key=KEY) as writer:
        writer.append("task", {"i": "after crash"}, checkpoint="run_end")
    report = verify_log(str(log), KEY)
    assert report.ok, report.problem
    kinds = [json.loads(line)["kind"] for line in log.read_bytes().splitlines()]
    assert kinds[len(lines)] == "recovered"
    recovered = json.loads(log.read_bytes().splitlines()[len(lines)])
    assert recovered["data"]["bytes"] == 40


def test_a_foreign_last_line_stops_writers(tmp_path):
    log = tmp_path / "audit.jsonl"
    write_log(log, 3)
    with open(log, "ab") as handle:
        handle.write(b"not a record\n")
    writer = AuditWriter(str(log), key=KEY).open()
    with pytest.raises(AuditLogError, match="last line is not an audit record"):
        writer.append("task", {})
    writer.close()


def test_unwritable_log_raises_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AuditLogError, match="cannot open the audit log"):
        AuditWriter(str(blocker / "audit.jsonl")).open()


def _writer_process(path, worker, count):
    with AuditWriter(path, key=KEY, checkpoint_interval=50) as writer:
        for i in range(count):
            writer.append("task", {"worker": worker, "i": i, "pad": "x" * (i % 200)})


def test_eight_concurrent_writers_keep_one_chain(tmp_path):
    log = str(tmp_path / "audit.jsonl")
    count = 300
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer_process, args=(log, w, count)) for w in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    with AuditWriter(log, key=KEY) as writer:
        writer.checkpoint("test end")
    report = verify_log(log, KEY)
    assert report.ok, report.problem
    seen = {}
    for line in Path(log).read_bytes().splitlines():
        record = json.loads(line)
        if record["kind"] == "task":
            seen.setdefault(record["data"]["worker"], []).append(record["data"]["i"])
    assert sorted(seen) == list(range(8))
    for numbers in seen.values():
        assert numbers == list(range(count))  # each writer's records, all there, in its order
    assert report.checkpoints >= 8 * count // 50


def test_keygen_and_load(tmp_path):
    path = tmp_path / "keys" / "audit.key"
    ident = generate_key(str(path))
    assert len(ident) == 16
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(load_key(str(path))) == 32
    with pytest.raises(AuditLogError, match="already exists"):
        generate_key(str(path))
    with pytest.raises(AuditLogError, match="key file not found"):
        load_key(str(tmp_path / "missing.key"))
    (tmp_path / "bad.key").write_text("zz\n")
    with pytest.raises(AuditLogError, match="not an audit key"):
        load_key(str(tmp_path / "bad.key"))


@pytest.mark.parametrize("workers", [1, 3])
def test_parallel_and_serial_verification_agree(tmp_path, workers):
    log = tmp_path / "audit.jsonl"
    lines = write_log(log, 300, interval=7)
    assert verify_log(str(log), KEY, workers=workers).ok
    record = json.loads(lines[211])
    record["data"]["msg"] = "edited"
    lines[211] = canonical_bytes(record)[:-1] + b',"hash":"' + record["hash"].encode() + b'"}\n'
    log.write_bytes(b"".join(lines))
    problem = verify_log(str(log), KEY, workers=workers).problem
    assert (problem.line, problem.seq) == (212, 211)
    del lines[150]
    log.write_bytes(b"".join(lines))
    problem = verify_log(str(log), KEY, workers=workers).problem
    assert (problem.line, problem.seq) == (151, 151)
    assert "record missing" in problem.why
