"""ipm-aptrepo: the lab's signed package mirror, built with Debian's tools and checked by the real apt.

No lab terminal: apt-get runs on this machine against a throw-away apt root (every Dir:: option
points into a temporary directory, nothing of the machine's apt state is read or written but its
apt.conf.d), through the repository's own HTTP server on 127.0.73.250.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ipm_tools import aptrepo

ADDRESS = "127.0.73.250"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in aptrepo.TOOLS) or shutil.which("apt-get") is None,
    reason="needs Debian's dpkg-deb, apt-ftparchive, gpg and apt-get (apt-get install apt-utils gpg gpg-agent)",
)


class AptRoot:
    """apt-get and apt-cache with every directory in a temporary tree: a machine of its own."""

    def __init__(self, directory: Path, url: str, keyring: Path):
        self.directory = directory
        for sub in ("etc/sources.list.d", "etc/preferences.d", "state/lists/partial", "cache/archives/partial"):
            (directory / sub).mkdir(parents=True)
        (directory / "status").write_text("")
        (directory / "etc/sources.list.d/ipm-mirror.sources").write_text(
            f"Types: deb\nURIs: {url}\nSuites: {' '.join(aptrepo.SUITES)}\nComponents: main\nSigned-By: {keyring}\n"
        )
        self.options = [
            "-o", "Dir::Etc::sourcelist=/dev/null",
            "-o", f"Dir::Etc::sourceparts={directory}/etc/sources.list.d",
            "-o", f"Dir::Etc::preferencesparts={directory}/etc/preferences.d",
            "-o", f"Dir::State={directory}/state",
            "-o", f"Dir::State::status={directory}/status",
            "-o", f"Dir::Cache={directory}/cache",
            "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "Debug::NoDropPrivs=1",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, LC_ALL="C")
        return subprocess.run([tool, *self.options, *args], capture_output=True, text=True, env=env, timeout=120)

    def candidates(self, *packages: str) -> dict[str, str]:
        """{package: versions apt knows, newest first} from apt-cache madison."""
        seen: dict[str, list[str]] = {}
        for line in self.run("apt-cache", "madison", *packages).stdout.splitlines():
            name, version, source = (part.strip() for part in line.split("|"))
            seen.setdefault(name, []).append(f"{version} {source.split()[1]}")
        return seen


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return aptrepo.build_repository(tmp_path_factory.mktemp("mirror") / "repo", include_broken=True)


@pytest.fixture(scope="module")
def server(built):
    with aptrepo.serve_repository(built.path, ADDRESS) as running:
        yield running


def test_the_signature_verifies_and_apt_sees_every_suite(built, server, tmp_path):
    assert built.trusted
    assert server.url.startswith(f"http://{ADDRESS}:")
    apt = AptRoot(tmp_path / "apt", server.url, built.keyring)
    update = apt.run("apt-get", "update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "NO_PUBKEY" not in update.stderr and "not signed" not in update.stderr
    seen = apt.candidates("ipm-base-tools", "ipm-openssl-sim", "ipm-kernel-sim", "ipm-runtime", "ipm-broken")
    assert seen == {
        "ipm-base-tools": ["1.1 bookworm-ipm-updates/main", "1.0 bookworm-ipm/main"],
        "ipm-openssl-sim": [
            "1.1 bookworm-ipm-updates/main",
            "1.0+sec1 bookworm-ipm-security/main",
            "1.0 bookworm-ipm/main",
        ],
        "ipm-kernel-sim": ["1.1 bookworm-ipm-security/main", "1.0 bookworm-ipm/main"],
        "ipm-runtime": ["2.0 bookworm-ipm-updates/main", "1.0 bookworm-ipm/main"],
        "ipm-broken": ["1.1 bookworm-ipm-updates/main", "1.0 bookworm-ipm/main"],
    }
    policy = apt.run("apt-cache", "policy").stdout
    assert "o=IPM,a=bookworm-ipm-security,n=bookworm-ipm-security,l=IPM security,c=main" in policy
    assert "o=IPM,a=bookworm-ipm-updates,n=bookworm-ipm-updates,l=IPM mirror,c=main" in policy
    assert built.packages["ipm-openssl-sim"] == {
        "bookworm-ipm": "1.0",
        "bookworm-ipm-updates": "1.1",
        "bookworm-ipm-security": "1.0+sec1",
    }
    assert built.baseline()["ipm-kernel-sim"] == "1.0"
    assert built.newest(aptrepo.BASELINE, aptrepo.SECURITY) == {
        "ipm-base-tools": "1.0",
        "ipm-openssl-sim": "1.0+sec1",
        "ipm-kernel-sim": "1.1",
        "ipm-runtime": "1.0",
        "ipm-broken": "1.0",
    }


def test_the_packages_fetch_and_their_maintainer_scripts(built, server, tmp_path):
    apt = AptRoot(tmp_path / "apt", server.url, built.keyring)
    assert apt.run("apt-get", "update").returncode == 0
    fetched = apt.run("apt-get", "install", "-y", "--download-only", "ipm-kernel-sim=1.1", "ipm-broken=1.1")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    archives = apt.directory / "cache" / "archives"
    kernel = subprocess.run(
        ["dpkg-deb", "-I", str(archives / "ipm-kernel-sim_1.1_all.deb"), "postinst"], capture_output=True, text=True
    ).stdout
    assert "/var/run/reboot-required" in kernel and "reboot-required.pkgs" in kernel
    broken = subprocess.run(
        ["dpkg-deb", "-I", str(archives / "ipm-broken_1.1_all.deb"), "postinst"], capture_output=True, text=True
    ).stdout
    assert "exit 1" in broken
    baseline = subprocess.run(
        ["dpkg-deb", "-f", str(built.path / "pool/bookworm-ipm/main/ipm-kernel-sim_1.0_all.deb"), "Architecture"],
        capture_output=True,
        text=True,
    )
    assert baseline.stdout.strip() == "all"


def test_a_repository_signed_with_another_key_is_refused(tmp_path):
    other = aptrepo.build_repository(tmp_path / "other", sign_with="other")
    assert not other.trusted and other.signing_fingerprint != other.fingerprint
    with aptrepo.serve_repository(other.path, ADDRESS) as running:
        apt = AptRoot(tmp_path / "apt", running.url, other.keyring)
        update = apt.run("apt-get", "update")
        assert update.returncode != 0
        assert "NO_PUBKEY" in update.stderr + update.stdout and "is not signed" in update.stderr
        assert apt.candidates("ipm-base-tools") == {}
        # signed again with the mirror's key: trusted again, on the same server
        again = aptrepo.resign(other, other_key=False)
        assert again.trusted
        update = apt.run("apt-get", "update")
        assert update.returncode == 0, update.stderr
        assert "1.1 bookworm-ipm-updates/main" in apt.candidates("ipm-base-tools")["ipm-base-tools"]
    assert aptrepo.load_repository(other.path).trusted


def test_the_server_stops_and_comes_back_on_the_same_port(built):
    with aptrepo.serve_repository(built.path, ADDRESS) as running:
        url = running.url + "dists/bookworm-ipm/InRelease"
        assert b"BEGIN PGP SIGNED MESSAGE" in urllib.request.urlopen(url, timeout=5).read()
        port = running.port
        running.stop()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
        running.start()
        assert running.port == port
        assert urllib.request.urlopen(url, timeout=5).status == 200
        process = running.process
    assert process.poll() is not None  # stopped when the with-block ends


def test_the_packages_are_built_once_per_recipe(built, tmp_path):
    debs = aptrepo.built_packages()
    before = {path.name: path.stat().st_mtime_ns for path in debs.iterdir()}
    aptrepo.build_repository(tmp_path / "again")
    assert aptrepo.built_packages() == debs
    assert {path.name: path.stat().st_mtime_ns for path in debs.iterdir()} == before
    assert debs.name == f"debs-{aptrepo.recipe_hash()}"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ipm-aptrepo"), *args], capture_output=True, text=True, env=env, timeout=120)


def test_the_command_line_builds_and_serves(tmp_path):
    assert cli("--help").returncode == 0
    built = cli("build", "--out", str(tmp_path / "repo"), "--include-broken")
    assert built.returncode == 0, built.stderr
    assert "ipm-broken: bookworm-ipm 1.0, bookworm-ipm-updates 1.1" in built.stdout
    with socket.socket() as probe:
        probe.bind((ADDRESS, 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(BIN / "ipm-aptrepo"), "serve", str(tmp_path / "repo"), "--address", ADDRESS, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"http://{ADDRESS}:{port}/" in server.stdout.readline()
        answer = urllib.request.urlopen(f"http://{ADDRESS}:{port}/dists/bookworm-ipm-security/Release", timeout=5)
        assert b"Label: IPM security" in answer.read()
        busy = cli("serve", str(tmp_path / "repo"), "--address", ADDRESS, "--port", str(port))
        assert busy.returncode == 1
        assert busy.stderr.startswith(f"ipm-aptrepo: error: cannot listen on {ADDRESS}:{port}")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_bad_input_is_one_clear_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    unwritable = cli("build", "--out", str(blocker / "repo"))
    assert unwritable.returncode == 1
    assert unwritable.stderr.strip().splitlines() == [
        f"ipm-aptrepo: error: cannot write the repository to {blocker / 'repo'}: Not a directory; "
        "pass --out a writable directory"
    ]
    empty = tmp_path / "bin"
    empty.mkdir()
    missing = cli("build", "--out", str(tmp_path / "repo"), env=dict(os.environ, PATH=str(empty)))
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    assert "dpkg-deb" in missing.stderr and "apt-get install" in missing.stderr and "apt-utils" in missing.stderr
    not_a_repository = cli("serve", str(tmp_path))
    assert not_a_repository.returncode == 1
    assert "is not a repository built by ipm-aptrepo" in not_a_repository.stderr
    assert f"ipm-aptrepo build --out {tmp_path}" in not_a_repository.stderr
