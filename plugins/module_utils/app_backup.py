# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A terminal's backup and restore, on the terminal: what a backup holds and how it goes back.

**Prepare** (:func:`prepare`) makes a consistent copy of the application's data while ipm-app keeps
serving: the sqlite database through sqlite's online backup API (one step, a consistent snapshot;
the application runs in WAL mode so it keeps writing meanwhile), checked with ``PRAGMA
integrity_check``, its transactions counted and the last one read; beside it the parameters
(``/etc/ipm/app.yml``), the hardware identity (``/etc/ipm/hardware.yml``), the peripheral
configuration (``/etc/ipm/interfaces.yml``, ``/etc/ipm/payment-module.yml``), the installed
release's manifest and a small ``release.json`` (version and the ``current`` link). Everything is
staged in a directory of its own (mode 0700) and listed with its size and sha256; a failure (the
terminal's disk full, an unreadable file) removes the staging and says why.

**Stream** (:func:`stream`) is prepare and the transfer in one process on the terminal, run by the
controller's ``ipm.fleet.backup`` over one SSH command (no module start-up): it stages, writes one
header line (what was staged, each file's size and sha256, and which files it sends: those whose
sha256 differs from the controller's previous backup), then the files to send as one ``tar``
stream, and removes the staging.

**Restore** (:func:`restore`) puts a backup's files back: they were copied into the staging by the
controller and are checked against the manifest's sha256 first; then ipm-app is stopped (a clear
error when it cannot be), the current data and parameters are copied aside, the backup's files
written in place (the database's old ``-wal``/``-shm`` removed), each re-hashed, ipm-app started and
required healthy on the backup's release and parameters digest, and the restored database must hold
the manifest's transactions (count up to the last one, the last one itself). Any failure after the
stop puts the copied-aside files back and starts ipm-app again.

Paths in a backup are the terminal's absolute paths without the leading ``/`` (``etc/ipm/app.yml``).
Every path is under a ``root`` (default ``/``) so the logic runs on a temporary tree in unit tests.
Standard library only: this runs on terminals.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

from ansible_collections.ipm.fleet.plugins.module_utils import release_switch as rs
from ansible_collections.ipm.fleet.plugins.module_utils.app_health import HEALTH_PORT, health_url

STAGING = "/var/lib/ipm/backup-staging"
PREVIOUS = "/var/lib/ipm/restore-previous"
DATABASE = "var/lib/ipm/app/transactions.sqlite3"
PARAMETERS = "etc/ipm/app.yml"
HARDWARE = "etc/ipm/hardware.yml"
PERIPHERALS = ("etc/ipm/interfaces.yml", "etc/ipm/payment-module.yml")
RELEASE_INFO = "release.json"
# What a restore writes back: the data, the parameters and the peripheral configuration. Never the
# hardware identity (it belongs to the box) nor the release (ipm.fleet.release installs that).
RESTORED = (DATABASE, PARAMETERS, *PERIPHERALS)
MODES = {DATABASE: 0o644, PARAMETERS: 0o600}
TRANSACTION_COLUMNS = ("id", "created_at", "amount", "currency", "method", "source", "release")


class BackupError(rs.DeliveryError):
    """A backup or restore step failed; the message says which, why and what to do."""


def sha256_of(path):
    return rs.sha256_of(path)


def _under(root, relpath):
    return os.path.join(root, relpath)


def _disk_full(exc):
    return (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()
    )


def _free_mib(path):
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize / 1048576.0


# --- the database ---------------------------------------------------------------------------------


def database_summary(path):
    """(integrity, transactions, last transaction) of the sqlite file PATH, opened read-only."""
    connection = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        integrity = "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check").fetchall())
        count = connection.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
        row = connection.execute(
            "SELECT %s FROM transactions ORDER BY id DESC LIMIT 1" % ", ".join(TRANSACTION_COLUMNS)
        ).fetchone()
    finally:
        connection.close()
    last = dict(zip(TRANSACTION_COLUMNS, row, strict=False)) if row else None
    return integrity, count, last


