# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet's rules for OS patches, in one place (facts, the ``ipm.fleet.os_patch`` module, the filters).

* **Security updates**: a security update is one published in a security suite: Debian's own
  (``bookworm-security``) and the vendor mirror's (``bookworm-ipm-security``) both end their suite
  (codename, archive) in ``-security``. apt names the index files it downloads after the suite
  (``..._dists_bookworm-ipm-security_main_...``), so the same rule also reads a file of
  ``/var/lib/apt/lists``.
* **Scope**: ``security`` takes, for each installed package, the newest version a security suite
  offers; ``all`` takes apt's candidate.
* **Holds**: the packages the installed release declares in its ``os`` section (for example
  ``python3: ">=3.11,<3.12"``) are held (``apt-mark hold``) and never upgraded; versions are
  compared in Debian's order. The vendor application (``ipm-app``, under ``/opt/ipm``) is never
  touched by patching.
* **Reboots**: needed when ``/var/run/reboot-required`` exists or needrestart reports a pending
  kernel; done only when the maintenance window still has the time a reboot takes, otherwise the
  terminal is "reboot pending" until a later run inside its window.
* **Outcome**: the ledger entry (kind ``patch``) of one terminal's run.

Standard library only: this runs on terminals.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import math
import re

from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest, terminal_facts

SECURITY_SUITE_SUFFIX = "-security"
_LIST_SUITE = re.compile(r"_dists_([^_]+)_")

SCOPES = ("security", "all")
DEFAULT_SCOPE = "security"
# Never upgraded, removed or held by patching: the vendor application is delivered by the rollout.
PROTECTED_PACKAGES = ("ipm-app",)
# Seconds a reboot may take, from the command until the application answers healthy again.
DEFAULT_REBOOT_BUDGET_S = 600.0
# needrestart -b -k: NEEDRESTART-KSTA 0 unknown, 1 current kernel, 2 ABI-compatible upgrade, 3 version upgrade.
_KSTA = re.compile(r"^NEEDRESTART-KSTA:\s*(\d+)\s*$", re.M)
_KCUR = re.compile(r"^NEEDRESTART-KCUR:\s*(\S+)\s*$", re.M)
_KEXP = re.compile(r"^NEEDRESTART-KEXP:\s*(\S+)\s*$", re.M)


class PatchRuleError(ValueError):
    """A patch setting that cannot be used; the message names the variable, what it takes and what to do."""


# --- security suites ---------------------------------------------------------------------------


def is_security_suite(suite):
    """True when a suite, codename or archive name (``bookworm-ipm-security``) is a security suite."""
    return isinstance(suite, str) and suite.rstrip("/").endswith(SECURITY_SUITE_SUFFIX)


def suite_of_list(list_name):
    """The suite of an apt list file's name (``host_dists_SUITE_main_binary-all_Packages``), or None."""
    match = _LIST_SUITE.search(list_name or "")
    return match.group(1) if match else None


def is_security_list(list_name):
    """True when an apt list file comes from a security suite."""
    return is_security_suite(suite_of_list(list_name))


# --- settings ----------------------------------------------------------------------------------


def check_scope(scope, name="patch_scope"):
    """SCOPE when it is one of :data:`SCOPES`, else PatchRuleError naming the variable NAME."""
    if scope in SCOPES:
        return scope
    raise PatchRuleError(
        "%s: expected one of %s, found %r: run with -e %s=security (security suites only) or -e %s=all"
        % (name, ", ".join(SCOPES), scope, name, name)
    )


def check_seconds(value, name, low=0.0):
    """VALUE as a number of seconds >= LOW, else PatchRuleError naming the variable NAME."""
    if isinstance(value, bool):
        number = None
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None or math.isnan(number) or math.isinf(number) or number < low:
        raise PatchRuleError("%s: expected a number of seconds >= %g, found %r" % (name, low, value))
    return number


# The playbook's variables and their defaults (seconds).
REQUEST_DEFAULTS = {
    "patch_scope": DEFAULT_SCOPE,
    "patch_reboot_budget_s": DEFAULT_REBOOT_BUDGET_S,
    "patch_reboot_timeout_s": 600.0,
    "patch_health_timeout_s": 120.0,
    "patch_lock_timeout_s": 300.0,
}


