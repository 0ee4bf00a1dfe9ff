# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Patch compliance of terminals, in one place: one status per terminal from its facts, counts per customer and site.

Read from the ``os`` section of a terminal's ``ipm_terminal`` facts (its latest snapshot):
``pending_updates`` and ``pending_security_updates`` (which updates are security updates is the
rule of ``module_utils/os_patch_rules.py``, applied when the facts were read), ``held_packages``
and ``reboot_required``. A terminal has exactly one status, the first of STATUSES that applies:

1. ``unknown`` - no snapshot, or its facts cannot tell (no apt lists, a corrupt list, no dpkg status);
2. ``pending-security`` - a security update is not installed (held packages aside);
3. ``reboot-pending`` - updates are installed but wait for a reboot (``/var/run/reboot-required``);
4. ``pending`` - a regular update is not installed (held packages aside);
5. ``held`` - nothing else is pending, but packages are held (on purpose: the release needs them);
6. ``up-to-date`` - nothing pending, nothing held, no reboot waiting.

Security first because an open security fix is the risk the report exists for; a pending reboot
next because the fix is on disk but not running; held last of the exceptions because a hold is a
decision, not an omission. The details (counts, package names, held packages that are behind,
since when a reboot waits) are returned with the status, so a report shows everything that applies.

Controller-side, standard library only: unit-tested directly.
"""

from __future__ import annotations

STATUSES = ("unknown", "pending-security", "reboot-pending", "pending", "held", "up-to-date")
CSV_COLUMNS = (
    "terminal",
    "customer",
    "site",
    "status",
    "pending",
    "security",
    "pending_packages",
    "security_packages",
    "held",
    "held_behind",
    "reboot_since",
    "reboot_packages",
    "snapshot",
    "reason",
)


def _unknown(reason, taken_at):
    return {
        "status": "unknown",
        "reason": reason,
        "pending": None,
        "security": None,
        "pending_packages": [],
        "security_packages": [],
        "held": [],
        "held_behind": {},
        "reboot_pending": None,
        "reboot_since": None,
        "reboot_packages": [],
        "snapshot": taken_at,
    }


def _plural(count, word):
    return "%d %s%s" % (count, word, "" if count == 1 else "s")


def _held_text(name, behind):
    if not behind:
        return name
    security = ", security" if behind["security"] else ""
    return "%s (%s, %s available%s)" % (name, behind["installed"], behind["candidate"], security)


def terminal_compliance(facts, taken_at=None):
    """The compliance of one terminal from its ``ipm_terminal`` FACTS (None: no snapshot) taken at TAKEN_AT.

    A dict: ``status`` (one of STATUSES), ``reason`` (one line for people), ``pending`` and
    ``security`` (counts, held packages not included), ``pending_packages``, ``security_packages``,
    ``held`` (held packages), ``held_behind`` (held packages with a newer candidate: installed,
    candidate, security), ``reboot_pending``, ``reboot_since``, ``reboot_packages``, ``snapshot``.
    """
    if facts is None:
        return _unknown("no snapshot: run playbooks/snapshot.yml", taken_at)
    os_facts = facts.get("os") if isinstance(facts, dict) else None
    if not isinstance(os_facts, dict):
        return _unknown("the snapshot has no os facts", taken_at)
    for key in ("unknown", "packages_unknown", "updates_unknown"):
        if os_facts.get(key):
            return _unknown("os facts: %s" % os_facts[key], taken_at)
    pending_updates = os_facts.get("pending_updates")
    security_updates = os_facts.get("pending_security_updates") or {}
    if not isinstance(pending_updates, dict) or not isinstance(security_updates, dict):
        return _unknown("the snapshot's os facts have no pending updates", taken_at)
    held = sorted(os_facts.get("held_packages") or [])
    reboot = os_facts.get("reboot_required") or {}
    pending = sorted(name for name in pending_updates if name not in held)
    security = sorted(name for name in security_updates if name not in held)
    held_behind = {
        name: {
            "installed": (pending_updates.get(name) or security_updates[name]).get("installed"),
            "candidate": (pending_updates.get(name) or security_updates[name]).get("candidate"),
            "security": name in security_updates,
        }
        for name in held
        if name in pending_updates or name in security_updates
    }
    row = {
        "pending": len(pending),
        "security": len(security),
        "pending_packages": pending,
        "security_packages": security,
        "held": held,
        "held_behind": held_behind,
        "reboot_pending": bool(reboot.get("required")),
        "reboot_since": reboot.get("since") if reboot.get("required") else None,
        "reboot_packages": list(reboot.get("packages") or []) if reboot.get("required") else [],
        "snapshot": taken_at,
    }
    parts = []
    if security:
        parts.append("%s (%s)" % (_plural(len(security), "security update"), ", ".join(security)))
    regular = [name for name in pending if name not in security]
    if regular:
        parts.append("%s (%s)" % (_plural(len(regular), "other update"), ", ".join(regular)))
    if row["reboot_pending"]:
        parts.append(
            "reboot pending since %s%s"
            % (row["reboot_since"], " for " + ", ".join(row["reboot_packages"]) if row["reboot_packages"] else "")
        )
    if held:
        parts.append("held: " + ", ".join(_held_text(name, held_behind.get(name)) for name in held))
    if security:
        status = "pending-security"
    elif row["reboot_pending"]:
        status = "reboot-pending"
    elif pending:
        status = "pending"
    elif held:
        status = "held"
    else:
        status = "up-to-date"
    row["status"] = status
    row["reason"] = "; ".join(parts) if parts else "all updates installed"
    return row


def empty_counts():
    return dict({status: 0 for status in STATUSES}, terminals=0)


def summarize(rows):
    """Counts per status for the fleet, per customer and per site of ROWS ({terminal: row with customer, site}).

    ``{"fleet": counts, "customers": {customer: {"counts": counts, "sites": {site: counts}}}}``,
    where counts maps every status to its number of terminals, plus ``terminals``.
    """
    fleet = empty_counts()
    customers = {}
    for row in rows.values():
        customer = customers.setdefault(str(row.get("customer")), {"counts": empty_counts(), "sites": {}})
        site = customer["sites"].setdefault(str(row.get("site")), empty_counts())
        for counts in (fleet, customer["counts"], site):
            counts[row["status"]] += 1
            counts["terminals"] += 1
    return {"fleet": fleet, "customers": customers}


def counts_line(counts):
    """``3 terminals: 1 pending-security, 2 up-to-date`` (statuses in precedence order, zeros left out)."""
    shown = ", ".join("%d %s" % (counts[status], status) for status in STATUSES if counts.get(status))
    return "%s%s" % (_plural(counts.get("terminals", 0), "terminal"), ": " + shown if shown else "")


def csv_row(terminal, row):
    """One CSV record (CSV_COLUMNS) of a terminal's row; lists are space-separated."""

    def text(value):
        if value is None:
            return ""
        if isinstance(value, dict):
            return " ".join("%s=%s" % (name, item.get("candidate")) for name, item in sorted(value.items()))
        if isinstance(value, (list, tuple)):
            return " ".join(str(item) for item in value)
        return str(value)

    values = dict(row, terminal=terminal)
    return [text(values.get(column)) for column in CSV_COLUMNS]
