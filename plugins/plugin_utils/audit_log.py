# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tamper-evident audit log: append-only JSON Lines, hash-chained, with signed checkpoints.

One record per line::

    {"data":{...},"kind":"task","prev":"<sha256 of the previous record>","seq":41,"time":"...Z","hash":"<sha256>"}

* ``hash`` is the SHA-256 of the record's canonical serialisation without ``hash``: JSON with sorted keys,
  compact separators and ``ensure_ascii=True``. Because the line is written in exactly that form with
  ``,"hash":"..."`` appended before the closing brace, a verifier hashes the bytes as written and never
  re-serialises (that is what makes ``verify`` fast).
* ``prev`` chains each record to the one before (64 zeros for the first), ``seq`` counts from 0.
* ``checkpoint`` records carry an HMAC-SHA256 (key kept outside the log) over ``seq`` and ``prev``; the latest
  checkpoint is also written to a side file ``<log>.head``. A forger without the key cannot re-hash a
  changed log so that the checkpoints still verify, and cutting records off the end leaves the head file
  pointing past the end of the log.
* Writers hold an exclusive ``flock`` on ``<log>.lock`` for each append and re-read the tail of the log
  when another process wrote since, so concurrent runs never interleave lines or fork the chain.

Standard library only; no Ansible runtime state.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import itertools
import json
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

GENESIS = "0" * 64
# Record kinds that carry a checkpoint MAC over (seq, prev): ``segment_end`` closes a chain segment
# (plugins/plugin_utils/audit_segments.py); a single log only has checkpoints.
SIGNED_KINDS = ("checkpoint", "segment_end")
_SIGNED_KINDS_B = tuple(k.encode() for k in SIGNED_KINDS)
DEFAULT_CHECKPOINT_INTERVAL = 1000
KEY_BYTES = 32

# The fixed tail every record line ends with; searched only in the last bytes of a line.
_TAIL = re.compile(
    rb',"kind":"([a-z_]{1,32})","prev":"([0-9a-f]{64})","seq":(0|[1-9][0-9]{0,18}),'
    rb'"time":"([0-9T:.Z-]{20,32})","hash":"([0-9a-f]{64})"}\n\Z'
)
_TAIL_MAX = 260
_HASH_SUFFIX_LEN = len(',"hash":"') + 64 + len('"}\n')


class AuditLogError(Exception):
    """The audit log cannot be opened, read or written (message says which file and what to do)."""


def canonical_bytes(record: dict) -> bytes:
    """Canonical serialisation of a record without its ``hash`` (sorted keys, compact, ASCII only)."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default).encode(
        "ascii"
    )


def _json_default(value):
    # Anything a redactor let through that JSON does not know (datetimes, sets, custom objects): its text.
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def utc_now() -> str:
    """Current UTC time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (fixed width)."""
    return utc_iso(datetime.datetime.now(datetime.timezone.utc))


def utc_iso(moment: datetime.datetime) -> str:
    """An aware UTC datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (isoformat is much cheaper than strftime)."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _encode_line(record: dict) -> tuple[bytes, str]:
    body = canonical_bytes(record)
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + b',"hash":"' + digest.encode("ascii") + b'"}\n', digest


def checkpoint_mac(key: bytes, seq: int, prev: str) -> str:
    """HMAC-SHA256 a checkpoint record carries: it signs the chain up to the record before it."""
    return hmac.new(key, f"ipm-audit-checkpoint\n{seq}\n{prev}".encode("ascii"), hashlib.sha256).hexdigest()