def transactions_up_to(path, last):
    """(rows with an id up to LAST's, the row with LAST's id or None) in the sqlite file PATH."""
    connection = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    try:
        connection.execute("PRAGMA busy_timeout = 5000")
        if not last:
            return connection.execute("SELECT COUNT(*) FROM transactions").fetchone()[0], None
        count = connection.execute("SELECT COUNT(*) FROM transactions WHERE id <= ?", (last["id"],)).fetchone()[0]
        row = connection.execute(
            "SELECT %s FROM transactions WHERE id = ?" % ", ".join(TRANSACTION_COLUMNS), (last["id"],)
        ).fetchone()
    finally:
        connection.close()
    return count, dict(zip(TRANSACTION_COLUMNS, row, strict=False)) if row else None


def copy_database(source, target):
    """sqlite's online backup of SOURCE into TARGET, in one step: a consistent snapshot while the
    application keeps writing (WAL mode: its writers are not blocked).

    TARGET is a temporary copy (streamed to the controller, then removed): written without fsync and
    without a rollback journal, so the copy costs the terminal page-cache writes, not disk syncs; a
    crash meanwhile leaves only a staging that the next backup replaces."""
    reader = sqlite3.connect("file:%s?mode=ro" % source, uri=True, timeout=30)
    try:
        writer = sqlite3.connect(target)
        try:
            writer.execute("PRAGMA synchronous = OFF")
            writer.execute("PRAGMA journal_mode = OFF")
            reader.backup(writer, pages=-1)
        finally:
            writer.close()
    finally:
        reader.close()


# --- prepare ----------------------------------------------------------------------------------------


def _file_entry(staging, relpath):
    path = _under(staging, relpath)
    return {"path": relpath, "size": os.path.getsize(path), "sha256": sha256_of(path)}


def _stage_copy(root, staging, relpath):
    source = _under(root, relpath)
    if not os.path.isfile(source):
        return False
    target = _under(staging, relpath)
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    shutil.copyfile(source, target)
    return True


def release_info(root="/"):
    """The installed release: its version, the ``current`` link's target, its manifest's path."""
    link = os.path.join(root, rs.APP_ROOT.lstrip("/"), "current")
    try:
        target = os.readlink(link)
    except OSError:
        raise BackupError(
            "no installed release: %s is not a link; install one with ipm.fleet.release first" % rs.APP_ROOT
        ) from None
    version = os.path.basename(target.rstrip("/"))
    manifest = os.path.join(rs.APP_ROOT.lstrip("/"), "releases", version, "manifest.yml")
    return {"version": version, "current": target, "manifest": manifest}


def plan(root="/"):
    """What a backup would stage, from the live files (check mode): path and size of each."""
    info = release_info(root)
    planned = []
    for relpath in (DATABASE, PARAMETERS, HARDWARE, *PERIPHERALS, info["manifest"]):
        path = _under(root, relpath)
        if os.path.isfile(path):
            entry = {"path": relpath, "size": os.path.getsize(path)}
            if relpath != DATABASE:  # the database's copy differs from the live file; the others are cheap to hash
                entry["sha256"] = sha256_of(path)
            planned.append(entry)
    return {"release": info, "files": planned}


