"""Chain segments (AWX, ephemeral nodes): writing, shipping, salvage, the merge, and every tamper case."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from itertools import count
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import audit_segments as seg
from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import _encode_line, head_path
from ansible_collections.ipm.fleet.plugins.plugin_utils.report_data import read_log

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ROOT = Path(__file__).resolve().parents[2]


def clock(start: int, step: int):
    ticks = count(start, step)
    return lambda: f"2026-12-01T10:{next(ticks) // 60:02d}:{next(ticks) % 60:02d}.000000Z"


def fixed_clock(values):
    it = iter(values)
    return lambda: next(it)


def write_job(tmp: Path, job: str, node: str, records: int, end: bool = True, **kw) -> seg.SegmentWriter:
    writer = seg.SegmentWriter(
        str(tmp / f"local-{node}"), KEY, job=job, node=node, run=f"run{job}", ship_to=str(tmp / "trail"),
        checkpoint_interval=kw.pop("interval", 4), **kw,
    )  # fmt: skip
    for i in range(records):
        writer.append("task", {"run": f"run{job}", "i": i, "host": f"h{i % 3}", "status": "ok"})
    if end:
        writer.end()
    else:
        writer.close()
    return writer


@pytest.fixture
def trail(tmp_path):
    for job, node in (("11", "node-a"), ("12", "node-b"), ("13", "node-c")):
        write_job(tmp_path, job, node, 10)
    return tmp_path / "trail"


def segment_file(trail: Path, job: str) -> Path:
    return next(trail.glob(f"j{job}_*.jsonl"))


def verify(trail: Path, key=KEY, workers=1) -> seg.TrailReport:
    return seg.verify_trail(str(trail), key, workers=workers)


def by_status(report) -> dict[str, str]:
    return {s.name: s.status for s in report.segments}


# ------------------------------------------------------------------------------------------- writing


def test_complete_trail_verifies_and_names_each_segment(trail):
    report = verify(trail)
    assert report.ok, report.problems
    assert sorted(by_status(report).values()) == ["complete"] * 3
    # segment_start + its checkpoint, 10 tasks, 2 interval checkpoints, segment_end
    assert report.records == 3 * 15
    assert not report.warnings
    first = json.loads(segment_file(trail, "12").read_text().splitlines()[0])
    assert first["kind"] == "segment_start" and first["prev"] == "0" * 64
    assert {first["data"][k] for k in ("job", "node", "part")} == {"12", "node-b", 0}
    last = json.loads(segment_file(trail, "12").read_text().splitlines()[-1])
    assert last["kind"] == "segment_end" and last["data"]["records"] == 15 and last["data"]["mac"]
    assert not any((trail.parent / "local-node-a").glob("*.jsonl")), "a shipped, ended segment is removed locally"
    assert sorted(p.name for p in (trail / "index").iterdir()) == sorted(
        p.stem + ".json" for p in trail.glob("*.jsonl")
    )


def test_rotation_numbers_parts_without_gaps(tmp_path):
    write_job(tmp_path, "21", "n1", 25, max_records=10)
    report = verify(tmp_path / "trail")
    assert report.ok, report.problems
    parts = sorted((s.part, s.detail) for s in report.segments)
    assert parts == [(0, "rotate"), (1, "rotate"), (2, "end")]


def test_shipped_prefix_at_each_checkpoint(tmp_path):
    writer = seg.SegmentWriter(str(tmp_path / "local"), KEY, "31", "n1", "r31", ship_to=str(tmp_path / "trail"),
                               checkpoint_interval=5)  # fmt: skip
    shipped = tmp_path / "trail" / (writer.name + ".jsonl")
    writer.open()
    sizes = []
    for i in range(12):
        writer.append("task", {"i": i})
        sizes.append(len(shipped.read_bytes().splitlines()))
    # start + checkpoint are shipped at once; then each 5th record + its checkpoint
    assert sizes == [2, 2, 2, 2, 8, 8, 8, 8, 8, 14, 14, 14]
    assert len(Path(writer.path).read_bytes().splitlines()) == 16, "the local segment holds every record"
    writer.close()
    report = verify(tmp_path / "trail")
    assert report.ok and by_status(report) == {writer.name: "incomplete"}
    assert "job died after record 13" in report.warnings[0], "the shipped copy ends at the last checkpoint"


def test_salvage_ships_dead_writers_only(tmp_path):
    live = seg.SegmentWriter(str(tmp_path / "local"), KEY, "41", "n1", "live", ship_to=str(tmp_path / "trail"))
    live.append("task", {"i": 0})
    dead = write_job(tmp_path, "42", "n1", 3, end=False, interval=100)
    assert seg.salvage(str(tmp_path / "local-n1"), str(tmp_path / "trail")) == [dead.name + ".jsonl"]
    assert seg.salvage(str(tmp_path / "local"), str(tmp_path / "trail")) == [], "a live writer holds its flock"
    report = verify(tmp_path / "trail")
    assert report.ok
    assert by_status(report)[dead.name] == "incomplete"
    live.end()
    assert by_status(verify(tmp_path / "trail"))[live.name] == "complete"


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_segments import SegmentWriter
    w = SegmentWriter(sys.argv[2], bytes(range(32)), "51", "n1", "killed", ship_to=sys.argv[3], checkpoint_interval=50)
    i = 0
    while True:
        w.append("task", {"i": i})
        print(i, flush=True)
        i += 1
    """
)


