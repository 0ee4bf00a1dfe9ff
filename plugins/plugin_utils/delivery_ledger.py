# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The delivery ledger, read from the audit log: every delivery attempt, and what each terminal runs.

The rollout records one ``ipm.fleet.delivery`` task result per terminal and attempt; the audit
callback writes it (with the terminal's customer, site and time zone) into the hash-chained log, and
the run's start record holds the operator and the change id. This module turns those records
(already merged with their run, as ``ipm-audit`` reads them) into ledger entries.
"""

from __future__ import annotations

LEDGER_MODULE = "ipm.fleet.delivery"
# ``baked``: a delivered terminal stayed healthy through its ring's bake; a terminal that turned
# unhealthy during the bake is ``rolled_back`` with a reason starting "failed during bake: ".
RESULTS = (
    "delivered",
    "already_current",
    "baked",
    "rolled_back",
    "failed",
    "deferred",
    "incompatible",
    "not_reached",
    "reboot_pending",
)
# What an entry delivered: a release (playbooks/rollout.yml), parameters (playbooks/parameters.yml) or
# OS patches (playbooks/patch.yml); parameters and patch entries name the release the terminal runs and
# never move what it runs. ``reboot_pending``: a patched terminal whose reboot waits for its next window.
KINDS = ("release", "parameters", "patch")
DEFAULT_KIND = "release"


def entries(records):
    """Ledger entries, oldest first, from flat audit task records."""
    found = []
    for record in records:
        if (
            record.get("kind", "task") != "task"
            or record.get("module") != LEDGER_MODULE
            or record.get("status") != "ok"
            or record.get("check_mode")  # a --check run delivers nothing
        ):
            continue
        args = record.get("args")
        if not isinstance(args, dict):
            args = {}  # hidden by no_log: the entry keeps what the record itself says
        found.append(
            {
                "time": record.get("ended") or record.get("time"),
                "site_time": record.get("site_time"),
                "timezone": record.get("site_timezone"),
                "terminal": record.get("terminal") or record.get("host"),
                "customer": record.get("customer"),
                "site": record.get("site"),
                "release": str(args.get("release")) if args.get("release") is not None else None,
                "from_version": args.get("from_version"),
                "result": args.get("result"),
                "kind": args.get("kind") or DEFAULT_KIND,
                "reason": args.get("reason") or "",
                "operator": record.get("operator"),
                "change_id": record.get("change_id"),
                "ticket_id": record.get("ticket_id"),
                "run": record.get("run"),
            }
        )
    return found


def matches(entry, customer=None, site=None, terminal=None, release=None, result=None, kind=None):
    """True when the entry passes every filter given (an entry without a kind is a release's)."""
    if kind is not None and (entry.get("kind") or DEFAULT_KIND) != kind:
        return False
    wanted = {"customer": customer, "site": site, "terminal": terminal, "release": release, "result": result}
    return all(value is None or entry.get(key) == value for key, value in wanted.items())


def _runs(entry, release, dated):
    """The terminal of ENTRY runs RELEASE; DATED: since this entry, by its operator and change."""
    return {
        "customer": entry["customer"],
        "site": entry["site"],
        "timezone": entry["timezone"],
        "release": release,
        "since": entry["time"] if dated else None,
        "since_local": entry["site_time"] if dated else None,
        "operator": entry["operator"] if dated else None,
        "change_id": entry["change_id"] if dated else None,
    }


def running_releases(ledger):
    """What each terminal runs according to the ledger: {terminal: {release, since, operator, change_id, ...}}.

    A delivery sets the release (since its time); a rollback or failure leaves the terminal on the
    release it came from; ``already_current`` confirms the release without moving ``since``; a bake
    that passed changes nothing, one that rolled the terminal back puts it on the release it came
    from again. Parameters entries (kind ``parameters``) never change what a terminal runs: ignored.
    """
    state = {}
    for entry in ledger:
        if (entry.get("kind") or DEFAULT_KIND) != "release":
            continue
        terminal = entry["terminal"]
        known = state.get(terminal)

        came_from = entry.get("from_version")
        if entry["result"] == "delivered":
            state[terminal] = _runs(entry, entry["release"], True)
        elif entry["result"] == "already_current" and (known is None or known["release"] != entry["release"]):
            state[terminal] = _runs(entry, entry["release"], False)
        elif (
            entry["result"] == "rolled_back"
            and known is not None
            and known["release"] == entry["release"]
            and came_from
            and came_from != entry["release"]
        ):
            # Rolled back after the delivery (during the bake): back on the release it came from.
            state[terminal] = _runs(entry, came_from, True)
        elif entry["result"] in ("rolled_back", "failed") and known is None and came_from:
            state[terminal] = _runs(entry, came_from, False)
    return state
