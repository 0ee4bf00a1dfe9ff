# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit trail as chain segments: one signed segment per job (and node), shipped to a durable place.

On AWX every job runs in a container thrown away at its end, on whichever execution node is free: one
local log with a local lock cannot hold the trail. Instead each job writes its **own** hash chain (the
format of :mod:`audit_log`, unchanged) to a segment file named by job, node, run id and part::

    j<job>_n<node>_r<run>_p<part>.jsonl

* record 0 is ``segment_start`` (``segment``, ``job``, ``node``, ``run``, ``part``): it names the segment
  and links nothing else, so segments are independent chains; a signed checkpoint follows at once;
* every record is written and ``fsync``-ed before the callback returns (a node killed after a record
  loses nothing already written to the segment directory);
* a signed checkpoint every ``checkpoint_interval`` records, and the segment is then **shipped**: copied
  to a temporary name in the ship directory, ``fsync``-ed, renamed over the shipped copy (atomic), then
  its signed head file the same way; a node that dies mid-job leaves the shipped prefix;
* before its first record the job writes a signed **index entry** ``index/<segment>.json`` in the ship
  directory: a segment deleted afterwards is missed by name;
* a job that ends normally writes a signed ``segment_end`` (record count, reason ``end``), ships the
  whole segment and removes its local copy. Past ``max_records`` a segment ends with reason ``rotate``
  and the job goes on in part + 1 (parts of a job are numbered without gaps);
* a job killed before its end leaves its local segment: :func:`salvage` (the next job on that node, or
  ``ipm-audit ship``) ships whatever a dead writer left (a live writer holds an ``flock`` on its segment).

:func:`verify_trail` checks every shipped segment (chain, hashes, checkpoint MACs, head, first and end
record), the index and the part numbers, and names each problem; :func:`iter_trail` merges the records
of all segments in time order (ties: segment name, then seq).

Standard library only; no Ansible runtime state.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import hmac
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import (
    AuditLogError,
    AuditWriter,
    _complete_size,
    head_mac,
    head_path,
    iter_records,
    key_id,
    lock_path,
    utc_now,
    verify_log,
)

SEGMENT_SUFFIX = ".jsonl"
INDEX_DIR = "index"
DEFAULT_SEGMENT_INTERVAL = 100
DEFAULT_MAX_RECORDS = 50000
_NAME = re.compile(r"\Aj([A-Za-z0-9-]+)_n([A-Za-z0-9-]+)_r([A-Za-z0-9-]+)_p([0-9]{4,})\Z")


def safe_part(text: object, limit: int = 48) -> str:
    """A name part: letters, digits and '-' only (anything else becomes '-'), at most ``limit`` long."""
    cleaned = re.sub(r"[^A-Za-z0-9-]+", "-", str(text)).strip("-")[:limit]
    return cleaned or "x"


def segment_name(job: str, node: str, run: str, part: int) -> str:
    """File stem of a segment (without ``.jsonl``)."""
    return f"j{safe_part(job)}_n{safe_part(node)}_r{safe_part(run, 32)}_p{part:04d}"


def parse_name(stem: str) -> dict | None:
    match = _NAME.match(stem)
    if match is None:
        return None
    job, node, run, part = match.groups()
    return {"job": job, "node": node, "run": run, "part": int(part)}


def index_mac(key: bytes, entry: dict) -> str:
    """HMAC-SHA256 of an index entry (segment, job, node, run, part)."""
    text = "ipm-audit-index\n{segment}\n{job}\n{node}\n{run}\n{part}".format(**entry)
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------------------- shipping


