# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The delivery of a release on a terminal, as one transaction that ends on the new release or the old one.

Steps (methods of ``_Delivery``, in order): the compatibility check; the already-current check;
the artifact check (its sha256); the plan (unpack beside the installed releases, migrate the
parameters to the new release's schema); the switch (parameters, unit, ``/opt/ipm/app/current``
atomically, restart); the watch (healthy, then healthy over a settle period). Any failure after
the switch is the rollback: the previous release, its parameters and unit, restarted and checked
healthy again. A successful delivery keeps what it replaced in
``/var/lib/ipm/delivery/previous.json``, for a later rollback (``ipm.fleet.bake``). Application
data (``/var/lib/ipm/app``) is never touched. Old releases are pruned, keeping a number of them.

Every path is under a ``root`` (default ``/``) and ipm-app is controlled through a small service
object (default ``Systemctl``), so that the whole transaction runs on a temporary tree too.

Standard library only: this runs on terminals.
"""

from __future__ import annotations

import base64
import binascii
import datetime
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

from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm
from ansible_collections.ipm.fleet.plugins.module_utils.app_health import HEALTH_PORT, health_url
from ansible_collections.ipm.fleet.plugins.module_utils.compat import check_compatibility

APP_ROOT = "/opt/ipm/app"
CONFIG = "/etc/ipm/app.yml"
UNIT_NAME = "ipm-app.service"
UNIT_PATH = "/etc/systemd/system/" + UNIT_NAME
STATE_DIR = "/var/lib/ipm/delivery"
LOCK_PATH = "/run/ipm-release.lock"
RECORD_NAME = "previous.json"


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


def release_dir(version, root="/"):
    return os.path.join(_releases_dir(root), version)


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


_OPENER = None


def _opener():
    # urllib.request is imported when first needed: it costs a module run without a health probe
    # (ipm.fleet.backup's staging) about a fifth of its start-up.
    global _OPENER
    if _OPENER is None:
        from urllib.request import ProxyHandler, build_opener

        _OPENER = build_opener(ProxyHandler({}))
    return _OPENER


def probe_health(url, timeout=2.0):
    """(ok, answer): ok when the application answers 200 with status ok."""
    from urllib.error import HTTPError, URLError

    try:
        with _opener().open(url, timeout=timeout) as response:
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


def under(root, path):
    """PATH (absolute, as on a terminal) inside the tree ROOT."""
    return os.path.join(root, path.lstrip("/"))


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _systemctl(*args):
    result = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise DeliveryError("systemctl %s failed: %s" % (" ".join(args), (result.stderr or result.stdout).strip()))
    return result.stdout


class Systemctl:
    """The service control of a terminal: ``systemctl`` for ipm-app.service.

    deliver() and rollback() only ever reload units, clear the start limit, restart and stop; any
    object with these four methods (raising DeliveryError on failure) can stand in for it.
    """

    def __init__(self, unit=UNIT_NAME):
        self.unit = unit

    def daemon_reload(self):
        _systemctl("daemon-reload")

    def reset_failed(self):
        _systemctl("reset-failed", self.unit)

    def restart(self):
        _systemctl("restart", self.unit)

    def stop(self):
        _systemctl("stop", self.unit)


def restart_deliberately(service):
    """Restart ipm-app for a delivery or a rollback.

    The unit's start limit (5 starts in 120 s) is there to stop a crash loop; a deliberate restart
    must not be refused because earlier deliveries or rollbacks used it up, nor fail because the
    unit is in the failed state: reset-failed clears both first.
    """
    service.reset_failed()
    service.restart()


def install_unit(version, root="/"):
    """Install the release's unit file when it differs; returns the previous content (or None if unchanged)."""
    source = os.path.join(_releases_dir(root), version, "systemd", UNIT_NAME)
    target = under(root, UNIT_PATH)
    wanted = read_bytes(source)
    if wanted is None:
        return None
    previous = read_bytes(target) or b""
    if previous == wanted:
        return None
    os.makedirs(os.path.dirname(target), exist_ok=True)
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


def lock_path(root="/"):
    return under(root, LOCK_PATH)


class Lock:
    """One delivery (or rollback) at a time on a terminal."""

    def __init__(self, path=LOCK_PATH):
        self.path = path
        self.handle = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self.handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DeliveryError("another delivery is running on this terminal (lock %s)" % self.path) from None
            raise
        return self

    def __exit__(self, *exc):
        self.handle.close()