def prepare(staging=STAGING, root="/"):
    """Stage a consistent copy of everything a backup holds; return what was staged.

    Raises BackupError (staging removed) on any failure, naming the disk-full case.
    """
    info = release_info(root)
    database = _under(root, DATABASE)
    if not os.path.isfile(database):
        raise BackupError("no application database at /%s: is ipm-app installed and has it run once?" % DATABASE)
    cleanup(staging)
    parent = os.path.dirname(staging.rstrip("/"))
    need_mib = (
        sum(
            os.path.getsize(_under(root, p))
            for p in (DATABASE, DATABASE + "-wal", PARAMETERS, HARDWARE, *PERIPHERALS)
            if os.path.isfile(_under(root, p))
        )
        / 1048576.0
    )
    try:
        os.makedirs(parent, exist_ok=True)
        free = _free_mib(parent)
        if free is not None and free < need_mib:
            raise OSError(errno.ENOSPC, "not enough space for the staging")
        os.mkdir(staging, 0o700)
        os.chmod(staging, 0o700)
        target = _under(staging, DATABASE)
        os.makedirs(os.path.dirname(target), mode=0o700)
        copy_database(database, target)
        integrity, count, last = database_summary(target)
        if integrity != "ok":
            raise BackupError("the copy of /%s fails PRAGMA integrity_check: %s" % (DATABASE, integrity[:500]))
        staged = [DATABASE]
        for relpath in (PARAMETERS, HARDWARE, *PERIPHERALS, info["manifest"]):
            if _stage_copy(root, staging, relpath):
                staged.append(relpath)
        if PARAMETERS not in staged:
            raise BackupError("no parameters file /%s on the terminal" % PARAMETERS)
        if HARDWARE not in staged:
            raise BackupError("no hardware identity /%s on the terminal" % HARDWARE)
        rs._write_atomically(
            _under(staging, RELEASE_INFO), (json.dumps(info, sort_keys=True) + "\n").encode("utf-8"), 0o600
        )
        staged.append(RELEASE_INFO)
        files = [_file_entry(staging, relpath) for relpath in staged]
    except BaseException as exc:
        cleanup(staging)
        free = _free_mib(parent)
        # sqlite may say "disk I/O error" when a write meets a full disk: the free space decides too.
        # (the copy's own journal needs room too: a failure with less than twice the data + 1 MiB free is the disk).
        if _disk_full(exc) or (free is not None and free < 2 * need_mib + 1):
            raise BackupError(
                "the terminal's disk is full: staging the backup in %s needs about %.1f MiB, %s MiB free; free some "
                "space on the terminal and run the backup again (staging removed)"
                % (staging, need_mib, "%.1f" % free if free is not None else "unknown")
            ) from None
        if isinstance(exc, (OSError, sqlite3.Error)):
            raise BackupError("staging the backup in %s failed: %s (staging removed)" % (staging, exc)) from None
        raise
    hardware = _hardware(staging)
    return {
        "staging": staging,
        "files": files,
        "database": {"transactions": count, "last_transaction": last, "integrity": integrity},
        "release": info,
        "hardware": {"model": hardware.get("model"), "serial_number": hardware.get("serial_number")},
        "parameters_sha256": parameters_digest(root),
    }


STREAM_MAGIC = b"IPM-BACKUP-STREAM 1 "


def _header(out, data):
    out.write(STREAM_MAGIC + json.dumps(data, sort_keys=True).encode("utf-8") + b"\n")
    out.flush()


def stream(staging=STAGING, reusable=None, out=None, root="/"):
    """Stage a backup (:func:`prepare`) and send it on OUT (a binary file: the SSH channel) in one pass.

    Writes one line, ``STREAM_MAGIC`` and a JSON object: prepare's result plus ``send``, the staged
    paths whose sha256 differs from REUSABLE (``{path: sha256}`` of the controller's previous
    backup), or ``{"failed": true, "msg": ...}``; then, when ``send`` is not empty, those files as
    one ``tar`` stream (the system's tar: no Python in the data path). The staging is removed
    afterwards, also on failure. Returns the exit status for the process (tar's).
    """
    out = out if out is not None else sys.stdout.buffer
    if os.geteuid() != 0:
        _header(out, {"failed": True, "msg": "a backup needs root on the terminal: connect as root"})
        return 0
    try:
        result = prepare(staging, root)
    except BackupError as exc:
        _header(out, {"failed": True, "msg": str(exc), "staging": staging})
        return 0
    try:
        reusable = reusable or {}
        send = [f["path"] for f in result["files"] if reusable.get(f["path"]) != f["sha256"]]
        result["send"] = send
        _header(out, result)
        if not send:
            return 0
        return subprocess.call(["tar", "-c", "-f", "-", "-C", staging, "--", *send], stdout=out.fileno())
    finally:
        cleanup(staging)


def parameters_digest(root="/"):
    """The parameters digest ipm-app reports for the terminal's parameters (None when unreadable)."""
    try:
        version = rs.current_version(root)
        parameters = rs.read_parameters(root)[0]
        return rs.rm.parameters_digest(rs.rm.effective_parameters(rs.load_release(version, root), parameters))
    except (rs.rm.ReleaseError, OSError, TypeError):
        return None


