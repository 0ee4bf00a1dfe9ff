# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replacement hardware in the registry: a terminal id keeps its place, its serial number changes, the swap is recorded.

:func:`swap` edits the terminal's ``serial_number:`` line **in place** in its customer file (comments,
order and every other line stay as they are; the file is replaced atomically), checks that the
registry still validates (or puts the file back), and appends one JSON line to
``<registry>/hardware-swaps.jsonl`` (time in UTC, terminal, customer, site, model, old and new serial
number, ticket, operator, backup restored). That file is not YAML, so the registry's loader never
reads it as a customer file; it is kept in git with the registry. :func:`swaps` reads it back.

Rules: the new serial number is a non-empty string without spaces or quotes, differs from the
current one and is not the serial number of another terminal of the fleet; a ticket (or change id)
is required. Every refusal is one line naming the registry, the terminal and what to do.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import tempfile

import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils import registry as reg
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_paths import registry_files, resolve_registry_dir
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_yaml import compose_file

SWAPS_FILE = "hardware-swaps.jsonl"
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9._/-]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


class SwapError(Exception):
    """One line: which registry and terminal, what is wrong, what to do."""


def _value(mapping, key):
    if not isinstance(mapping, yaml.MappingNode):
        return None
    for key_node, value_node in mapping.value:
        if getattr(key_node, "value", None) == key:
            return value_node
    return None


def _terminal_nodes(root):
    """(site id, terminal mapping node) of every terminal of a composed customer file."""
    sites = _value(root, "sites")
    for site in getattr(sites, "value", None) or []:
        site_id = getattr(_value(site, "id"), "value", None)
        terminals = _value(site, "terminals")
        for terminal in getattr(terminals, "value", None) or []:
            if isinstance(terminal, yaml.MappingNode):
                yield site_id, terminal


def _scalar(text):
    """The serial number as a YAML scalar: plain when YAML reads it back as that string, else double-quoted."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def locate(registry_dir, terminal):
    """(file, site id, customer id, serial node, model) of TERMINAL, and every other terminal's serial number."""
    found = None
    serials = {}
    for path in registry_files(registry_dir):
        root = compose_file(path)
        customer_id = getattr(_value(_value(root, "customer"), "id"), "value", None)
        for site_id, node in _terminal_nodes(root):
            terminal_id = getattr(_value(node, "id"), "value", None)
            serial = _value(node, "serial_number")
            if terminal_id == terminal:
                model = getattr(_value(node, "model"), "value", None)
                found = (path, site_id, customer_id, serial, model)
            elif serial is not None:
                serials[str(serial.value)] = terminal_id
    return found, serials


def swap(registry, terminal, new_serial, ticket, operator, now=None, backup=None, dry_run=False):
    """Give TERMINAL the serial number NEW_SERIAL in the registry and record the swap; returns the record."""
    registry_dir = resolve_registry_dir(registry)
    if not os.path.isfile(os.path.join(registry_dir, "catalog.yml")):
        raise SwapError("%s: not a registry (no catalog.yml); give the registry or inventory path" % registry)
    if not isinstance(new_serial, str) or not _SERIAL.match(new_serial):
        raise SwapError(
            "%s: serial number %r: expected letters, digits, '.', '_', '/', '-' (as on the box's "
            "/etc/ipm/hardware.yml)" % (terminal, new_serial)
        )
    if not ticket or not str(ticket).strip():
        raise SwapError("%s: a hardware swap needs its ticket or change id (--ticket / -e ticket_id=...)" % terminal)
    found, serials = locate(registry_dir, terminal)
    if found is None:
        raise SwapError(
            "%s: no terminal %s in the registry; check the id (ipm-registry list)" % (registry_dir, terminal)
        )
    path, site_id, customer_id, serial_node, model = found
    if serial_node is None:
        raise SwapError("%s: terminal %s has no serial_number line to change" % (path, terminal))
    old_serial = str(serial_node.value)
    if new_serial == old_serial:
        raise SwapError(
            "%s: terminal %s already has serial number %s: nothing to swap (is this the old box?)"
            % (path, terminal, old_serial)
        )
    if new_serial in serials:
        raise SwapError(
            "%s: serial number %s belongs to terminal %s already; a box is one terminal"
            % (registry_dir, new_serial, serials[new_serial])
        )
    now = now or datetime.datetime.now(datetime.timezone.utc)
    record = {
        "time_utc": now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "terminal": terminal,
        "customer": customer_id,
        "site": site_id,
        "model": model,
        "old_serial_number": old_serial,
        "new_serial_number": new_serial,
        "ticket": str(ticket),
        "operator": operator,
        "backup": backup,
        "file": os.path.relpath(path, registry_dir),
    }
    if dry_run:
        return record
    with open(path, "rb") as handle:
        original = handle.read()
    start, end = serial_node.start_mark.index, serial_node.end_mark.index
    text = original.decode("utf-8")
    edited = text[:start] + _scalar(new_serial) + text[end:]
    _replace(path, edited.encode("utf-8"))
    try:
        _fleet, problems = reg.load_fleet(registry_dir, 1)
        again, _others = locate(registry_dir, terminal)
        if problems or again is None or str(again[3].value) != new_serial:
            raise SwapError(
                "%s: the registry does not validate after the swap (%s); the file was put back"
                % (path, problems[0] if problems else "the serial number did not read back")
            )
    except BaseException:
        _replace(path, original)
        raise
    with open(os.path.join(registry_dir, SWAPS_FILE), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return record


def _replace(path, data):
    mode = os.stat(path).st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def swaps(registry, terminal=None):
    """The recorded swaps (oldest first), of one terminal or all; SwapError naming a damaged line."""
    path = os.path.join(resolve_registry_dir(registry), SWAPS_FILE)
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise SwapError("%s: line %d is not a JSON record; repair it from git" % (path, number)) from None
            if not isinstance(record, dict) or "terminal" not in record or "new_serial_number" not in record:
                raise SwapError("%s: line %d is not a swap record; repair it from git" % (path, number))
            if terminal is None or record["terminal"] == terminal:
                records.append(record)
    return records
