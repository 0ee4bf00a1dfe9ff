"""ipm-aptrepo: the vendor's package mirror of the lab, a signed apt repository built with Debian's tools.

Three suites (codename = suite name, Origin ``IPM``): ``bookworm-ipm`` (the baseline every terminal
starts from), ``bookworm-ipm-updates`` (regular updates) and ``bookworm-ipm-security`` (security
updates, Label ``IPM security``), holding tiny ``Architecture: all`` packages built with ``dpkg-deb``
(see RECIPE). Indexes come from ``apt-ftparchive``; every suite's Release is signed with ``gpg``
(InRelease and Release.gpg) by a key of the mirror's own, generated once in a throw-away GNUPGHOME
(never the user's) and kept in the cache next to the built packages; its public part is exported as a
binary keyring for apt's ``Signed-By``. A second key ("other") signs a repository the terminals do
not trust, for bad-signature tests.

The packages are cached under a hash of the recipe (``build/aptrepo-cache`` or $IPM_APTREPO_CACHE),
so a build takes about a second once the cache is warm. See docs/patch-compliance.md.

Python API: ``build_repository``, ``resign``, ``load_repository``, ``serve_repository``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ansible_collections.ipm.fleet.plugins.module_utils.terminal_facts import compare_debian_versions
from ipm_tools import PROJECT_ROOT, closed_output

BASELINE = "bookworm-ipm"
UPDATES = "bookworm-ipm-updates"
SECURITY = "bookworm-ipm-security"
SUITES = (BASELINE, UPDATES, SECURITY)
ORIGIN = "IPM"
LABELS = {BASELINE: "IPM mirror", UPDATES: "IPM mirror", SECURITY: "IPM security"}
COMPONENT = "main"
# Architecture-all packages are listed in each architecture's index, as Debian does
# (No-Support-for-Architecture-all), so apt on any of these finds them without a binary-all index.
ARCHITECTURES = ("amd64", "arm64", "armhf", "i386")
KEYRING_NAME = "ipm-mirror.gpg"
METADATA_NAME = "repository.json"
MAINTAINER = "IPM lab mirror <mirror@ipm.invalid>"
KEY_USERS = {"mirror": "IPM lab mirror <mirror@ipm.invalid>", "other": "Untrusted signer <other@ipm.invalid>"}
FIXED_MTIME = 1577836800  # 2020-01-01 UTC: the same recipe gives the same packages
RECIPE_FORMAT = 1  # bump when the way packages are built changes

# The packages of the lab mirror's own (name, version, suite, postinst or None, broken-only).
REBOOT_POSTINST = """#!/bin/sh
# Like Debian's kernel packages with reboot-notifier: ask for a reboot once configured.
set -e
if [ "$1" = configure ]; then
    echo '*** System restart required ***' > /var/run/reboot-required
    grep -qx 'ipm-kernel-sim' /var/run/reboot-required.pkgs 2>/dev/null || echo 'ipm-kernel-sim' >> /var/run/reboot-required.pkgs
