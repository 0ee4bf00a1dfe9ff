#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: os_patch
short_description: Patch a terminal's Debian packages - security or all updates, holds from the installed release
version_added: 0.1.0
description:
  - Runs on the terminal, as root, with Debian's package tools (C(apt-get), C(apt-cache), C(apt-mark), C(dpkg)).
  - Waits up to O(lock_timeout) seconds for the package locks another apt, dpkg or unattended-upgrades run holds,
    instead of failing at once; the message then names the lock and its holder.
  - An interrupted dpkg (C(dpkg --configure -a) needed) is repaired first (C(dpkg --configure -a), then
    C(apt-get -f install)); a dpkg that stays inconsistent fails the task before anything is upgraded.
  - Refreshes the package lists - those of the vendor mirror alone when O(sources) exists. A repository that
    does not answer, or whose signature is refused, fails the task with nothing installed.
  - Holds (C(apt-mark hold)) the packages the installed release declares in the C(os) section of its
    definition (C(/opt/ipm/app/current/manifest.yml)), or O(holds) when given, and never upgrades them. Holds
    are checked for drift (a hold released by hand is set again and reported, a package held outside the
    release is reported, an installed version outside the release's constraint is reported).
  - Chooses the upgrades of O(scope) - V(security) takes for each installed package the newest version a
    security suite (C(*-security)) offers, V(all) apt's candidate - never a held package nor the vendor
    application (C(ipm-app), C(/opt/ipm)). Every package is downloaded first (a repository lost then leaves
    nothing installed), then installed in one apt run.
  - When a maintainer script fails, dpkg is made consistent again (C(dpkg --configure -a), C(apt-get -f install),
    the failed package put back on its previous version when apt still has it) and the task fails with dpkg's
    message; C(dpkg --audit) is clean afterwards, the upgrades that did succeed are kept.
  - After the upgrade C(ipm-app) must answer healthy again (when it did before) within O(health_timeout).
  - Says whether the terminal needs a reboot (C(/var/run/reboot-required), or needrestart's kernel status where
    needrestart is installed); it never reboots. The playbook decides against the maintenance window
    (C(ipm.fleet.patch_reboot)).
  - With O(mirror_url), first writes the vendor mirror's keyring C(/etc/apt/keyrings/ipm-mirror.gpg) (from
    O(mirror_key), or the controller file O(mirror_keyring)) and its deb822 source O(sources) (C(Signed-By) that
    keyring), each only when its content differs. In check mode they are written to scratch files the check reads.
  - On the controller (an action plugin, same task) - with O(site_windows), the site's maintenance window is checked
    first (closed - the terminal is deferred, never contacted - C(deferred) and C(reason)); after the upgrade the
    reboot is decided against the window as it is then (C(reboot_decision)). The task never reboots.
  - The logic is C(plugins/module_utils/os_patch_rules.py) (what to upgrade, hold, report, the mirror's files, the
    reboot decision) and C(plugins/module_utils/os_patch_apt.py) (the package tools).
