"""Benchmark of the merged audit trail (AWX, ephemeral nodes) against one log of the same size.

    .venv/bin/python bench/awx.py                  # 4 nodes x 250,000 records against one 1,000,000-record log
    .venv/bin/python bench/awx.py --records 200000 --reps 1   # a quick run

Both sides are written by the real writer code the callback uses, with the callback's record data
(bench/audit.py's sample task result) and the real clock: the single log by ``AuditWriter.append``
(a checkpoint every 1,000 records, the callback's default), each node's segment by
``SegmentWriter.append`` (segment_start, a checkpoint every 1,000 records, the signed segment_end, shipped
to the trail directory with its index entry). Only the fsync per record is left out while generating
(it changes how long writing takes, not a byte written).

Then, interleaved, ``verify_log`` of the single log (chain, hashes, checkpoint MACs, head file: the floor)
and ``verify_trail`` of the trail (the same per segment, plus first/end records, heads, index, part
numbers), with the same number of worker processes. Ratios use the median wall time.

The last line is ``awx nodes=<n> records=<n> merged_s=<s> single_s=<s> ratio=<r>``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.ipm.fleet.plugins.plugin_utils import audit_log, audit_segments  # noqa: E402

BUILD = ROOT / "build"


class Samples:
    """bench/audit.py's task results, 997 distinct ones in turn; ``body(i)`` is the canonical JSON of ``data(i)``."""

    def __init__(self):
        spec = importlib.util.spec_from_file_location("bench_audit", ROOT / "bench" / "audit.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.data_list = [module.sample_data(i) for i in range(997)]
        self.bodies = [
            json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() for d in self.data_list
        ]

    def data(self, i: int) -> dict:
        return self.data_list[i % 997]

    def body(self, i: int) -> bytes:
        return self.bodies[i % 997]


class FastChain:
    """The writer's fast path for generating: ``AuditWriter``'s record layout and ``_encode_line`` (the
    canonical bytes the callback writes), buffered, without a lock and a size check per record. It
    continues the chain of the file it is given; the real writer continues after it (it re-reads the tail).
    ``check_identical`` proves on a prefix that both write the same bytes."""

    def __init__(self, path: str, key: bytes, clock=audit_log.utc_now):
        self.path, self.key, self.clock = path, key, clock
        last = b""
        if os.path.getsize(path):
            with open(path, "rb") as handle:
                last = handle.read().splitlines()[-1]  # a fresh log or segment: a few lines
        tail = audit_log.parse_tail(last + b"\n") if last else None
        self.seq, self.prev = (tail[2] + 1, tail[4]) if tail else (0, audit_log.GENESIS)
        self.buffer: list[bytes] = []

    def append(self, kind: str, data: dict) -> None:
        record = {"data": data, "kind": kind, "prev": self.prev, "seq": self.seq, "time": self.clock()}
        line, self.prev = audit_log._encode_line(record)
        self._add(line)

    def append_task(self, body: bytes) -> None:
        """A task record whose data is already canonical JSON (``canonical_bytes`` of the data alone)."""
        head = b'{"data":' + body + b',"kind":"task","prev":"' + self.prev.encode() + b'","seq":'
        record = head + str(self.seq).encode() + b',"time":"' + self.clock().encode() + b'"}'
        self.prev = hashlib.sha256(record).hexdigest()
        self.seq += 1
        self._add(record[:-1] + b',"hash":"' + self.prev.encode() + b'"}\n', counted=False)

    def _add(self, line: bytes, counted: bool = True) -> None:
        if counted:
            self.seq += 1
        self.buffer.append(line)
        if len(self.buffer) >= 20000:
            self.flush()

    def checkpoint(self, reason: str) -> None:
        mac = audit_log.checkpoint_mac(self.key, self.seq, self.prev)
        self.append("checkpoint", {"reason": reason, "key_id": audit_log.key_id(self.key), "mac": mac})

    def flush(self) -> None:
        with open(self.path, "ab") as handle:
            handle.write(b"".join(self.buffer))
        self.buffer = []


def write_single(path: Path, records: int, key: bytes, sample, clock=audit_log.utc_now, fast: bool = True) -> None:
    """What the callback leaves: task records, a checkpoint every 1,000 records, a final one (and the head)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with audit_log.AuditWriter(str(path), key=key, checkpoint_interval=1000, clock=clock) as writer:
        writer.open()
        chain = FastChain(str(path), key, clock) if fast else writer
        written = 0
        for i in range(records):
            if written == records - 1:
                break
            if fast:
                chain.append_task(sample.body(i))
            else:
                chain.append("task", sample.data(i))
            written += 1
            if fast and chain.seq % 1000 == 0 and written < records - 1:
                chain.checkpoint("interval")
                written += 1
            elif not fast:
                written = writer._next_seq
        if fast:
            chain.flush()
        writer.checkpoint("run_end")


def write_segment(work: Path, trail: Path, node: int, records: int, key: bytes, sample,
                  clock=audit_log.utc_now, fast: bool = True) -> None:  # fmt: skip
    """One job's segment: segment_start and its checkpoint, tasks (a checkpoint every 1,000), segment_end."""
    writer = audit_segments.SegmentWriter(
        str(work / f"node-{node}"), key, job=str(1000 + node), node=f"exec-{node}", run=f"bench{node}",
        ship_to=str(trail), checkpoint_interval=1000, max_records=0, fsync=False, ship_checkpoints=False, clock=clock,
    )  # fmt: skip
    writer.open()
    tasks = records - 3
    tasks -= tasks // 1001
    chain = FastChain(writer.path, key, clock) if fast else writer
    for i in range(tasks):
        if fast:
            chain.append_task(sample.body(node * records + i))
        else:
            chain.append("task", sample.data(node * records + i))
        if fast and (i + 1) % 1000 == 0:
            chain.checkpoint("interval")
    if fast:
        chain.flush()
        writer._count = tasks
        writer._writer._sync_tail()  # the real writer continues the chain the fast path wrote
    writer.end()


def check_identical(work: Path, key: bytes, sample) -> None:
    """The fast path writes the bytes the real writers write (same clock), for a 2,500-record prefix."""
    stamps = [f"2026-12-01T10:00:{i % 60:02d}.{i:06d}Z" for i in range(10000)]
    for name, write in (("single", write_single), ("segment", None)):
        outputs = []
        for fast in (False, True):
            clock = iter(stamps).__next__
            directory = work / f"check-{name}-{fast}"
            if write is not None:
                write(directory / "audit.jsonl", 2500, key, sample, clock=clock, fast=fast)
                outputs.append((directory / "audit.jsonl").read_bytes())
            else:
                write_segment(directory, directory / "trail", 0, 2500, key, sample, clock=clock, fast=fast)
                outputs.append(b"".join(p.read_bytes() for p in sorted((directory / "trail").glob("*.jsonl"))))
        if outputs[0] != outputs[1] or outputs[0].count(b"\n") != 2500:
            sys.exit(f"bench: the fast path does not write what the {name} writer writes")
        shutil.rmtree(work / f"check-{name}-False")
        shutil.rmtree(work / f"check-{name}-True")
    print("fast path: byte-identical to AuditWriter and SegmentWriter on 2,500-record prefixes")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in all (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="verify processes, both sides")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median)")
    args = parser.parse_args()
    if args.nodes < 1 or args.records < args.nodes * 2000 or args.reps < 1 or args.workers < 1:
        parser.error("--nodes >= 1, --records >= 2000 per node, --reps >= 1, --workers >= 1")
    BUILD.mkdir(exist_ok=True)
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPU(s)")
    sample = Samples()
    key = os.urandom(32)
    work = Path(tempfile.mkdtemp(prefix="bench-awx-", dir=BUILD))
    try:
        check_identical(work, key, sample)
        single = work / "single" / "audit.jsonl"
        trail = work / "trail"
        wall = timed(lambda: write_single(single, args.records, key, sample))
        print(f"single log: {args.records:,} records, {single.stat().st_size / 1e6:.0f} MB written in {wall:.1f} s")
        per_node = args.records // args.nodes
        start = time.perf_counter()
        for node in range(args.nodes):
            write_segment(work, trail, node, per_node, key, sample)
        wall = time.perf_counter() - start
        size = sum(p.stat().st_size for p in trail.glob("*.jsonl"))
        print(f"trail: {args.nodes} segments x {per_node:,} records, {size / 1e6:.0f} MB written in {wall:.1f} s")

        single_report = audit_log.verify_log(str(single), key, workers=args.workers)
        trail_report = audit_segments.verify_trail(str(trail), key, workers=args.workers)
        if not single_report.ok or single_report.records != args.records:
            sys.exit(f"bench: the single log does not verify: {single_report.problem}")
        if not trail_report.ok or trail_report.records != per_node * args.nodes:
            sys.exit(f"bench: the trail does not verify ({trail_report.records} records): {trail_report.problems}")
        print(f"both verify: {single_report.records:,} and {trail_report.records:,} records")
        walls: dict[str, list[float]] = {"single": [], "merged": []}
        for rep in range(args.reps):
            order = ["single", "merged"] if rep % 2 == 0 else ["merged", "single"]
            for name in order:
                if name == "single":
                    walls[name].append(timed(lambda: audit_log.verify_log(str(single), key, workers=args.workers)))
                else:
                    walls[name].append(
                        timed(lambda: audit_segments.verify_trail(str(trail), key, workers=args.workers))
                    )
                print(f"  rep {rep + 1} {name:<6} {walls[name][-1]:6.2f} s (workers={args.workers})", flush=True)
        single_s, merged_s = statistics.median(walls["single"]), statistics.median(walls["merged"])
        print(
            f"awx nodes={args.nodes} records={per_node * args.nodes} merged_s={merged_s:.2f} "
            f"single_s={single_s:.2f} ratio={merged_s / single_s:.3f}"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
