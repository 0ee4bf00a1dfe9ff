# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""apt and dpkg on a terminal, for ``ipm.fleet.os_patch``: locks, repair, lists, policy, upgrade, recovery.

What to upgrade, hold or reboot is decided by ``os_patch_rules``; this module only talks to the
package tools (``apt-get``, ``apt-cache``, ``apt-mark``, ``dpkg``, ``dpkg-query``) with LANG=C and
a non-interactive frontend, and reads their answers. Standard library only: this runs on terminals.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time

from ansible_collections.ipm.fleet.plugins.module_utils import os_patch_rules as rules

# The locks apt and dpkg take (fcntl write locks), in the order apt takes them.
LOCKS = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)
MIRROR_SOURCES = "/etc/apt/sources.list.d/ipm-mirror.sources"
STATE_DIR = "/var/lib/ipm/patch"
HOLDS_FILE = "holds.json"
LAST_FILE = "last.json"
REBOOT_REQUIRED = "/var/run/reboot-required"
REBOOT_REQUIRED_PKGS = "/var/run/reboot-required.pkgs"
_ENV = {
    "LANG": "C",
    "LC_ALL": "C",
    "DEBIAN_FRONTEND": "noninteractive",
    "APT_LISTCHANGES_FRONTEND": "none",
    "NEEDRESTART_MODE": "l",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
}
_DPKG_OPTIONS = ("-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold")
_FETCH_WORDS = ("Unable to fetch some archives", "Failed to fetch")
_SIGNATURE_WORDS = ("NO_PUBKEY", "not signed", "signatures couldn't be verified", "BADSIG", "EXPKEYSIG", "GPG error")


class AptError(RuntimeError):
    """A package tool failed; the message is what to tell the operator (one line)."""


def run(argv, timeout=None, check=False):
    """(rc, stdout, stderr) of ARGV with LANG=C and a non-interactive frontend."""
    env = dict(os.environ)
    env.update(_ENV)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except FileNotFoundError:
        raise AptError("%s is not installed on the terminal" % argv[0]) from None
    except subprocess.TimeoutExpired:
        raise AptError("%s did not finish within %s s" % (" ".join(argv[:3]), timeout)) from None
    if check and done.returncode != 0:
        raise AptError(
            "%s failed (exit %d): %s" % (" ".join(argv[:3]), done.returncode, one_line(done.stderr or done.stdout))
        )
    return done.returncode, done.stdout, done.stderr