def test_a_killed_writer_loses_no_record_it_wrote(tmp_path):
    local, ship = tmp_path / "local", tmp_path / "trail"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ROOT / "collections"), str(local), str(ship)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = []
    for line in proc.stdout:
        seen.append(int(line))
        if len(seen) == 120:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    seen += [int(line) for line in proc.stdout.read().split()]
    before = verify(ship)
    shipped_tasks = [r["data"]["i"] for _s, r in seg.iter_trail(str(ship)) if r["kind"] == "task"]
    assert before.ok and 100 <= len(shipped_tasks) < len(seen), "the shipped prefix ends at a checkpoint"
    assert seg.salvage(str(local), str(ship))
    report = verify(ship)
    assert report.ok, report.problems
    tasks = [r["data"]["i"] for _s, r in seg.iter_trail(str(ship)) if r["kind"] == "task"]
    assert tasks[: len(seen)] == seen, "every record the writer had returned from is in the trail"
    assert "incomplete" in report.warnings[0]


# ------------------------------------------------------------------------------------------- merging


def test_merge_in_time_order_with_stable_tie_break(tmp_path):
    ship = tmp_path / "trail"
    stamps = {
        "a": ["2026-12-01T10:00:00.000000Z"] * 2 + [f"2026-12-01T10:00:0{i}.000000Z" for i in (1, 3, 5)],
        "b": ["2026-12-01T10:00:00.000000Z"] * 2 + [f"2026-12-01T10:00:0{i}.000000Z" for i in (2, 3, 4)],
    }
    for node, times in stamps.items():
        writer = seg.SegmentWriter(str(tmp_path / node), KEY, f"6{node}", node, node, ship_to=str(ship),
                                   checkpoint_interval=0, clock=fixed_clock(times + times[-1:] * 3))  # fmt: skip
        for i in range(3):
            writer.append("task", {"i": f"{node}{i}"})
        writer.end()
    merged = [(s[:3], r["data"].get("i")) for s, r in seg.iter_trail(str(ship)) if r["kind"] == "task"]
    assert [i for _s, i in merged] == ["a0", "b0", "a1", "b1", "b2", "a2"]
    again = [r["hash"] for _s, r in seg.iter_trail(str(ship))]
    assert again == [r["hash"] for _s, r in seg.iter_trail(str(ship))]
    times = [r["time"] for _s, r in seg.iter_trail(str(ship))]
    assert times == sorted(times)
    rows = list(read_log(str(ship)))
    assert [row[1] for row in rows].count("task") == 6 and rows[0][1] == "segment_start"


def test_parallel_verification_agrees(trail):
    serial, parallel = verify(trail), verify(trail, workers=2)
    assert serial.ok and parallel.ok and serial.records == parallel.records
    assert serial.checkpoints == parallel.checkpoints