def compatibility_facts(root="/"):
    """The facts the compatibility rules read, without the slower parts (packages, service, health)."""
    # Imported here: a module run that never reads the facts (a backup's staging) does not pay for them.
    from ansible_collections.ipm.fleet.plugins.module_utils import terminal_facts

    facts = terminal_facts.collect(root, sections=("hardware", "interfaces"))
    facts["application"] = terminal_facts.collect_application(root, query_service=False)
    try:
        facts["os"] = {"id": terminal_facts.os_identity(root)[0]}
    except ValueError as exc:
        facts["os"] = {"unknown": str(exc)}
    return facts


# --- the record of the last delivery ------------------------------------------------------------


def record_path(root="/"):
    return under(root, os.path.join(STATE_DIR, RECORD_NAME))


def write_record(root, version, previous_version, previous_parameters, previous_unit, newly_unpacked):
    """Keep what a delivery replaced, for a later rollback (ipm.fleet.bake): mode 0600, the old parameters may hold secrets."""
    record = {
        "version": version,
        "previous_version": previous_version,
        "previous_parameters_b64": _b64(previous_parameters),
        "previous_unit_b64": _b64(previous_unit),
        "newly_unpacked": bool(newly_unpacked),
        "delivered_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    path = record_path(root)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _write_atomically(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"), 0o600)
    return record


def read_record(root="/"):
    """The record of the last delivery: a dict with bytes for the previous parameters and unit (None when absent).

    Returns None when there is no record; raises DeliveryError when it cannot be read or is not a record.
    """
    path = record_path(root)
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DeliveryError("delivery record %s cannot be read: %s" % (path, exc)) from None
    try:
        if not isinstance(record, dict) or not rm.version_tuple(record.get("version")):
            raise ValueError("no delivered version")
        previous = record.get("previous_version")
        if previous is not None and not rm.version_tuple(previous):
            raise ValueError("previous_version %r is not a version" % (previous,))
        return dict(
            record,
            previous_parameters=_unb64(record.get("previous_parameters_b64")),
            previous_unit=_unb64(record.get("previous_unit_b64")),
        )
    except (TypeError, ValueError, binascii.Error) as exc:
        raise DeliveryError("delivery record %s is not a delivery record: %s" % (path, exc)) from None


def _b64(data):
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text):
    return None if text is None else base64.b64decode(text.encode("ascii"), validate=True)


# --- the delivery transaction --------------------------------------------------------------------


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
    root="/",
    service=None,
    port=HEALTH_PORT,
):
    """Put VERSION on the terminal whose tree is ROOT; see the module docstring.

    SERVICE controls ipm-app (default: systemctl), PORT is where it answers its health check.
    Returns a result dict (never raises for a failed step).
    """
    return _Delivery(
        version,
        artifact,
        sha256,
        desired_parameters=desired_parameters,
        keep=keep,
        start_timeout=start_timeout,
        settle=settle,
        log=log,
        compatibility=compatibility,
        allow_downgrade=allow_downgrade,
        root=root,
        service=service,
        port=port,
    ).run(check_mode)