def head_mac(key: bytes, seq: int, digest: str) -> str:
    """HMAC-SHA256 of the head file: the newest checkpoint's seq and hash."""
    return hmac.new(key, f"ipm-audit-head\n{seq}\n{digest}".encode("ascii"), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """Short public fingerprint of a key (names the key in checkpoints without revealing it)."""
    return hashlib.sha256(b"ipm-audit-key-id" + key).hexdigest()[:16]


def lock_path(log_path: str) -> str:
    return log_path + ".lock"


def head_path(log_path: str) -> str:
    return log_path + ".head"


# --------------------------------------------------------------------------------------------- keys


def generate_key(path: str, force: bool = False) -> str:
    """Write a new random checkpoint key (hex) to ``path`` with mode 0600; returns its key id."""
    path = os.path.expanduser(path)
    if os.path.exists(path) and not force:
        raise AuditLogError(f"{path}: a key file already exists; keep it (old checkpoints need it) or pass --force")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".audit-key-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key_id(key)


def load_key(path: str) -> bytes:
    """Read a checkpoint key file (64 hex digits)."""
    path = os.path.expanduser(path)
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        raise AuditLogError(
            f"{path}: key file not found; create one with `ipm-audit keygen --key-file {path}`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditLogError(f"{path}: cannot read the key file ({exc}); check its permissions") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise AuditLogError(
            f"{path}: not an audit key (expected at least 32 hex digits); make one with `ipm-audit keygen`"
        )
    return key


# ------------------------------------------------------------------------------------------ writing


def _read_last_line(fd: int, size: int) -> tuple[bytes, int]:
    """Return (last complete line, offset where a partial trailing line starts or ``size``)."""
    if size == 0:
        return b"", 0
    chunk = 65536
    end = size
    buf = b""
    # Find the end of the last complete line (the partial tail, if any, follows it).
    while True:
        start = max(0, end - chunk)
        piece = os.pread(fd, end - start, start)
        buf = piece + buf
        last_nl = buf.rfind(b"\n")
        if last_nl != -1 or start == 0:
            break
        end = start
        chunk *= 2
    if last_nl == -1:
        return b"", 0  # only a partial line in the whole file
    complete_end = start + last_nl + 1
    prev_nl = buf.rfind(b"\n", 0, last_nl)
    while prev_nl == -1 and start > 0:
        new_start = max(0, start - chunk)
        buf = os.pread(fd, start - new_start, new_start) + buf
        last_nl += start - new_start
        start = new_start
        prev_nl = buf.rfind(b"\n", 0, last_nl)
    return buf[prev_nl + 1 : last_nl + 1], complete_end


def parse_tail(line: bytes) -> tuple[str, str, int, str, str] | None:
    """(kind, prev, seq, time, hash) of a record line, or None if the line does not end like a record."""
    match = _TAIL.search(line, max(0, len(line) - _TAIL_MAX))
    if match is None:
        return None
    kind, prev, seq, time, digest = match.groups()
    return kind.decode(), prev.decode(), int(seq), time.decode(), digest.decode()


@dataclass
class AuditWriter:
    """Appends records to one audit log; open once per run, lock per append.

    ``key`` signs checkpoints (None: no checkpoints, the log is then only chain-protected).
    """

    path: str
    key: bytes | None = None
    checkpoint_interval: int = DEFAULT_CHECKPOINT_INTERVAL
    fsync: bool = False
    clock: Callable[[], str] = utc_now
    _fd: int = field(default=-1, repr=False)
    _lock_fd: int = field(default=-1, repr=False)
    _known_size: int = field(default=-1, repr=False)
    _next_seq: int = field(default=0, repr=False)
    _prev: str = field(default=GENESIS, repr=False)

    def open(self) -> AuditWriter:
        self.path = os.path.abspath(os.path.expanduser(self.path))
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            self._lock_fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self.close()
            raise AuditLogError(f"{self.path}: cannot open the audit log for appending ({exc.strerror})") from None
        return self

    def close(self) -> None:
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> AuditWriter:
        return self.open() if self._fd < 0 else self

    def __exit__(self, *exc) -> None:
        self.close()

    def _sync_tail(self) -> None:
        """Under the lock: learn seq/prev from the log's last line when someone else appended."""
        size = os.fstat(self._fd).st_size
        if size == self._known_size:
            return
        last, complete_end = _read_last_line(self._fd, size)
        if complete_end < size:
            # A writer crashed mid-line: cut the fragment off and record what was cut, so the
            # chain stays verifiable and the loss is visible to auditors.
            fragment = os.pread(self._fd, size - complete_end, complete_end)
            os.ftruncate(self._fd, complete_end)
            size = complete_end
            self._adopt(last)
            self._known_size = size
            self._append_locked(
                "recovered",
                {
                    "reason": "partial last line (a writer stopped mid-write) removed",
                    "offset": complete_end,
                    "bytes": len(fragment),
                    "sha256": hashlib.sha256(fragment).hexdigest(),
                },
            )
            return
        self._adopt(last)
        self._known_size = size

    def _adopt(self, last: bytes) -> None:
        if not last:
            self._next_seq, self._prev = 0, GENESIS
            return
        tail = parse_tail(last)
        if tail is None:
            raise AuditLogError(
                f"{self.path}: the last line is not an audit record; run `ipm-audit verify {self.path}` "
                "and move the damaged log aside before appending"
            )
        self._next_seq, self._prev = tail[2] + 1, tail[4]

    def _append_locked(self, kind: str, data: dict) -> dict:
        record = {"data": data, "kind": kind, "prev": self._prev, "seq": self._next_seq, "time": self.clock()}
        line, digest = _encode_line(record)
        written = os.write(self._fd, line)
        if written != len(line):
            # A short write (disk full): remove the fragment so the log stays well-formed.
            os.ftruncate(self._fd, self._known_size)
            raise OSError(28, "short write (disk full?)")
        if self.fsync:
            os.fsync(self._fd)
        self._known_size += len(line)
        self._next_seq += 1
        self._prev = digest
        record["hash"] = digest
        return record

    def _checkpoint_locked(self, reason: str, kind: str = "checkpoint", extra: dict | None = None) -> dict:
        if self.key is None:
            raise AuditLogError(f"{self.path}: no checkpoint key configured")
        data = dict(extra or {})
        data.update(
            {"reason": reason, "key_id": key_id(self.key), "mac": checkpoint_mac(self.key, self._next_seq, self._prev)}
        )
        record = self._append_locked(kind, data)
        self._write_head(record["seq"], record["hash"])
        return record

    def _write_head(self, seq: int, digest: str) -> None:
        head = {"seq": seq, "hash": digest, "key_id": key_id(self.key), "mac": head_mac(self.key, seq, digest)}
        directory = os.path.dirname(self.path)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".audit-head-")
        try:
            os.write(fd, json.dumps(head, sort_keys=True).encode("ascii") + b"\n")
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, head_path(self.path))

    def append(self, kind: str, data: dict, checkpoint: str | None = None) -> dict:
        """Append one record (and a checkpoint when one is due or ``checkpoint`` names a reason)."""
        if self._fd < 0:
            self.open()
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._sync_tail()
                record = self._append_locked(kind, data)
                if self.key is not None and (
                    checkpoint or (self.checkpoint_interval > 0 and self._next_seq % self.checkpoint_interval == 0)
                ):
                    self._checkpoint_locked(checkpoint or "interval")
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except OSError as exc:
            self._known_size = -1  # re-read the tail next time
            raise AuditLogError(f"{self.path}: cannot append to the audit log ({exc.strerror or exc})") from None
        return record

    def checkpoint(self, reason: str = "manual", kind: str = "checkpoint", extra: dict | None = None) -> dict | None:
        """Append a signed checkpoint now (no-op without a key).

        ``kind`` another signed kind (``segment_end``: see :data:`SIGNED_KINDS`), ``extra`` more data fields.
        """
        if self.key is None:
            return None
        if self._fd < 0:
            self.open()
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                self._sync_tail()
                return self._checkpoint_locked(reason, kind, extra)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        except OSError as exc:
            self._known_size = -1
            raise AuditLogError(f"{self.path}: cannot append to the audit log ({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------------------- verifying


@dataclass
class Problem:
    line: int
    seq: int | None
    why: str

    def __str__(self) -> str:
        seq = "?" if self.seq is None else str(self.seq)
        return f"line {self.line} (seq {seq}): {self.why}"


@dataclass
class VerifyReport:
    path: str
    records: int = 0
    checkpoints: int = 0
    last_seq: int | None = None
    last_signed_seq: int | None = None
    unsigned_tail: int = 0
    problem: Problem | None = None
    warnings: list[str] = field(default_factory=list)
    signed: dict = field(default_factory=dict, repr=False)  # seq -> hash (bytes) of each signed record

    @property
    def ok(self) -> bool:
        return self.problem is None


# The tail of a line without its newline. The end anchor fixes every group's position (time holds no quote),
# and ``search`` starting near the end finds the literal prefix fast; values are checked by the hash
# and chain comparisons that follow.
_LINE_TAIL = re.compile(
    rb',"kind":"([a-z_]+)","prev":"(.{64})","seq":([0-9]+),"time":"[^"]+","hash":"(.{64})"}\Z', re.DOTALL
)
_CHUNK = 16 << 20
_PARALLEL_MIN_BYTES = 64 << 20


@dataclass
class _Scan:
    """What one pass over a run of complete lines found (line indexes are relative to the run)."""

    count: int = 0
    first_seq: int | None = None
    first_prev: bytes | None = None
    last_seq: int | None = None
    last_hash: bytes | None = None
    checkpoints: list = field(default_factory=list)  # (seq, hash) of each valid checkpoint
    problem: tuple | None = None  # (relative line index, seq or None, why)


def _scan(buf: bytes, key: bytes | None, expected_seq: int | None, prev: bytes | None) -> _Scan:
    """Check every line of ``buf`` (complete lines only). ``expected_seq``/``prev`` None: take the first line's."""
    out = _Scan()
    sha256 = hashlib.sha256
    search_tail = _LINE_TAIL.search
    cut = _HASH_SUFFIX_LEN - 1  # the lines below have no newline
    lines = buf.split(b"\n")
    lines.pop()  # buf ends with a newline: the last element is empty
    index = -1
    for index, line in enumerate(lines):
        n = len(line)
        m = search_tail(line, n - _TAIL_MAX if n > _TAIL_MAX else 0)
        if m is None:
            out.problem = (index, None, "not an audit record (line does not end with kind/prev/seq/time/hash)")
            break
        kind, rec_prev, seq_b, digest = m.groups()
        seq = int(seq_b)
        if expected_seq is None:
            out.first_seq, out.first_prev = seq, rec_prev
        elif seq != expected_seq:
            why = "record missing" if seq > expected_seq else "record repeated or out of order"
            out.problem = (index, seq, f"{why}: expected seq {expected_seq}, found {seq}")
            break
        elif rec_prev != prev:
            out.problem = (index, seq, "prev does not match the previous record's hash (chain broken)")
            break
        h = sha256(line[: n - cut])
        h.update(b"}")
        actual = h.hexdigest().encode()
        if actual != digest:
            out.problem = (index, seq, "hash does not match the record's content (record altered)")
            break
        if kind in _SIGNED_KINDS_B:
            if key is not None:
                try:
                    mac = str(json.loads(line)["data"]["mac"])
                except (ValueError, KeyError, TypeError):
                    out.problem = (index, seq, "checkpoint without a mac")
                    break
                if not hmac.compare_digest(mac, checkpoint_mac(key, seq, rec_prev.decode())):
                    out.problem = (
                        index,
                        seq,
                        "checkpoint signature invalid (log re-hashed without the key, or verified with the wrong key)",
                    )
                    break
            out.checkpoints.append((seq, actual))
        prev = actual
        expected_seq = seq + 1
    else:
        index += 1
    out.count = index
    if out.count:
        out.last_seq, out.last_hash = expected_seq - 1, prev
    return out


def _scan_range(args) -> _Scan:
    path, start, end, key = args
    with open(path, "rb") as handle:
        handle.seek(start)
        return _scan(handle.read(end - start), key, None, None)


def _split_points(path: str, size: int, parts: int) -> list[int]:
    points = [0]
    with open(path, "rb") as handle:
        for i in range(1, parts):
            handle.seek(size * i // parts)
            handle.readline()
            points.append(min(handle.tell(), size))
    points.append(size)
    return sorted(set(points))


def _complete_size(path: str) -> tuple[int, int]:
    """(size of the complete lines, total size): a partial last line lies between the two."""
    size = os.path.getsize(path)
    if size == 0:
        return 0, 0
    with open(path, "rb") as handle:
        fd = handle.fileno()
        if os.pread(fd, 1, size - 1) == b"\n":
            return size, size
        _last, complete_end = _read_last_line(fd, size)
        return complete_end, size


def verify_log(path: str, key: bytes | None, head: bool = True, workers: int = 0, pool=None) -> VerifyReport:
    """Check chain, hashes, checkpoints and the head file; stops at the first bad record.

    With ``key`` None only the chain is checked (a re-hashed forgery would pass: say so to the user).
    ``workers`` > 1 hashes large logs in that many processes (0: one per CPU for logs over 64 MiB);
    ``pool`` an open multiprocessing pool of that many workers to use instead of starting one.
    """
    report = VerifyReport(path=path)
    try:
        complete, size = _complete_size(path)
    except OSError as exc:
        report.problem = Problem(0, None, f"cannot open the log ({exc.strerror})")
        return report
    if workers == 0:
        workers = min(os.cpu_count() or 1, 8) if complete >= _PARALLEL_MIN_BYTES else 1
    expected_seq, prev = 0, GENESIS.encode()
    line_base = 0  # lines before the current piece
    signed: dict[int, bytes] = report.signed
    try:
        if workers > 1 and complete > 0:
            points = _split_points(path, complete, workers * 4)
            jobs = [(path, a, b, key) for a, b in itertools.pairwise(points) if b > a]
            if pool is not None:
                problem = _stitch(pool.imap(_scan_range, jobs), report, signed, [expected_seq, prev, line_base])
            else:
                import multiprocessing  # only for big logs

                with multiprocessing.get_context("fork").Pool(workers) as own_pool:
                    pieces = own_pool.imap(_scan_range, jobs)
                    problem = _stitch(pieces, report, signed, [expected_seq, prev, line_base])
        else:
            pieces = _serial_pieces(path, complete, key)
            problem = _stitch(pieces, report, signed, [expected_seq, prev, line_base])
    except OSError as exc:
        report.problem = Problem(0, None, f"cannot read the log ({exc.strerror})")
        return report
    if problem is not None:
        report.problem = problem
        return report
    line_no = report.records
    if complete < size:
        report.problem = Problem(
            line_no + 1,
            None,
            f"partial last line ({size - complete} bytes without newline: a writer stopped mid-write)",
        )
        return report
    report.last_seq = report.records - 1 if report.records else None
    last_cp = max(signed) if signed else None
    report.last_signed_seq = last_cp
    report.unsigned_tail = report.records - (last_cp + 1 if last_cp is not None else 0)
    if key is None:
        report.warnings.append("no key given: checkpoints not checked (a re-hashed forgery would pass)")
        return report
    if head:
        report.problem = _check_head(path, key, report, signed, line_no)
        if report.problem is not None:
            return report
    if report.unsigned_tail:
        report.warnings.append(
            f"{report.unsigned_tail} record(s) after the last signed checkpoint (a run in progress or stopped early)"
        )
    return report


def _serial_pieces(path: str, complete: int, key: bytes | None):
    """Yield scans of consecutive 16 MiB runs of lines, each continuing the chain of the one before."""
    state = {"seq": 0, "prev": GENESIS.encode()}
    with open(path, "rb") as handle:
        remaining = complete
        carry = b""
        while remaining > 0:
            block = handle.read(min(_CHUNK, remaining))
            if not block:
                break
            remaining -= len(block)
            block = carry + block
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            if cut == 0:
                continue
            piece = _scan(block[:cut], key, state["seq"], state["prev"])
            piece.first_seq, piece.first_prev = state["seq"], state["prev"]
            if piece.count:
                state["seq"], state["prev"] = piece.last_seq + 1, piece.last_hash
            yield piece
            if piece.problem is not None:
                return


def _stitch(pieces, report: VerifyReport, signed: dict, state: list) -> Problem | None:
    """Join the scans of consecutive pieces: continuity of seq and prev across their boundaries."""
    expected_seq, prev, line_base = state
    for piece in pieces:
        if piece.first_seq is not None and piece.count:
            if piece.first_seq != expected_seq:
                why = "record missing" if piece.first_seq > expected_seq else "record repeated or out of order"
                return Problem(
                    line_base + 1, piece.first_seq, f"{why}: expected seq {expected_seq}, found {piece.first_seq}"
                )
            if piece.first_prev != prev:
                return Problem(
                    line_base + 1, piece.first_seq, "prev does not match the previous record's hash (chain broken)"
                )
        for seq, digest in piece.checkpoints:
            signed[seq] = digest
        report.checkpoints += len(piece.checkpoints)
        if piece.problem is not None:
            index, seq, why = piece.problem
            report.records = expected_seq + index
            return Problem(line_base + index + 1, seq, why)
        if piece.count:
            expected_seq, prev = piece.last_seq + 1, piece.last_hash
        line_base += piece.count
        report.records = expected_seq
    return None


def _check_head(path: str, key: bytes, report: VerifyReport, signed: dict, line_no: int) -> Problem | None:
    hpath = head_path(path)
    try:
        with open(hpath, encoding="ascii") as hf:
            head_rec = json.loads(hf.read())
        head_seq, head_hash, mac = int(head_rec["seq"]), str(head_rec["hash"]), str(head_rec["mac"])
    except FileNotFoundError:
        if report.records:
            return Problem(
                line_no + 1, None, f"head file {hpath} missing: the end of the log cannot be proven (tail may be cut)"
            )
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Problem(line_no + 1, None, f"head file {hpath} unreadable ({exc})")
    if not hmac.compare_digest(mac, head_mac(key, head_seq, head_hash)):
        return Problem(line_no + 1, head_seq, f"head file {hpath} signature invalid")
    if head_seq >= report.records:
        last = report.records - 1
        return Problem(
            line_no + 1,
            head_seq,
            f"log cut: the signed head says checkpoint seq {head_seq} exists but the log ends at seq {last}",
        )
    if signed.get(head_seq) != head_hash.encode():
        return Problem(
            line_no + 1, head_seq, "the signed head does not match the checkpoint at that seq (log replaced)"
        )
    return None


# ----------------------------------------------------------------------------------------- reading


def iter_records(path: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) for each complete record line; skips a partial last line."""
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.endswith(b"\n"):
                return
            try:
                yield line_no, json.loads(line)
            except ValueError:
                continue