# ------------------------------------------------------------------------------------------ tampering


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def problems_about(report, name: str) -> list[str]:
    return [p for p in report.problems if name in p]


def test_flipped_byte_is_named_with_its_line(trail):
    path = segment_file(trail, "12")
    lines = lines_of(path)
    lines[5] = lines[5].replace(b'"status":"ok"', b'"status":"ko"')
    rewrite(path, lines)
    report = verify(trail)
    assert not report.ok
    (problem,) = report.problems
    assert path.stem in problem and "altered" in problem and "line 6 (seq 5)" in problem and "hash" in problem


def test_changed_field_rehashed_breaks_the_chain(trail):
    path = segment_file(trail, "11")
    lines = lines_of(path)
    record = json.loads(lines[4])
    record["data"]["host"] = "elsewhere"
    lines[4] = _encode_line(record)[0]
    rewrite(path, lines)
    (problem,) = verify(trail).problems
    assert "altered" in problem and "line 6 (seq 5)" in problem and "chain broken" in problem


def test_deleted_line_is_a_missing_record(trail):
    path = segment_file(trail, "13")
    lines = lines_of(path)
    del lines[7]
    rewrite(path, lines)
    (problem,) = verify(trail).problems
    assert path.stem in problem and "record missing: expected seq 7, found 8" in problem


def test_rehashed_segment_without_the_key_fails_its_signatures(trail, tmp_path):
    path = segment_file(trail, "12")
    forged = tmp_path / "forged"
    writer = seg.SegmentWriter(str(forged), OTHER_KEY, "12", "node-b", "run12", checkpoint_interval=4)
    for i in range(10):
        writer.append("task", {"run": "run12", "i": i, "host": "forged", "status": "ok"})
    writer.end()
    shutil.copy(writer.path, path)
    shutil.copy(head_path(writer.path), head_path(str(path)))
    (problem,) = verify(trail).problems
    assert path.stem in problem and "signature invalid" in problem


def test_cut_end_is_truncated_not_a_dead_job(trail):
    path = segment_file(trail, "11")
    rewrite(path, lines_of(path)[:-1])  # segment_end removed: the signed head still names it
    (problem,) = verify(trail).problems
    assert f"{path.stem}: truncated" in problem and "records cut off" in problem


def test_cut_mid_line_is_truncated(trail):
    path = segment_file(trail, "11")
    path.write_bytes(path.read_bytes()[:-40])
    (problem,) = verify(trail).problems
    assert f"{path.stem}: truncated" in problem and "partial last line" in problem


def test_deleted_head_file(trail):
    path = segment_file(trail, "13")
    os.unlink(head_path(str(path)))
    (problem,) = verify(trail).problems
    assert path.stem in problem and "head file" in problem and "missing" in problem


def test_deleted_segment_listed_in_the_index_is_missing(trail):
    path = segment_file(trail, "12")
    path.unlink()
    os.unlink(head_path(str(path)))
    report = verify(trail)
    (problem,) = report.problems
    assert problem == f"{path.stem}: missing: listed in the index but absent"


def test_deleted_part_and_its_index_entry_leave_a_gap(tmp_path):
    write_job(tmp_path, "22", "n1", 25, max_records=10)
    ship = tmp_path / "trail"
    middle = next(ship.glob("j22_*_p0001.jsonl"))
    middle.unlink()
    (ship / "index" / (middle.stem + ".json")).unlink()
    (problem,) = verify(ship).problems
    assert problem == "job 22: part 1 missing (parts 0, 2 present)"


def test_segment_without_index_entry_is_unlisted(trail):
    path = segment_file(trail, "13")
    (trail / "index" / (path.stem + ".json")).unlink()
    (problem,) = verify(trail).problems
    assert problem.startswith(f"{path.stem}: unlisted")


def test_altered_index_entry(trail):
    path = segment_file(trail, "11")
    entry_path = trail / "index" / (path.stem + ".json")
    entry = json.loads(entry_path.read_text())
    entry["node"] = "node-z"
    entry_path.write_text(json.dumps(entry))
    report = verify(trail)
    assert any("altered: signature invalid" in p for p in report.problems)
    assert any(f"{path.stem}: unlisted" in p for p in report.problems)


