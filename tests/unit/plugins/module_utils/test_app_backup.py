"""app_backup on a terminal in a temporary directory with a real ipm-app: prepare, restore, the refusals, the rollback."""

from __future__ import annotations

import hashlib
import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from app_terminal import AppService, free_port, terminal

from ansible_collections.ipm.fleet.plugins.module_utils import app_backup as ab
from ansible_collections.ipm.fleet.plugins.module_utils.release_switch import DeliveryError


def healthy(port: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
                return json.loads(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def post(port: int) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/transactions",
        data=json.dumps({"amount": 2.5, "method": "cash"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def running(tmp_path):
    root = terminal(tmp_path)
    (root / "etc/ipm/hardware.yml").write_text("model: PS-300\nserial_number: PS3-UNIT-1\n")
    (root / "etc/ipm/interfaces.yml").write_text("interfaces: []\n")
    service = AppService(root, free_port())
    service.restart()
    healthy(service.port)
    try:
        yield root, service
    finally:
        service.stop()


def manifest_of(staged: dict) -> dict:
    """What the controller writes into the manifest from the prepare result (the fields restore reads)."""
    return {
        "release": staged["release"]["version"],
        "parameters_sha256": staged["parameters_sha256"],
        "serial_number": staged["hardware"]["serial_number"],
        "model": staged["hardware"]["model"],
        "database": staged["database"],
        "files": staged["files"],
    }


def test_prepare_stages_a_consistent_copy_with_checksums(running, tmp_path):
    root, service = running
    ids = [post(service.port)["id"] for _round in range(3)]
    staged = ab.prepare(str(tmp_path / "staging"), str(root))
    paths = {f["path"]: f for f in staged["files"]}
    assert {ab.DATABASE, ab.PARAMETERS, ab.HARDWARE, "etc/ipm/interfaces.yml", ab.RELEASE_INFO} <= set(paths)
    assert "opt/ipm/app/releases/2.3.1/manifest.yml" in paths
    for relpath, entry in paths.items():
        assert sha(tmp_path / "staging" / relpath) == entry["sha256"]
    assert staged["database"]["transactions"] == 3 and staged["database"]["integrity"] == "ok"
    assert staged["database"]["last_transaction"]["id"] == ids[-1]
    assert staged["parameters_sha256"] == healthy(service.port)["parameters_sha256"]
    assert oct((tmp_path / "staging").stat().st_mode & 0o777) == "0o700"
    assert ab.cleanup(str(tmp_path / "staging")) and not (tmp_path / "staging").exists()


def test_restore_puts_data_and_parameters_back_over_the_running_application(running, tmp_path):
    root, service = running
    post(service.port)
    staging = str(tmp_path / "staging")
    staged = ab.prepare(staging, str(root))
    manifest = manifest_of(staged)
    post(service.port)
    with open(root / "etc/ipm/app.yml", "a") as handle:
        handle.write("terminal_label: later\n")
    result = ab.restore(manifest, staging, root=str(root), service=service, port=service.port)
    assert result["transactions"] == 1 and result["last_transaction"] == staged["database"]["last_transaction"]
    assert sha(root / ab.PARAMETERS) == next(f["sha256"] for f in staged["files"] if f["path"] == ab.PARAMETERS)
    assert "terminal_label: later" in (root / ab.PREVIOUS.lstrip("/") / ab.PARAMETERS).read_text()
    assert healthy(service.port)["parameters_sha256"] == manifest["parameters_sha256"]
    assert "stopped ipm-app" in result["steps"]


def test_refusals_change_nothing(running, tmp_path):
    root, service = running
    staging = str(tmp_path / "staging")
    manifest = manifest_of(ab.prepare(staging, str(root)))
    before = sha(root / ab.PARAMETERS), service.pid()
    other = dict(manifest, serial_number="PS3-OTHER")
    with pytest.raises(ab.BackupError, match="replacement=true"):
        ab.restore(other, staging, root=str(root), service=service, port=service.port)
    assert ab.identity_problem(other, True, str(root)) is None
    with pytest.raises(ab.BackupError, match="the backup is of a TK-110"):
        ab.restore(dict(manifest, model="TK-110"), staging, root=str(root), service=service, port=service.port)
    with pytest.raises(ab.BackupError, match=r"install 2\.4\.0 first"):
        ab.restore(dict(manifest, release="2.4.0"), staging, root=str(root), service=service, port=service.port)
    (Path(staging) / ab.PARAMETERS).write_text("currency: XXX\n")
    with pytest.raises(ab.BackupError, match="does not match the backup's sha256"):
        ab.restore(manifest, staging, root=str(root), service=service, port=service.port)
    assert (sha(root / ab.PARAMETERS), service.pid()) == before


def test_an_application_that_cannot_be_stopped_is_not_restored_over(running, tmp_path):
    root, service = running
    staging = str(tmp_path / "staging")
    manifest = manifest_of(ab.prepare(staging, str(root)))

    class Stuck(AppService):
        def stop(self):
            raise DeliveryError("systemctl stop ipm-app.service failed: Job canceled")

    stuck = Stuck(root, service.port)
    before = sha(root / ab.DATABASE)
    with pytest.raises(ab.BackupError, match="cannot be stopped, so nothing was restored over the running application"):
        ab.restore(manifest, staging, root=str(root), service=stuck, port=service.port)
    assert sha(root / ab.DATABASE) == before and healthy(service.port)


def test_a_failure_after_the_stop_puts_the_previous_data_back(running, tmp_path):
    root, service = running
    post(service.port)
    staging = str(tmp_path / "staging")
    manifest = manifest_of(ab.prepare(staging, str(root)))
    post(service.port)
    with open(root / "etc/ipm/app.yml", "a") as handle:
        handle.write("terminal_label: current\n")
    before = (root / ab.PARAMETERS).read_bytes()
    wrong = dict(manifest, parameters_sha256="0" * 64)  # the restored application never answers with this digest
    with pytest.raises(ab.BackupError, match="put back, ipm-app healthy again"):
        ab.restore(wrong, staging, root=str(root), service=service, start_timeout=3, port=service.port)
    assert (root / ab.PARAMETERS).read_bytes() == before
    summary = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{service.port}/transactions", timeout=5).read())
    assert summary["count"] == 2


def test_stream_sends_a_header_then_only_the_changed_files_as_tar(running, tmp_path, monkeypatch):
    """stream(): one header line (what was staged, what is sent), then a tar of the files whose sha256
    differs from the previous backup's; the staging is gone afterwards."""
    import io
    import tarfile

    root, service = running
    post(service.port)
    monkeypatch.setattr(ab.os, "geteuid", lambda: 0)  # the root check; the tree is a temporary one
    staging = tmp_path / "staging"

    def run(reusable):
        out = tmp_path / f"out-{len(reusable)}"
        with open(out, "wb") as handle:
            assert ab.stream(str(staging), reusable, handle, str(root)) == 0
        data = out.read_bytes()
        line, _, rest = data.partition(b"\n")
        assert line.startswith(ab.STREAM_MAGIC)
        return json.loads(line[len(ab.STREAM_MAGIC) :]), rest

    header, rest = run({})
    by_path = {f["path"]: f for f in header["files"]}
    assert sorted(header["send"]) == sorted(by_path) and header["database"]["integrity"] == "ok"
    with tarfile.open(fileobj=io.BytesIO(rest), mode="r|") as archive:
        for member in archive:
            body = archive.extractfile(member).read()
            assert hashlib.sha256(body).hexdigest() == by_path[member.name]["sha256"], member.name
            by_path.pop(member.name)
    assert by_path == {} and not staging.exists()
    # The previous backup holds the same files: nothing is sent, only the header.
    again, rest = run({f["path"]: f["sha256"] for f in header["files"]})
    assert again["send"] == [] and rest == b"" and not staging.exists()
    # A changed parameters file is the only one sent.
    with open(root / "etc/ipm/app.yml", "a") as handle:
        handle.write("terminal_label: changed\n")
    changed, rest = run({f["path"]: f["sha256"] for f in header["files"]})
    assert changed["send"] == [ab.PARAMETERS] and rest


def test_stream_says_why_in_the_header_when_staging_fails(running, tmp_path, monkeypatch):
    root, _service = running
    monkeypatch.setattr(ab.os, "geteuid", lambda: 0)
    (root / ab.DATABASE).unlink()
    out = tmp_path / "out"
    with open(out, "wb") as handle:
        assert ab.stream(str(tmp_path / "staging"), {}, handle, str(root)) == 0
    header = json.loads(out.read_bytes().partition(b"\n")[0][len(ab.STREAM_MAGIC) :])
    assert header["failed"] and "no application database" in header["msg"]
