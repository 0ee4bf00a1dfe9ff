"""The backup store on real files: layout, atomic completion, signed manifests, verify and its subsets."""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.plugin_utils import backup_store as bs
from ansible_collections.ipm.fleet.plugins.plugin_utils.backup_store import BackupStore, BackupStoreError

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from backup_fixtures import KEY, OTHER_KEY, UTC, file_of, flip_byte, make_backup, manifest_for

DB = "var/lib/ipm/app/transactions.sqlite3"
T0 = datetime.datetime(2026, 12, 2, 7, 15, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    return BackupStore(str(tmp_path / "store"))


def test_a_backup_has_the_documented_layout_and_verifies(store, tmp_path):
    entry = make_backup(store, tmp_path, when=T0)
    assert entry.path == os.path.join(store.root, "acme", "par01", "PAR01-T1", "20261202T071500Z")
    assert entry.time == T0 and entry.time.tzinfo is not None
    assert sorted(os.listdir(entry.path)) == ["files", "manifest.json", "manifest.sig"]
    assert os.path.isfile(file_of(entry, DB))
    manifest = entry.manifest()
    assert manifest["terminal"] == "PAR01-T1" and manifest["time_utc"] == "2026-12-02T07:15:00Z"
    sig = json.loads(Path(entry.signature_path).read_text())
    assert sig["key_id"] == bs.key_id(KEY) and sig["algorithm"] == "hmac-sha256"
    # The signature is HMAC-SHA256 over the canonical JSON (sorted keys, no spaces).
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    import hashlib
    import hmac

    assert sig["mac"] == hmac.new(KEY, canonical, hashlib.sha256).hexdigest()
    assert bs.verify(entry, KEY) == []
    assert store.entries() == [entry] and store.latest("PAR01-T1") == entry
    assert store.find("PAR01-T1", "20261202T071500Z") == entry
    assert store.find("PAR01-T1", "2026-12-02T07:15:00Z") == entry
    assert store.find("PAR01-T1", "2026-12-02T08:15:00+01:00") == entry
    assert store.find("PAR01-T1", "latest") == entry


def test_entries_sorted_oldest_first_and_filtered(store, tmp_path):
    times = [T0 + datetime.timedelta(hours=h) for h in (5, 1, 3)]
    for moment in times:
        make_backup(store, tmp_path, when=moment)
    make_backup(store, tmp_path, terminal="SYD01-T1", site="syd01", when=T0, timezone="Australia/Sydney")
    assert [e.time for e in store.entries(terminal="PAR01-T1")] == sorted(times)
    assert [e.terminal for e in store.entries(site="syd01")] == ["SYD01-T1"]
    assert len(store.entries(customer="acme")) == 4
    assert store.latest("PAR01-T1").time == max(times)
    assert store.terminals() == ["PAR01-T1", "SYD01-T1"]


def test_unknown_terminal_and_time_name_what_exists(store, tmp_path):
    with pytest.raises(BackupStoreError, match="no backup yet"):
        store.latest("PAR01-T1")
    make_backup(store, tmp_path, when=T0)
    with pytest.raises(BackupStoreError, match=r"terminal NOPE: no backup .*terminals with backups: PAR01-T1"):
        store.find("NOPE", None)
    with pytest.raises(BackupStoreError, match=r"no backup at 20261203T000000Z; its backups: 20261202T071500Z"):
        store.find("PAR01-T1", "2026-12-03T00:00:00Z")
    with pytest.raises(BackupStoreError, match="expected 20261202T071500Z"):
        store.find("PAR01-T1", "yesterday")
    with pytest.raises(BackupStoreError, match="not an id"):
        store.find("../acme", None)


def test_partial_is_not_a_backup_and_is_stale_once_its_writer_died(store, tmp_path):
    partial = store.begin("acme", "par01", "PAR01-T1", T0)
    (tmp_path / "x").write_bytes(b"data")
    partial.add_file(DB, str(tmp_path / "x"))
    assert os.path.basename(partial.path).startswith(".partial-20261202T071500Z-")
    assert store.entries() == []
    with pytest.raises(BackupStoreError, match="no backup"):
        store.latest("PAR01-T1")
    [info] = store.partials()
    assert info.active and not info.stale()
    # A writer killed mid-backup (SIGKILL: no cleanup) leaves a partial whose lock nobody holds.
    script = (
        "import datetime, sys; sys.path.insert(0, 'collections');"
        "from ansible_collections.ipm.fleet.plugins.plugin_utils.backup_store import BackupStore;"
        f"p = BackupStore({store.root!r}).begin('acme', 'par01', 'PAR01-T2', datetime.datetime.now(datetime.timezone.utc));"
        "open(p.files_dir + '/half', 'wb').write(b'x' * 1000); print(p.path, flush=True);"
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(bs.__file__).parents[2]
    )
    assert killed.returncode == -9, killed.stderr
    dead = [p for p in store.partials() if p.terminal == "PAR01-T2"]
    assert len(dead) == 1 and dead[0].stale() and not dead[0].active
    assert store.entries(terminal="PAR01-T2") == []
    store.remove(dead[0])
    assert [p.terminal for p in store.partials()] == ["PAR01-T1"]
    partial.abort()
    assert store.partials() == [] and not os.path.exists(partial.path)


def test_context_manager_aborts_on_error(store, tmp_path):
    with pytest.raises(RuntimeError), store.begin("acme", "par01", "PAR01-T1", T0) as partial:
        raise RuntimeError("connection lost")
    assert not os.path.exists(partial.path) and store.partials() == []


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m["files"][0].update(sha256="0" * 64), "has sha256"),
        (lambda m: m["files"][0].update(size=1), "has 14 bytes, the manifest says 1"),
        (lambda m: m["files"].pop(), "is in the backup but not in the manifest"),
        (lambda m: m["files"].append({"path": "etc/ipm/ghost", "size": 0, "sha256": "0" * 64}), "listed but not"),
        (lambda m: m.update(terminal="PAR01-T9"), "terminal 'PAR01-T9', but the backup is of 'PAR01-T1'"),
        (
            lambda m: m.update(time_utc="2026-12-01T00:00:00Z", time_site="2026-12-01T01:00:00+01:00"),
            "differs from the store's time",
        ),
        (lambda m: m.pop("release"), "release missing"),
        (
            lambda m: m.update(time_site="2026-12-02T07:15:00+00:00"),
            "is not time_utc 2026-12-02T07:15:00Z in Europe/Paris",
        ),
        (lambda m: m.update(time_site="2026-12-02T09:15:00+01:00"), "is not time_utc"),
        (lambda m: m.update(format=2), "format 2"),
        (lambda m: m.update(timezone="Mars/Olympus"), "not an IANA time zone"),
        (lambda m: m["files"][0].update(path="../../etc/shadow"), "without '..'"),
        (lambda m: m.update(operator=datetime.datetime.now()), "not plain JSON"),
    ],
)
def test_commit_refuses_a_manifest_that_does_not_match_and_leaves_nothing(store, tmp_path, damage, message):
    partial = store.begin("acme", "par01", "PAR01-T1", T0)
    (tmp_path / "a").write_bytes(b"currency: EUR\n")
    (tmp_path / "b").write_bytes(b"x" * 100)
    files = [partial.add_file("etc/ipm/app.yml", str(tmp_path / "a")), partial.add_file(DB, str(tmp_path / "b"))]
    manifest = manifest_for(partial, files)
    damage(manifest)
    with pytest.raises(BackupStoreError, match=r"backup refused") as err:
        store.commit(partial, manifest, KEY)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert store.entries() == [] and store.partials() == []