def one_line(text, limit=600):
    text = " ".join(str(text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- locks -------------------------------------------------------------------------------------


def lock_holder(path):
    """``pid (command)`` of the process holding the fcntl lock on PATH, from /proc/locks, or None."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/locks", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] in ("POSIX", "OFDLCK") and fields[5].endswith(":%d" % inode):
            pid = fields[4]
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as handle:
                    command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                command = "?"
            return "pid %s (%s)" % (pid, command[:80])
    return None


def wait_for_locks(timeout, locks=LOCKS, interval=1.0, clock=time.monotonic, sleep=time.sleep):
    """Wait until no other process holds apt's and dpkg's locks; returns the seconds waited.

    AptError after TIMEOUT seconds, naming the lock and its holder. The locks are probed (taken and
    released at once), not kept: apt's own ``DPkg::Lock::Timeout`` covers the instant in between.
    """
    start = clock()
    for path in locks:
        if not os.path.exists(path):
            continue
        while True:
            try:
                handle = os.open(path, os.O_RDWR)
            except OSError:
                break
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(handle, fcntl.LOCK_UN)
                break
            except OSError:
                if clock() - start >= timeout:
                    raise AptError(
                        "the package lock %s is held by %s for more than %g s: another apt, dpkg or "
                        "unattended-upgrades run is busy; let it finish (or stop it), then patch again"
                        % (path, lock_holder(path) or "another process", timeout)
                    ) from None
                sleep(interval)
            finally:
                os.close(handle)
    return round(clock() - start, 1)


# --- dpkg state --------------------------------------------------------------------------------


def installed_packages():
    """``({package: version}, {package: status abbreviation}, held)`` from dpkg-query."""
    _rc, out, _err = run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\t${Status}\n"], check=True
    )
    versions, states, held = {}, {}, set()
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) < 4:
            continue
        name, version, abbrev, status = fields[0], fields[1], fields[2].strip(), fields[3]
        if status.startswith("hold "):
            held.add(name)
        # The second letter of the abbreviation is dpkg's state: i installed; H, U, F, W, t half done.
        if abbrev[1:2] in ("i", "F", "U", "H", "W", "t"):
            states[name] = abbrev
            if version:
                versions[name] = version
    return versions, states, held


def dpkg_audit():
    """What ``dpkg --audit`` reports (empty when dpkg is consistent)."""
    _rc, out, err = run(["dpkg", "--audit"])
    text = (out + err).strip()
    if not text and os.path.isdir("/var/lib/dpkg/updates") and os.listdir("/var/lib/dpkg/updates"):
        text = "dpkg was interrupted (/var/lib/dpkg/updates is not empty): dpkg --configure -a needed"
    return text


def repair(lock_timeout):
    """``dpkg --configure -a`` then ``apt-get -f install``; returns the steps, AptError when dpkg stays broken."""
    steps = []
    rc, out, err = run(["dpkg", "--configure", "-a", "--force-confdef", "--force-confold"], timeout=lock_timeout + 600)
    steps.append("dpkg --configure -a: exit %d" % rc)
    audit = dpkg_audit()
    if audit:
        rc, out, err = run(
            ["apt-get", "-y", "-f", "install", "-o", "DPkg::Lock::Timeout=%d" % lock_timeout, *_DPKG_OPTIONS],
            timeout=lock_timeout + 600,
        )
        steps.append("apt-get -f install: exit %d" % rc)
        audit = dpkg_audit()
    if audit:
        raise AptError("dpkg is interrupted and could not be repaired: %s" % one_line(dpkg_errors(out + err) or audit))
    return steps


def dpkg_errors(text):
    """dpkg's and apt's error lines of an output, joined (``dpkg: error processing package ...``)."""
    lines = []
    for line in (text or "").splitlines():
        stripped = line.strip()
        wanted = stripped.startswith(("dpkg: error", "E: ")) or "returned error exit status" in stripped
        if wanted and stripped not in lines:
            lines.append(stripped)
    text = ""
    for line in lines:
        text += (" " if text.endswith(":") else "; " if text else "") + line
    return text


# --- lists and policy --------------------------------------------------------------------------


class Apt:
    """apt with this run's options: the mirror's sources only when given, lists elsewhere in check mode."""

    def __init__(self, lock_timeout, sources=None, check_mode=False, fetch_timeout=20):
        self.lock_timeout = int(lock_timeout)
        self.options = [
            "-o", "DPkg::Lock::Timeout=%d" % self.lock_timeout,
            "-o", "Acquire::Retries=0",
            "-o", "Acquire::http::Timeout=%d" % fetch_timeout,
            "-o", "Acquire::https::Timeout=%d" % fetch_timeout,
        ]  # fmt: skip
        self.sources = sources if sources and os.path.isfile(sources) else None
        self.scratch = None
        if check_mode:
            # Check mode reads the mirror into lists of its own: /var/lib/apt stays as it was.
            self.scratch = tempfile.mkdtemp(prefix="ipm-patch-check-")
            os.makedirs(os.path.join(self.scratch, "partial"))
            if os.path.isdir("/var/lib/apt/lists"):
                for name in os.listdir("/var/lib/apt/lists"):
                    source = os.path.join("/var/lib/apt/lists", name)
                    if os.path.isfile(source) and name != "lock":
                        shutil.copy2(source, self.scratch)
            self.options += [
                "-o", "Dir::State::Lists=%s" % self.scratch,
                "-o", "Dir::Cache::pkgcache=",
                "-o", "Dir::Cache::srcpkgcache=",
            ]  # fmt: skip

    def close(self):
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def update(self):
        """Refresh the lists (the mirror's alone when its sources file exists); AptError naming the cause."""
        options = [*list(self.options), "-o", "APT::Update::Error-Mode=any"]
        if self.sources:
            options += [
                "-o", "Dir::Etc::sourcelist=%s" % self.sources,
                "-o", "Dir::Etc::sourceparts=/nonexistent",
                "-o", "APT::Get::List-Cleanup=0",
            ]  # fmt: skip
        rc, out, err = run(["apt-get", "update", *options], timeout=self.lock_timeout + 300)
        text = out + "\n" + err
        problems = [line.strip() for line in text.splitlines() if line.startswith(("E:", "Err:", "W: GPG error"))]
        details = [line.strip() for line in text.splitlines() if line.startswith("  ") and line.strip()]
        if rc != 0 or any(line.startswith(("E:", "Err:")) for line in problems):
            where = self.sources or "the apt sources"
            if any(word in text for word in _SIGNATURE_WORDS):
                raise AptError(
                    "the package repository's signature was refused (%s): %s; nothing was installed: check the "
                    "mirror's signing key and os_patch_mirror_keyring (Signed-By)"
                    % (where, one_line("; ".join(problems + details), 400))
                )
            raise AptError(
                "the package repository did not answer (%s): %s; nothing was installed: check that the mirror "
                "is up and reachable from the terminal" % (where, one_line("; ".join(problems[:2] + details[:2]), 400))
            )
        return rc

    def policy(self, packages):
        """``os_patch_rules.parse_policy`` of ``apt-cache policy`` for PACKAGES."""
        policy = {}
        names = sorted(packages)
        for start in range(0, len(names), 400):
            _rc, out, _err = run(["apt-cache", *self.options, "policy", *names[start : start + 400]], check=True)
            policy.update(rules.parse_policy(out))
        return policy

    def mark(self, action, packages):
        if packages:
            run(["apt-mark", action, *sorted(packages)], check=True)

    def install(self, upgrades, before=None):
        """Fetch then install the upgrades in one apt run; (rc, output) of a run that reached dpkg.

        apt fetches every package before it calls dpkg: when one cannot be fetched (the repository
        stopped answering) apt stops with nothing installed and this raises AptError saying so.
        BEFORE (``{package: version}``) is checked to tell that nothing changed.
        """
        wanted = ["%s=%s" % (item["name"], item["to"]) for item in upgrades]
        rc, out, err = run(
            ["apt-get", "-y", "--no-install-recommends", "install", *self.options, *_DPKG_OPTIONS, *wanted],
            timeout=self.lock_timeout + 2700,
        )
        output = out + "\n" + err
        if rc != 0 and any(word in output for word in _FETCH_WORDS):
            after = installed_packages()[0] if before is not None else None
            if after is None or all(after.get(item["name"]) == before.get(item["name"]) for item in upgrades):
                raise AptError(
                    "the packages could not be downloaded (the repository stopped answering?): %s; nothing was "
                    "installed" % one_line(dpkg_errors(output) or err or out, 400)
                )
        return rc, output

    def downgrade(self, name, version):
        """Put NAME back on VERSION (after its upgrade failed); True when dpkg then has it installed."""
        rc, _out, _err = run(
            ["apt-get", "-y", "--allow-downgrades", "--no-install-recommends", "install", *self.options, *_DPKG_OPTIONS,
             "%s=%s" % (name, version)],
            timeout=self.lock_timeout + 600,
        )  # fmt: skip
        return rc == 0


def recover(apt, upgrades, before, output, lock_timeout):
    """After a failed install: dpkg consistent again, failed upgrades back on their previous version.

    Returns ``(message, steps)``: dpkg's error and what was done. AptError when dpkg stays inconsistent.
    """
    errors = dpkg_errors(output) or one_line(output, 300)
    steps = []
    try:
        steps += repair(lock_timeout)
        clean = True
    except AptError:
        clean = False
    versions, states, _held = installed_packages()
    failed = sorted(name for name, state in states.items() if state[1:2] != "i")
    back = []
    for name in failed:
        previous = before.get(name)
        if previous and apt.downgrade(name, previous):
            back.append("%s back on %s" % (name, previous))
            steps.append("apt-get install --allow-downgrades %s=%s" % (name, previous))
    audit = dpkg_audit()
    if audit:
        raise AptError(
            "%s; dpkg is still inconsistent after dpkg --configure -a, apt-get -f install and putting the failed "
            "packages back: %s: look at the terminal (dpkg --audit)" % (errors, one_line(audit, 300))
        )
    versions, _states, _held = installed_packages()
    kept = [item for item in upgrades if versions.get(item["name"]) == item["to"]]
    message = "%s; dpkg left consistent (dpkg --audit clean)%s%s" % (
        errors,
        ": " + ", ".join(back) if back else (" by dpkg --configure -a" if clean else ""),
        "; upgrades kept: %s" % rules.describe_upgrades(kept) if kept else "; nothing else upgraded",
    )
    return message, steps


# --- reboots and state -------------------------------------------------------------------------


def reboot_state():
    """``os_patch_rules.reboot_needed`` from /var/run/reboot-required(.pkgs) and needrestart, where installed."""
    packages = ""
    try:
        with open(REBOOT_REQUIRED_PKGS, encoding="utf-8") as handle:
            packages = handle.read()
    except OSError:
        pass
    needrestart = None
    if shutil.which("needrestart", path=_ENV["PATH"]):
        _rc, out, _err = run(["needrestart", "-b", "-k"], timeout=120)
        needrestart = rules.parse_needrestart(out)
    return rules.reboot_needed(os.path.exists(REBOOT_REQUIRED), packages, needrestart)


def read_bytes(path):
    """The content of PATH, or None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def write_bytes(path, data, mode=0o644):
    """Write DATA to PATH atomically (a temporary file beside it, then rename), mode MODE, parents 0755."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    temporary = path + ".ipm-new"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def read_state(name, default):
    try:
        with open(os.path.join(STATE_DIR, name), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def write_state(name, data):
    os.makedirs(STATE_DIR, mode=0o755, exist_ok=True)
    path = os.path.join(STATE_DIR, name)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def version_lines(versions, names):
    """``name version`` lines of NAMES (for --diff), ``(not installed)`` when missing."""
    return "".join("%s %s\n" % (name, versions.get(name, "(not installed)")) for name in sorted(names))