options:
  scope:
    description: Which updates - V(security) (security suites only) or V(all).
    type: str
    choices: [security, all]
    default: security
  holds:
    description:
      - Packages to hold and their version constraints, for example C(python3) with C(>=3.11,<3.12). Default - the
        C(os) section of the release C(/opt/ipm/app/current) points at (none when it has no such section).
    type: dict
  sources:
    description:
      - The vendor mirror's deb822 sources file; when it exists only its lists are refreshed. Empty string -
        refresh every source.
    type: str
    default: /etc/apt/sources.list.d/ipm-mirror.sources
  update:
    description: Refresh the package lists first.
    type: bool
    default: true
  lock_timeout:
    description: Seconds to wait for the package locks.
    type: int
    default: 300
  health_timeout:
    description: Seconds ipm-app has to answer healthy after the upgrade (only when it was healthy before).
    type: int
    default: 60
  protected:
    description: Packages patching never touches (and their C(NAME-*) siblings).
    type: list
    elements: str
    default: [ipm-app]
  mirror_url:
    description: The vendor mirror's URL (C(http://) or C(https://)); empty - the terminal's apt sources are left as they are.
    type: str
    default: ""
  mirror_key:
    description:
      - The mirror's public key - an ASCII-armored key block, or the base64 of a binary keyring - written (binary) to
        C(/etc/apt/keyrings/ipm-mirror.gpg). Filled in from O(mirror_keyring) when that is given.
    type: str
  mirror_keyring:
    description:
      - Controller path of the mirror's keyring (binary or armored); the action reads it and passes it as O(mirror_key).
    type: path
  mirror_suites:
    description: The mirror's suites in its deb822 source.
    type: list
    elements: str
    default: [bookworm-ipm, bookworm-ipm-updates, bookworm-ipm-security]
  mirror_components:
    description: The mirror's components in its deb822 source.
    type: list
    elements: str
    default: [main]
  site_windows:
    description:
      - The site's maintenance windows (as in the registry, C(days), C(start), C(duration_minutes)), checked on the
        controller in O(site_timezone). Not given - no window check and no C(reboot_decision).
    type: list
    elements: dict
  site_timezone:
    description: The site's time zone (IANA name).
    type: str
    default: UTC
  window:
    description: V(respect) - a closed window defers the terminal; V(ignore) - emergencies (the playbook asks why).
    type: str
    choices: [respect, ignore]
    default: respect
  reboot_budget:
    description: Seconds a reboot takes; a reboot is decided only when the open window still has them.
    type: float
    default: 600
  window_justification:
    description:
      - Why the maintenance windows are ignored (O(window=ignore)); written to C(ledger.details). On the controller only.
    type: str
    default: ""
extends_documentation_fragment:
  - ipm.fleet.attributes
  - ipm.fleet.attributes.platform
attributes:
  check_mode:
    support: full
    details:
      - Reads the mirror into package lists of its own (C(/var/lib/apt) untouched) and lists what would be upgraded,
        held, repaired; installs, holds and repairs nothing.
  diff_mode:
    support: full
    details: The versions of the upgraded (or, in check mode, upgradable) packages before and after.
  platform:
    platforms: debian
    details: Runs on the terminal (Debian with apt and dpkg), as root.
seealso:
  - module: ipm.fleet.delivery
author:
  - ipm.fleet maintainers (@ipm-fleet)
"""

EXAMPLES = r"""
- name: Take the security updates; the installed release's packages stay held
  ipm.fleet.os_patch:
    scope: security
  register: patch

- name: Everything the mirror has, waiting up to 10 minutes for another apt run
  ipm.fleet.os_patch:
    scope: all
    lock_timeout: 600

- name: Inside the site's window, on the vendor mirror, the reboot decided against the window
  ipm.fleet.os_patch:
    scope: security
    mirror_url: http://mirror.example.net/ipm/
    mirror_keyring: /etc/ipm/ipm-mirror.gpg
    site_windows: [{days: [mon, tue, wed, thu, fri], start: "02:00", duration_minutes: 120}]
    site_timezone: Europe/Paris
    reboot_budget: 600
  register: patch

- name: What would be upgraded (no change)
  ipm.fleet.os_patch:
    scope: all
  check_mode: true
  diff: true
"""

RETURN = r"""
scope:
  description: The scope used.
  returned: always
  type: str
  sample: security
upgraded:
  description: The packages upgraded (in check mode - those that would be), each C(name), C(from), C(to), C(suites), C(security).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "ipm-kernel-sim", "from": "1.0", "to": "1.1", "suites": ["bookworm-ipm-security"], "security": true}]
not_upgraded:
  description: Newer versions not taken, each C(name), C(to), C(reason) (held, not a security update, the vendor application).
  returned: always
  type: list
  elements: dict
holds:
  description: The holds - C(required) (package to constraint), C(source) (where they come from), C(held) (per package its
    constraint, installed version, whether it satisfies it), C(hold) and C(unhold) (set or released by this run), C(drift) and
    C(violations) (one line each).
  returned: always
  type: dict
repaired:
  description: What was done to repair an interrupted dpkg before patching.
  returned: always
  type: list
  elements: str
lock_waited_s:
  description: Seconds waited for the package locks.
  returned: always
  type: float
reboot_required:
  description: Whether the terminal needs a reboot now (after this run).
  returned: always
  type: bool