fi
exit 0
"""
BROKEN_POSTINST = """#!/bin/sh
# Fails on purpose: the lab's package whose maintainer script breaks (fault tests).
echo 'ipm-broken: postinst fails on purpose (lab fault test)' >&2
exit 1
"""


@dataclass(frozen=True)
class PackageSpec:
    name: str
    version: str
    suite: str
    description: str
    postinst: str | None = None
    broken_only: bool = False

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version}_all.deb"


RECIPE = (
    PackageSpec("ipm-base-tools", "1.0", BASELINE, "IPM base tools (lab package)"),
    PackageSpec("ipm-base-tools", "1.1", UPDATES, "IPM base tools (lab package)"),
    PackageSpec("ipm-openssl-sim", "1.0", BASELINE, "IPM simulated TLS library (lab package)"),
    PackageSpec("ipm-openssl-sim", "1.0+sec1", SECURITY, "IPM simulated TLS library (lab package)"),
    PackageSpec("ipm-openssl-sim", "1.1", UPDATES, "IPM simulated TLS library (lab package)"),
    PackageSpec("ipm-kernel-sim", "1.0", BASELINE, "IPM simulated kernel (lab package)"),
    PackageSpec("ipm-kernel-sim", "1.1", SECURITY, "IPM simulated kernel, needs a reboot", REBOOT_POSTINST),
    PackageSpec("ipm-runtime", "1.0", BASELINE, "IPM runtime the application depends on (lab package)"),
    PackageSpec("ipm-runtime", "2.0", UPDATES, "IPM runtime the application depends on (lab package)"),
    PackageSpec("ipm-broken", "1.0", BASELINE, "IPM package for fault tests (lab package)"),
    PackageSpec("ipm-broken", "1.1", UPDATES, "IPM package whose postinst fails", BROKEN_POSTINST, broken_only=True),
)

# Debian package of each tool the build needs (for the error message when one is missing).
TOOLS = {
    "dpkg-deb": "dpkg",
    "apt-ftparchive": "apt-utils",
    "gpg": "gpg",
    "gpg-agent": "gpg-agent",
    "gpgconf": "gpgconf",
}


class AptRepoError(Exception):
    """A mistake or a missing tool, said in one line for the user."""


@dataclass(frozen=True)
class Repository:
    """A built repository.

    ``keyring`` is the binary keyring terminals trust (``Signed-By``), always the mirror's key;
    ``fingerprint`` is that key's. ``signing_fingerprint`` is the key that signed the Release files:
    the same, unless the repository was signed with the other key on purpose.
    """

    path: Path
    keyring: Path
    fingerprint: str
    suites: tuple[str, ...]
    packages: dict[str, dict[str, str]]
    signing_fingerprint: str = ""
    include_broken: bool = False

    @property
    def trusted(self) -> bool:
        return self.signing_fingerprint == self.fingerprint

    def baseline(self) -> dict[str, str]:
        """{package: version} of the baseline suite (what terminals start from)."""
        return {name: suites[BASELINE] for name, suites in self.packages.items() if BASELINE in suites}

    def newest(self, *suites: str) -> dict[str, str]:
        """{package: newest version} over SUITES (all suites when none is given)."""
        chosen = suites or self.suites
        newest: dict[str, str] = {}
        for name, versions in self.packages.items():
            candidates = [versions[suite] for suite in chosen if suite in versions]
            if candidates:
                newest[name] = max(candidates, key=_version_sort_key)
        return newest


_version_sort_key = functools.cmp_to_key(compare_debian_versions)


# --- tools ------------------------------------------------------------------------------------


def require_tools() -> None:
    """AptRepoError naming the Debian packages to install when a tool of the build is missing."""
    missing = {tool: package for tool, package in TOOLS.items() if shutil.which(tool) is None}
    if missing:
        raise AptRepoError(
            "%s not found: install %s (apt-get install %s)"
            % (", ".join(missing), "Debian's tools", " ".join(sorted(set(missing.values()))))
        )


def _run(command: list[str], cwd: Path | None = None, env: dict | None = None, what: str = "") -> bytes:
    try:
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False, timeout=120)
    except FileNotFoundError:
        raise AptRepoError(f"{command[0]} not found: apt-get install {TOOLS.get(command[0], command[0])}") from None
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode("utf-8", "replace").strip().splitlines()
        raise AptRepoError(f"{what or command[0]} failed: {message[-1] if message else 'exit %d' % result.returncode}")
    return result.stdout


def cache_dir() -> Path:
    return Path(os.environ.get("IPM_APTREPO_CACHE") or PROJECT_ROOT / "build" / "aptrepo-cache")


def _publish_dir(temporary: Path, final: Path) -> Path:
    """Rename a completely built TEMPORARY directory to FINAL; another process may have won the race."""
    try:
        temporary.rename(final)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        if not final.is_dir():
            raise
    return final


# --- keys -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _gnupg_home() -> Iterator[dict]:
    """The environment of a throw-away GNUPGHOME (short path: gpg-agent's socket lives in it)."""
    home = Path(tempfile.mkdtemp(prefix="ipm-gpg-", dir="/tmp"))
    home.chmod(0o700)
    env = dict(os.environ, GNUPGHOME=str(home), LC_ALL="C")
    try:
        yield env
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


GPG = ["gpg", "--batch", "--no-tty", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]


@dataclass(frozen=True)
class SigningKey:
    name: str
    fingerprint: str
    secret: Path  # armored secret key
    keyring: Path  # binary public keyring


def signing_key(name: str) -> SigningKey:
    """The cached key NAME (mirror or other), generated once in a throw-away GNUPGHOME."""
    directory = cache_dir() / "keys" / name
    if not (directory / "fingerprint").is_file():
        directory.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory.parent))
        with _gnupg_home() as env:
            _run([*GPG, "--quick-gen-key", KEY_USERS[name], "ed25519", "sign", "never"], env=env, what="gpg key")
            listing = _run([*GPG, "--with-colons", "--list-secret-keys"], env=env, what="gpg").decode()
            fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
            (temporary / "secret.asc").write_bytes(
                _run([*GPG, "--armor", "--export-secret-keys", fingerprint], env=env, what="gpg export")
            )
            (temporary / "keyring.gpg").write_bytes(_run([*GPG, "--export", fingerprint], env=env, what="gpg export"))
        (temporary / "secret.asc").chmod(0o600)
        (temporary / "fingerprint").write_text(fingerprint + "\n")
        _publish_dir(temporary, directory)
    return SigningKey(
        name,
        (directory / "fingerprint").read_text().strip(),
        directory / "secret.asc",
        directory / "keyring.gpg",
    )


