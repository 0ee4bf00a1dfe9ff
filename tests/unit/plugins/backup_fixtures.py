"""Real backups in a real store on disk, written through the store's own API (shared by the backup tests)."""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
from zoneinfo import ZoneInfo

from ansible_collections.ipm.fleet.plugins.plugin_utils.backup_store import BackupStore, PartialBackup

KEY = bytes.fromhex("11" * 32)
OTHER_KEY = bytes.fromhex("22" * 32)
UTC = datetime.UTC


def manifest_for(partial: PartialBackup, files: list[dict], timezone: str = "Europe/Paris", **extra) -> dict:
    """A complete format-1 manifest for ``partial`` as the backup playbook writes it."""
    local = partial.time.astimezone(ZoneInfo(timezone))
    manifest = {
        "format": 1,
        "terminal": partial.terminal,
        "customer": partial.customer,
        "site": partial.site,
        "serial_number": "PS3-0001",
        "model": "PS-300",
        "timezone": timezone,
        "time_utc": partial.time_iso,
        "time_site": local.isoformat(),
        "release": "2.4.0",
        "parameters_sha256": hashlib.sha256(b"currency: EUR\n").hexdigest(),
        "operator": "alice",
        "change_id": "CHG-14",
        "database": {"transactions": 42, "last_transaction": 42, "integrity": "ok"},
        "files": sorted(files, key=lambda f: f["path"]),
        "transferred_bytes": sum(f["size"] for f in files),
        "reused_bytes": 0,
    }
    manifest.update(extra)
    return manifest


def make_backup(
    store: BackupStore,
    tmp_path,
    terminal: str = "PAR01-T1",
    when: datetime.datetime | None = None,
    customer: str = "acme",
    site: str = "par01",
    contents: dict[str, bytes] | None = None,
    timezone: str = "Europe/Paris",
    key: bytes = KEY,
):
    """Take one backup of ``contents`` (relative path -> bytes) through begin / add_file / commit."""
    when = when or datetime.datetime(2026, 12, 2, 7, 15, tzinfo=UTC)
    contents = (
        contents
        if contents is not None
        else {
            "var/lib/ipm/app/transactions.sqlite3": secrets.token_bytes(5000),
            "etc/ipm/app.yml": b"currency: EUR\n",
            "etc/ipm/hardware.yml": b"model: PS-300\nserial_number: PS3-0001\n",
        }
    )
    incoming = tmp_path / f"incoming-{secrets.token_hex(4)}"
    incoming.mkdir()
    partial = store.begin(customer, site, terminal, when)
    files = []
    for index, (rel, data) in enumerate(sorted(contents.items())):
        source = incoming / f"f{index}"
        source.write_bytes(data)
        files.append(partial.add_file(rel, str(source)))
    return store.commit(partial, manifest_for(partial, files, timezone), key)


def flip_byte(path: str, offset: int = 10) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def file_of(entry, rel: str) -> str:
    return os.path.join(entry.files_dir, *rel.split("/"))
