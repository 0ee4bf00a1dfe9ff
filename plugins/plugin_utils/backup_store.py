# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller's backup store: one directory per backup, a signed manifest, atomic completion.

Layout::

    <store>/<customer>/<site>/<terminal>/<UTC time, 20261202T071500Z>/
        files/<relative paths>     the terminal's files (hard links to the previous backup when unchanged)
        manifest.json              what the backup holds (see MANIFEST_FIELDS), sizes and sha256 of every file
        manifest.sig               HMAC-SHA256 over the manifest's canonical JSON, with the key's id

A backup in progress lives in ``<terminal>/.partial-<time>-<random>/`` and only becomes a backup by an atomic
``rename`` once its manifest and signature are written and fsynced: a lost connection or a killed run never
leaves a directory that looks complete. The time of a backup is the store's own (the controller's clock when
the backup began, in its directory name), never the terminal's clock.

Standard library only; no Ansible runtime state. docs/backup-store.md describes the format.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import hmac
import json
import os
import posixpath
import re
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ansible_collections.ipm.fleet.plugins.plugin_utils.audit_log import AuditLogError, key_id, load_key

FORMAT = 1
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
DEFAULT_STORE = "~/.ipm/backups"
DEFAULT_KEY_FILE = "~/.ipm/audit.key"
STORE_ENV = "IPM_BACKUP_STORE"
KEY_ENV = "IPM_BACKUP_KEY_FILE"
AUDIT_KEY_ENV = "IPM_AUDIT_KEY_FILE"
PARTIAL_PREFIX = ".partial-"
DELETING_PREFIX = ".deleting-"
FILES_DIR = "files"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
LOCK_NAME = ".lock"
SIGNATURE_ALGORITHM = "hmac-sha256"
# A partial is stale (prune removes it) when no process holds its lock (the writer died or never locked it)
# and nothing was written to it for this many seconds (0: the lock alone decides).
STALE_AFTER_S = 0
_CHUNK = 1 << 20

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TIME_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
_PARTIAL_NAME = re.compile(r"^\.partial-([0-9]{8}T[0-9]{6}Z)-[0-9a-f]{8,32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Every field of manifest format 1: name -> (required, allowed types, what it is).
MANIFEST_FIELDS: dict[str, tuple[bool, tuple[type, ...], str]] = {
    "format": (True, (int,), "manifest format, 1"),
    "terminal": (True, (str,), "terminal id (the directory's)"),
    "customer": (True, (str,), "customer id (the directory's)"),
    "site": (True, (str,), "site id (the directory's)"),
    "serial_number": (True, (str,), "hardware serial number at backup time"),
    "model": (True, (str,), "hardware model"),
    "timezone": (True, (str,), "the site's IANA time zone"),
    "time_utc": (True, (str,), "the store's time of the backup, ISO UTC with Z (the directory's time)"),
    "time_site": (True, (str,), "the same moment in the site's zone, ISO with offset"),
    "release": (True, (str, type(None)), "installed release version (null: none installed)"),
    "parameters_sha256": (
        True,
        (str, type(None)),
        "digest of the effective parameters, as ipm-app's /health reports it (null: not computable)",
    ),
    "operator": (True, (str, type(None)), "who ran the backup"),
    "change_id": (False, (str, type(None)), "change id (or ticket)"),
    "ticket": (False, (str, type(None)), "ticket id (or change_id)"),
    "database": (True, (dict,), "{transactions, last_transaction, integrity} of the database copy"),
    "files": (True, (list,), "[{path, size, sha256}] of every file under files/"),
    "transferred_bytes": (True, (int,), "bytes fetched from the terminal for this backup"),
    "reused_bytes": (True, (int,), "bytes hard-linked from the previous backup"),
}


class BackupStoreError(Exception):
    """One clear line: which path or terminal, what is wrong, what to do."""


class DamagedPreviousFile(BackupStoreError):
    """``link_unchanged``: the previous backup's copy is not what its manifest says; fetch the file instead."""


# ------------------------------------------------------------------------------------------- helpers


def default_store() -> str:
    """The store path: ``$IPM_BACKUP_STORE`` or ``~/.ipm/backups`` (expanded)."""
    return os.path.expanduser(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def default_key_file() -> str:
    """The signing key file: ``$IPM_BACKUP_KEY_FILE``, else the audit key ``$IPM_AUDIT_KEY_FILE``, else
    ``~/.ipm/audit.key`` (expanded)."""
    return os.path.expanduser(os.environ.get(KEY_ENV) or os.environ.get(AUDIT_KEY_ENV) or DEFAULT_KEY_FILE)


def load_signing_key(path: str | None = None) -> bytes:
    """Read the key that signs manifests (``path`` or :func:`default_key_file`); BackupStoreError if unusable."""
    path = os.path.expanduser(path) if path else default_key_file()
    try:
        return load_key(path)
    except AuditLogError as exc:
        raise BackupStoreError(f"{exc} (signing key of backups: --key-file, {KEY_ENV} or {AUDIT_KEY_ENV})") from None


def time_name(moment: datetime.datetime) -> str:
    """Directory name of a backup taken at ``moment`` (aware; converted to UTC, whole seconds)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise BackupStoreError(f"backup time {moment.isoformat()}: not an aware datetime; pass a UTC time")
    return moment.astimezone(datetime.timezone.utc).strftime(TIME_FORMAT)


def parse_time_name(text: str) -> datetime.datetime:
    """``20261202T071500Z`` -> aware UTC datetime; ValueError if it is not one."""
    if not _TIME_NAME.match(text):
        raise ValueError(text)
    return datetime.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)


def parse_time(text: str) -> datetime.datetime:
    """A backup time as typed by a user: ``20261202T071500Z`` or ISO ``2026-12-02T07:15:00Z`` (or an offset)."""
    text = str(text).strip()
    with contextlib.suppress(ValueError):
        return parse_time_name(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BackupStoreError(
            f"backup time {text!r}: expected 20261202T071500Z or 2026-12-02T07:15:00Z (UTC), or 'latest'"
        ) from None
    if moment.tzinfo is None:
        raise BackupStoreError(f"backup time {text!r}: no time zone; write it in UTC with a Z (2026-12-02T07:15:00Z)")
    return moment.astimezone(datetime.timezone.utc).replace(microsecond=0)


def iso_utc(moment: datetime.datetime) -> str:
    """``2026-12-02T07:15:00Z`` (whole seconds), the form of ``time_utc``."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_id(value, what: str) -> str:
    """A customer, site or terminal id usable as one path component (no ``/``, no ``..``)."""
    if not isinstance(value, str) or not _ID.match(value) or value in (".", ".."):
        raise BackupStoreError(
            f"{what} id {value!r}: not an id (letters, digits, '.', '_', '-'; no '/' or '..'); "
            f"use the registry's {what} id"
        )
    return value


def check_relpath(relpath) -> str:
    """A file's path inside ``files/``: relative, normalised, no ``..``; returned in POSIX form."""
    text = relpath if isinstance(relpath, str) else None
    norm = posixpath.normpath(text) if text else ""
    if (
        not text
        or "\x00" in text
        or text.startswith("/")
        or norm in (".", "..")
        or norm.startswith("../")
        or norm != text.rstrip("/")
    ):
        raise BackupStoreError(
            f"file path {relpath!r}: expected a relative path inside the backup without '..' (e.g. etc/ipm/app.yml)"
        )
    return norm


def canonical_json(manifest: dict) -> bytes:
    """The bytes the signature covers: JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode(
        "ascii"
    )


def manifest_mac(manifest: dict, key: bytes) -> str:
    """HMAC-SHA256 (hex) of the manifest's canonical JSON."""
    return hmac.new(key, canonical_json(manifest), hashlib.sha256).hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def free_mib(path: str) -> int:
    """MiB free for the store's user at ``path`` (or its nearest existing parent)."""
    probe = path
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    try:
        stats = os.statvfs(probe or "/")
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize // (1024 * 1024)


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _zone(name: str) -> datetime.tzinfo:
    return datetime.timezone.utc if name.upper() == "UTC" else ZoneInfo(name)


def _zone_problem(name) -> str | None:
    if not isinstance(name, str) or not name:
        return "not an IANA time zone"
    if name.upper() == "UTC":
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "not an IANA time zone (e.g. Europe/Paris)"
    return None


def manifest_problems(manifest) -> list[str]:
    """What is wrong with the shape of a manifest (empty list: a well-formed format-1 manifest)."""
    if not isinstance(manifest, dict):
        return [f"manifest: expected a JSON object, got {type(manifest).__name__}"]
    try:
        canonical_json(manifest)
    except (TypeError, ValueError) as exc:
        return [f"manifest: not plain JSON data ({exc})"]
    problems = []
    for name, (required, types, what) in MANIFEST_FIELDS.items():
        if name not in manifest:
            if required:
                problems.append(f"manifest: {name} missing ({what})")
            continue
        value = manifest[name]
        if isinstance(value, bool) or not isinstance(value, types):
            problems.append(f"manifest: {name} is {type(value).__name__}, expected {what}")
    if problems:
        return problems
    if manifest["format"] != FORMAT:
        problems.append(f"manifest: format {manifest['format']}, this store reads format {FORMAT}")
    if "change_id" not in manifest and "ticket" not in manifest:
        problems.append("manifest: change_id (or ticket) missing")
    for name in ("terminal", "customer", "site"):
        if not _ID.match(manifest[name]) or manifest[name] in (".", ".."):
            problems.append(f"manifest: {name} {manifest[name]!r} is not an id")
    zone = _zone_problem(manifest["timezone"])
    if zone:
        problems.append(f"manifest: timezone {manifest['timezone']!r} {zone}")
    if not re.match(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z$", manifest["time_utc"]):
        problems.append(f"manifest: time_utc {manifest['time_utc']!r} is not ISO UTC like 2026-12-02T07:15:00Z")
    try:
        site_time = datetime.datetime.fromisoformat(manifest["time_site"])
        if site_time.tzinfo is None:
            raise ValueError
    except ValueError:
        site_time = None
        problems.append(f"manifest: time_site {manifest['time_site']!r} is not ISO with an offset")
    if site_time is not None and not zone and len(problems) == 0:
        utc_time = datetime.datetime.fromisoformat(manifest["time_utc"].replace("Z", "+00:00"))
        local = utc_time.astimezone(_zone(manifest["timezone"]))
        if abs((site_time - utc_time).total_seconds()) >= 1 or site_time.utcoffset() != local.utcoffset():
            problems.append(
                f"manifest: time_site {manifest['time_site']} is not time_utc {manifest['time_utc']} in "
                f"{manifest['timezone']} ({local.replace(microsecond=0).isoformat()})"
            )
    if manifest["parameters_sha256"] is not None and not _HEX64.match(manifest["parameters_sha256"]):
        problems.append("manifest: parameters_sha256 is not 64 hex digits")
    for name in ("transferred_bytes", "reused_bytes"):
        if manifest[name] < 0:
            problems.append(f"manifest: {name} is negative")
    database = manifest["database"]
    for name in ("transactions", "last_transaction", "integrity"):
        if name not in database:
            problems.append(f"manifest: database.{name} missing")
    if "transactions" in database and (
        isinstance(database["transactions"], bool) or not isinstance(database["transactions"], int)
    ):
        problems.append("manifest: database.transactions is not an integer")
    seen = set()
    for index, item in enumerate(manifest["files"]):
        where = f"manifest: files[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where} is not an object {{path, size, sha256}}")
            continue
        path = item.get("path")
        try:
            path = check_relpath(path)
        except BackupStoreError:
            problems.append(f"{where}.path {path!r} is not a relative path without '..'")
            continue
        where = f"manifest: file {path}"
        if path in seen:
            problems.append(f"{where} listed twice")
        seen.add(path)
        size = item.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            problems.append(f"{where}: size {size!r} is not a byte count")
        if not isinstance(item.get("sha256"), str) or not _HEX64.match(item["sha256"]):
            problems.append(f"{where}: sha256 {item.get('sha256')!r} is not 64 hex digits")
    # A file and a directory of the same name cannot both exist under files/.
    for path in seen:
        parent = posixpath.dirname(path)
        while parent:
            if parent in seen:
                problems.append(f"manifest: file {parent} is also the directory of {path}")
                break
            parent = posixpath.dirname(parent)
    return problems


def _unexpected_top(path: str, allowed: tuple[str, ...]) -> list[str]:
    """Names at the top of a backup other than files/, the manifest and the signature (and ``allowed``)."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    known = (FILES_DIR, MANIFEST_NAME, SIGNATURE_NAME, *allowed)
    return sorted(name for name in names if name not in known)


def _walk_files(files_dir: str) -> tuple[dict[str, os.stat_result], list[str]]:
    """Regular files under ``files_dir`` by relative path, and anything that is not a regular file."""
    found: dict[str, os.stat_result] = {}
    odd: list[str] = []
    if os.path.islink(files_dir):
        return found, [f"{FILES_DIR} (a symbolic link, not the backup's own directory)"]
    if not os.path.isdir(files_dir):
        return found, odd
    for dirpath, dirnames, filenames in os.walk(files_dir):
        rel_dir = os.path.relpath(dirpath, files_dir)
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                odd.append(posixpath.normpath(posixpath.join(rel_dir, name)))
                dirnames.remove(name)
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = posixpath.normpath(posixpath.join(rel_dir, name))
            st = os.lstat(full)
            if stat.S_ISREG(st.st_mode):
                found[rel] = st
            else:
                odd.append(rel)
    return found, odd


# ------------------------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class BackupEntry:
    """One complete backup in the store (its time is parsed from its directory name)."""

    customer: str
    site: str
    terminal: str
    time: datetime.datetime
    path: str

    @property
    def time_text(self) -> str:
        return self.time.strftime(TIME_FORMAT)

    @property
    def time_iso(self) -> str:
        return iso_utc(self.time)

    @property
    def files_dir(self) -> str:
        return os.path.join(self.path, FILES_DIR)

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.path, MANIFEST_NAME)

    @property
    def signature_path(self) -> str:
        return os.path.join(self.path, SIGNATURE_NAME)

    @property
    def name(self) -> str:
        """``customer/site/terminal/time``: how messages name a backup."""
        return f"{self.customer}/{self.site}/{self.terminal}/{self.time_text}"

    def manifest(self) -> dict:
        """The parsed manifest; BackupStoreError naming the file if it is missing, unreadable or not JSON."""
        path = self.manifest_path
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise BackupStoreError(f"{path}: manifest missing; the backup is incomplete (ipm-backup verify)") from None
        except OSError as exc:
            raise BackupStoreError(f"{path}: cannot read the manifest ({exc.strerror}); check permissions") from None
        try:
            manifest = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            detail = (
                f"line {exc.lineno} column {exc.colno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else exc
            )
            raise BackupStoreError(f"{path}: manifest is not JSON ({detail}); the backup is damaged") from None
        if not isinstance(manifest, dict):
            raise BackupStoreError(f"{path}: manifest is not a JSON object; the backup is damaged")
        return manifest

    def signature(self) -> dict:
        """The parsed ``manifest.sig`` ({format, algorithm, key_id, mac}); BackupStoreError if absent or bad."""
        path = self.signature_path
        try:
            with open(path, "rb") as handle:
                sig = json.loads(handle.read().decode("utf-8"))
        except FileNotFoundError:
            raise BackupStoreError(f"{self.name}: unsigned (no {SIGNATURE_NAME})") from None
        except OSError as exc:
            raise BackupStoreError(f"{path}: cannot read the signature ({exc.strerror})") from None
        except (UnicodeDecodeError, ValueError):
            raise BackupStoreError(f"{path}: signature file is not JSON; the backup is damaged") from None
        if (
            not isinstance(sig, dict)
            or sig.get("algorithm") != SIGNATURE_ALGORITHM
            or not isinstance(sig.get("mac"), str)
            or not isinstance(sig.get("key_id"), str)
        ):
            raise BackupStoreError(f"{path}: not a {SIGNATURE_ALGORITHM} signature with key_id and mac")
        return sig

    def file_path(self, relpath: str) -> str:
        return os.path.join(self.files_dir, *check_relpath(relpath).split("/"))


@dataclass(frozen=True)
class PartialInfo:
    """A backup in progress or left behind by a run that died (``.partial-*``)."""

    customer: str
    site: str
    terminal: str
    path: str
    started: datetime.datetime | None
    modified: float
    active: bool

    def stale(self, now: float | None = None, stale_after: float = STALE_AFTER_S) -> bool:
        """Nobody holds its lock and nothing was written for ``stale_after`` seconds."""
        now = time.time() if now is None else now
        return not self.active and now - self.modified >= stale_after


@dataclass(frozen=True)
class Stray:
    """Something in a terminal's directory that is neither a backup nor a partial (reported, never removed)."""

    path: str
    reason: str


# ------------------------------------------------------------------------------------------- partial


@dataclass
class PartialBackup:
    """A backup being written. Add files, then ``store.commit(partial, manifest, key)``; or ``abort()``."""

    store: BackupStore
    customer: str
    site: str
    terminal: str
    time: datetime.datetime
    path: str
    _lock_fd: int | None = field(default=None, repr=False)
    _hashed: dict[str, tuple[tuple[int, int, int, int], str]] = field(default_factory=dict, repr=False)
    _previous_files: dict[str, dict[str, dict]] = field(default_factory=dict, repr=False)
    done: bool = False

    @property
    def files_dir(self) -> str:
        return os.path.join(self.path, FILES_DIR)

    @property
    def time_text(self) -> str:
        return self.time.strftime(TIME_FORMAT)

    @property
    def time_iso(self) -> str:
        """The manifest's ``time_utc`` for this backup (the store's clock, whole seconds)."""
        return iso_utc(self.time)

    def __enter__(self) -> PartialBackup:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.abort()

    def _target(self, relpath: str) -> tuple[str, str]:
        rel = check_relpath(relpath)
        if self.done:
            raise BackupStoreError(f"{self.path}: this backup is already committed or aborted")
        target = os.path.join(self.files_dir, *rel.split("/"))
        return rel, target

    def _mkparent(self, target: str) -> None:
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise BackupStoreError(
                f"{target}: a file of the backup is in the way of a directory; check the file list"
            ) from None

    def _remember(self, rel: str, target: str, digest: str) -> None:
        st = os.stat(target)
        self._hashed[rel] = ((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns), digest)

    def forget(self, relpath: str) -> None:
        """Take ``relpath`` out of this backup again (a file linked from the previous backup that the
        terminal no longer has)."""
        rel, target = self._target(relpath)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        self._hashed.pop(rel, None)

    def path_for(self, relpath: str) -> str:
        """Where ``relpath`` goes in this backup (parent directories created): fetch straight there, then
        ``add_file(relpath, that_path)`` hashes and registers it without a copy."""
        target = self._target(relpath)[1]
        try:
            self._mkparent(target)
        except OSError as exc:
            raise self.store._write_error(exc, self) from None
        return target

    def add_file(self, relpath: str, source_path: str, keep_source: bool = False) -> dict:
        """Put a fetched file in: moved (rename) when on the store's file system and not ``keep_source``,
        copied (and fsynced) otherwise. Returns ``{path, size, sha256}`` of the stored file."""
        rel, target = self._target(relpath)
        try:
            self._mkparent(target)
            if os.path.abspath(source_path) == os.path.abspath(target):
                digest = file_sha256(target)
            else:
                moved = False
                if not keep_source:
                    try:
                        os.rename(source_path, target)
                        moved = True
                    except OSError as exc:
                        if exc.errno != errno.EXDEV:
                            raise
                if moved:
                    digest = file_sha256(target)
                else:
                    digest = self._copy(source_path, target)
                    if not keep_source:
                        os.unlink(source_path)
            _fsync_path(target)
            self._remember(rel, target, digest)
        except FileNotFoundError:
            raise BackupStoreError(f"{source_path}: no such file to add to the backup as {rel}") from None
        except OSError as exc:
            raise self.store._write_error(exc, self) from None
        return {"path": rel, "size": os.stat(target).st_size, "sha256": digest}

    def add_stream(self, relpath: str, reader, size: int, expected_sha256: str | None = None) -> dict:
        """Write SIZE bytes read from READER (a file object) as ``relpath``, hashing while writing: into a
        ``.fetch-*`` file of the partial, fsynced, then renamed into place (one pass, no re-read).

        With EXPECTED_SHA256 (the digest the terminal staged), a mismatch or a short stream raises
        BackupStoreError and leaves nothing of that file. Returns ``{path, size, sha256}``."""
        rel, target = self._target(relpath)
        temporary = None
        try:
            self._mkparent(target)
            handle, temporary = tempfile.mkstemp(dir=self.path, prefix=".fetch-")
            digest, written = hashlib.sha256(), 0
            with os.fdopen(handle, "wb") as out:
                while written < size:
                    chunk = reader.read(min(_CHUNK, size - written))
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            hexdigest = digest.hexdigest()
            if written != size or (expected_sha256 is not None and hexdigest != expected_sha256):
                raise BackupStoreError(
                    f"/{rel} arrived with sha256 {hexdigest[:12]} ({written} bytes), the terminal staged "
                    f"{str(expected_sha256)[:12]} ({size} bytes): the transfer was damaged or cut"
                )
            os.rename(temporary, target)
            temporary = None
            self._remember(rel, target, hexdigest)
        except OSError as exc:
            raise self.store._write_error(exc, self) from None
        finally:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        return {"path": rel, "size": size, "sha256": hexdigest}

    @staticmethod
    def _copy(source: str, target: str) -> str:
        digest = hashlib.sha256()
        with open(source, "rb") as src, open(target, "wb") as dst:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, target)
        return digest.hexdigest()

    def link_unchanged(self, previous: BackupEntry, relpath: str) -> dict:
        """Take an unchanged file from ``previous`` by hard link (a copy across devices), after re-hashing it.

        Returns ``{path, size, sha256}``. If the previous copy differs from its manifest (a damaged backup),
        raises DamagedPreviousFile and leaves the partial as it was: fetch that file instead."""
        rel, target = self._target(relpath)
        listed = self._previous_files.get(previous.path)
        if listed is None:
            files = previous.manifest().get("files")
            listed = {f.get("path"): f for f in files if isinstance(f, dict)} if isinstance(files, list) else {}
            self._previous_files[previous.path] = listed
        if rel not in listed:
            raise BackupStoreError(f"{previous.name}: holds no file {rel} to reuse; fetch it instead")
        item = listed[rel]
        source = previous.file_path(rel)
        try:
            self._mkparent(target)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            try:
                os.link(source, target)
                digest = file_sha256(target)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP):
                    raise
                digest = self._copy(source, target)
        except FileNotFoundError:
            raise DamagedPreviousFile(
                f"{source}: missing in the previous backup {previous.name}; fetch the file instead (ipm-backup verify)"
            ) from None
        except OSError as exc:
            raise self.store._write_error(exc, self) from None
        if digest != item.get("sha256") or os.stat(target).st_size != item.get("size"):
            os.unlink(target)
            raise DamagedPreviousFile(
                f"{source}: differs from the manifest of {previous.name} (damaged); fetch the file instead"
            )
        self._remember(rel, target, digest)
        return {"path": rel, "size": item["size"], "sha256": digest}

    def abort(self) -> None:
        """Remove the partial backup (idempotent)."""
        self.done = True
        shutil.rmtree(self.path, ignore_errors=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None


# --------------------------------------------------------------------------------------------- store


class BackupStore:
    """The backup store rooted at ``root`` (created on the first backup)."""

    def __init__(self, root: str | None = None):
        self.root = os.path.abspath(os.path.expanduser(root if root else default_store()))
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise BackupStoreError(
                f"{self.root}: the backup store is not a directory; pass --store DIR or set {STORE_ENV}"
            )

    def __repr__(self) -> str:
        return f"BackupStore({self.root!r})"

    def exists(self) -> bool:
        return os.path.isdir(self.root)

    # ------------------------------------------------------------------------------- errors

    def _write_error(self, exc: OSError, partial: PartialBackup | None = None) -> BackupStoreError:
        """A write failed: remove the partial and say what to do."""
        if partial is not None:
            partial.abort()
        where = exc.filename or (partial.path if partial else self.root)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return BackupStoreError(
                f"store full: {free_mib(self.root)} MiB free on {self.root} (writing {where}); "
                "free space or remove old backups (ipm-backup prune), then back up again"
            )
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return BackupStoreError(
                f"store not writable: {where} ({exc.strerror}); fix its permissions or pass another store"
            )
        return BackupStoreError(f"{where}: cannot write the backup ({exc.strerror})")

    # ------------------------------------------------------------------------------- writing

    def terminal_dir(self, customer: str, site: str, terminal: str) -> str:
        return os.path.join(
            self.root, check_id(customer, "customer"), check_id(site, "site"), check_id(terminal, "terminal")
        )

    def begin(self, customer: str, site: str, terminal: str, now_utc: datetime.datetime) -> PartialBackup:
        """Start a backup taken at ``now_utc`` (the controller's clock): a locked ``.partial-*`` directory."""
        moment = datetime.datetime.strptime(time_name(now_utc), TIME_FORMAT).replace(tzinfo=datetime.timezone.utc)
        directory = self.terminal_dir(customer, site, terminal)
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise BackupStoreError(f"{self.root}: the backup store is not a directory; pass another store")
        if os.path.isdir(directory) and os.path.exists(os.path.join(directory, time_name(moment))):
            raise BackupStoreError(
                f"{terminal}: a backup at {time_name(moment)} exists already in {directory}; wait a second and retry"
            )
        path = os.path.join(directory, f"{PARTIAL_PREFIX}{time_name(moment)}-{secrets.token_hex(4)}")
        partial = None
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            os.mkdir(path, 0o750)
            partial = PartialBackup(self, customer, site, terminal, moment, path)
            os.mkdir(partial.files_dir, 0o750)
            fd = os.open(os.path.join(path, LOCK_NAME), os.O_CREAT | os.O_RDWR, 0o640)
            partial._lock_fd = fd
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except NotADirectoryError:
            if partial is not None:
                partial.abort()
            raise BackupStoreError(
                f"{directory}: a file is in the way of the store's directories; move it away"
            ) from None
        except OSError as exc:
            if partial is None and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            raise self._write_error(exc, partial) from None
        return partial

    def resume(self, path: str) -> PartialBackup:
        """Re-open a partial backup begun by another process (e.g. another task of the same run)."""
        path = os.path.abspath(path)
        match = _PARTIAL_NAME.match(os.path.basename(path))
        rel = os.path.relpath(path, self.root).split(os.sep)
        if not match or len(rel) != 4 or not os.path.isdir(path):
            raise BackupStoreError(f"{path}: not a partial backup of the store {self.root}")
        customer, site, terminal = (
            check_id(v, w) for v, w in zip(rel[:3], ("customer", "site", "terminal"), strict=True)
        )
        moment = parse_time_name(match.group(1))
        partial = PartialBackup(self, customer, site, terminal, moment, path)
        try:
            fd = os.open(os.path.join(path, LOCK_NAME), os.O_CREAT | os.O_RDWR, 0o640)
        except OSError as exc:
            raise self._write_error(exc) from None
        partial._lock_fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            partial._unlock()
            raise BackupStoreError(f"{path}: another process is still writing this backup") from None
        return partial

    def commit(self, partial: PartialBackup, manifest: dict, key: bytes) -> BackupEntry:
        """Check the manifest against the files, sign it, make the backup complete (atomic rename).

        Refuses (BackupStoreError, partial removed) a malformed manifest, one naming another terminal, customer,
        site or time, a listed file that is missing or differs in size or sha256, or a file not listed."""
        if partial.done:
            raise BackupStoreError(f"{partial.path}: this backup is already committed or aborted")
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            partial.abort()
            raise BackupStoreError("signing key: expected at least 16 bytes (load it with load_signing_key)")
        problems = manifest_problems(manifest)
        if not problems:
            for name in ("customer", "site", "terminal"):
                if manifest[name] != getattr(partial, name):
                    problems.append(
                        f"manifest: {name} {manifest[name]!r}, but the backup is of {getattr(partial, name)!r}"
                    )
            if manifest["time_utc"][:19] != partial.time_iso[:19]:
                problems.append(
                    f"manifest: time_utc {manifest['time_utc']} differs from the store's time {partial.time_iso} "
                    "(use partial.time_iso)"
                )
            problems.extend(self._file_problems(partial, manifest["files"]))
        if problems:
            partial.abort()
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise BackupStoreError(
                f"{partial.terminal}: backup refused, {'; '.join(problems[:3])}{more}; nothing was stored"
            )
        target = os.path.join(os.path.dirname(partial.path), partial.time_text)
        signature = {
            "format": FORMAT,
            "algorithm": SIGNATURE_ALGORITHM,
            "key_id": key_id(bytes(key)),
            "mac": manifest_mac(manifest, bytes(key)),
        }
        try:
            self._write_json(os.path.join(partial.path, MANIFEST_NAME), manifest, indent=2)
            self._write_json(os.path.join(partial.path, SIGNATURE_NAME), signature)
            for dirpath, _dirs, _files in os.walk(partial.files_dir):
                _fsync_path(dirpath, directory=True)
            _fsync_path(partial.path, directory=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(partial.path, LOCK_NAME))
            if os.path.exists(target):
                partial.abort()
                raise BackupStoreError(f"{target}: a backup of that time exists already; nothing was replaced")
            os.rename(partial.path, target)
            _fsync_path(os.path.dirname(target), directory=True)
        except OSError as exc:
            raise self._write_error(exc, partial) from None
        partial.done = True
        partial.path = target
        partial._unlock()
        return BackupEntry(partial.customer, partial.site, partial.terminal, partial.time, target)

    @staticmethod
    def _write_json(path: str, data: dict, indent: int | None = None) -> None:
        text = json.dumps(data, sort_keys=True, indent=indent, ensure_ascii=True) + "\n"
        with open(path, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    @staticmethod
    def _file_problems(partial: PartialBackup, files: list) -> list[str]:
        found, odd = _walk_files(partial.files_dir)
        problems = [f"{rel}: not a regular file" for rel in odd]
        problems.extend(
            f"{name} is in the backup beside files/ (only files/ is backed up)"
            for name in _unexpected_top(partial.path, (LOCK_NAME,))
        )
        for item in files:
            rel = check_relpath(item["path"])
            st = found.pop(rel, None)
            if st is None:
                problems.append(f"file {rel} is listed but not in the backup")
                continue
            if st.st_size != item["size"]:
                problems.append(f"file {rel} has {st.st_size} bytes, the manifest says {item['size']}")
                continue
            cached = partial._hashed.get(rel)
            ident = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
            digest = cached[1] if cached and cached[0] == ident else file_sha256(os.path.join(partial.files_dir, rel))
            if digest != item["sha256"]:
                problems.append(f"file {rel} has sha256 {digest[:12]}..., the manifest says {item['sha256'][:12]}...")
        problems.extend(f"file {rel} is in the backup but not in the manifest" for rel in sorted(found))
        return problems

    # ------------------------------------------------------------------------------- reading

    def _terminal_dirs(self, customer=None, site=None, terminal=None):
        """(customer, site, terminal, path) of every terminal directory matching the filters."""
        for value, what in ((customer, "customer"), (site, "site"), (terminal, "terminal")):
            if value is not None:
                check_id(value, what)
        if not os.path.isdir(self.root):
            return
        for c in self._subdirs(self.root, customer):
            for s in self._subdirs(os.path.join(self.root, c), site):
                for t in self._subdirs(os.path.join(self.root, c, s), terminal):
                    yield c, s, t, os.path.join(self.root, c, s, t)

    @staticmethod
    def _subdirs(path: str, wanted: str | None) -> list[str]:
        if wanted is not None:
            return [wanted] if os.path.isdir(os.path.join(path, wanted)) else []
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            raise BackupStoreError(f"{path}: cannot read the store ({exc.strerror}); check its permissions") from None
        return [n for n in names if _ID.match(n) and os.path.isdir(os.path.join(path, n))]

    def _scan(self, customer=None, site=None, terminal=None):
        entries, partials, strays = [], [], []
        for c, s, t, directory in self._terminal_dirs(customer, site, terminal):
            try:
                names = sorted(os.listdir(directory))
            except OSError as exc:
                raise BackupStoreError(f"{directory}: cannot read ({exc.strerror}); check its permissions") from None
            for name in names:
                path = os.path.join(directory, name)
                if name.startswith(PARTIAL_PREFIX):
                    partials.append(self._partial_info(c, s, t, path))
                    continue
                if name.startswith(DELETING_PREFIX):
                    partials.append(PartialInfo(c, s, t, path, None, 0.0, False))
                    continue
                try:
                    moment = parse_time_name(name)
                except ValueError:
                    strays.append(Stray(path, "name is not a UTC time like 20261202T071500Z; not a backup"))
                    continue
                if not os.path.isdir(path):
                    strays.append(Stray(path, "a file where a backup directory should be"))
                    continue
                entries.append(BackupEntry(c, s, t, moment, path))
        entries.sort(key=lambda e: (e.time, e.path))
        return entries, partials, strays

    @staticmethod
    def _partial_info(customer, site, terminal, path) -> PartialInfo:
        match = _PARTIAL_NAME.match(os.path.basename(path))
        started = parse_time_name(match.group(1)) if match else None
        modified = 0.0
        for dirpath, _dirs, files in os.walk(path):
            for name in [*files, "."]:
                with contextlib.suppress(OSError):
                    modified = max(modified, os.lstat(os.path.join(dirpath, name)).st_mtime)
        active = False
        try:
            fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY)
        except OSError:
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                active = True
            finally:
                os.close(fd)
        return PartialInfo(customer, site, terminal, path, started, modified, active)

    def entries(self, customer: str | None = None, site: str | None = None, terminal: str | None = None):
        """Complete backups matching the filters, oldest first."""
        return self._scan(customer, site, terminal)[0]

    def partials(self, customer=None, site=None, terminal=None) -> list[PartialInfo]:
        """Backups in progress or left by runs that died (never listed as backups)."""
        return self._scan(customer, site, terminal)[1]

    def strays(self, customer=None, site=None, terminal=None) -> list[Stray]:
        """Things in terminal directories that are neither backups nor partials."""
        return self._scan(customer, site, terminal)[2]

    def scan(self, customer=None, site=None, terminal=None):
        """(entries, partials, strays) in one walk of the store."""
        return self._scan(customer, site, terminal)

    def terminals(self) -> list[str]:
        return sorted({t for _c, _s, t, _p in self._terminal_dirs()})

    def no_backup_error(self, terminal: str) -> BackupStoreError:
        known = self.terminals()
        if not known:
            return BackupStoreError(f"terminal {terminal}: no backup; the store {self.root} holds no backup yet")
        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        return BackupStoreError(
            f"terminal {terminal}: no backup in {self.root}; terminals with backups: {shown} (ipm-backup list)"
        )

    def latest(self, terminal: str) -> BackupEntry:
        """The newest backup of ``terminal``; BackupStoreError naming the terminal and what exists."""
        found = self.entries(terminal=check_id(terminal, "terminal"))
        if not found:
            raise self.no_backup_error(terminal)
        return found[-1]

    def find(self, terminal: str, time_text: str | datetime.datetime | None) -> BackupEntry:
        """The backup of ``terminal`` at ``time_text`` (``20261202T071500Z``, ISO UTC, a datetime, or
        ``latest``/None for the newest)."""
        check_id(terminal, "terminal")
        if time_text is None or (isinstance(time_text, str) and time_text.strip().lower() in ("", "latest")):
            return self.latest(terminal)
        if isinstance(time_text, datetime.datetime):
            moment = parse_time_name(time_name(time_text))
        else:
            moment = parse_time(time_text)
        found = self.entries(terminal=terminal)
        if not found:
            raise self.no_backup_error(terminal)
        for entry in found:
            if entry.time == moment:
                return entry
        times = [e.time_text for e in found]
        shown = ", ".join(times[-8:]) + (f" (and {len(times) - 8} older)" if len(times) > 8 else "")
        raise BackupStoreError(
            f"terminal {terminal}: no backup at {time_name(moment)}; its backups: {shown} (ipm-backup list --terminal {terminal})"
        )

    def previous(self, customer: str, site: str, terminal: str) -> BackupEntry | None:
        """The newest backup of the terminal under this customer and site, or None (for incremental reuse)."""
        found = self.entries(customer, site, terminal)
        return found[-1] if found else None

    # ------------------------------------------------------------------------------- removing

    def remove(self, entry_or_partial) -> None:
        """Delete a backup or a partial: first renamed so that it stops looking like a backup, then removed."""
        path = entry_or_partial.path
        base = os.path.basename(path)
        if base.startswith(DELETING_PREFIX):
            doomed = path
        else:
            doomed = os.path.join(os.path.dirname(path), f"{DELETING_PREFIX}{base.lstrip('.')}-{secrets.token_hex(4)}")
            try:
                os.rename(path, doomed)
            except FileNotFoundError:
                return
            except OSError as exc:
                raise BackupStoreError(
                    f"{path}: cannot remove ({exc.strerror}); check the store's permissions"
                ) from None
        shutil.rmtree(doomed, ignore_errors=True)
        if os.path.exists(doomed):
            raise BackupStoreError(f"{doomed}: could not be removed completely; check its permissions")


# -------------------------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    entry: BackupEntry
    problems: list[str]
    files: int = 0
    hashed: int = 0
    hashed_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def default_seed(today: datetime.date | None = None) -> int:
    """The day number (days since 1970-01-01, UTC): successive days read successive shares."""
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    return (today - datetime.date(1970, 1, 1)).days


def in_subset(entry: BackupEntry, relpath: str, subset: float, seed: int) -> bool:
    """Whether ``relpath`` of ``entry`` is re-hashed in the share ``subset`` of run ``seed``.

    Each file has a fixed position in [0, 1) (from a hash of the backup and path); run ``seed`` reads the window
    [seed*subset, seed*subset + subset) mod 1, so ceil(1/subset) successive seeds read every file at least once."""
    if subset >= 1:
        return True
    if subset <= 0:
        return False
    digest = hashlib.sha256(f"{entry.customer}/{entry.site}/{entry.terminal}/{entry.time_text}/{relpath}".encode())
    position = int.from_bytes(digest.digest()[:8], "big") / 2**64
    start = (seed * subset) % 1.0
    offset = (position - start) % 1.0
    return offset < subset


def verify_report(entry: BackupEntry, key: bytes | None, subset: float | None = None, seed=None) -> VerifyReport:
    """Check a backup: signature, manifest shape and owner, every file present with its size, no extra file, and
    the sha256 of every file (or, with ``subset`` in (0, 1), of a rotating share chosen by ``seed``)."""
    report = VerifyReport(entry, [])
    problems = report.problems
    try:
        manifest = entry.manifest()
    except BackupStoreError as exc:
        problems.append(str(exc).replace(entry.manifest_path, MANIFEST_NAME))
        if not os.path.exists(entry.signature_path):
            problems.append(f"unsigned: no {SIGNATURE_NAME}")
        return report
    if key is None:
        problems.append("signature not checked: no key")
    else:
        try:
            sig = entry.signature()
        except BackupStoreError as exc:
            text = str(exc)
            problems.append(
                f"unsigned: no {SIGNATURE_NAME}"
                if "unsigned" in text
                else text.replace(entry.signature_path, SIGNATURE_NAME)
            )
        else:
            if sig["key_id"] != key_id(bytes(key)):
                problems.append(
                    f"bad signature: signed with key {sig['key_id']}, the key given is {key_id(bytes(key))} "
                    "(pass the right --key-file)"
                )
            elif not hmac.compare_digest(sig["mac"], manifest_mac(manifest, bytes(key))):
                problems.append("bad signature: the manifest was changed after it was signed")
    shape = manifest_problems(manifest)
    if shape:
        problems.extend(shape)
        return report
    for name in ("customer", "site", "terminal"):
        if manifest[name] != getattr(entry, name):
            problems.append(
                f"manifest of {name} {manifest[name]!r} in the directory of {name} {getattr(entry, name)!r}"
            )
    if manifest["time_utc"][:19] != entry.time_iso[:19]:
        problems.append(f"manifest time_utc {manifest['time_utc']} differs from the directory's time {entry.time_iso}")
    if subset is not None and not 0 <= float(subset) <= 1:
        raise BackupStoreError(f"subset {subset!r}: expected a share between 0 and 1 (e.g. 0.1 for 10%)")
    seed = default_seed() if seed is None else seed
    found, odd = _walk_files(entry.files_dir)
    problems.extend(f"{name}: extra, beside files/ (not part of a backup)" for name in _unexpected_top(entry.path, ()))
    problems.extend(f"file {rel}: not a regular file" for rel in odd)
    for item in manifest["files"]:
        rel = check_relpath(item["path"])
        report.files += 1
        st = found.pop(rel, None)
        if st is None:
            problems.append(f"file {rel}: missing")
            continue
        if st.st_size != item["size"]:
            what = "truncated" if st.st_size < item["size"] else "wrong size"
            problems.append(f"file {rel}: {what} ({st.st_size} bytes, the manifest says {item['size']})")
            continue
        if subset is not None and not in_subset(entry, rel, float(subset), seed):
            continue
        try:
            digest = file_sha256(os.path.join(entry.files_dir, rel))
        except OSError as exc:
            problems.append(f"file {rel}: cannot read ({exc.strerror})")
            continue
        report.hashed += 1
        report.hashed_bytes += st.st_size
        if digest != item["sha256"]:
            problems.append(f"file {rel}: wrong sha256 ({digest[:12]}..., the manifest says {item['sha256'][:12]}...)")
    problems.extend(f"file {rel}: extra (not in the manifest)" for rel in sorted(found))
    return report


def verify(entry: BackupEntry, key: bytes | None, subset: float | None = None, seed=None) -> list[str]:
    """Problems of a backup (empty: intact and signed with ``key``); see :func:`verify_report`."""
    return verify_report(entry, key, subset, seed).problems