def test_verify_finds_flipped_byte_truncation_missing_extra_and_unsigned(store, tmp_path):
    entries = [make_backup(store, tmp_path, terminal=f"PAR01-T{i}", when=T0) for i in range(1, 8)]
    flip, trunc, gone, extra, unsigned, tampered, sig_junk = entries
    flip_byte(file_of(flip, DB))
    with open(file_of(trunc, DB), "r+b") as handle:
        handle.truncate(100)
    os.unlink(file_of(gone, "etc/ipm/app.yml"))
    Path(file_of(extra, "etc/ipm/added.yml")).write_text("x")
    Path(extra.path, "notes.txt").write_text("x")
    os.unlink(unsigned.signature_path)
    manifest = tampered.manifest()
    manifest["release"] = "9.9.9"
    Path(tampered.manifest_path).write_text(json.dumps(manifest))
    Path(sig_junk.signature_path).write_text("{not json")

    assert any("wrong sha256" in p and DB in p for p in bs.verify(flip, KEY))
    assert any("truncated (100 bytes" in p for p in bs.verify(trunc, KEY))
    assert bs.verify(gone, KEY) == ["file etc/ipm/app.yml: missing"]
    assert bs.verify(extra, KEY) == [
        "notes.txt: extra, beside files/ (not part of a backup)",
        "file etc/ipm/added.yml: extra (not in the manifest)",
    ]
    assert bs.verify(unsigned, KEY) == ["unsigned: no manifest.sig"]
    assert bs.verify(tampered, KEY) == ["bad signature: the manifest was changed after it was signed"]
    assert any("signature file is not JSON" in p for p in bs.verify(sig_junk, KEY))
    assert any(
        "signed with key" in p for p in bs.verify(make_backup(store, tmp_path, terminal="X1", when=T0), OTHER_KEY)
    )