def test_copied_segment_under_another_name(trail):
    path = segment_file(trail, "11")
    copy = trail / path.name.replace("_p0000", "_p0001")
    shutil.copy(path, copy)
    shutil.copy(head_path(str(path)), head_path(str(copy)))
    problems = verify(trail).problems
    assert any(copy.stem in p and "segment_start names" in p for p in problems)


def test_duplicate_job_part(tmp_path):
    write_job(tmp_path, "23", "n1", 3)
    write_job(tmp_path, "23", "n2", 3)  # the same AWX job id and part from another node
    report = verify(tmp_path / "trail")
    (problem,) = report.problems
    assert "duplicate: job 23 part 0 also in" in problem


def test_wrong_key_and_no_key(trail):
    report = verify(trail, key=OTHER_KEY)
    assert not report.ok and all("signature invalid" in p for p in report.problems)
    unsigned = verify(trail, key=None)
    assert unsigned.ok and "no key given" in unsigned.warnings[-1]


def test_not_a_directory(tmp_path):
    report = verify(tmp_path / "absent")
    assert not report.ok and "not a directory" in report.problems[0]


# --------------------------------------------------------------------------------------------- CLI


def ipm_audit(*args, key: Path | None = None) -> subprocess.CompletedProcess:
    extra = ["--key-file", str(key)] if key else []
    return subprocess.run(
        [sys.executable, "-m", "ipm_tools.audit", *args, *extra],
        capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, PYTHONPATH=f"{ROOT / 'tools'}{os.pathsep}{ROOT / 'collections'}"),
    )  # fmt: skip


def test_cli_on_the_merged_trail(trail, tmp_path):
    key = tmp_path / "key"
    key.write_text(KEY.hex() + "\n")
    ok = ipm_audit("verify", "--trail", str(trail), key=key)
    assert ok.returncode == 0 and "OK" in ok.stdout and "3 segments (3 complete, 0 incomplete)" in ok.stdout
    listed = ipm_audit("--trail", str(trail), "list", "--json")
    rows = json.loads(listed.stdout)
    assert len(rows) == 30 and {r["segment"][:3] for r in rows} == {"j11", "j12", "j13"}
    one = ipm_audit("--trail", str(trail), "list", "--json", "--segment", segment_file(trail, "12").stem)
    assert len(json.loads(one.stdout)) == 10
    exported = ipm_audit("--trail", str(trail), "export", "--format", "csv")
    assert exported.stdout.splitlines()[0].endswith(",segment") and len(exported.stdout.splitlines()) == 31
    path = segment_file(trail, "13")
    path.write_bytes(path.read_bytes().replace(b'"h1"', b'"h9"', 1))
    bad = ipm_audit("verify", "--trail", str(trail), key=key)
    assert bad.returncode == 1 and f"FAIL {trail}: {path.stem}: altered: line" in bad.stdout
    missing = ipm_audit("verify", "--trail", str(tmp_path / "nope"), key=key)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "not a directory" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = ipm_audit("verify", "--trail", str(tmp_path / "empty"), key=key)
    assert empty.returncode == 0 and "0 segments" in empty.stdout
    assert "holds no segment yet" in empty.stderr and "IPM_AUDIT_SHIP_DIR" in empty.stderr


def test_cli_ship(tmp_path):
    dead = write_job(tmp_path, "71", "n1", 3, end=False, interval=100)
    shipped = ipm_audit("ship", "--segment-dir", str(tmp_path / "local-n1"), "--trail", str(tmp_path / "trail"))
    assert shipped.returncode == 0 and shipped.stdout.strip() == f"shipped {dead.name}.jsonl"
    bad = ipm_audit("ship", "--segment-dir", str(tmp_path / "nope"), "--trail", str(tmp_path / "trail"))
    assert bad.returncode == 2 and "not a directory" in bad.stderr and "Traceback" not in bad.stderr