def patch_request(settings=None):
    """The patch run's settings from the playbook's variables SETTINGS (missing or empty ones take defaults).

    Returns ``{scope, reboot_budget_s, reboot_timeout_s, health_timeout_s, lock_timeout_s}``;
    PatchRuleError naming the variable for an unknown scope or a time that is not a number of seconds.
    """
    settings = settings if isinstance(settings, dict) else {}

    def given(name):
        value = settings.get(name)
        return REQUEST_DEFAULTS[name] if value is None or value == "" else value

    return {
        "scope": check_scope(given("patch_scope")),
        "reboot_budget_s": check_seconds(given("patch_reboot_budget_s"), "patch_reboot_budget_s"),
        "reboot_timeout_s": check_seconds(given("patch_reboot_timeout_s"), "patch_reboot_timeout_s", low=1.0),
        "health_timeout_s": check_seconds(given("patch_health_timeout_s"), "patch_health_timeout_s", low=1.0),
        "lock_timeout_s": check_seconds(given("patch_lock_timeout_s"), "patch_lock_timeout_s"),
    }


def is_protected(package, protected=PROTECTED_PACKAGES):
    """True for the vendor application's packages (``ipm-app``, ``ipm-app-*``): patching never touches them."""
    return any(package == name or package.startswith(name + "-") for name in protected or ())


# --- the vendor mirror ---------------------------------------------------------------------------

MIRROR_KEYRING = "/etc/apt/keyrings/ipm-mirror.gpg"
MIRROR_SUITES = ("bookworm-ipm", "bookworm-ipm-updates", "bookworm-ipm-security")
_ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"


def _crc24(data):
    """The OpenPGP armor checksum (RFC 4880, 6.1) of DATA."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _bit in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def keyring_bytes(text, name="mirror_key"):
    """The binary keyring apt's Signed-By reads, from TEXT: an ASCII-armored public key block or base64.

    An armored block is de-armored (its checksum checked, as ``gpg --dearmor`` does); anything else
    must be the base64 of a binary keyring. PatchRuleError naming NAME for anything that is not an
    OpenPGP public key.
    """
    text = (text or "").strip()
    if not text:
        raise PatchRuleError(
            "%s: expected the mirror's public key (armored or base64 of its keyring), found nothing" % name
        )
    checksum = None
    if text.startswith(_ARMOR_BEGIN):
        if _ARMOR_END not in text:
            raise PatchRuleError("%s: the armored key has no %s line: give the whole key block" % (name, _ARMOR_END))
        lines = text[len(_ARMOR_BEGIN) : text.index(_ARMOR_END)].strip().splitlines()
        # Armor headers (``Comment: ...``) end at the first empty line, when there are any.
        if any(not line.strip() for line in lines):
            lines = lines[[not line.strip() for line in lines].index(True) + 1 :]
        body = []
        for line in (line.strip() for line in lines):
            if line.startswith("=") and len(line) == 5:
                checksum = line[1:]
            elif line:
                body.append(line)
        text = "".join(body)
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise PatchRuleError(
            "%s: expected an armored public key block (%s) or the base64 of a binary keyring" % (name, _ARMOR_BEGIN)
        ) from None
    if checksum is not None:
        try:
            wanted = int.from_bytes(base64.b64decode(checksum, validate=True), "big")
        except (binascii.Error, ValueError):
            wanted = None
        if wanted != _crc24(data):
            raise PatchRuleError(
                "%s: the armored key's checksum does not match: the key was damaged, copy it again" % name
            )
    # An OpenPGP keyring starts with a public key packet (tag 6): old format 0x98-0x9B, new format 0xC6.
    if (
        not data
        or not (data[0] & 0x80)
        or (data[0] & 0x40 and data[0] & 0x3F != 6)
        or (not data[0] & 0x40 and (data[0] >> 2) & 0x0F != 6)
    ):
        raise PatchRuleError("%s: not an OpenPGP public key (a keyring starts with a public key packet)" % name)
    return data


def mirror_source(url, suites, components, keyring=MIRROR_KEYRING):
    """The deb822 source (``/etc/apt/sources.list.d/ipm-mirror.sources``) of the vendor mirror at URL.

    PatchRuleError for an URL that is not http(s) or empty suites and components.
    """
    url = (url or "").strip()
    if not re.match(r"^https?://[^\s]+$", url):
        raise PatchRuleError("os_patch_mirror_url: expected an http:// or https:// URL, found %r" % (url,))
    suites = [str(suite).strip() for suite in suites or () if str(suite).strip()]
    components = [str(part).strip() for part in components or () if str(part).strip()]
    for name, values in (("os_patch_mirror_suites", suites), ("os_patch_mirror_components", components)):
        if not values or any(re.search(r"\s", value) for value in values):
            raise PatchRuleError("%s: expected a list of names without spaces, found %r" % (name, values))
    return (
        "# Ansible managed: the vendor mirror (ipm.fleet.os_patch)\n"
        "Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: %s\n"
        % (url, " ".join(suites), " ".join(components), keyring)
    )


# --- versions and constraints ------------------------------------------------------------------


def compare_versions(left, right):
    """-1, 0 or 1 in Debian's version order (the one comparison of ``terminal_facts``)."""
    return terminal_facts.compare_debian_versions(left, right)