def test_verify_finds_a_backup_of_another_terminal(store, tmp_path):
    entry = make_backup(store, tmp_path, terminal="PAR01-T1", when=T0)
    other_dir = store.terminal_dir("acme", "par01", "PAR01-T2")
    os.makedirs(other_dir)
    shutil.copytree(entry.path, os.path.join(other_dir, entry.time_text))
    copied = store.latest("PAR01-T2")
    assert bs.verify(copied, KEY) == ["manifest of terminal 'PAR01-T1' in the directory of terminal 'PAR01-T2'"]


def test_symlinks_in_a_backup_are_not_files(store, tmp_path):
    entry = make_backup(store, tmp_path, when=T0)
    os.symlink("/etc/passwd", file_of(entry, "etc/ipm/link"))
    assert "file etc/ipm/link: not a regular file" in bs.verify(entry, KEY)
    other = make_backup(store, tmp_path, terminal="PAR01-T2", when=T0)
    shutil.move(other.files_dir, str(tmp_path / "elsewhere"))
    os.symlink(str(tmp_path / "elsewhere"), other.files_dir)
    assert "file files (a symbolic link, not the backup's own directory): not a regular file" in bs.verify(other, KEY)


def test_manifest_not_json_is_one_clear_error(store, tmp_path):
    entry = make_backup(store, tmp_path, when=T0)
    Path(entry.manifest_path).write_text("{oops")
    with pytest.raises(BackupStoreError, match=r"manifest.json: manifest is not JSON \(line 1 column 2"):
        entry.manifest()
    [problem] = bs.verify(entry, KEY)
    assert "manifest is not JSON" in problem


def test_stray_directories_are_reported_not_listed(store, tmp_path):
    entry = make_backup(store, tmp_path, when=T0)
    parent = os.path.dirname(entry.path)
    os.mkdir(os.path.join(parent, "yesterday"))
    os.mkdir(os.path.join(parent, "20261399T999999Z"))
    assert store.entries() == [entry]
    strays = store.strays()
    assert sorted(os.path.basename(s.path) for s in strays) == ["20261399T999999Z", "yesterday"]
    assert all("not a UTC time" in s.reason for s in strays)


def test_second_backup_links_unchanged_files(store, tmp_path):
    first = make_backup(store, tmp_path, when=T0)
    partial = store.begin("acme", "par01", "PAR01-T1", T0 + datetime.timedelta(days=1))
    (tmp_path / "new").write_bytes(b"currency: AUD\n")
    files = [partial.add_file("etc/ipm/app.yml", str(tmp_path / "new"))]
    fetched = partial.path_for("etc/ipm/interfaces.yml")  # fetched straight into the partial
    Path(fetched).write_text("payment: {}\n")
    files.append(partial.add_file("etc/ipm/interfaces.yml", fetched))
    for rel in (DB, "etc/ipm/hardware.yml"):
        files.append(partial.link_unchanged(first, rel))
    second = store.commit(partial, manifest_for(partial, files), KEY)
    assert os.stat(file_of(second, DB)).st_ino == os.stat(file_of(first, DB)).st_ino
    assert bs.verify(second, KEY) == [] and bs.verify(first, KEY) == []
    assert not (tmp_path / "new").exists()  # moved in, not copied
    # Removing the first backup leaves the second whole.
    store.remove(first)
    assert store.entries() == [second] and bs.verify(second, KEY) == []


def test_add_stream_hashes_while_writing_and_refuses_a_damaged_or_cut_stream(store, tmp_path):
    data = os.urandom(3 * 1048576 + 17)  # more than one chunk
    digest = hashlib.sha256(data).hexdigest()
    partial = store.begin("acme", "par01", "PAR01-T1", T0)
    stream = io.BytesIO(data + b"the next member")
    assert partial.add_stream(DB, stream, len(data), digest) == {"path": DB, "size": len(data), "sha256": digest}
    assert stream.read() == b"the next member"  # read exactly its size
    assert Path(partial.files_dir, *DB.split("/")).read_bytes() == data
    damaged = bytearray(b"currency: EUR\n")
    damaged[0] ^= 1
    with pytest.raises(BackupStoreError, match="damaged or cut"):
        partial.add_stream(
            "etc/ipm/app.yml", io.BytesIO(bytes(damaged)), 14, hashlib.sha256(b"currency: EUR\n").hexdigest()
        )
    with pytest.raises(BackupStoreError, match=r"\(3 bytes\).*\(14 bytes\)"):
        partial.add_stream("etc/ipm/app.yml", io.BytesIO(b"cur"), 14)
    # Neither left a file behind, nor a .fetch-* temporary: the commit sees only the database.
    assert sorted(p.name for p in Path(partial.path).rglob("*") if p.is_file() and p.name != ".lock") == [
        "transactions.sqlite3"
    ]
    entry = store.commit(partial, manifest_for(partial, [{"path": DB, "size": len(data), "sha256": digest}]), KEY)
    assert bs.verify(entry, KEY) == []


