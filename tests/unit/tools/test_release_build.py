"""ipm-release build / list and factory_install (tools/ipm_tools/release.py)."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
import yaml

from ipm_tools import release

VERSIONS = ["2.3.1", "2.4.0", "2.4.1", "3.0.0"]


def test_known_versions_in_version_order():
    assert release.known_versions() == VERSIONS


def test_build_is_deterministic(tmp_path):
    first = release.build_release("2.4.0", tmp_path / "one")
    second = release.build_release("2.4.0", tmp_path / "two")
    assert first.sha256 == second.sha256
    assert first.artifact.read_bytes() == second.artifact.read_bytes()
    assert first.sha256 == hashlib.sha256(first.artifact.read_bytes()).hexdigest()
    other = release.build_release("2.4.1", tmp_path / "one")
    assert other.sha256 != first.sha256


def test_tarball_entries_are_sorted_with_fixed_owner_and_time(tmp_path):
    built = release.build_release("2.3.1", tmp_path)
    with tarfile.open(built.artifact) as tar:
        members = tar.getmembers()
        names = [member.name for member in members]
        assert names == sorted(names)
        assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {
            (0, 0, "root", "root", release.FIXED_MTIME)
        }
        assert {"manifest.yml", "bin/ipm-app", "systemd/ipm-app.service", "lib/ipm_app/service.py"} <= set(names)
        assert tar.getmember("bin/ipm-app").mode == 0o755
        assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
        shipped_rules = tar.extractfile("lib/ipm_app/_release_manifest.py").read()
        inner_manifest = yaml.safe_load(tar.extractfile("manifest.yml"))
    assert shipped_rules == release.RELEASE_MANIFEST_SOURCE.read_bytes()
    assert inner_manifest == release.load_definition("2.3.1")


def test_manifest_is_definition_plus_artifact_and_sha256(tmp_path):
    built = release.build_release("3.0.0", tmp_path)
    manifest = yaml.safe_load(built.manifest.read_text())
    assert manifest.pop("artifact") == "ipm-app-3.0.0.tar.gz"
    assert manifest.pop("sha256") == hashlib.sha256(built.artifact.read_bytes()).hexdigest()
    assert manifest == release.load_definition("3.0.0")


def test_cli_builds_all_versions_by_default(tmp_path, capsys):
    assert release.main(["build", "--out", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"ipm-app-{v}.tar.gz" for v in VERSIONS] + [f"ipm-app-{v}.manifest.yml" for v in VERSIONS]
    )
    assert capsys.readouterr().out.count("sha256=") == 4
    assert release.main(["list", "--out", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "defect: health-fails-after-start" in listing
    assert "PS-300,TK-110" in listing


def test_cli_unknown_version_is_one_clear_line(tmp_path, capsys):
    assert release.main(["build", "9.9.9", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "ipm-release: error: unknown release 9.9.9: app/releases/9.9.9.yml does not exist"
        " (known: 2.3.1, 2.4.0, 2.4.1, 3.0.0)\n"
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["build"], ["list"]])
def test_cli_missing_or_empty_releases_directory_is_an_error(tmp_path, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert release.main(["--releases-dir", str(tmp_path / "nowhere"), *command]) == 1
    assert "no releases directory" in capsys.readouterr().err
    assert release.main(["--releases-dir", str(empty), *command]) == 1
    assert "no release definition (<version>.yml) in" in capsys.readouterr().err


def test_cli_malformed_definition_names_file_and_key(tmp_path, capsys):
    definitions = tmp_path / "releases"
    definitions.mkdir()
    text = (release.RELEASES_DIR / "2.4.0.yml").read_text().replace("min: 5, max: 600", "min: 5, max: 1")
    (definitions / "2.4.0.yml").write_text(text)
    out = tmp_path / "out"
    assert release.main(["--releases-dir", str(definitions), "build", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "2.4.0.yml: parameters.idle_timeout_s.min: expected min <= max (1), found 5 (int)" in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_cli_version_must_match_file_name(tmp_path, capsys):
    definitions = tmp_path / "releases"
    definitions.mkdir()
    (definitions / "2.4.2.yml").write_text((release.RELEASES_DIR / "2.4.0.yml").read_text())
    assert release.main(["--releases-dir", str(definitions), "build", "--out", str(tmp_path)]) == 1
    assert "2.4.2.yml: version: expected '2.4.2' (the file name), found '2.4.0'" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as leaving:
        release.main(["--help"])
    assert leaving.value.code == 0
    assert "build" in capsys.readouterr().out


def test_factory_install_lays_a_bootable_tree(tmp_path):
    release.factory_install(tmp_path, "2.3.1", {"currency": "CHF"}, listen_address="127.0.9.9")
    current = tmp_path / "opt/ipm/app/current"
    assert current.is_symlink()
    assert str(current.readlink()) == "releases/2.3.1"
    assert (current / "bin/ipm-app").stat().st_mode & 0o111
    assert yaml.safe_load((current / "manifest.yml").read_text())["version"] == "2.3.1"
    unit = tmp_path / "etc/systemd/system/ipm-app.service"
    assert "ExecStart=/opt/ipm/app/current/bin/ipm-app" in unit.read_text()
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants/ipm-app.service"
    assert str(wants.readlink()) == "/etc/systemd/system/ipm-app.service"
    config = tmp_path / "etc/ipm/app.yml"
    parameters = yaml.safe_load(config.read_text())
    assert parameters["currency"] == "CHF"
    assert parameters["listen_address"] == "127.0.9.9"
    assert parameters["timeout"] == 60  # defaults written out in full
    assert config.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "var/lib/ipm/app").is_dir()
    assert (tmp_path / "var/log/ipm").is_dir()


def test_factory_install_again_switches_current(tmp_path):
    release.factory_install(tmp_path, "2.3.1")
    release.factory_install(tmp_path, "2.4.0")
    assert str((tmp_path / "opt/ipm/app/current").readlink()) == "releases/2.4.0"
    assert sorted(p.name for p in (tmp_path / "opt/ipm/app/releases").iterdir()) == ["2.3.1", "2.4.0"]


@pytest.mark.parametrize(
    ("version", "parameters", "message"),
    [
        ("2.4.0", {"timeout": 30}, r"timeout: expected idle_timeout_s \(renamed in 2.4.0\), found the old name"),
        ("2.3.1", {"currency": "JPY"}, r"currency: expected one of EUR, AUD, USD, GBP, CHF, found 'JPY' \(str\)"),
        ("7.0.0", None, r"unknown release 7.0.0"),
    ],
)
def test_factory_install_refuses_bad_input_and_writes_nothing(tmp_path, version, parameters, message):
    with pytest.raises(release.ReleaseError, match=message):
        release.factory_install(tmp_path, version, parameters)
    assert list(tmp_path.iterdir()) == []


def test_factory_install_needs_an_existing_tree(tmp_path):
    with pytest.raises(release.ReleaseError, match=r"is not a directory"):
        release.factory_install(Path(tmp_path / "missing"), "2.3.1")


def _test_definition(directory: Path, version: str = "9.1.0") -> Path:
    """A release definition of our own, outside app/releases (2.4.0's, under another version)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (release.RELEASES_DIR / "2.4.0.yml").read_text().replace('version: "2.4.0"', f'version: "{version}"')
    path = directory / f"{version}.yml"
    path.write_text(text)
    return path


def test_cli_builds_a_definition_from_another_directory_into_another_one(tmp_path, capsys):
    definitions, out = tmp_path / "definitions", tmp_path / "nested" / "out"
    _test_definition(definitions)
    assert release.main(["build", "--definitions", str(definitions), "--out", str(out), "9.1.0"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["ipm-app-9.1.0.manifest.yml", "ipm-app-9.1.0.tar.gz"]
    manifest = yaml.safe_load((out / "ipm-app-9.1.0.manifest.yml").read_text())
    assert manifest["version"] == "9.1.0"
    assert manifest["sha256"] == hashlib.sha256((out / "ipm-app-9.1.0.tar.gz").read_bytes()).hexdigest()
    with tarfile.open(out / "ipm-app-9.1.0.tar.gz") as tar:
        assert yaml.safe_load(tar.extractfile("manifest.yml"))["version"] == "9.1.0"
    assert f"ipm-app-9.1.0.tar.gz  sha256={manifest['sha256']}" in capsys.readouterr().out
    assert not (release.DEFAULT_OUT / "ipm-app-9.1.0.tar.gz").exists()
    # Every definition of that directory by default, and `list` reads the same directory.
    assert release.main(["build", "--definitions", str(definitions), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("sha256=") == 1
    assert release.main(["list", "--definitions", str(definitions), "--out", str(out)]) == 0
    assert "9.1.0" in capsys.readouterr().out


def test_cli_definitions_overrides_releases_dir(tmp_path, capsys):
    definitions = tmp_path / "definitions"
    _test_definition(definitions)
    arguments = ["--releases-dir", str(tmp_path / "nowhere"), "build", "--definitions", str(definitions)]
    assert release.main([*arguments, "--out", str(tmp_path / "out"), "9.1.0"]) == 0
    assert (tmp_path / "out" / "ipm-app-9.1.0.tar.gz").is_file()


def test_cli_missing_definitions_directory_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert release.main(["build", "--definitions", str(tmp_path / "nowhere"), "--out", str(out), "9.1.0"]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"ipm-release: error: no releases directory {tmp_path / 'nowhere'}: pass --definitions DIR with the release definitions\n"
    )
    assert not out.exists()


def test_cli_missing_definition_is_one_line(tmp_path, capsys):
    definitions, out = tmp_path / "definitions", tmp_path / "out"
    _test_definition(definitions)
    assert release.main(["build", "--definitions", str(definitions), "--out", str(out), "9.2.0"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"ipm-release: error: unknown release 9.2.0: {definitions / '9.2.0.yml'} does not exist (known: 9.1.0)\n"
    )
    assert not out.exists()


def test_cli_out_that_is_a_file_is_one_line(tmp_path, capsys):
    definitions, out = tmp_path / "definitions", tmp_path / "out"
    _test_definition(definitions)
    out.write_text("not a directory\n")
    assert release.main(["build", "--definitions", str(definitions), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"ipm-release: error: --out {out} is not a directory: give a directory for the built releases\n"


def test_cli_build_help_names_definitions_and_out(capsys):
    with pytest.raises(SystemExit) as leaving:
        release.main(["build", "--help"])
    assert leaving.value.code == 0
    text = capsys.readouterr().out
    assert "--definitions DIR" in text and "--out DIR" in text


def test_factory_install_unpacks_and_switches_with_release_switch(tmp_path, monkeypatch):
    calls = []
    unpack, switch_current = release.rs.unpack, release.rs.switch_current

    def recording_unpack(artifact, version, root="/"):
        calls.append(("unpack", version, root))
        return unpack(artifact, version, root)

    def recording_switch(version, root="/"):
        calls.append(("switch_current", version, root))
        return switch_current(version, root)

    monkeypatch.setattr(release.rs, "unpack", recording_unpack)
    monkeypatch.setattr(release.rs, "switch_current", recording_switch)
    release.factory_install(tmp_path, "2.3.1")
    assert calls == [("unpack", "2.3.1", str(tmp_path)), ("switch_current", "2.3.1", str(tmp_path))]
    assert release.rs.current_version(str(tmp_path)) == "2.3.1"
    assert release.rs.installed_versions(str(tmp_path)) == ["2.3.1"]
