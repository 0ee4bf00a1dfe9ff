# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration history: snapshots of terminals' facts, what changed between two dates, and drift.

The store is a directory of plain JSON files, one per terminal and time:
``<store>/<terminal>/<YYYYmmddTHHMMSSffffffZ>.json``. Plain files because they are readable and
greppable without tools, diff well, back up and replicate with rsync or git, need no schema
migration, and a terminal's history is one directory listing; writes are atomic (temporary file and
rename), so a crash never leaves half a snapshot. A snapshot is only written when the
configuration differs from the terminal's previous snapshot (volatile readings such as free memory
or uptime do not count), so the store grows with changes, not with runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile

from ansible_collections.ipm.fleet.plugins.module_utils.secret_values import MASK, is_secret_name, mask

_STAMP = "%Y%m%dT%H%M%S%fZ"
_FILE = re.compile(r"^(\d{8}T\d{12}Z)\.json$")
_TERMINAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
UTC = _dt.timezone.utc

# Readings that change between two runs without anyone changing the terminal.
VOLATILE = (
    "hardware.memory_available_mib",
    "hardware.disk_free_mib",
    "application.health.uptime_s",
    "application.health.http_status",
    "application.service.main_pid",
    "application.service.restarts",
)


class HistoryError(ValueError):
    """A store, terminal or date that cannot be used; the message says what was expected."""


def parse_when(text, zone=None):
    """An aware datetime from ISO text (a date alone means the end of that day), in ZONE if naive."""
    if isinstance(text, _dt.datetime):
        return text if text.tzinfo else text.replace(tzinfo=zone or UTC)
    try:
        if re.match(r"^\d{4}-\d{2}-\d{2}$", text or ""):
            value = _dt.datetime.combine(_dt.date.fromisoformat(text), _dt.time(23, 59, 59, 999999))
        else:
            value = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise HistoryError(
            "date %r: expected ISO 8601, for example 2026-11-28 or 2026-11-28T14:00:00+01:00" % (text,)
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=zone or UTC)


def _terminal_dir(store, terminal):
    if not isinstance(terminal, str) or not _TERMINAL.match(terminal):
        raise HistoryError("terminal %r: expected a terminal id (letters, digits, dot, dash, underscore)" % (terminal,))
    return os.path.join(store, terminal)


def flatten(facts, prefix=""):
    """{dotted.path: value} of nested mappings; lists and scalars are leaves."""
    flat = {}
    if isinstance(facts, dict) and facts:
        for key in sorted(facts):
            flat.update(flatten(facts[key], "%s.%s" % (prefix, key) if prefix else str(key)))
    elif prefix:
        flat[prefix] = facts
    return flat


def diff_facts(before, after, ignore=VOLATILE):
    """What changed from BEFORE to AFTER: a list of {path, change (added, removed, changed), before, after}."""
    old, new = flatten(before or {}), flatten(after or {})
    changes = []
    for path in sorted(set(old) | set(new)):
        if path in ignore:
            continue
        if path not in old:
            changes.append({"path": path, "change": "added", "before": None, "after": new[path]})
        elif path not in new:
            changes.append({"path": path, "change": "removed", "before": old[path], "after": None})
        elif old[path] != new[path]:
            changes.append({"path": path, "change": "changed", "before": old[path], "after": new[path]})
    return changes


def list_snapshots(store, terminal):
    """[(taken_at, path)] of a terminal's snapshots, oldest first."""
    directory = _terminal_dir(store, terminal)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HistoryError("history store %s cannot be read: %s" % (directory, exc.strerror or exc)) from None
    found = []
    for name in names:
        match = _FILE.match(name)
        if match:
            try:
                taken_at = _dt.datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC)
            except ValueError:
                continue  # a name shaped like a snapshot's but not a real time: not one of ours
            found.append((taken_at, os.path.join(directory, name)))
    return sorted(found)


def terminals(store):
    """Terminal ids that have at least one snapshot."""
    try:
        return sorted(
            name for name in os.listdir(store) if _TERMINAL.match(name) and os.path.isdir(os.path.join(store, name))
        )
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HistoryError("history store %s cannot be read: %s" % (store, exc.strerror or exc)) from None