def _fsync_dir(directory: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ship_bytes(data_source: str | bytes, dest_dir: str, name: str, upto: int | None = None) -> str:
    """Copy a file (its first ``upto`` bytes) or bytes to ``dest_dir/name``: temp name, fsync, atomic rename."""
    os.makedirs(dest_dir, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{name}.")
    try:
        if isinstance(data_source, bytes):
            os.write(fd, data_source)
        else:
            with open(data_source, "rb") as src:
                remaining = os.path.getsize(data_source) if upto is None else upto
                while remaining > 0:
                    block = src.read(min(1 << 20, remaining))
                    if not block:
                        break
                    os.write(fd, block)
                    remaining -= len(block)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        dest = os.path.join(dest_dir, name)
        os.replace(tmp, dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest_dir)
    return dest


def ship_segment(local_path: str, ship_to: str) -> str:
    """Ship a segment's complete lines, then its head file (never a head that points past the shipped copy)."""
    complete, _size = _complete_size(local_path)
    name = os.path.basename(local_path)
    dest = ship_bytes(local_path, ship_to, name, upto=complete)
    head = head_path(local_path)
    if os.path.exists(head):
        with open(head, "rb") as handle:
            ship_bytes(handle.read(), ship_to, os.path.basename(head))
    return dest


def write_index_entry(ship_to: str, key: bytes, entry: dict) -> str:
    signed = dict(entry, key_id=key_id(key), mac=index_mac(key, entry))
    body = json.dumps(signed, sort_keys=True).encode("utf-8") + b"\n"
    return ship_bytes(body, os.path.join(ship_to, INDEX_DIR), entry["segment"] + ".json")


def _remove_local(path: str) -> None:
    for leftover in (path, head_path(path), lock_path(path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)


def salvage(segment_dir: str, ship_to: str) -> list[str]:
    """Ship the segments dead writers left in ``segment_dir`` (their local copies are then removed).

    A segment whose writer still runs is skipped: the writer holds an exclusive ``flock`` on it.
    Returns the names shipped.
    """
    shipped = []
    try:
        names = sorted(n for n in os.listdir(segment_dir) if n.endswith(SEGMENT_SUFFIX))
    except FileNotFoundError:
        return shipped
    for name in names:
        path = os.path.join(segment_dir, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live job
            ship_segment(path, ship_to)
            _remove_local(path)
            shipped.append(name)
        finally:
            os.close(fd)
    return shipped


# ------------------------------------------------------------------------------------------ writing


@dataclass
class SegmentWriter:
    """Writes one job's audit records as chain segments; same ``append``/``close`` as :class:`AuditWriter`.

    ``key`` is required (segments are signed). ``ship_to`` None: segments stay in ``segment_dir``.
    """

    segment_dir: str
    key: bytes
    job: str
    node: str
    run: str
    ship_to: str | None = None
    checkpoint_interval: int = DEFAULT_SEGMENT_INTERVAL
    max_records: int = DEFAULT_MAX_RECORDS
    fsync: bool = True
    ship_checkpoints: bool = True
    clock: Callable[[], str] = utc_now
    part: int = 0
    path: str = ""
    _writer: AuditWriter | None = field(default=None, repr=False)
    _live_fd: int = field(default=-1, repr=False)
    _count: int = field(default=0, repr=False)
    _ended: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return segment_name(self.job, self.node, self.run, self.part)

    def open(self) -> SegmentWriter:
        if self.key is None:
            raise AuditLogError(f"{self.segment_dir}: segments need a checkpoint key (key_file)")
        self.segment_dir = os.path.abspath(os.path.expanduser(self.segment_dir))
        if self.ship_to:
            self.ship_to = os.path.abspath(os.path.expanduser(self.ship_to))
        self._start_part()
        return self

    def _start_part(self) -> None:
        self.path = os.path.join(self.segment_dir, self.name + SEGMENT_SUFFIX)
        entry = {"segment": self.name, "job": self.job, "node": self.node, "run": self.run, "part": self.part}
        try:
            os.makedirs(self.segment_dir, mode=0o700, exist_ok=True)
            if os.path.exists(self.path):
                raise AuditLogError(f"{self.path}: segment exists already (run id reused?)")
            if self.ship_to:
                write_index_entry(self.ship_to, self.key, entry)
            self._writer = AuditWriter(
                self.path, key=self.key, checkpoint_interval=0, fsync=self.fsync, clock=self.clock
            ).open()
            self._live_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            fcntl.flock(self._live_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise AuditLogError(f"{self.path}: cannot start the audit segment ({exc.strerror or exc})") from None
        self._count = 0
        self._writer.append("segment_start", dict(entry, key_id=key_id(self.key)))
        self._writer.checkpoint("segment_start")
        self._ship()

    def _ship(self) -> None:
        if not self.ship_to:
            return
        try:
            ship_segment(self.path, self.ship_to)
        except OSError as exc:
            raise AuditLogError(
                f"{self.ship_to}: cannot ship the audit segment {self.name} ({exc.strerror or exc}); "
                "check the ship directory (shared storage) is mounted and writable"
            ) from None

    def append(self, kind: str, data: dict, checkpoint: str | None = None) -> dict:
        if self._ended:
            raise AuditLogError(f"{self.path}: the segment has ended; a new job writes a new segment")
        if self._writer is None:
            self.open()
        record = self._writer.append(kind, data)
        self._count += 1
        if checkpoint or (self.checkpoint_interval > 0 and self._count % self.checkpoint_interval == 0):
            self._writer.checkpoint(checkpoint or "interval")
            if self.ship_checkpoints:
                self._ship()
        if self.max_records > 0 and self._count >= self.max_records:
            self._end_part("rotate")
            self.part += 1
            self._start_part()
        return record

    def _end_part(self, reason: str) -> None:
        # Signed like a checkpoint, and the head names it: an end cut off reads as truncated, not as a dead job.
        self._writer.checkpoint(reason, kind="segment_end", extra={"records": self._writer._next_seq + 1})
        self._writer.close()
        self._writer = None
        self._ship()
        if self.ship_to:
            _remove_local(self.path)
        if self._live_fd >= 0:
            os.close(self._live_fd)
            self._live_fd = -1

    def end(self) -> None:
        """The job ended normally: signed ``segment_end``, final ship, local copy removed."""
        if self._writer is not None:
            self._end_part("end")
        self._ended = True

    def close(self) -> None:
        """Release files without ending the segment (it then verifies as incomplete)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._live_fd >= 0:
            os.close(self._live_fd)
            self._live_fd = -1


# ---------------------------------------------------------------------------------------- verifying


@dataclass
class SegmentState:
    name: str
    job: str | None = None
    node: str | None = None
    run: str | None = None
    part: int | None = None
    records: int = 0
    status: str = "ok"  # complete, incomplete, altered, truncated, missing, duplicate, unlisted
    detail: str = ""


@dataclass
class TrailReport:
    path: str
    segments: list[SegmentState] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: int = 0
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def list_segments(trail: str) -> list[str]:
    """Stems of the shipped segments in ``trail``, sorted."""
    return sorted(n[: -len(SEGMENT_SUFFIX)] for n in os.listdir(trail) if n.endswith(SEGMENT_SUFFIX))


def _first_line(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.readline(1 << 20)


def _last_line(path: str, complete: int) -> bytes:
    with open(path, "rb") as handle:
        start = max(0, complete - 65536)
        handle.seek(start)
        block = handle.read(complete - start)
    return block[block.rfind(b"\n", 0, len(block) - 1) + 1 :]


def _read_index(trail: str, key: bytes | None, report: TrailReport) -> dict[str, dict]:
    entries: dict[str, dict] = {}
    directory = os.path.join(trail, INDEX_DIR)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return entries
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as handle:
                entry = json.loads(handle.read())
            wanted = {k: entry[k] for k in ("segment", "job", "node", "run", "part")}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            report.problems.append(f"index {path}: altered: unreadable entry ({exc})")
            continue
        if key is not None and not hmac.compare_digest(str(entry.get("mac")), index_mac(key, wanted)):
            report.problems.append(f"index {path}: altered: signature invalid")
            continue
        if name != f"{wanted['segment']}.json":
            report.problems.append(f"index {path}: altered: names segment {wanted['segment']}")
            continue
        entries[wanted["segment"]] = wanted
    return entries


def _verify_segment(trail: str, stem: str, key: bytes | None, workers: int, pool, report: TrailReport) -> SegmentState:
    state = SegmentState(name=stem)
    path = os.path.join(trail, stem + SEGMENT_SUFFIX)
    parsed = parse_name(stem)
    if parsed is None:
        state.status, state.detail = "altered", "not a segment name (j<job>_n<node>_r<run>_p<part>)"
        return state
    state.job, state.node, state.run, state.part = parsed["job"], parsed["node"], parsed["run"], parsed["part"]
    result = verify_log(path, key, head=False, workers=workers, pool=pool)
    state.records = result.records
    report.checkpoints += result.checkpoints
    if not result.ok:
        why = str(result.problem)
        state.status = "truncated" if "partial last line" in why else "altered"
        state.detail = why
        return state
    if result.records == 0:
        state.status, state.detail = "truncated", "empty file (its segment_start is gone)"
        return state
    try:
        first = json.loads(_first_line(path))
        data = first["data"]
        named = {k: data[k] for k in ("segment", "job", "node", "run", "part")}
    except (ValueError, KeyError, TypeError):
        first, named = {}, None
    if first.get("kind") != "segment_start" or named is None:
        state.status, state.detail = "altered", "line 1 (seq 0): not a segment_start record"
        return state
    if named["segment"] != stem or segment_name(named["job"], named["node"], named["run"], named["part"]) != stem:
        state.status = "altered"
        state.detail = f"line 1 (seq 0): segment_start names {named['segment']!r}, the file is {stem!r}"
        return state
    state.job, state.node, state.run, state.part = (
        str(named["job"]),
        str(named["node"]),
        str(named["run"]),
        named["part"],
    )
    if key is None:
        return _end_status(path, state, result, None)
    problem = _check_segment_head(path, key, result)
    if problem:
        state.status, state.detail = problem
        return state
    return _end_status(path, state, result, key)


def _check_segment_head(path: str, key: bytes, result) -> tuple[str, str] | None:
    hpath = head_path(path)
    try:
        with open(hpath, encoding="ascii") as handle:
            head = json.loads(handle.read())
        seq, digest, mac = int(head["seq"]), str(head["hash"]), str(head["mac"])
    except FileNotFoundError:
        return "truncated", f"head file {os.path.basename(hpath)} missing: the end cannot be proven"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return "altered", f"head file {os.path.basename(hpath)} unreadable ({exc})"
    if not hmac.compare_digest(mac, head_mac(key, seq, digest)):
        return "altered", f"head file {os.path.basename(hpath)} signature invalid"
    if seq >= result.records:
        return (
            "truncated",
            f"the signed head names seq {seq} but the segment ends at seq {result.records - 1} (records cut off)",
        )
    if result.signed.get(seq) != digest.encode():
        return "altered", f"the signed head does not match the signed record at seq {seq} (segment replaced)"
    return None


def _end_status(path: str, state: SegmentState, result, key: bytes | None) -> SegmentState:
    complete, _size = _complete_size(path)
    try:
        last = json.loads(_last_line(path, complete))
    except ValueError:
        last = {}
    if last.get("kind") == "segment_end":
        data = last.get("data") or {}
        if data.get("records") != result.records:
            state.status = "altered"
            state.detail = f"segment_end says {data.get('records')} records, the segment has {result.records}"
            return state
        state.status = "complete"
        state.detail = str(data.get("reason") or "end")
        return state
    state.status = "incomplete"
    unsigned = result.records - 1 - (max(result.signed) if result.signed else -1)
    state.detail = f"job died after record {result.records - 1}" + (
        f" ({unsigned} record(s) after the last signed checkpoint: chain-protected only)" if unsigned else ""
    )
    return state


def verify_trail(trail: str, key: bytes | None, workers: int = 1) -> TrailReport:
    """Verify every segment shipped to ``trail``, the index and the part numbers of each job.

    Problems (tampering, loss) and warnings (a job that died: its segment has no end record but verifies)
    name the segment. ``workers`` > 1: hash in that many processes (one pool for all segments).
    """
    report = TrailReport(path=trail)
    if not os.path.isdir(trail):
        report.problems.append(f"{trail}: not a directory")
        return report
    stems = list_segments(trail)
    index = _read_index(trail, key, report)
    pool = None
    try:
        if workers > 1 and stems:
            import multiprocessing

            pool = multiprocessing.get_context("fork").Pool(workers)
        for stem in stems:
            report.segments.append(_verify_segment(trail, stem, key, workers, pool, report))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    present = {s.name for s in report.segments}
    for name, entry in sorted(index.items()):
        if name not in present:
            report.segments.append(
                SegmentState(name, entry["job"], entry["node"], entry["run"], entry["part"], 0, "missing",
                             "listed in the index but absent")
            )  # fmt: skip
    by_job: dict[str, dict[int, list[SegmentState]]] = {}
    for state in report.segments:
        if state.job is not None and state.part is not None:
            by_job.setdefault(state.job, {}).setdefault(int(state.part), []).append(state)
    for job, parts in sorted(by_job.items()):
        for part, states in sorted(parts.items()):
            if len(states) > 1:
                for state in states[1:]:
                    if state.status in ("complete", "incomplete"):
                        state.status = "duplicate"
                        state.detail = f"job {job} part {part} also in {states[0].name}"
        for part in range(max(parts)):
            if part not in parts:
                report.problems.append(
                    f"job {job}: part {part} missing (parts {', '.join(str(p) for p in sorted(parts))} present)"
                )
    for state in report.segments:
        listed = state.name in index or not (index or os.path.isdir(os.path.join(trail, INDEX_DIR)))
        if key is not None and state.status in ("complete", "incomplete") and not listed:
            state.status, state.detail = "unlisted", "no index entry (removed?)"
        label = f"{state.name}: {state.status}"
        if state.status == "complete":
            report.records += state.records
        elif state.status == "incomplete":
            report.records += state.records
            report.warnings.append(f"{label}: {state.detail}")
        else:
            report.problems.append(f"{label}: {state.detail}")
    if key is None:
        report.warnings.append("no key given: checkpoints and heads not checked (a re-hashed forgery would pass)")
    return report


# ----------------------------------------------------------------------------------------- reading


def iter_trail(trail: str) -> Iterator[tuple[str, dict]]:
    """(segment, record) for every record of every segment, merged by (time, segment, seq)."""
    streams = [_keyed(trail, stem) for stem in list_segments(trail)]
    for _time, stem, _seq, record in heapq.merge(*streams, key=lambda item: item[:3]):
        yield stem, record


def _keyed(trail: str, stem: str) -> Iterator[tuple[str, str, int, dict]]:
    for _line, record in iter_records(os.path.join(trail, stem + SEGMENT_SUFFIX)):
        if isinstance(record, dict):
            seq = record.get("seq")
            yield str(record.get("time") or ""), stem, seq if isinstance(seq, int) else -1, record
