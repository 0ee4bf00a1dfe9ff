# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The delivery of a release on a terminal, as one transaction that ends on the new release or the old one.

Steps: verify the artifact's sha256; unpack it beside the installed releases; migrate the
parameters to the new release's schema; switch ``/opt/ipm/app/current`` atomically; restart
ipm-app; watch its health over a settle period. Any failure after the switch restores the previous
release, its parameters and unit, restarts it and checks it is healthy again. Application data
(``/var/lib/ipm/app``) is never touched. Old releases are pruned, keeping a number of them.

Standard library only: this runs on terminals.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from urllib.error import HTTPError, URLError
from urllib.request import ProxyHandler, build_opener

from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm
from ansible_collections.ipm.fleet.plugins.module_utils import terminal_facts
from ansible_collections.ipm.fleet.plugins.module_utils.compat import check_compatibility

APP_ROOT = "/opt/ipm/app"
CONFIG = "/etc/ipm/app.yml"
UNIT_NAME = "ipm-app.service"
UNIT_PATH = "/etc/systemd/system/" + UNIT_NAME
STATE_DIR = "/var/lib/ipm/delivery"
LOCK_PATH = "/run/ipm-release.lock"


class DeliveryError(Exception):
    """A step failed; the message says which and why."""


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _releases_dir(root):
    return os.path.join(root, APP_ROOT.lstrip("/"), "releases")


def _current_link(root):
    return os.path.join(root, APP_ROOT.lstrip("/"), "current")


def current_version(root="/"):
    link = _current_link(root)
    return os.path.basename(os.readlink(link).rstrip("/")) if os.path.islink(link) else None


def installed_versions(root="/"):
    try:
        names = [n for n in os.listdir(_releases_dir(root)) if rm.version_tuple(n)]
    except FileNotFoundError:
        return []
    return sorted(names, key=rm.version_tuple)


def switch_current(version, root="/"):
    """Point ``current`` at releases/VERSION atomically (a new link renamed over the old one)."""
    link = _current_link(root)
    temporary = link + ".new"
    if os.path.lexists(temporary):
        os.unlink(temporary)
    os.symlink("releases/" + version, temporary)
    os.rename(temporary, link)