def cleanup(staging=STAGING):
    """Remove the staging directory; True when there was one."""
    if os.path.lexists(staging):
        shutil.rmtree(staging, ignore_errors=True)
        if os.path.lexists(staging):
            raise BackupError("cannot remove the staging directory %s; remove it by hand" % staging)
        return True
    return False


# --- restore ----------------------------------------------------------------------------------------


def check_staged(staging, manifest):
    """The files of MANIFEST that a restore writes, each present in STAGING with its sha256."""
    by_path = {entry["path"]: entry for entry in manifest.get("files") or []}
    if DATABASE not in by_path or PARAMETERS not in by_path:
        raise BackupError("the backup holds no /%s or no /%s: nothing to restore" % (DATABASE, PARAMETERS))
    chosen = []
    for relpath in RESTORED:
        entry = by_path.get(relpath)
        if entry is None:
            continue
        path = _under(staging, relpath)
        if not os.path.isfile(path):
            raise BackupError("the staged copy of /%s is missing from %s" % (relpath, staging))
        if sha256_of(path) != entry["sha256"]:
            raise BackupError("the staged copy of /%s does not match the backup's sha256: not restored" % relpath)
        chosen.append(entry)
    return chosen


def hardware_identity(root="/"):
    """The box's ``model`` and ``serial_number`` (None when unreadable)."""
    hardware = _hardware(root)
    return {"model": hardware.get("model"), "serial_number": hardware.get("serial_number")}


def _hardware(root):
    try:
        with open(_under(root, HARDWARE), encoding="utf-8") as handle:
            data = rs.rm.load_yaml_text(handle.read(), HARDWARE) or {}
    except (OSError, rs.rm.ReleaseError):
        return {}
    return data if isinstance(data, dict) else {}


def identity_problem(manifest, replacement, root="/"):
    """Why the backup must not go onto this box (None when it may): another serial or another model."""
    hardware = _hardware(root)
    model, serial = hardware.get("model"), hardware.get("serial_number")
    if manifest.get("model") and model and model != manifest.get("model"):
        return "this terminal is a %s, the backup is of a %s: a backup goes back onto the same model only" % (
            model,
            manifest.get("model"),
        )
    if not replacement and manifest.get("serial_number") and serial != manifest.get("serial_number"):
        return (
            "this box has serial number %s, the backup is of serial number %s: for replacement hardware run the "
            "restore with -e replacement=true (the registry records the swap)" % (serial, manifest.get("serial_number"))
        )
    return None


def _save_previous(root, previous_dir):
    if os.path.lexists(previous_dir):
        shutil.rmtree(previous_dir)
    os.makedirs(previous_dir, mode=0o700)
    saved = []
    for relpath in (*RESTORED, DATABASE + "-wal", DATABASE + "-shm"):
        source = _under(root, relpath)
        if os.path.isfile(source):
            target = _under(previous_dir, relpath)
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            shutil.copy2(source, target)
            saved.append(relpath)
    return saved


def _put_back(root, previous_dir, saved):
    for relpath in (*RESTORED, DATABASE + "-wal", DATABASE + "-shm"):
        target = _under(root, relpath)
        if relpath in saved:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(_under(previous_dir, relpath), target)
        elif os.path.lexists(target) and relpath != PARAMETERS:
            os.unlink(target)


def _stop(service, url):
    try:
        service.stop()
    except rs.DeliveryError as exc:
        raise BackupError(
            "ipm-app cannot be stopped, so nothing was restored over the running application: %s; stop it by hand "
            "(systemctl stop ipm-app) and run the restore again" % exc
        ) from None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _ok, answer = rs.probe_health(url, timeout=1.0)
        if "error" in answer:
            return
        time.sleep(0.3)
    raise BackupError(
        "ipm-app still answers on %s after systemctl stop: something else runs it; nothing was restored over the "
        "running application. Stop it, then run the restore again" % url
    )