def allows(version, constraint):
    """True when the Debian VERSION satisfies CONSTRAINT (``">=3.11,<3.12"``; every clause must hold).

    A package version such as ``3.11.2-1+b1`` satisfies ``>=3.11,<3.12``. ReleaseError for a
    constraint that is not well formed.
    """
    checks = {
        ">=": lambda order: order >= 0,
        "<=": lambda order: order <= 0,
        ">": lambda order: order > 0,
        "<": lambda order: order < 0,
        "=": lambda order: order == 0,
        "!=": lambda order: order != 0,
    }
    return all(
        checks[operator](compare_versions(version, bound))
        for operator, bound in release_manifest.parse_constraint(constraint)
    )


# --- apt's view --------------------------------------------------------------------------------


def parse_policy(text):
    """``apt-cache policy PKG...`` output (LANG=C) -> ``{package: {installed, candidate, versions}}``.

    ``versions`` lists every version apt knows, newest first, each ``{version, suites, installed}``;
    ``suites`` are the suites (``bookworm-ipm-security``) of the repositories offering it (the dpkg
    status file is not a suite).
    """
    packages = {}
    current = None
    version = None
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        if not line.startswith(" ") and line.rstrip().endswith(":"):
            current = {"installed": None, "candidate": None, "versions": []}
            packages[line.strip()[:-1]] = current
            version = None
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("Installed:"):
            value = stripped.split(":", 1)[1].strip()
            current["installed"] = None if value == "(none)" else value
        elif stripped.startswith("Candidate:"):
            value = stripped.split(":", 1)[1].strip()
            current["candidate"] = None if value == "(none)" else value
        elif stripped.startswith("Version table:"):
            continue
        else:
            # A version line is indented 5 (" *** " marks the installed one), its sources 8.
            marker = stripped.startswith("***")
            fields = stripped.lstrip("*").split()
            indent = len(line) - len(line.lstrip())
            if (marker or indent < 8) and len(fields) == 2:
                version = {"version": fields[0], "suites": [], "installed": marker}
                current["versions"].append(version)
            elif version is not None and len(fields) >= 4 and re.match(r"^-?\d+$", fields[0]):
                suite = fields[2].split("/", 1)[0]
                if suite not in (".", "") and suite not in version["suites"]:
                    version["suites"].append(suite)
    return packages


def select_upgrades(policy, scope, held=(), protected=PROTECTED_PACKAGES):
    """The upgrades of SCOPE among the installed packages of POLICY (:func:`parse_policy`).

    Returns ``{"upgrades": [{name, from, to, suites, security}], "skipped": [{name, to, reason}]}``,
    sorted by name. HELD packages and the vendor application are skipped with the reason; in the
    ``security`` scope a package whose newer versions all come from other suites is skipped as
    ``not a security update``.
    """
    check_scope(scope)
    held = set(held or ())
    upgrades, skipped = [], []
    for name in sorted(policy or {}):
        entry = policy[name]
        installed = entry.get("installed")
        if not installed:
            continue
        newer = [
            version
            for version in entry.get("versions") or []
            if version.get("suites") and compare_versions(version["version"], installed) > 0
        ]
        if not newer:
            continue
        newer.sort(key=_VersionKey, reverse=True)
        if scope == "all":
            candidate = entry.get("candidate")
            chosen = next((version for version in newer if version["version"] == candidate), None)
        else:
            chosen = next((version for version in newer if any(map(is_security_suite, version["suites"]))), None)
        if chosen is None:
            suites = sorted({suite for version in newer for suite in version["suites"]})
            skipped.append(
                {"name": name, "to": newer[0]["version"], "reason": "not a security update (%s)" % ", ".join(suites)}
            )
            continue
        if is_protected(name, protected):
            skipped.append({"name": name, "to": chosen["version"], "reason": "the vendor application is never patched"})
        elif name in held:
            skipped.append({"name": name, "to": chosen["version"], "reason": "held"})
        else:
            upgrades.append(
                {
                    "name": name,
                    "from": installed,
                    "to": chosen["version"],
                    "suites": list(chosen["suites"]),
                    "security": any(map(is_security_suite, chosen["suites"])),
                }
            )
    return {"upgrades": upgrades, "skipped": skipped}