def _sign_suites(dists: Path, suites: tuple[str, ...], key: SigningKey) -> None:
    """InRelease (clear-signed) and Release.gpg (detached) of every suite, signed by KEY."""
    with _gnupg_home() as env:
        _run([*GPG, "--import", str(key.secret)], env=env, what="gpg import")
        for suite in suites:
            release = dists / suite / "Release"
            for name in ("InRelease", "Release.gpg"):
                with contextlib.suppress(FileNotFoundError):
                    (dists / suite / name).unlink()
            sign = [*GPG, "--digest-algo", "SHA256", "--local-user", key.fingerprint]
            _run([*sign, "--clearsign", "-o", str(dists / suite / "InRelease"), str(release)], env=env, what="gpg")
            _run([*sign, "--armor", "--detach-sign", "-o", str(release) + ".gpg", str(release)], env=env, what="gpg")


# --- packages ---------------------------------------------------------------------------------


def recipe_hash(recipe: tuple[PackageSpec, ...] = RECIPE) -> str:
    text = json.dumps([RECIPE_FORMAT, [dataclasses.astuple(spec) for spec in recipe], ARCHITECTURES])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build_deb(spec: PackageSpec, staging: Path, out: Path) -> None:
    root = staging / spec.filename
    control = root / "DEBIAN"
    control.mkdir(parents=True)
    (control / "control").write_text(
        f"Package: {spec.name}\nVersion: {spec.version}\nArchitecture: all\nMaintainer: {MAINTAINER}\n"
        f"Section: misc\nPriority: optional\nDescription: {spec.description}\n"
        " A tiny package of the ipm.fleet lab mirror (ipm-aptrepo); it installs one file.\n"
    )
    if spec.postinst:
        (control / "postinst").write_text(spec.postinst)
        (control / "postinst").chmod(0o755)
    share = root / "usr" / "share" / "ipm-sim" / spec.name
    share.mkdir(parents=True)
    (share / "version").write_text(spec.version + "\n")
    for path in [root, *root.rglob("*")]:
        os.utime(path, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(FIXED_MTIME))
    _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out / spec.filename)], env=env)


def built_packages() -> Path:
    """The directory of every package of RECIPE, built once per recipe hash."""
    directory = cache_dir() / f"debs-{recipe_hash()}"
    if not directory.is_dir():
        directory.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".debs-", dir=directory.parent))
        try:
            staging = temporary / ".staging"
            for spec in RECIPE:
                _build_deb(spec, staging, temporary)
            shutil.rmtree(staging)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        _publish_dir(temporary, directory)
    return directory


# --- repository -------------------------------------------------------------------------------


def _prepare_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".ipm-aptrepo-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise AptRepoError(
            f"cannot write the repository to {out_dir}: {exc.strerror or exc}; pass --out a writable directory"
        ) from None
    return out_dir.resolve()