def restore(manifest, staging=STAGING, replacement=False, start_timeout=30.0, root="/", service=None, port=HEALTH_PORT):
    """Restore the staged backup MANIFEST onto this terminal (see the module docstring)."""
    service = service or rs.Systemctl()
    steps = []
    problem = identity_problem(manifest, replacement, root)
    if problem:
        raise BackupError(problem + "; nothing was changed")
    chosen = check_staged(staging, manifest)
    steps.append("checked %d staged file(s) against the backup's sha256" % len(chosen))
    installed = rs.current_version(root)
    if installed != manifest.get("release"):
        raise BackupError(
            "the terminal runs release %s, the backup is of %s: install %s first (restore.yml does, with "
            "ipm.fleet.release); nothing was changed" % (installed, manifest.get("release"), manifest.get("release"))
        )
    url = health_url(_listen_address(staging), port)
    old_url = health_url(_listen_address(root), port)
    _stop(service, old_url)
    steps.append("stopped ipm-app")
    previous_dir = _under(root, PREVIOUS.lstrip("/"))
    saved = _save_previous(root, previous_dir)
    steps.append("kept the data and parameters before the restore in %s" % PREVIOUS)
    restored = []
    try:
        for relpath in (DATABASE + "-wal", DATABASE + "-shm"):
            if os.path.lexists(_under(root, relpath)):
                os.unlink(_under(root, relpath))
        for entry in chosen:
            target = _under(root, entry["path"])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(_under(staging, entry["path"]), "rb") as handle:
                data = handle.read()
            rs._write_atomically(target, data, MODES.get(entry["path"], 0o644))
            digest = sha256_of(target)
            if digest != entry["sha256"]:
                raise BackupError(
                    "/%s written with sha256 %s, not the backup's %s" % (entry["path"], digest, entry["sha256"])
                )
            restored.append({"path": entry["path"], "size": entry["size"], "sha256": digest})
        steps.append("restored %d file(s), each re-hashed" % len(restored))
        rs.restart_deliberately(service)
        steps.append("started ipm-app")
        answer = rs.wait_healthy(url, manifest.get("release"), manifest.get("parameters_sha256"), start_timeout, 0)
        steps.append("ipm-app healthy on %s" % manifest.get("release"))
        database = manifest.get("database") or {}
        count, last = transactions_up_to(_under(root, DATABASE), database.get("last_transaction"))
        if count != database.get("transactions") or last != database.get("last_transaction"):
            raise BackupError(
                "the restored database holds %s transaction(s) up to the last one, last %s; the backup says %s, last %s"
                % (count, json.dumps(last, sort_keys=True), database.get("transactions"),
                   json.dumps(database.get("last_transaction"), sort_keys=True))
            )  # fmt: skip
        steps.append("transactions as in the backup: %s, last id %s" % (count, (last or {}).get("id")))
    except BaseException as exc:
        reason = str(exc) if isinstance(exc, rs.DeliveryError) else "%s: %s" % (type(exc).__name__, exc)
        back = _roll_back(root, previous_dir, saved, service, old_url, start_timeout)
        raise BackupError("restore failed: %s; %s" % (reason, back)) from None
    return {
        "changed": True,
        "restored": restored,
        "steps": steps,
        "health": answer,
        "transactions": count,
        "last_transaction": last,
        "previous_kept_in": PREVIOUS,
    }


def _roll_back(root, previous_dir, saved, service, url, start_timeout):
    try:
        with contextlib.suppress(rs.DeliveryError):
            service.stop()
        _put_back(root, previous_dir, saved)
        rs.restart_deliberately(service)
        ok = False
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline and not ok:
            ok = rs.probe_health(url, timeout=1.0)[0]
            if not ok:
                time.sleep(0.5)
        return "the previous data and parameters were put back, ipm-app %s" % (
            "healthy again" if ok else "NOT healthy: look at journalctl -u ipm-app"
        )
    except (OSError, rs.DeliveryError) as exc:
        return "putting the previous data back failed too (%s): it is kept in %s" % (exc, PREVIOUS)


def _listen_address(tree):
    try:
        with open(_under(tree, PARAMETERS), encoding="utf-8") as handle:
            data = rs.rm.load_yaml_text(handle.read(), PARAMETERS) or {}
    except (OSError, rs.rm.ReleaseError):
        return None
    return data.get("listen_address") if isinstance(data, dict) else None