class _VersionKey:
    """Sort key of a policy version entry in Debian's order."""

    __slots__ = ("version",)

    def __init__(self, entry):
        self.version = entry["version"]

    def __lt__(self, other):
        return compare_versions(self.version, other.version) < 0


# --- holds -------------------------------------------------------------------------------------


def hold_plan(required, held_now, installed, managed=(), release=None):
    """What to hold and what to report, from the installed release's ``os`` section.

    REQUIRED: ``{package: constraint}`` (the release's needs); HELD_NOW: packages dpkg has on hold;
    INSTALLED: ``{package: version}``; MANAGED: the packages patching held earlier (a package the
    release no longer needs is released again). Returns ``{hold, unhold, held, drift, violations}``:
    ``hold``/``unhold`` the ``apt-mark`` calls to make, ``held`` per required package its
    constraint, installed version and whether that version satisfies it, ``drift`` one line per hold
    that was missing, released by hand or held outside the release, ``violations`` one line per
    installed version outside its constraint (patching cannot fix that: the release's delivery must).
    """
    held_now = set(held_now or ())
    installed = dict(installed or {})
    managed = set(managed or ())
    who = "release %s" % release if release else "the release"
    plan = {"hold": [], "unhold": [], "held": {}, "drift": [], "violations": []}
    for package in sorted(required or {}):
        constraint = required[package]
        version = installed.get(package)
        satisfied = allows(version, constraint) if version else None
        plan["held"][package] = {"constraint": constraint, "installed": version, "satisfied": satisfied}
        if version is None:
            plan["drift"].append("%s is not installed (%s needs %s)" % (package, who, constraint))
            continue
        if package not in held_now:
            plan["hold"].append(package)
            if package in managed:
                plan["drift"].append("%s was no longer held (%s needs %s): held again" % (package, who, constraint))
        if not satisfied:
            plan["violations"].append("%s %s is outside %s, which %s needs" % (package, version, constraint, who))
    for package in sorted(managed - set(required or {})):
        if package in held_now:
            plan["unhold"].append(package)
    for package in sorted(held_now - set(required or {}) - managed):
        plan["drift"].append("%s is held on the terminal, not by %s" % (package, who))
    return plan


# --- reboots -----------------------------------------------------------------------------------


def parse_needrestart(text):
    """``needrestart -b -k`` output -> ``{status, running, expected}`` (status None when absent)."""
    text = text or ""
    status = _KSTA.search(text)
    running = _KCUR.search(text)
    expected = _KEXP.search(text)
    return {
        "status": int(status.group(1)) if status else None,
        "running": running.group(1) if running else None,
        "expected": expected.group(1) if expected else None,
    }


def reboot_needed(reboot_required_file=False, packages_text="", needrestart=None):
    """Whether the terminal needs a reboot: ``{required, why, packages}``.

    REBOOT_REQUIRED_FILE: ``/var/run/reboot-required`` exists; PACKAGES_TEXT: the content of
    ``/var/run/reboot-required.pkgs`` (one package a line); NEEDRESTART: :func:`parse_needrestart`
    of needrestart's kernel check, where needrestart is installed (status 2 or 3: a newer kernel).
    """
    packages = sorted({line.strip() for line in (packages_text or "").splitlines() if line.strip()})
    reasons = []
    if reboot_required_file:
        reasons.append("/var/run/reboot-required" + (" (%s)" % ", ".join(packages) if packages else ""))
    status = (needrestart or {}).get("status")
    if status in (2, 3):
        reasons.append(
            "needrestart: kernel %s running, %s expected"
            % ((needrestart or {}).get("running") or "?", (needrestart or {}).get("expected") or "a newer one")
        )
    return {"required": bool(reasons), "why": "; ".join(reasons), "packages": packages}