def read_snapshot(path):
    """One snapshot: a mapping with a ``facts`` mapping, or HistoryError naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError) as exc:
        raise HistoryError("snapshot %s is unreadable: %s" % (path, exc)) from None
    if not isinstance(record, dict) or not isinstance(record.get("facts"), dict):
        raise HistoryError(
            "snapshot %s is not a snapshot: expected a JSON object with a 'facts' object; move it out of the store"
            % path
        )
    return record


def snapshot_as_of(store, terminal, when):
    """The terminal's last snapshot taken at or before WHEN, or None."""
    when = parse_when(when)
    chosen = None
    for taken_at, path in list_snapshots(store, terminal):
        if taken_at > when:
            break
        chosen = path
    return read_snapshot(chosen) if chosen else None


def write_snapshot(store, terminal, facts, taken_at=None, context=None, dry_run=False):
    """Store FACTS as the terminal's snapshot at TAKEN_AT unless they equal the previous one.

    Returns (path or None, changes since the previous snapshot). CONTEXT (customer, site, change id)
    is stored beside the facts. With DRY_RUN nothing is written: the path is the one it would write.
    """
    taken_at = parse_when(taken_at) if taken_at else _dt.datetime.now(UTC)
    existing = list_snapshots(store, terminal)
    previous = read_snapshot(existing[-1][1]) if existing else None
    changes = diff_facts(previous["facts"] if previous else {}, facts)
    if previous is not None and not changes:
        return None, []
    directory = _terminal_dir(store, terminal)
    path = os.path.join(directory, taken_at.astimezone(UTC).strftime(_STAMP) + ".json")
    if dry_run:
        return path, changes
    os.makedirs(directory, exist_ok=True)
    record = {
        "terminal": terminal,
        "taken_at": taken_at.astimezone(UTC).isoformat(),
        "context": context or {},
        "facts": facts,
    }
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".snapshot-", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(record, stream, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path, changes


def changes_between(store, terminal, start, end):
    """What changed on a terminal between the configurations as of START and as of END."""
    before = snapshot_as_of(store, terminal, start)
    after = snapshot_as_of(store, terminal, end)
    if after is None:
        raise HistoryError("terminal %s has no snapshot at or before %s" % (terminal, end))
    return diff_facts(before["facts"] if before else {}, after["facts"])


def drift(desired, facts):
    """Desired state (from the registry) against a terminal's facts: a list of differences.

    DESIRED: ``release`` (version), ``parameters`` (the registry's layered values, only those it
    sets), ``os`` (for example debian-12), ``max_pending_security_updates`` (default 0).
    Each difference: {aspect, path, desired, actual}.
    """
    differences = []
    facts = facts or {}
    application = facts.get("application") or {}
    if desired.get("release") and application.get("current") != desired["release"]:
        differences.append(
            {
                "aspect": "release",
                "path": "application.current",
                "desired": desired["release"],
                "actual": application.get("current"),
            }
        )
    values = (facts.get("parameters") or {}).get("values")
    for key, wanted in sorted((desired.get("parameters") or {}).items()):
        actual = values.get(key) if isinstance(values, dict) else None
        if actual == MASK:
            continue  # a secret: its value is never read back, the release's digest covers it
        if actual != wanted:
            # A secret set in the registry but empty (or unknown) on the terminal: say so, never show it.
            shown = mask(wanted) if is_secret_name(key) else wanted
            differences.append(
                {"aspect": "parameter", "path": "parameters.values.%s" % key, "desired": shown, "actual": actual}
            )
    os_facts = facts.get("os") or {}
    if desired.get("os") and os_facts.get("id") != desired["os"]:
        differences.append({"aspect": "os", "path": "os.id", "desired": desired["os"], "actual": os_facts.get("id")})
    allowed = desired.get("max_pending_security_updates", 0)
    pending = os_facts.get("pending_security_updates")
    if isinstance(pending, dict) and len(pending) > allowed:
        differences.append(
            {
                "aspect": "patches",
                "path": "os.pending_security_updates",
                "desired": "at most %d" % allowed,
                "actual": "%d pending: %s" % (len(pending), ", ".join(sorted(pending))),
            }
        )
    return differences
