"""The delivery transaction on a temporary tree: installed releases, pruning, the switch, unpacking, and
deliver() itself with its rollback, driving a real ipm-app process (tests/unit/.../app_terminal.py)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import release_switch as rs

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: helpers beside the tests
from app_terminal import AppService, built, free_port, terminal


def releases(root, *names):
    for name in names:
        os.makedirs(os.path.join(root, "opt/ipm/app/releases", name))


def test_leftover_staging_directory_is_not_a_release(tmp_path):
    # A delivery killed mid-unpack leaves releases/.<version>.<random>: later deliveries must not trip on it.
    releases(str(tmp_path), "2.3.1", "2.10.0", "2.4.0", ".2.4.1.k3j2")
    assert rs.installed_versions(str(tmp_path)) == ["2.3.1", "2.4.0", "2.10.0"]


def test_prune_keeps_the_newest_and_never_the_protected(tmp_path):
    root = str(tmp_path)
    releases(root, "2.1.0", "2.2.0", "2.3.1", "2.4.0", ".2.4.1.tmp")
    removed = rs.prune(2, {"2.4.0", "2.1.0"}, root)
    assert removed == ["2.2.0", "2.3.1"]
    assert sorted(os.listdir(os.path.join(root, "opt/ipm/app/releases"))) == [".2.4.1.tmp", "2.1.0", "2.4.0"]


def test_switch_current_is_a_relative_link_replaced_atomically(tmp_path):
    root = str(tmp_path)
    releases(root, "2.3.1", "2.4.0")
    rs.switch_current("2.3.1", root)
    rs.switch_current("2.4.0", root)
    assert os.readlink(os.path.join(root, "opt/ipm/app/current")) == "releases/2.4.0"
    assert rs.current_version(root) == "2.4.0"
    assert not os.path.lexists(os.path.join(root, "opt/ipm/app/current.new"))


def _artifact(path, *members):
    """A release tarball holding ``members``: (name, kind, link target) with kind file, dir, symlink, hardlink, fifo."""
    with tarfile.open(path, "w:gz") as archive:
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = b"x"
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = target or ""
            archive.addfile(info)
    return str(path)


SAFE = [("manifest.yml", "file", None), ("lib", "dir", None), ("lib/app.py", "file", None)]


@pytest.mark.parametrize(
    "bad",
    [
        [("../outside", "file", None)],
        [("/etc/passwd", "file", None)],
        [("lib/../../outside", "file", None)],
        [("escape", "symlink", "../../../../../escape"), ("escape/owned", "file", None)],
        [("lib/up", "symlink", "../..")],
        [("abs", "symlink", "/etc")],
        [("hard", "hardlink", "../../etc/shadow")],
        [("pipe", "fifo", None)],
    ],
    ids=["dotdot", "absolute", "inner-dotdot", "symlink-out", "symlink-up", "symlink-absolute", "hardlink", "fifo"],
)
def test_unpack_refuses_members_that_leave_the_release(tmp_path, bad):
    root = tmp_path / "root"
    artifact = _artifact(tmp_path / "a.tar.gz", *SAFE, *bad)
    with pytest.raises(rs.DeliveryError, match="unsafe path"):
        rs.unpack(artifact, "2.4.0", str(root))
    assert os.listdir(root / "opt/ipm/app/releases") == [], "nothing left behind, not even the staging directory"
    assert sorted(os.listdir(tmp_path)) == ["a.tar.gz", "root"], "nothing written outside"


def test_unpack_accepts_links_that_stay_inside(tmp_path):
    artifact = _artifact(tmp_path / "a.tar.gz", *SAFE, ("bin", "symlink", "lib"), ("lib/self", "symlink", "../lib"))
    assert rs.unpack(artifact, "2.4.0", str(tmp_path)) is True
    assert os.readlink(tmp_path / "opt/ipm/app/releases/2.4.0/bin") == "lib"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    # 2.4.1 as built for the lab answers healthy for 5 s after its start: 2 s is enough here.
    return {"2.4.0": built("2.4.0", out), "2.4.1": built("2.4.1", out, healthy_for_s=2)}


@pytest.fixture
def site(tmp_path):
    """(root, service): a factory terminal on a temporary root running 2.3.1; the service is stopped afterwards."""
    root = terminal(tmp_path)
    service = AppService(root, free_port())
    service.restart()
    rs.wait_healthy("http://127.0.0.1:%d/health" % service.port, "2.3.1", None, 30, 0)
    yield root, service
    service.stop()


def deliver(site, artifact, **options):
    root, service = site
    options.setdefault("settle", 0.5)
    options.setdefault("start_timeout", 30)
    return rs.deliver(
        artifact.version,
        str(artifact.artifact),
        artifact.sha256,
        root=str(root),
        service=service,
        port=service.port,
        **options,
    )


def health(root, service):
    ok, answer = rs.probe_health("http://127.0.0.1:%d/health" % service.port)
    return answer if ok else None


def test_delivery_switches_migrates_and_keeps_what_it_replaced(site, artifacts):
    root, service = site
    config = root / "etc/ipm/app.yml"
    unit = root / "etc/systemd/system/ipm-app.service"
    factory_parameters, factory_unit = config.read_bytes(), unit.read_bytes()

    result = deliver(site, artifacts["2.4.0"], desired_parameters={"currency": "CHF"})

    assert result["msg"] == "delivered 2.4.0 (from 2.3.1)", result
    assert result["changed"] is True and not result.get("failed") and result["rolled_back"] is False
    assert "timeout: renamed to idle_timeout_s" in result["notes"]
    assert rs.current_version(str(root)) == "2.4.0"
    answer = health(root, service)
    assert answer["version"] == "2.4.0" and result["health"]["version"] == "2.4.0"
    parameters = rs.read_parameters(str(root))[0]
    assert parameters["currency"] == "CHF" and "timeout" not in parameters
    assert answer["parameters_sha256"] == rs.rm.parameters_digest(
        rs.rm.effective_parameters(rs.load_release("2.4.0", str(root)), parameters)
    )
    assert rs.installed_versions(str(root)) == ["2.3.1", "2.4.0"], "the previous release stays installed"

    record_file = root / "var/lib/ipm/delivery/previous.json"
    assert stat.S_IMODE(record_file.stat().st_mode) == 0o600, "the old parameters may hold secrets"
    record = json.loads(record_file.read_text())
    assert record["version"] == "2.4.0" and record["previous_version"] == "2.3.1"
    assert base64.b64decode(record["previous_parameters_b64"]) == factory_parameters
    assert base64.b64decode(record["previous_unit_b64"]) == factory_unit
    assert record["newly_unpacked"] is True and record["delivered_at"].endswith("Z")
    assert rs.read_record(str(root))["previous_parameters"] == factory_parameters

    again = deliver(site, artifacts["2.4.0"], desired_parameters={"currency": "CHF"})
    assert again["changed"] is False and again["msg"] == "release 2.4.0 is already current and healthy", again


def test_a_release_that_fails_its_settle_period_is_rolled_back(site, artifacts):
    root, service = site
    deliver(site, artifacts["2.4.0"])
    config = root / "etc/ipm/app.yml"
    before, record_before = config.read_bytes(), (root / "var/lib/ipm/delivery/previous.json").read_bytes()

    # 2.4.1 answers healthy for 2 s after its start, then fails: a 4 s settle period catches it.
    result = deliver(site, artifacts["2.4.1"], settle=4)

    assert result["failed"] is True and result["rolled_back"] is True, result
    assert result["msg"].startswith("delivery of 2.4.1 failed: release 2.4.1 became unhealthy")
    assert result["rollback"]["healthy"] is True and result["rollback"]["to"] == "2.4.0"
    assert "back on 2.4.0, healthy" in result["steps"] and "removed releases/2.4.1" in result["steps"]
    assert "health" not in result
    assert rs.current_version(str(root)) == "2.4.0" and health(root, service)["version"] == "2.4.0"
    assert config.read_bytes() == before
    assert "2.4.1" not in rs.installed_versions(str(root)), "the failed release does not stay installed"
    assert (root / "var/lib/ipm/delivery/previous.json").read_bytes() == record_before, "no record of a failure"


def test_a_wrong_checksum_changes_nothing(site, artifacts):
    root, service = site
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if "var/l" not in p.as_posix())
    result = deliver(site, dataclasses.replace(artifacts["2.4.0"], sha256="0" * 64))
    assert result["failed"] is True and "does not match the manifest's 0000" in result["msg"]
    assert result["changed"] is False
    after = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if "var/l" not in p.as_posix())
    assert after == before and rs.current_version(str(root)) == "2.3.1"
    assert health(root, service)["version"] == "2.3.1"


def test_rollback_of_a_failed_first_installation_leaves_no_application(tmp_path):
    # There was no release and no parameters before: the failed delivery's link and parameters go too.
    root = terminal(tmp_path, version="2.4.0")
    service = AppService(root, free_port())
    service.restart()
    try:
        assert rs.wait_healthy("http://127.0.0.1:%d/health" % service.port, "2.4.0", None, 30, 0)
        outcome = rs.rollback(None, None, None, 5, lambda message: None, root=str(root), service=service)
        assert outcome["healthy"] is True
        assert service.pid() is None, "the application is stopped"
        assert not os.path.lexists(root / "opt/ipm/app/current")
        assert not (root / "etc/ipm/app.yml").exists()
        assert rs.current_version(str(root)) is None
    finally:
        service.stop()


def test_detached_delivery_holds_the_lock_of_its_root(site, artifacts):
    root, service = site
    state_file = str(root / "var/lib/ipm/delivery/delivery-2.4.0.json")
    arguments = dict(
        version="2.4.0",
        artifact=str(artifacts["2.4.0"].artifact),
        sha256=artifacts["2.4.0"].sha256,
        settle=0.5,
        root=str(root),
        service=service,
        port=service.port,
    )
    with rs.Lock(rs.lock_path(str(root))):
        refused = rs.deliver_detached(state_file, **arguments)
    assert refused["failed"] is True and "another delivery is running" in refused["msg"]
    assert rs.current_version(str(root)) == "2.3.1"
    assert (root / "run/ipm-release.lock").exists()

    result = rs.deliver_detached(state_file, **arguments)
    assert result["msg"] == "delivered 2.4.0 (from 2.3.1)", result
    assert json.loads(Path(state_file).read_text()) == result
    assert health(root, service)["version"] == "2.4.0", "the service the child restarted is the one the test sees"