def _instant(text):
    if isinstance(text, _dt.datetime):
        moment = text
    elif isinstance(text, str) and text:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def reboot_decision(required, window, budget_s=DEFAULT_REBOOT_BUDGET_S, window_ignored=False, now=None):
    """Reboot now, or leave the reboot pending: ``{reboot, pending, reason, seconds_left}``.

    REQUIRED: the terminal needs a reboot (:func:`reboot_needed`); WINDOW: the site's window state
    (``maintenance_window.window_state``: ``open``, ``closes_at``, ``next_opens_at``) at NOW;
    BUDGET_S: the seconds a reboot takes until the application is healthy again
    (``patch_reboot_budget_s``). A reboot happens only when the open window still has BUDGET_S
    seconds, or when the run ignores windows (an emergency, justified); otherwise it is pending
    and the next run inside the window does it.
    """
    budget = check_seconds(budget_s, "patch_reboot_budget_s")
    window = window if isinstance(window, dict) else {}
    decision = {"reboot": False, "pending": False, "reason": "", "seconds_left": None}
    if not required:
        decision["reason"] = "no reboot needed"
        return decision
    if window_ignored:
        decision.update(reboot=True, reason="reboot: maintenance windows ignored for this run")
        return decision
    moment = _instant(now) or _dt.datetime.now(_dt.timezone.utc)
    closes = _instant(window.get("closes_at"))
    if not window.get("open") or closes is None:
        decision.update(
            pending=True,
            reason="reboot pending: the maintenance window is closed (next opens %s UTC)"
            % (window.get("next_opens_at") or "never: the site has no window"),
        )
        return decision
    left = (closes - moment).total_seconds()
    decision["seconds_left"] = round(left, 1)
    if left >= budget:
        decision.update(
            reboot=True, reason="reboot: %d s left in the window, a reboot takes up to %d s" % (left, budget)
        )
    else:
        decision.update(
            pending=True,
            reason="reboot pending: the window closes in %d s (%s UTC), a reboot takes up to %d s "
            "(patch_reboot_budget_s); the next run inside the window reboots"
            % (max(left, 0), closes.isoformat(), budget),
        )
    return decision


def reboot_after_patch(result, window, budget_s=DEFAULT_REBOOT_BUDGET_S, window_ignored=False, now=None):
    """:func:`reboot_decision` for a registered ``ipm.fleet.os_patch`` RESULT: a failed run never reboots."""
    result = result if isinstance(result, dict) else {}
    required = bool(result.get("reboot_required")) and not result.get("failed") and not result.get("deferred")
    return reboot_decision(required, window, budget_s, window_ignored=window_ignored, now=now)


# --- outcome -----------------------------------------------------------------------------------


def _one_line(text):
    return " ".join(str(text or "").split())


def describe_upgrades(upgrades, limit=6):
    """``ipm-base-tools 1.0 -> 1.1, ipm-kernel-sim 1.0 -> 1.1`` (the first LIMIT, then ``+N more``)."""
    upgrades = list(upgrades or [])
    text = ", ".join("%s %s -> %s" % (item.get("name"), item.get("from"), item.get("to")) for item in upgrades[:limit])
    if len(upgrades) > limit:
        text += ", +%d more" % (len(upgrades) - limit)
    return text