def _write_indexes(out_dir: Path, suite: str, specs: list[PackageSpec], debs: Path) -> None:
    pool = out_dir / "pool" / suite / COMPONENT
    pool.mkdir(parents=True)
    for spec in specs:
        shutil.copy2(debs / spec.filename, pool / spec.filename)
    packages = _run(["apt-ftparchive", "packages", f"pool/{suite}"], cwd=out_dir, what="apt-ftparchive packages")
    for arch in ARCHITECTURES:
        index = out_dir / "dists" / suite / COMPONENT / f"binary-{arch}"
        index.mkdir(parents=True)
        (index / "Packages").write_bytes(packages)
        (index / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
        (index / "Release").write_text(
            f"Archive: {suite}\nOrigin: {ORIGIN}\nLabel: {LABELS[suite]}\nComponent: {COMPONENT}\nArchitecture: {arch}\n"
        )


def _write_release(out_dir: Path, suite: str) -> None:
    fields = {
        "Origin": ORIGIN,
        "Label": LABELS[suite],
        "Suite": suite,
        "Codename": suite,
        "Architectures": " ".join(ARCHITECTURES),
        "Components": COMPONENT,
        "Description": f"ipm.fleet lab mirror: {suite}",
    }
    options = [item for key, value in fields.items() for item in ("-o", f"APT::FTPArchive::Release::{key}={value}")]
    text = _run(["apt-ftparchive", *options, "release", "."], cwd=out_dir / "dists" / suite, what="apt-ftparchive")
    text = text.decode().replace("Components:", "No-Support-for-Architecture-all: Packages\nComponents:", 1)
    (out_dir / "dists" / suite / "Release").write_text(text)


def build_repository(out_dir, include_broken: bool = False, sign_with: str = "mirror") -> Repository:
    """Build the signed repository in OUT_DIR (its dists/ and pool/ are replaced) and return it.

    SIGN_WITH ``other`` signs it with a key the terminals do not trust (bad-signature tests); the
    returned ``keyring`` is still the mirror's, the one terminals are given.
    """
    if sign_with not in KEY_USERS:
        raise AptRepoError(f"sign_with must be one of {', '.join(KEY_USERS)}, not {sign_with!r}")
    require_tools()
    out_dir = _prepare_out_dir(out_dir)
    debs = built_packages()
    mirror = signing_key("mirror")
    for part in ("dists", "pool"):
        shutil.rmtree(out_dir / part, ignore_errors=True)
    specs = [spec for spec in RECIPE if include_broken or not spec.broken_only]
    packages: dict[str, dict[str, str]] = {}
    for suite in SUITES:
        in_suite = [spec for spec in specs if spec.suite == suite]
        _write_indexes(out_dir, suite, in_suite, debs)
        _write_release(out_dir, suite)
        for spec in in_suite:
            packages.setdefault(spec.name, {})[suite] = spec.version
    shutil.copyfile(mirror.keyring, out_dir / KEYRING_NAME)
    repository = Repository(
        out_dir, out_dir / KEYRING_NAME, mirror.fingerprint, SUITES, packages, mirror.fingerprint, include_broken
    )
    return resign(repository, other_key=(sign_with == "other"))


def resign(repository: Repository, other_key: bool = True) -> Repository:
    """Sign REPOSITORY's suites again in place: with the other key (untrusted) or with the mirror's."""
    require_tools()
    key = signing_key("other" if other_key else "mirror")
    _sign_suites(repository.path / "dists", repository.suites, key)
    signed = dataclasses.replace(repository, signing_fingerprint=key.fingerprint)
    metadata = dataclasses.asdict(signed)
    metadata.update(path=str(signed.path), keyring=str(signed.keyring), suites=list(signed.suites))
    (signed.path / METADATA_NAME).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return signed


def load_repository(path) -> Repository:
    """The repository built in PATH earlier (by build_repository or ``ipm-aptrepo build``)."""
    path = Path(path)
    try:
        data = json.loads((path / METADATA_NAME).read_text())
        return Repository(
            path=path.resolve(),
            keyring=path.resolve() / KEYRING_NAME,
            fingerprint=data["fingerprint"],
            suites=tuple(data["suites"]),
            packages=data["packages"],
            signing_fingerprint=data.get("signing_fingerprint", ""),
            include_broken=bool(data.get("include_broken")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        raise AptRepoError(
            f"{path} is not a repository built by ipm-aptrepo (no readable {METADATA_NAME}): "
            f"run ipm-aptrepo build --out {path}"
        ) from None


# --- serving ----------------------------------------------------------------------------------

_RUNNING: set[RepositoryServer] = set()


class RepositoryServer:
    """A real HTTP server (a subprocess) serving a repository; stop() and start() again on the same port."""

    def __init__(self, path, address: str = "127.0.0.1", port: int = 0):
        self.path = Path(path)
        self.address = address
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 15) -> RepositoryServer:
        if self.running:
            return self
        if not (self.path / "dists").is_dir():
            raise AptRepoError(f"{self.path} has no dists/: run ipm-aptrepo build --out {self.path} first")
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT / "tools"), os.environ.get("PYTHONPATH", "")])
        )
        command = [sys.executable, "-m", "ipm_tools.aptrepo_server", "--directory", str(self.path)]
        command += ["--address", self.address, "--port", str(self.port), "--parent-pid", str(os.getpid())]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _unused, _unused2 = select.select([process.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(process.stdout.fileno(), 256)
                if not chunk:
                    break
                line += chunk
        if not line.startswith(b"serving "):
            process.kill()
            _unused3, error = process.communicate(timeout=10)
            reason = error.decode("utf-8", "replace").strip().splitlines()
            raise AptRepoError(reason[-1] if reason else f"the repository server did not start within {timeout:.0f} s")
        self.port = int(line.split()[1].decode().rstrip("/").rsplit(":", 1)[1])
        self.process = process
        _RUNNING.add(self)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        _RUNNING.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> RepositoryServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


@contextlib.contextmanager
def serve_repository(path, address: str = "127.0.0.1", port: int = 0) -> Iterator[RepositoryServer]:
    """Serve the repository in PATH over HTTP on ADDRESS:PORT (0: a free port) for the with-block."""
    path = path.path if isinstance(path, Repository) else path
    server = RepositoryServer(path, address, port).start()
    try:
        yield server
    finally:
        server.stop()


# --- command line -----------------------------------------------------------------------------


def _command_build(args: argparse.Namespace) -> int:
    repository = build_repository(args.out, include_broken=args.include_broken, sign_with=args.sign_with)
    print(f"repository {repository.path}")
    print(f"keyring {repository.keyring} (fingerprint {repository.fingerprint})")
    if not repository.trusted:
        print(f"signed with the other key {repository.signing_fingerprint}: terminals will refuse it")
    for name, versions in sorted(repository.packages.items()):
        print(f"  {name}: " + ", ".join(f"{suite} {version}" for suite, version in versions.items()))
    return 0


def _command_resign(args: argparse.Namespace) -> int:
    repository = resign(load_repository(args.directory), other_key=(args.key == "other"))
    print(f"{repository.path} signed with the {args.key} key {repository.signing_fingerprint}")
    return 0


def _command_serve(args: argparse.Namespace) -> int:
    from ipm_tools import aptrepo_server

    repository = load_repository(args.directory)
    try:
        server = aptrepo_server.make_server(str(repository.path), args.address, args.port)
    except OSError as exc:
        raise AptRepoError(
            f"cannot listen on {args.address}:{args.port}: {exc.strerror or exc}; choose another --address or --port"
        ) from None
    print(f"serving {repository.path} on {aptrepo_server.url_of(server)} (Ctrl-C stops)", flush=True)
    aptrepo_server.serve_forever(server)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipm-aptrepo",
        description="The lab's vendor package mirror: a signed apt repository (suites "
        + ", ".join(SUITES)
        + ") built with dpkg-deb, apt-ftparchive and gpg, and its HTTP server.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser("build", help="build the signed repository into a directory")
    build.add_argument("--out", required=True, type=Path, help="directory of the repository (dists/, pool/)")
    build.add_argument("--include-broken", action="store_true", help="add ipm-broken 1.1, whose postinst fails")
    build.add_argument(
        "--sign-with", choices=sorted(KEY_USERS), default="mirror", help="other: a key terminals do not trust"
    )
    build.set_defaults(handler=_command_build)
    again = commands.add_parser("resign", help="sign a built repository again with the mirror's or the other key")
    again.add_argument("directory", type=Path)
    again.add_argument("--key", choices=sorted(KEY_USERS), default="other")
    again.set_defaults(handler=_command_resign)
    serve = commands.add_parser("serve", help="serve a built repository over HTTP (foreground, Ctrl-C stops)")
    serve.add_argument("directory", type=Path)
    serve.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.set_defaults(handler=_command_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        return closed_output()
    except KeyboardInterrupt:
        return 130
    except AptRepoError as exc:
        print(f"ipm-aptrepo: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ipm-aptrepo: error: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