reboot_why:
  description: Why, in words (the file, the packages, needrestart's kernel status).
  returned: always
  type: str
  sample: "/var/run/reboot-required (ipm-kernel-sim)"
versions_before:
  description: Version of each upgraded package before the run.
  returned: always
  type: dict
versions_after:
  description: Version of each upgraded package after the run.
  returned: always
  type: dict
app_version:
  description: The release of the vendor application the terminal runs (never changed by patching).
  returned: always
  type: str
  sample: "2.4.0"
health_url:
  description: Where ipm-app answers its health check.
  returned: always
  type: str
  sample: "http://127.0.72.1:8080/health"
healthy:
  description: Whether ipm-app answered healthy at the end (null when it was not healthy before the run either).
  returned: always
  type: bool
mirror:
  description: The mirror's files - C(keyring) and C(source) each V(written), V(unchanged), V(would be written) or V(none).
  returned: always
  type: dict
  sample: {"keyring": "written", "source": "unchanged"}
deferred:
  description: True when the site's window was closed (the terminal was not contacted); C(reason) says why.
  returned: when deferred
  type: bool
window:
  description: The site's window state when the task started (C(open), C(window), C(closes_at), C(next_opens_at)).
  returned: with site_windows
  type: dict
ledger:
  description:
    - The ledger entry of the run when no reboot follows - C(result), C(reason) and C(details), as the filters
      P(ipm.fleet.patch_outcome#filter) and P(ipm.fleet.patch_details#filter) give them for the reboot decision alone
      (the role records it with M(ipm.fleet.delivery); a terminal that reboots gets its entry after the reboot).
  returned: always (on the controller)
  type: dict
reboot_decision:
  description: Reboot now or leave it pending - C(reboot), C(pending), C(reason), C(seconds_left) (the playbook reboots).
  returned: with site_windows, when the terminal was reached
  type: dict
steps:
  description: What was done, in order.
  returned: always
  type: list
  elements: str
"""

import datetime
import os
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.ipm.fleet.plugins.module_utils import app_health, release_switch
from ansible_collections.ipm.fleet.plugins.module_utils import os_patch_apt as apt_tools
from ansible_collections.ipm.fleet.plugins.module_utils import os_patch_rules as rules
from ansible_collections.ipm.fleet.plugins.module_utils import release_manifest as rm

CURRENT = release_switch.APP_ROOT + "/current"


def _required_holds(params):
    """(required, source, release) - the holds asked for, or the installed release's os section."""
    version = release_switch.current_version()
    if params["holds"] is not None:
        return dict(params["holds"]), "the holds option", version
    if not version:
        return {}, "no release installed", None
    try:
        definition = release_switch.load_release(version)
    except rm.ReleaseError as exc:
        raise apt_tools.AptError("the installed release's manifest cannot be read: %s" % exc) from None
    return rm.os_requirements(definition), "release %s (os section)" % version, version


def _health(timeout):
    """(url, healthy) of ipm-app, waiting up to TIMEOUT seconds for a healthy answer."""
    try:
        parameters, _text = release_switch.read_parameters()
    except rm.ReleaseError:
        parameters = {}
    url = app_health.health_url(parameters.get("listen_address"))
    deadline = time.monotonic() + timeout
    while True:
        ok, _answer = release_switch.probe_health(url)
        if ok or time.monotonic() >= deadline:
            return url, ok
        time.sleep(1.0)


def patch(module):
    params = module.params
    result = {
        "changed": False,
        "scope": params["scope"],
        "upgraded": [],
        "not_upgraded": [],
        "holds": {},
        "repaired": [],
        "lock_waited_s": 0.0,
        "reboot_required": False,
        "reboot_why": "",
        "versions_before": {},
        "versions_after": {},
        "steps": [],
        "healthy": None,
    }
    steps = result["steps"]
    scratch = None
    sources = params["sources"] or None
    if params["mirror_url"]:
        scratch, sources, result["mirror"] = _mirror_files(module, result)
        if result["mirror"]["keyring"] != "unchanged" or result["mirror"]["source"] != "unchanged":
            steps.append("mirror: keyring %(keyring)s, source %(source)s" % result["mirror"])
    else:
        result["mirror"] = {"keyring": "none", "source": "none"}
    try:
        return _patch(module, result, sources)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _mirror_files(module, result):
    """Write the mirror's keyring and deb822 source when they differ: (scratch dir, sources path, what was done)."""
    params = module.params
    if not params["mirror_key"]:
        raise apt_tools.AptError("mirror_url is set but mirror_key (or mirror_keyring) is not: give the mirror's key")
    try:
        key = rules.keyring_bytes(params["mirror_key"])
        sources = params["sources"] or apt_tools.MIRROR_SOURCES
        text = rules.mirror_source(params["mirror_url"], params["mirror_suites"], params["mirror_components"])
    except rules.PatchRuleError as exc:
        raise apt_tools.AptError(str(exc)) from None
    wanted = {rules.MIRROR_KEYRING: key, sources: text.encode("utf-8")}
    differs = {path: apt_tools.read_bytes(path) != data for path, data in wanted.items()}
    done = {
        "keyring": "would be written" if module.check_mode else "written",
        "source": "would be written" if module.check_mode else "written",
    }
    if not differs[rules.MIRROR_KEYRING]:
        done["keyring"] = "unchanged"
    if not differs[sources]:
        done["source"] = "unchanged"
    if any(differs.values()):
        result["changed"] = True
    if not module.check_mode:
        for path, data in wanted.items():
            if differs[path]:
                apt_tools.write_bytes(path, data)
        return None, sources, done
    if not any(differs.values()):
        return None, sources, done
    # Check mode: the lists are read through scratch copies; /etc/apt stays as it was.
    scratch = tempfile.mkdtemp(prefix="ipm-patch-mirror-")
    keyring = os.path.join(scratch, "ipm-mirror.gpg")
    apt_tools.write_bytes(keyring, key)
    scratch_sources = os.path.join(scratch, "ipm-mirror.sources")
    apt_tools.write_bytes(
        scratch_sources,
        rules.mirror_source(params["mirror_url"], params["mirror_suites"], params["mirror_components"], keyring).encode(
            "utf-8"
        ),
    )
    return scratch, scratch_sources, done


def _patch(module, result, sources):
    params = module.params
    check = module.check_mode
    steps = result["steps"]
    link_before = os.path.realpath(CURRENT)
    result["health_url"], healthy_before = _health(0)

    result["lock_waited_s"] = apt_tools.wait_for_locks(params["lock_timeout"])
    if result["lock_waited_s"] >= 1:
        steps.append("waited %s s for the package locks" % result["lock_waited_s"])
    audit = apt_tools.dpkg_audit()
    if audit:
        if check:
            result["repaired"].append("would run dpkg --configure -a: %s" % apt_tools.one_line(audit, 200))
        else:
            result["repaired"] += apt_tools.repair(params["lock_timeout"])
            result["changed"] = True
        steps += result["repaired"]

    apt = apt_tools.Apt(params["lock_timeout"], sources, check_mode=check)
    try:
        if params["update"]:
            apt.update()
            steps.append("lists refreshed (%s)" % (apt.sources or "every source"))

        required, source, release = _required_holds(params)
        for package, constraint in sorted(required.items()):
            try:
                rm.parse_constraint(constraint)
            except rm.ReleaseError as exc:
                raise apt_tools.AptError("holds.%s (%s): %s" % (package, source, exc)) from None
        versions, _states, held_now = apt_tools.installed_packages()
        managed = set(apt_tools.read_state(apt_tools.HOLDS_FILE, {}).get("managed", []))
        plan = rules.hold_plan(required, held_now, versions, managed, release)
        result["holds"] = dict(plan, required=required, source=source)
        if plan["hold"] or plan["unhold"]:
            result["changed"] = True
            if not check:
                apt.mark("hold", plan["hold"])
                apt.mark("unhold", plan["unhold"])
            steps.append(
                "%sheld %s%s"
                % (
                    "would be " if check else "",
                    ", ".join(plan["hold"]) or "-",
                    "; released " + ", ".join(plan["unhold"]) if plan["unhold"] else "",
                )
            )
        if not check:
            apt_tools.write_state(
                apt_tools.HOLDS_FILE, {"managed": sorted(p for p in required if p in versions), "source": source}
            )
        held = (held_now | set(plan["hold"])) - set(plan["unhold"])

        selection = rules.select_upgrades(apt.policy(versions), params["scope"], held, params["protected"])
        upgrades = selection["upgrades"]
        result["not_upgraded"] = selection["skipped"]
        result["upgraded"] = upgrades
        result["versions_before"] = {item["name"]: item["from"] for item in upgrades}
        if upgrades and check:
            result["changed"] = True
            result["versions_after"] = {item["name"]: item["to"] for item in upgrades}
            steps.append("would upgrade %s" % rules.describe_upgrades(upgrades))
        elif upgrades:
            # One apt run: apt fetches every package before dpkg runs, so a repository lost now
            # installs nothing (apt.install raises then).
            rc, output = apt.install(upgrades, versions)
            if rc != 0:
                message, recovery = apt_tools.recover(apt, upgrades, versions, output, params["lock_timeout"])
                steps += recovery
                after, _states, _held = apt_tools.installed_packages()
                result["upgraded"] = [item for item in upgrades if after.get(item["name"]) == item["to"]]
                result["versions_after"] = {item["name"]: after.get(item["name"]) for item in upgrades}
                result["changed"] = True
                result["failed"] = True
                result["msg"] = message
            else:
                after, _states, _held = apt_tools.installed_packages()
                result["versions_after"] = {item["name"]: after.get(item["name"]) for item in upgrades}
                result["upgraded"] = [item for item in upgrades if after.get(item["name"]) == item["to"]]
                result["changed"] = True
                steps.append("upgraded %s" % rules.describe_upgrades(result["upgraded"]))
    finally:
        apt.close()

    if os.path.realpath(CURRENT) != link_before:
        result["failed"] = True
        result["msg"] = (
            "the vendor application's current release changed during patching (%s): look at the terminal"
            % (link_before)
        )
    result["app_version"] = release_switch.current_version()
    if healthy_before:
        result["healthy"] = _health(params["health_timeout"] if result["changed"] and not check else 0)[1]
        if not result["healthy"] and not result.get("failed"):
            result["failed"] = True
            result["msg"] = "ipm-app did not answer healthy on %s within %d s after patching" % (
                result["health_url"],
                params["health_timeout"],
            )
    reboot = apt_tools.reboot_state()
    if check and any(item["name"] for item in result["upgraded"]) and not reboot["required"]:
        reboot["why"] = "unknown until the upgrade runs (a package may ask for one)"
    result["reboot_required"] = reboot["required"]
    result["reboot_why"] = reboot["why"]
    if not check:
        apt_tools.write_state(
            apt_tools.LAST_FILE,
            {
                "scope": params["scope"],
                "upgraded": result["upgraded"],
                "failed": bool(result.get("failed")),
                "msg": result.get("msg", ""),
                "reboot_required": reboot["required"],
                "reboot_why": reboot["why"],
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            },
        )
    if module._diff and result["versions_before"]:
        names = sorted(result["versions_before"])
        result["diff"] = {
            "before_header": "packages before",
            "after_header": "packages after" + (" (would be)" if check else ""),
            "before": apt_tools.version_lines(result["versions_before"], names),
            "after": apt_tools.version_lines(result["versions_after"], names),
        }
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            scope=dict(type="str", default=rules.DEFAULT_SCOPE, choices=list(rules.SCOPES)),
            holds=dict(type="dict"),
            sources=dict(type="str", default=apt_tools.MIRROR_SOURCES),
            update=dict(type="bool", default=True),
            lock_timeout=dict(type="int", default=300),
            health_timeout=dict(type="int", default=60),
            protected=dict(type="list", elements="str", default=list(rules.PROTECTED_PACKAGES)),
            mirror_url=dict(type="str", default=""),
            mirror_key=dict(type="str", no_log=True),
            mirror_keyring=dict(type="path"),
            mirror_suites=dict(type="list", elements="str", default=list(rules.MIRROR_SUITES)),
            mirror_components=dict(type="list", elements="str", default=["main"]),
            site_windows=dict(type="list", elements="dict"),
            site_timezone=dict(type="str", default="UTC"),
            window=dict(type="str", default="respect", choices=["respect", "ignore"]),
            reboot_budget=dict(type="float", default=rules.DEFAULT_REBOOT_BUDGET_S),
            window_justification=dict(type="str", default=""),
        ),
        supports_check_mode=True,
    )
    if os.geteuid() != 0:
        module.fail_json(msg="patching a terminal needs root: set become: true or connect as root")
    for name in ("lock_timeout", "health_timeout"):
        if module.params[name] < 0:
            module.fail_json(msg="%s must be 0 or more seconds, got %d" % (name, module.params[name]))
    try:
        result = patch(module)
    except apt_tools.AptError as exc:
        module.fail_json(msg=str(exc), changed=False, scope=module.params["scope"], upgraded=[], reboot_required=False)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