def patch_outcome(result, reboot=None):
    """The ledger entry of one terminal's patch run: ``{result, reason}``.

    RESULT: the registered ``ipm.fleet.os_patch`` result (``unreachable`` for a terminal not
    reached). REBOOT: what the run did about a reboot: ``{decision: reboot_decision(...),
    rebooted: bool, failed: bool, msg: str}``. Results: ``not_reached``; ``failed`` (the
    module's message, dpkg's when a maintainer script failed; or a reboot the terminal did not
    come back from healthy); ``reboot_pending``; ``delivered`` (packages upgraded and/or the
    terminal rebooted); ``already_current`` (nothing to upgrade, no reboot); ``deferred`` (the
    site's window was closed: RESULT has ``deferred`` and the ``reason``).
    """
    result = result if isinstance(result, dict) else {}
    reboot = reboot if isinstance(reboot, dict) else {}
    decision = reboot.get("decision") if isinstance(reboot.get("decision"), dict) else {}
    if result.get("deferred") and not result.get("unreachable"):
        return {"result": "deferred", "reason": _one_line(result.get("reason")) or "outside the maintenance window"}
    upgraded = result.get("upgraded") or []
    notes = []
    if upgraded:
        notes.append("upgraded %s" % describe_upgrades(upgraded))
    for line in (result.get("holds") or {}).get("drift") or []:
        notes.append("hold drift: %s" % line)
    for line in (result.get("holds") or {}).get("violations") or []:
        notes.append("hold violated: %s" % line)
    for line in result.get("repaired") or []:
        notes.append("repaired: %s" % line)
    if result.get("unreachable"):
        return {
            "result": "not_reached",
            "reason": "unreachable: %s (a patch run already started on the terminal finishes by itself: check "
            "dpkg --audit there before the next attempt)" % (_one_line(result.get("msg")) or "no answer"),
        }
    if result.get("failed"):
        return {"result": "failed", "reason": "; ".join([_one_line(result.get("msg")) or "patching failed", *notes])}
    if reboot.get("failed"):
        return {
            "result": "failed",
            "reason": "; ".join(
                [*notes, _one_line(reboot.get("msg")) or "the terminal did not come back from its reboot"]
            ),
        }
    if reboot.get("rebooted"):
        notes.append("rebooted, ipm-app healthy")
        if not upgraded:
            notes.append("(the reboot pending since an earlier run)")
        return {"result": "delivered", "reason": "; ".join(notes)}
    if decision.get("pending"):
        return {"result": "reboot_pending", "reason": "; ".join([*notes, decision.get("reason") or "reboot pending"])}
    if upgraded or result.get("changed"):
        return {"result": "delivered", "reason": "; ".join(notes or ["holds set"])}
    notes.insert(0, "nothing to upgrade (%s scope)" % (result.get("scope") or DEFAULT_SCOPE))
    return {"result": "already_current", "reason": "; ".join(notes)}


def patch_details(result, reboot=None, scope=DEFAULT_SCOPE, window_justification=""):
    """The ``details`` of one terminal's ledger entry (None for a deferred terminal: nothing was done).

    RESULT and REBOOT as for :func:`patch_outcome`; RESULT's ``window`` is the site's window state
    when the run started (``window_ignored`` when the run ignored windows, WINDOW_JUSTIFICATION why).
    """
    result = result if isinstance(result, dict) else {}
    reboot = reboot if isinstance(reboot, dict) else {}
    if result.get("deferred") and not result.get("unreachable"):
        return None
    decision = reboot.get("decision") if isinstance(reboot.get("decision"), dict) else {}
    holds = result.get("holds") if isinstance(result.get("holds"), dict) else {}
    window = result.get("window") if isinstance(result.get("window"), dict) else {}
    if reboot.get("rebooted"):
        done = "done"
    elif reboot.get("failed"):
        done = "failed"
    else:
        done = "pending" if decision.get("pending") else "not needed"
    return {
        "scope": result.get("scope") or scope,
        "upgraded": result.get("upgraded") or [],
        "not_upgraded": result.get("not_upgraded") or [],
        "versions_before": result.get("versions_before") or {},
        "versions_after": result.get("versions_after") or {},
        "held": holds.get("held") or {},
        "hold_drift": holds.get("drift") or [],
        "hold_violations": holds.get("violations") or [],
        "repaired": result.get("repaired") or [],
        "reboot": done,
        "reboot_why": result.get("reboot_why") or "",
        "reboot_decision": decision.get("reason") or "",
        "window": window.get("window")
        if window.get("open")
        else "ignored: %s" % window_justification
        if result.get("window_ignored")
        else "unknown (the terminal was not reached)",
    }


def patch_bake_outcome(result):
    """The ledger entry of the ring bake (``ipm.fleet.bake`` with ``rollback: false``) after patching.

    Patches are not rolled back: a terminal that turns unhealthy during the bake is ``failed`` (the
    gate decides), one that stayed healthy ``baked``; unreachable is ``not_reached``.
    """
    result = result if isinstance(result, dict) else {}
    reason = _one_line(result.get("reason") or result.get("msg")) or "unhealthy"
    if result.get("unreachable"):
        return {"result": "not_reached", "reason": "failed during bake: unreachable: %s" % reason}
    if result.get("failed") or result.get("healthy") is False:
        return {
            "result": "failed",
            "reason": "failed during bake: %s (OS patches are not rolled back: look at the terminal)" % reason,
        }
    return {
        "result": "baked",
        "reason": "healthy for %ss after patching (%s probes)" % (result.get("watched_s", 0), result.get("probes", 0)),
    }