def _write_atomically(path, data, mode):
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.rename(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def unpack(artifact, version, root="/"):
    """Unpack ARTIFACT as releases/VERSION (via a temporary directory); returns True when newly unpacked."""
    releases = _releases_dir(root)
    final = os.path.join(releases, version)
    if os.path.isfile(os.path.join(final, "manifest.yml")):
        return False
    os.makedirs(releases, exist_ok=True)
    staging = tempfile.mkdtemp(dir=releases, prefix="." + version + ".")
    try:
        with tarfile.open(artifact, "r:gz") as archive:
            for member in archive.getmembers():
                if _escapes(staging, member):
                    raise DeliveryError("artifact %s: unsafe path %s in the archive" % (artifact, member.name))
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later: the library checks too
                archive.extractall(staging, filter="data")
            else:
                archive.extractall(staging)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return True


def _escapes(staging, member):
    """True when extracting ``member`` under ``staging`` could write or point outside it.

    Names and link targets are normalised lexically; with every link target kept inside, no chain
    of links inside the archive can lead out either. Device files and FIFOs are refused as well.
    """

    def inside(path):
        return path == staging or path.startswith(staging + os.sep)

    if os.path.isabs(member.name) or not inside(os.path.normpath(os.path.join(staging, member.name))):
        return True
    if member.issym() or member.islnk():
        base = os.path.dirname(member.name) if member.issym() else ""
        target = os.path.normpath(os.path.join(staging, base, member.linkname))
        return os.path.isabs(member.linkname) or not inside(target)
    return not (member.isfile() or member.isdir())


def manifest_in_archive(artifact):
    """The release manifest inside an artifact, read without unpacking it."""
    with tarfile.open(artifact, "r:gz") as archive:
        try:
            member = archive.extractfile("manifest.yml")
        except KeyError:
            member = None
        if member is None:
            raise DeliveryError("artifact %s has no manifest.yml" % artifact)
        definition = rm.load_yaml_text(member.read().decode("utf-8"), artifact + ":manifest.yml")
    rm.validate_definition(definition, source=artifact + ":manifest.yml")
    return definition


def load_release(version, root="/"):
    return rm.load_definition(os.path.join(_releases_dir(root), version, "manifest.yml"))


def read_parameters(root="/"):
    try:
        with open(os.path.join(root, CONFIG.lstrip("/")), encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}, None
    data = rm.load_yaml_text(text, CONFIG)
    return (data or {}), text


def plan_parameters(current_definition, target_definition, installed, desired):
    """Parameters for the target release: INSTALLED migrated, then DESIRED (the registry's) overlaid.

    Returns (effective, notes). Raises ReleaseError when a value is invalid for the target.
    """
    if current_definition is not None and current_definition.get("version") != target_definition.get("version"):
        migrated, notes = rm.migrate_parameters(installed, target_definition, current_definition)
    else:
        migrated, notes = rm.effective_parameters(target_definition, installed), []
    if desired:
        for key in sorted(desired):
            if migrated.get(key) != desired[key]:
                notes.append("%s: set to %s by the registry" % (key, json.dumps(desired[key])))
        migrated = rm.effective_parameters(target_definition, dict(migrated, **desired))
    return migrated, notes


def render_parameters(parameters, version):
    header = "---\n# Parameters of ipm-app for release %s, written by ipm.fleet.release.\n" % version
    return (header + rm.dump_yaml(parameters)).encode("utf-8")


def health_url(parameters):
    address = parameters.get("listen_address") or "127.0.0.1"
    if address in ("0.0.0.0", "::"):
        address = "127.0.0.1"
    return "http://%s:8080/health" % ("[%s]" % address if ":" in address else address)


_OPENER = build_opener(ProxyHandler({}))


def probe_health(url, timeout=2.0):
    """(ok, answer): ok when the application answers 200 with status ok."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            answer = json.loads(response.read().decode("utf-8"))
            return response.status == 200 and answer.get("status") == "ok", answer
    except HTTPError as exc:
        try:
            answer = json.loads(exc.read().decode("utf-8"))
        except ValueError:
            answer = {}
        return False, dict(answer, http_status=exc.code)
    except (URLError, OSError, ValueError) as exc:
        return False, {"error": str(getattr(exc, "reason", exc))}


def wait_healthy(url, version, digest, start_timeout, settle, interval=0.5):
    """Wait until VERSION answers healthy (with DIGEST), then require it to stay healthy for SETTLE seconds.

    Returns the last answer; raises DeliveryError saying what went wrong.
    """
    deadline = time.monotonic() + start_timeout
    answer = {}
    while True:
        ok, answer = probe_health(url)
        if ok and answer.get("version") == version and (digest is None or answer.get("parameters_sha256") == digest):
            break
        if time.monotonic() > deadline:
            raise DeliveryError(
                "release %s did not answer healthy on %s within %ss (last answer: %s)"
                % (version, url, start_timeout, json.dumps(answer, sort_keys=True))
            )
        time.sleep(interval)
    settled = time.monotonic() + settle
    while time.monotonic() < settled:
        time.sleep(interval)
        ok, answer = probe_health(url)
        if not ok or answer.get("version") != version:
            raise DeliveryError(
                "release %s became unhealthy during the %ss settle period: %s"
                % (version, settle, json.dumps(answer, sort_keys=True))
            )
    return answer


def systemctl(*args):
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise DeliveryError("systemctl %s failed: %s" % (" ".join(args), (result.stderr or result.stdout).strip()))
    return result.stdout


def install_unit(version, root="/"):
    """Install the release's unit file when it differs; returns the previous content (or None if unchanged)."""
    source = os.path.join(_releases_dir(root), version, "systemd", UNIT_NAME)
    target = os.path.join(root, UNIT_PATH.lstrip("/"))
    try:
        with open(source, "rb") as handle:
            wanted = handle.read()
    except FileNotFoundError:
        return None
    try:
        with open(target, "rb") as handle:
            previous = handle.read()
    except FileNotFoundError:
        previous = b""
    if previous == wanted:
        return None
    _write_atomically(target, wanted, 0o644)
    return previous


def prune(keep, protect, root="/"):
    """Remove the oldest releases beyond KEEP, never one in PROTECT; returns the removed versions."""
    versions = installed_versions(root)
    removable = [v for v in versions if v not in protect]
    excess = max(0, len(versions) - max(keep, len(protect)))
    removed = removable[:excess]
    for version in removed:
        shutil.rmtree(os.path.join(_releases_dir(root), version), ignore_errors=True)
    return removed


class Lock:
    """One delivery at a time on a terminal."""

    def __init__(self, path=LOCK_PATH):
        self.path = path
        self.handle = None

    def __enter__(self):
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DeliveryError("another delivery is running on this terminal (lock %s)" % self.path) from None
            raise
        return self

    def __exit__(self, *exc):
        self.handle.close()


def compatibility_facts(root="/"):
    """The facts the compatibility rules read, without the slower parts (packages, service, health)."""
    facts = terminal_facts.collect(root, sections=("hardware", "interfaces"))
    facts["application"] = terminal_facts.collect_application(root, query_service=False)
    try:
        facts["os"] = {"id": terminal_facts.os_identity(root)[0]}
    except ValueError as exc:
        facts["os"] = {"unknown": str(exc)}
    return facts


def deliver(
    version,
    artifact,
    sha256,
    desired_parameters=None,
    keep=3,
    start_timeout=30.0,
    settle=10.0,
    check_mode=False,
    log=None,
    compatibility=None,
    allow_downgrade=False,
):
    """Put VERSION on this terminal; see the module docstring. Returns a result dict (never raises for a failed step)."""
    log = log or (lambda message: None)
    started = time.monotonic()
    previous = current_version()
    result = {
        "changed": False,
        "version": version,
        "from_version": previous,
        "to_version": version,
        "rolled_back": False,
        "notes": [],
        "steps": [],
    }

    def step(text):
        result["steps"].append(text)
        log(text)

    if compatibility is not None and previous != version:
        verdict = check_compatibility(
            {"version": version, "compatibility": compatibility}, compatibility_facts(), allow_downgrade=allow_downgrade
        )
        if not verdict["compatible"]:
            result.update(
                incompatible=True,
                reasons=verdict["reasons"],
                msg="release %s is not compatible: %s; nothing changed" % (version, "; ".join(verdict["reasons"])),
            )
            return result

    installed = read_parameters()[0]
    current_definition = None
    if previous:
        try:
            current_definition = load_release(previous)
        except rm.ReleaseError:
            current_definition = None

    # Already there: the release is current, healthy, and its parameters are the desired ones.
    if previous == version and current_definition is not None:
        try:
            wanted = plan_parameters(current_definition, current_definition, installed, desired_parameters)[0]
        except rm.ReleaseError as exc:
            return dict(result, failed=True, msg="parameters for %s are invalid: %s" % (version, exc))
        ok, answer = probe_health(health_url(wanted))
        if wanted == rm.effective_parameters(current_definition, installed) and ok and answer.get("version") == version:
            result.update(health=answer, msg="release %s is already current and healthy" % version)
            return result

    if artifact is None or not os.path.isfile(artifact):
        if previous == version:
            artifact = None
        else:
            return dict(result, failed=True, msg="artifact for %s not found on the terminal (%s)" % (version, artifact))
    if artifact is not None:
        actual = sha256_of(artifact)
        if actual != sha256:
            return dict(
                result,
                failed=True,
                msg="artifact %s: sha256 %s does not match the manifest's %s; nothing changed"
                % (artifact, actual, sha256),
            )
        step("artifact verified (sha256 %s)" % sha256[:12])

    if check_mode:
        if artifact is not None:
            try:
                target = manifest_in_archive(artifact)
                result["notes"] = plan_parameters(current_definition, target, installed, desired_parameters)[1]
            except (rm.ReleaseError, DeliveryError, tarfile.TarError) as exc:
                return dict(result, failed=True, msg="release %s cannot be configured: %s" % (version, exc))
        result.update(changed=True, msg="would deliver %s (from %s)" % (version, previous or "nothing"))
        return result

    result["changed"] = True
    newly_unpacked = unpack(artifact, version) if artifact is not None else False
    step(
        "unpacked into %s/releases/%s" % (APP_ROOT, version)
        if newly_unpacked
        else "release %s already unpacked" % version
    )
    try:
        target = load_release(version)
        parameters, notes = plan_parameters(current_definition, target, installed, desired_parameters)
    except rm.ReleaseError as exc:
        if newly_unpacked:
            shutil.rmtree(os.path.join(_releases_dir("/"), version), ignore_errors=True)
        return dict(
            result,
            changed=False,
            failed=True,
            msg="release %s cannot be configured: %s; nothing changed" % (version, exc),
        )
    result["notes"] = notes
    digest = rm.parameters_digest(parameters)

    old_config = _read_bytes(CONFIG)
    old_unit = None
    try:
        _write_atomically(CONFIG, render_parameters(parameters, version), 0o600)
        step("parameters migrated to %s (%d change(s))" % (version, len(notes)))
        old_unit = install_unit(version)
        if old_unit is not None:
            systemctl("daemon-reload")
        switch_current(version)
        step("current -> releases/%s" % version)
        _restart_deliberately()
        step("ipm-app restarted")
        answer = wait_healthy(health_url(parameters), version, digest, start_timeout, settle)
        step("healthy for %ss" % settle)
        result["health"] = answer
    except (DeliveryError, OSError) as exc:
        result.update(failed=True, rolled_back=True, msg="delivery of %s failed: %s" % (version, exc))
        step("rolling back to %s" % (previous or "nothing"))
        result["rollback"] = rollback(previous, old_config, old_unit, start_timeout, step)
        if newly_unpacked and result["rollback"].get("healthy") and previous != version:
            # Back to exactly the previous state: the failed release does not stay installed.
            shutil.rmtree(os.path.join(_releases_dir("/"), version), ignore_errors=True)
            step("removed releases/%s" % version)
        if not result["rollback"].get("healthy"):
            result["msg"] += "; ROLLBACK DID NOT RESTORE A HEALTHY %s: %s" % (previous, result["rollback"].get("error"))
        result["duration_s"] = round(time.monotonic() - started, 2)
        return result

    protect = {version}
    if previous:
        protect.add(previous)
    result["pruned"] = prune(keep, protect)
    result["msg"] = "delivered %s (from %s)" % (version, previous or "nothing")
    result["duration_s"] = round(time.monotonic() - started, 2)
    return result


def _read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _restart_deliberately():
    """Restart ipm-app for a delivery or a rollback.

    The unit's start limit (5 starts in 120 s) is there to stop a crash loop; a deliberate restart
    must not be refused because earlier deliveries or rollbacks used it up, nor fail because the
    unit is in the failed state: reset-failed clears both first.
    """
    systemctl("reset-failed", UNIT_NAME)
    systemctl("restart", UNIT_NAME)


def rollback(previous, old_config, old_unit, start_timeout, step):
    """Restore the previous release, parameters and unit; restart; check health. Returns what happened."""
    outcome = {"to": previous, "healthy": False}
    try:
        if old_config is not None:
            _write_atomically(CONFIG, old_config, 0o600)
        elif os.path.lexists(CONFIG):
            os.unlink(CONFIG)  # there were no parameters before this delivery
        if old_unit is not None:
            if old_unit:
                _write_atomically(UNIT_PATH, old_unit, 0o644)
            else:
                os.unlink(UNIT_PATH)
            systemctl("daemon-reload")
        if previous is None:
            # A first installation that failed: back to no application at all (no dangling current link).
            systemctl("stop", UNIT_NAME)
            if os.path.lexists(_current_link("/")):
                os.unlink(_current_link("/"))
            outcome["healthy"] = True
            return outcome
        switch_current(previous)
        _restart_deliberately()
        parameters = read_parameters()[0]
        outcome["health"] = wait_healthy(health_url(parameters), previous, None, start_timeout, 2.0)
        outcome["healthy"] = True
        step("back on %s, healthy" % previous)
    except (DeliveryError, OSError, rm.ReleaseError) as exc:
        outcome["error"] = str(exc)
        step("rollback incomplete: %s" % exc)
    return outcome


def deliver_detached(state_file, **kwargs):
    """Run deliver() in a child of its own session, so that it finishes (or rolls back) even if the
    SSH session that started it drops; wait for it and return its result (also kept in STATE_FILE).
    """
    os.makedirs(os.path.dirname(state_file), exist_ok=True)
    if os.path.exists(state_file):
        os.unlink(state_file)
    pid = os.fork()
    if pid == 0:  # the child: a new session, no tie to the SSH channel
        code = 1
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for descriptor in (0, 1, 2):
                os.dup2(devnull, descriptor)
            try:
                with Lock():
                    outcome = deliver(**kwargs)
            except DeliveryError as exc:
                outcome = {"changed": False, "failed": True, "msg": str(exc)}
            except Exception as exc:  # a bug must still leave a readable answer behind
                outcome = {"changed": False, "failed": True, "msg": "unexpected %s: %s" % (type(exc).__name__, exc)}
            _write_atomically(state_file, json.dumps(outcome, sort_keys=True).encode("utf-8"), 0o600)
            code = 0
        finally:
            os._exit(code)
    os.waitpid(pid, 0)
    try:
        with open(state_file, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        return {
            "changed": False,
            "failed": True,
            "msg": "the delivery process left no result in %s: %s" % (state_file, exc),
        }