class _Delivery:
    """One delivery: each step a method, in the order run() calls them."""

    def __init__(self, version, artifact, sha256, **options):
        self.version = version
        self.artifact = artifact
        self.sha256 = sha256
        self.desired = options["desired_parameters"]
        self.keep = options["keep"]
        self.start_timeout = options["start_timeout"]
        self.settle = options["settle"]
        self.log = options["log"] or (lambda message: None)
        self.compatibility = options["compatibility"]
        self.allow_downgrade = options["allow_downgrade"]
        self.root = options["root"]
        self.service = options["service"] or Systemctl()
        self.port = options["port"]
        self.config = under(self.root, CONFIG)
        self.started = time.monotonic()
        self.previous = current_version(self.root)
        self.installed = {}
        self.current_definition = None
        self.newly_unpacked = False
        self.parameters = None
        self.old_config = None
        self.old_unit_file = None
        self.old_unit = None
        self.result = {
            "changed": False,
            "version": version,
            "from_version": self.previous,
            "to_version": version,
            "rolled_back": False,
            "notes": [],
            "steps": [],
        }

    def step(self, text):
        self.result["steps"].append(text)
        self.log(text)

    def failed(self, msg, **extra):
        return dict(self.result, failed=True, msg=msg, **extra)

    def run(self, check_mode):
        early = self.check_compatibility()
        if early:
            return early
        self.read_installed()
        early = self.check_already_current() or self.check_artifact()
        if early:
            return early
        if check_mode:
            return self.predict()
        refused = self.plan()
        if refused:
            return refused
        try:
            self.switch()
            self.watch()
            self.keep_record()
        except (DeliveryError, OSError) as exc:
            return self.roll_back(exc)
        return self.complete()

    def check_compatibility(self):
        """Compat check: an incompatible terminal is left untouched (not a failure)."""
        if self.compatibility is None or self.previous == self.version:
            return None
        verdict = check_compatibility(
            {"version": self.version, "compatibility": self.compatibility},
            compatibility_facts(self.root),
            allow_downgrade=self.allow_downgrade,
        )
        if verdict["compatible"]:
            return None
        return dict(
            self.result,
            incompatible=True,
            reasons=verdict["reasons"],
            msg="release %s is not compatible: %s; nothing changed" % (self.version, "; ".join(verdict["reasons"])),
        )

    def read_installed(self):
        self.installed = read_parameters(self.root)[0]
        if self.previous:
            try:
                self.current_definition = load_release(self.previous, self.root)
            except rm.ReleaseError:
                self.current_definition = None

    def check_already_current(self):
        """Already current: the release is current, healthy, and its parameters are the desired ones."""
        if self.previous != self.version or self.current_definition is None:
            return None
        try:
            wanted = plan_parameters(self.current_definition, self.current_definition, self.installed, self.desired)[0]
        except rm.ReleaseError as exc:
            return self.failed("parameters for %s are invalid: %s" % (self.version, exc))
        ok, answer = probe_health(health_url(wanted.get("listen_address"), self.port))
        current = rm.effective_parameters(self.current_definition, self.installed)
        if wanted == current and ok and answer.get("version") == self.version:
            return dict(self.result, health=answer, msg="release %s is already current and healthy" % self.version)
        return None

    def check_artifact(self):
        """Artifact check: present (unless the release is current already) and its sha256 the manifest's."""
        if self.artifact is None or not os.path.isfile(self.artifact):
            if self.previous != self.version:
                return self.failed("artifact for %s not found on the terminal (%s)" % (self.version, self.artifact))
            self.artifact = None
            return None
        actual = sha256_of(self.artifact)
        if actual != self.sha256:
            return self.failed(
                "artifact %s: sha256 %s does not match the manifest's %s; nothing changed"
                % (self.artifact, actual, self.sha256)
            )
        self.step("artifact verified (sha256 %s)" % self.sha256[:12])
        return None

    def predict(self):
        """Check mode: the parameter migration a real run would do; nothing is written."""
        if self.artifact is not None:
            try:
                target = manifest_in_archive(self.artifact)
                self.result["notes"] = plan_parameters(self.current_definition, target, self.installed, self.desired)[1]
            except (rm.ReleaseError, DeliveryError, tarfile.TarError) as exc:
                return self.failed("release %s cannot be configured: %s" % (self.version, exc))
        self.result.update(changed=True, msg="would deliver %s (from %s)" % (self.version, self.previous or "nothing"))
        return self.result

    def plan(self):
        """Plan: unpack the release and migrate the parameters to it; invalid ones change nothing."""
        self.result["changed"] = True
        self.newly_unpacked = unpack(self.artifact, self.version, self.root) if self.artifact is not None else False
        self.step(
            "unpacked into %s/releases/%s" % (APP_ROOT, self.version)
            if self.newly_unpacked
            else "release %s already unpacked" % self.version
        )
        try:
            target = load_release(self.version, self.root)
            self.parameters, notes = plan_parameters(self.current_definition, target, self.installed, self.desired)
        except rm.ReleaseError as exc:
            if self.newly_unpacked:
                shutil.rmtree(os.path.join(_releases_dir(self.root), self.version), ignore_errors=True)
            return dict(
                self.failed("release %s cannot be configured: %s; nothing changed" % (self.version, exc)),
                changed=False,
            )
        self.result["notes"] = notes
        return None

    def switch(self):
        """Switch: new parameters, the release's unit, ``current`` to the new release, restart."""
        self.old_config = read_bytes(self.config)
        self.old_unit_file = read_bytes(under(self.root, UNIT_PATH))
        _write_atomically(self.config, render_parameters(self.parameters, self.version), 0o600)
        self.step("parameters migrated to %s (%d change(s))" % (self.version, len(self.result["notes"])))
        self.old_unit = install_unit(self.version, self.root)
        if self.old_unit is not None:
            self.service.daemon_reload()
        switch_current(self.version, self.root)
        self.step("current -> releases/%s" % self.version)
        restart_deliberately(self.service)
        self.step("ipm-app restarted")

    def watch(self):
        """Watch: the new release answers healthy with its parameters, then stays healthy for the settle period."""
        url = health_url(self.parameters.get("listen_address"), self.port)
        digest = rm.parameters_digest(self.parameters)
        self.result["health"] = wait_healthy(url, self.version, digest, self.start_timeout, self.settle)
        self.step("healthy for %ss" % self.settle)

    def keep_record(self):
        """What a later rollback needs (ipm.fleet.bake): the replaced release, parameters and unit."""
        write_record(self.root, self.version, self.previous, self.old_config, self.old_unit_file, self.newly_unpacked)

    def roll_back(self, error):
        """Rollback: back to the previous release, parameters and unit; the failed release goes if it was new."""
        self.result.pop("health", None)
        self.result.update(failed=True, rolled_back=True, msg="delivery of %s failed: %s" % (self.version, error))
        self.step("rolling back to %s" % (self.previous or "nothing"))
        outcome = rollback(
            self.previous,
            self.old_config,
            self.old_unit,
            self.start_timeout,
            self.step,
            root=self.root,
            service=self.service,
            port=self.port,
        )
        self.result["rollback"] = outcome
        if self.newly_unpacked and outcome.get("healthy") and self.previous != self.version:
            # Back to exactly the previous state: the failed release does not stay installed.
            shutil.rmtree(os.path.join(_releases_dir(self.root), self.version), ignore_errors=True)
            self.step("removed releases/%s" % self.version)
        if not outcome.get("healthy"):
            self.result["msg"] += "; ROLLBACK DID NOT RESTORE A HEALTHY %s: %s" % (self.previous, outcome.get("error"))
        self.result["duration_s"] = round(time.monotonic() - self.started, 2)
        return self.result

    def complete(self):
        protect = {self.version}
        if self.previous:
            protect.add(self.previous)
        self.result["pruned"] = prune(self.keep, protect, self.root)
        self.result["msg"] = "delivered %s (from %s)" % (self.version, self.previous or "nothing")
        self.result["duration_s"] = round(time.monotonic() - self.started, 2)
        return self.result