def test_link_unchanged_refuses_a_damaged_previous_copy(store, tmp_path):
    first = make_backup(store, tmp_path, when=T0)
    flip_byte(file_of(first, DB))
    partial = store.begin("acme", "par01", "PAR01-T1", T0 + datetime.timedelta(days=1))
    with pytest.raises(bs.DamagedPreviousFile, match="differs from the manifest"):
        partial.link_unchanged(first, DB)
    with pytest.raises(BackupStoreError, match="holds no file etc/none"):
        partial.link_unchanged(first, "etc/none")
    assert not os.path.exists(os.path.join(partial.files_dir, *DB.split("/")))
    partial.abort()


def test_hostile_input(tmp_path):
    not_dir = tmp_path / "store-file"
    not_dir.write_text("x")
    with pytest.raises(BackupStoreError, match="not a directory"):
        BackupStore(str(not_dir))
    store = BackupStore(str(tmp_path / "s"))
    for bad in ("../evil", "a/b", "..", "", "x\x00"):
        with pytest.raises(BackupStoreError, match="not an id"):
            store.begin("acme", "par01", bad, T0)
    partial = store.begin("acme", "par01", "T1", T0)
    (tmp_path / "f").write_text("x")
    for bad in ("../../x", "/etc/passwd", "a/../../b", "./a", "", "a//b"):
        with pytest.raises(BackupStoreError, match="relative path"):
            partial.add_file(bad, str(tmp_path / "f"))
    with pytest.raises(BackupStoreError, match="no such file"):
        partial.add_file("etc/x", str(tmp_path / "missing"))
    with pytest.raises(BackupStoreError, match="not an aware datetime"):
        store.begin("acme", "par01", "T1", datetime.datetime(2026, 1, 1))
    partial.abort()


def test_subset_rotates_and_covers_everything(store, tmp_path):
    contents = {f"data/file{i:03d}": bytes([i]) * 10 for i in range(200)}
    entry = make_backup(store, tmp_path, contents=contents, when=T0)
    for i in range(200):
        flip_byte(file_of(entry, f"data/file{i:03d}"), offset=0)
    caught = set()
    for seed in range(10):
        problems = bs.verify(entry, KEY, subset=0.1, seed=seed)
        assert problems == bs.verify(entry, KEY, subset=0.1, seed=seed)  # deterministic for a seed
        assert 5 <= len(problems) <= 40
        caught.update(problems)
    assert len(caught) == 200  # ten successive 10 % runs read every file
    # Sizes and the signature are always checked, whatever the share.
    with open(file_of(entry, "data/file000"), "ab") as handle:
        handle.write(b"more")
    os.unlink(entry.signature_path)
    problems = bs.verify(entry, KEY, subset=0.0)
    assert "unsigned: no manifest.sig" in problems
    assert any("file data/file000: wrong size" in p for p in problems)
    report = bs.verify_report(entry, KEY, subset=0.0)
    assert report.files == 200 and report.hashed == 0


# --------------------------------------------------------------------------------- full and read-only


@pytest.fixture
def tiny_mount(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_store_full_is_one_line_and_leaves_no_partial(tiny_mount, tmp_path):
    store = BackupStore(str(tiny_mount / "store"))
    big = tmp_path / "big"
    big.write_bytes(os.urandom(1024 * 1024))
    partial = store.begin("acme", "par01", "PAR01-T1", T0)
    with pytest.raises(BackupStoreError, match=r"^store full: \d+ MiB free on .*ipm-backup prune") as err:
        partial.add_file(DB, str(big), keep_source=True)
    assert "\n" not in str(err.value)
    assert store.partials() == [] and store.entries() == []
    assert partial.done


def test_store_not_writable(tiny_mount):
    os.makedirs(tiny_mount / "store")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_mount)], check=True)
    store = BackupStore(str(tiny_mount / "store"))
    with pytest.raises(BackupStoreError, match=r"^store not writable: .*fix its permissions"):
        store.begin("acme", "par01", "PAR01-T1", T0)
    assert store.entries() == []
