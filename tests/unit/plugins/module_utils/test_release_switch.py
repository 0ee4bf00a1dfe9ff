"""Pure parts of the delivery transaction, on a temporary tree: installed releases, pruning, the switch."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ansible_collections.ipm.fleet.plugins.module_utils import release_switch as rs


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


def test_rollback_of_a_failed_first_installation_leaves_no_application(tmp_path, monkeypatch):
    # There was no release and no parameters before: the failed delivery's link and parameters go too.
    app_root = tmp_path / "opt/ipm/app"
    releases(str(tmp_path), "2.4.0")
    config = tmp_path / "etc/ipm/app.yml"
    config.parent.mkdir(parents=True)
    config.write_text("release: 2.4.0\n")
    monkeypatch.setattr(rs, "APP_ROOT", str(app_root))
    monkeypatch.setattr(rs, "CONFIG", str(config))
    calls = []
    monkeypatch.setattr(rs, "systemctl", lambda *args: calls.append(args))
    rs.switch_current("2.4.0")
    outcome = rs.rollback(None, None, None, 5, lambda message: None)
    assert outcome["healthy"] is True
    assert calls == [("stop", rs.UNIT_NAME)]
    assert not os.path.lexists(app_root / "current")
    assert not config.exists()
    assert rs.current_version() is None
