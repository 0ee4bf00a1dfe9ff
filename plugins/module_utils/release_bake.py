# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bake of a delivered release: watch it for a while, and roll back the delivery if it fails.

After a ring's deliveries a rollout watches every delivered terminal for a bake period before the
next ring starts. ``bake()`` probes every ``interval`` seconds until ``duration`` has passed; a
probe passes when ``/opt/ipm/app/current`` still points at the release, ``/health`` answers 200
with status ok, the answered version is the release and its ``parameters_sha256`` is the digest
of the terminal's parameters (computed once at the start from ``/etc/ipm/app.yml`` and the
current release's manifest). At the first failing probe the watch stops; with rollback, the state
the delivery recorded (``/var/lib/ipm/delivery/previous.json``, see release_switch.write_record)
is restored - previous release, its parameters file, its unit - and the previous release must
answer healthy again. The rollback runs under the delivery lock in a process of its own session,
so a dropped SSH connection cannot leave it half done.

Standard library only: this runs on terminals.
"""

from __future__ import annotations

import os
import shutil
import time

from ansible_collections.ipm.fleet.plugins.module_utils import release_switch as rs
from ansible_collections.ipm.fleet.plugins.module_utils.app_health import HEALTH_PORT, health_url

rm = rs.rm


class Expectation:
    """What every probe compares with, fixed at the start of the watch."""

    def __init__(self, version, root="/", port=HEALTH_PORT):
        self.version = version
        self.root = root
        self.problem = None  # why no probe can pass, when the terminal's own files say so
        self.digest = None
        listen_address = None
        current = rs.current_version(root)
        try:
            parameters = rs.read_parameters(root)[0]
            listen_address = parameters.get("listen_address")
            if current is not None:
                effective = rm.effective_parameters(rs.load_release(current, root), parameters)
                listen_address = effective.get("listen_address")
                self.digest = rm.parameters_digest(effective)
        except rm.ReleaseError as exc:
            self.problem = "the parameters in %s are not valid for release %s: %s" % (rs.CONFIG, current, exc)
        self.url = health_url(listen_address, port)


def probe(expectation):
    """One probe: (ok, what it found in words, the health answer)."""
    version = expectation.version
    current = rs.current_version(expectation.root)
    if current != version:
        found = "points at releases/%s" % current if current else "is missing"
        return False, "%s/current %s, not %s" % (rs.APP_ROOT, found, version), {}
    if expectation.problem:
        return False, expectation.problem, {}
    ok, answer = rs.probe_health(expectation.url)
    if "error" in answer and "http_status" not in answer:
        return False, "health did not answer on %s (%s)" % (expectation.url, answer["error"]), answer
    if not ok:
        return False, "health answered %s status %s" % (answer.get("http_status", 200), answer.get("status")), answer
    if answer.get("version") != version:
        return False, "health answered version %s, not %s" % (answer.get("version"), version), answer
    if answer.get("parameters_sha256") != expectation.digest:
        return (
            False,
            "health answered parameters_sha256 %s, not %s (the digest of %s)"
            % (str(answer.get("parameters_sha256"))[:12], expectation.digest[:12], rs.CONFIG),
            answer,
        )
    return True, "healthy", answer


def watch(version, duration, interval, root="/", port=HEALTH_PORT, log=None, clock=time.monotonic, sleep=time.sleep):
    """Probe every INTERVAL seconds until DURATION has passed (a last probe at its end), stopping at the first failure.

    Returns {healthy, probes, watched_s, healthy_for_s, reason, health}.
    """
    log = log or (lambda message: None)
    expectation = Expectation(version, root, port)
    started = clock()
    probes = 0
    while True:
        ok, what, answer = probe(expectation)
        probes += 1
        elapsed = clock() - started
        if not ok:
            reason = "%s after %.1f s" % (what, elapsed)
            log(reason)
            return dict(
                healthy=False,
                probes=probes,
                watched_s=round(elapsed, 1),
                healthy_for_s=round(elapsed, 1),
                reason=reason,
                health=answer,
            )
        if elapsed >= duration:
            return dict(
                healthy=True,
                probes=probes,
                watched_s=round(elapsed, 1),
                healthy_for_s=round(elapsed, 1),
                reason=None,
                health=answer,
            )
        next_probe = min(probes * interval, duration)
        sleep(max(0.0, started + next_probe - clock()))


def rollback_refusal(version, root="/"):
    """Why the delivery record cannot be rolled back for VERSION (None when it can), with what to check."""
    path = rs.record_path(root)
    try:
        record = rs.read_record(root)
    except rs.DeliveryError as exc:
        return "%s: check the file, then go back with ipm.fleet.release" % exc, None
    if record is None:
        return (
            "there is no delivery record (%s): this terminal was not delivered %s by ipm.fleet.release, or the "
            "record was rolled back already; check which release it should run and deliver that one" % (path, version),
            None,
        )
    if record["version"] != version:
        return (
            "the last delivery recorded on this terminal (%s) is of %s, not %s: check which release the terminal "
            "runs and why, then go back with ipm.fleet.release" % (path, record["version"], version),
            record,
        )
    current = rs.current_version(root)
    if current != version:
        return (
            "%s/current points at %s, not at the delivered %s: the terminal was changed since; check it and go back "
            "with ipm.fleet.release" % (rs.APP_ROOT, current, version),
            record,
        )
    previous = record["previous_version"]
    if previous is not None and previous not in rs.installed_versions(root):
        return (
            "release %s, which the delivery of %s replaced, is no longer installed: deliver it with ipm.fleet.release"
            % (previous, version),
            record,
        )
    return None, record


def restore_recorded(version, start_timeout=30.0, root="/", service=None, port=HEALTH_PORT):
    """Put back what the delivery of VERSION replaced (its record); returns {changed, rollback, steps[, failed, msg]}.

    Run it under the delivery lock (release_switch.run_detached): the record is read again inside.
    """
    steps = []
    refusal, record = rollback_refusal(version, root)
    if refusal:
        return {"changed": False, "failed": True, "msg": "not rolled back: " + refusal, "steps": steps}
    previous = record["previous_version"]
    unit_now = rs.read_bytes(rs.under(root, rs.UNIT_PATH))
    wanted_unit = record["previous_unit"]
    # rollback()'s convention: None = leave the unit alone, b"" = there was none.
    old_unit = None if unit_now == wanted_unit else (wanted_unit or b"")
    steps.append("rolling back %s to %s" % (version, previous or "nothing"))
    outcome = rs.rollback(
        previous,
        record["previous_parameters"],
        old_unit,
        start_timeout,
        steps.append,
        root=root,
        service=service,
        port=port,
    )
    if outcome.get("healthy"):
        if record.get("newly_unpacked") and previous != version:
            shutil.rmtree(rs.release_dir(version, root), ignore_errors=True)
            steps.append("removed releases/%s" % version)
        try:  # the terminal is back before that delivery: nothing is left to roll back
            os.unlink(rs.record_path(root))
            steps.append("removed the delivery record of %s" % version)
        except OSError as exc:
            steps.append("the delivery record of %s could not be removed: %s" % (version, exc))
    return {"changed": True, "rollback": outcome, "steps": steps}


def bake(
    version,
    duration,
    interval=5.0,
    rollback=True,
    start_timeout=30.0,
    port=HEALTH_PORT,
    check_mode=False,
    root="/",
    service=None,
    log=None,
):
    """Watch VERSION for DURATION seconds; roll its delivery back at the first failing probe (see the module docstring).

    Returns the module's result (``failed`` when the terminal was not healthy throughout).
    """
    result = watch(version, duration, interval, root, port, log)
    result.update(
        version=version,
        changed=False,
        rolled_back=False,
        rolled_back_to=None,
        rollback={"to": None, "healthy": None, "error": None},
        steps=["probe %d: %s" % (result["probes"], result["reason"] or "healthy")],
    )
    if result["healthy"]:
        result["steps"] = ["%d probe(s) healthy over %.1f s" % (result["probes"], result["watched_s"])]
        result["msg"] = "release %s stayed healthy for %.1f s (%d probe(s))" % (
            version,
            result["watched_s"],
            result["probes"],
        )
        return result
    result["failed"] = True
    if not rollback:
        result["msg"] = "%s; not rolled back (rollback=false): release %s stays current" % (result["reason"], version)
        return result
    refusal, record = rollback_refusal(version, root)
    if refusal:
        result["msg"] = "%s; not rolled back: %s" % (result["reason"], refusal)
        return result
    previous = record["previous_version"]
    if check_mode:
        result.update(
            changed=True,
            msg="%s; would roll back to %s (check mode: nothing changed)" % (result["reason"], previous or "nothing"),
        )
        return result
    state_file = rs.under(root, os.path.join(rs.STATE_DIR, "bake-rollback-%s.json" % version))
    outcome = rs.run_detached(
        state_file,
        rs.lock_path(root),
        restore_recorded,
        dict(version=version, start_timeout=start_timeout, root=root, service=service, port=port),
    )
    result["steps"] += outcome.get("steps", [])
    if "rollback" not in outcome:  # refused or broken before anything was restored
        result["rollback"]["error"] = outcome.get("msg")
        result["msg"] = "%s; %s" % (result["reason"], outcome.get("msg"))
        return result
    rollback_outcome = outcome["rollback"]
    result.update(
        changed=True,
        rolled_back=True,
        rolled_back_to=previous,
        rollback={
            "to": previous,
            "healthy": bool(rollback_outcome.get("healthy")),
            "error": rollback_outcome.get("error"),
        },
    )
    if rollback_outcome.get("healthy"):
        result["msg"] = "%s; rolled back to %s, healthy" % (result["reason"], previous or "nothing")
    else:
        result["msg"] = "%s; ROLLBACK TO %s DID NOT RESTORE A HEALTHY TERMINAL: %s" % (
            result["reason"],
            previous or "nothing",
            rollback_outcome.get("error"),
        )
    return result