def rollback(previous, old_config, old_unit, start_timeout, step, root="/", service=None, port=HEALTH_PORT):
    """Restore the previous release, parameters and unit; restart; check health. Returns what happened.

    OLD_CONFIG: the previous parameters file (None: there was none). OLD_UNIT: None when the unit
    was not changed, b"" when there was no unit file, else its previous content.
    """
    service = service or Systemctl()
    config = under(root, CONFIG)
    unit = under(root, UNIT_PATH)
    outcome = {"to": previous, "healthy": False}
    try:
        if old_config is not None:
            _write_atomically(config, old_config, 0o600)
        elif os.path.lexists(config):
            os.unlink(config)  # there were no parameters before this delivery
        if old_unit is not None:
            if old_unit:
                _write_atomically(unit, old_unit, 0o644)
            elif os.path.lexists(unit):
                os.unlink(unit)
            service.daemon_reload()
        if previous is None:
            # A first installation that failed: back to no application at all (no dangling current link).
            service.stop()
            if os.path.lexists(_current_link(root)):
                os.unlink(_current_link(root))
            outcome["healthy"] = True
            return outcome
        switch_current(previous, root)
        restart_deliberately(service)
        parameters = read_parameters(root)[0]
        url = health_url(parameters.get("listen_address"), port)
        outcome["health"] = wait_healthy(url, previous, None, start_timeout, 2.0)
        outcome["healthy"] = True
        step("back on %s, healthy" % previous)
    except (DeliveryError, OSError, rm.ReleaseError) as exc:
        outcome["error"] = str(exc)
        step("rollback incomplete: %s" % exc)
    return outcome


# --- detached from the SSH session ---------------------------------------------------------------


def run_detached(state_file, lock, function, kwargs):
    """Run FUNCTION(**KWARGS) under LOCK (a path) in a child of its own session, so that it finishes
    (or rolls back) even if the SSH session that started it drops; wait for it and return its result
    (a dict, also kept in STATE_FILE).
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
                with Lock(lock):
                    outcome = function(**kwargs)
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


def deliver_detached(state_file, **kwargs):
    """deliver(**KWARGS) detached from the SSH session, under the delivery lock of its root."""
    return run_detached(state_file, lock_path(kwargs.get("root", "/")), deliver, kwargs)
