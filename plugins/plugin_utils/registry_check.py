# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a registry problem is and the generic shape checker.

:class:`Problem` is one fault, located by file, key path and line; :func:`describe` and :func:`suggest`
word what was found and what was probably meant. :func:`check_fields` checks a value against an
object spec of ``registry_spec.OBJECTS`` (unknown and missing keys, types, allowed values, patterns,
ranges) and reports each fault; the registry's own rules (time zones, releases, uniqueness) are in
``registry.py``.
"""

from __future__ import annotations

import difflib
import os
import re

from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import ID_PATTERN, NAME_PATTERN, OBJECTS, Field
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VaultValue

_PATTERNS: dict[str, re.Pattern] = {}


class Problem:
    """One thing wrong in the registry, located as precisely as the YAML allows."""

    __slots__ = ("expected", "file", "found", "keys", "line", "message")

    def __init__(self, file, keys, message, expected="", found="", line=None):
        self.file = file
        self.keys = tuple(keys)
        self.message = message
        self.expected = expected
        self.found = found
        self.line = line

    @property
    def path(self) -> str:
        """The key path, e.g. ``sites[0].terminals[2].model``."""
        return key_path(self.keys)

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "path": self.path,
            "message": self.message,
            "expected": self.expected,
            "found": self.found,
        }

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.path or '(top)'}: {self.message}"
        if self.expected:
            text += f"; expected {self.expected}"
        if self.found:
            text += f", found {self.found}"
        return text

    def __repr__(self) -> str:
        return f"Problem({self})"


def key_path(keys) -> str:
    text = ""
    for key in keys:
        if isinstance(key, int) and not isinstance(key, bool):
            text += f"[{key}]"
        elif not isinstance(key, str) or not key.isprintable() or not key or "." in key or "[" in key:
            text += f"[{key!r}]"
        else:
            text += f".{key}" if text else str(key)
    return text


def format_report(problems) -> str:
    """Every problem on its own line, preceded by a count."""
    lines = [f"{len(problems)} problem(s) in the fleet registry:"]
    lines.extend(f"  {problem}" for problem in problems)
    return "\n".join(lines)


def describe(value) -> str:
    """How a found value reads in a message, with the YAML trap it most likely comes from."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()} (YAML reads unquoted yes/no/on/off/NO as booleans: quote it)"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"integer {value} (unquoted HH:MM and numbers are read as numbers: quote it)"
    if isinstance(value, float):
        return f'number {value} (quote versions such as "2.4.0")'
    if value is None:
        return "nothing (empty value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, VaultValue):
        return "a vault-encrypted value"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    return f"{type(value).__name__} {value!s} (quote it)"


def suggest(word, candidates) -> str:
    """`` (did you mean 'x'?)`` when a candidate is close to ``word``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def display_path(path: str) -> str:
    """A path as messages show it: relative to the working directory when below it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def reporter(rel, problems):
    """A ``report(keys, message, expected, found)`` function appending problems of file ``rel``."""

    def report(keys, message, expected="", found=""):
        problems.append(Problem(rel, keys, message, expected, found))

    return report


def type_ok(kind: str, value) -> bool:
    """True when ``value`` has the type a field of kind ``kind`` needs."""
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list":
        return isinstance(value, list)
    return isinstance(value, dict)


_EXPECTED = {
    "str": "a string",
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "list": "a list",
    "object": "a mapping",
    "map": "a mapping",
    "params": "a mapping of parameter names to values",
    "settings": "a mapping of setting names to values",
}


_CONTAINERS = frozenset(("list", "object", "map", "params", "settings"))


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool))


def _vault_misplaced(keys, report) -> bool:
    report(
        keys,
        "vault value outside parameters",
        "a plain value (!vault values are for the secret parameters under parameters:)",
        "a vault-encrypted value",
    )
    return False


def _check_value(field: Field, value, keys, report, seen) -> bool:
    """Check one value against its field; report faults; True when it can be used further."""
    if isinstance(value, VaultValue):
        return _vault_misplaced(keys, report)
    if not type_ok(field.kind, value):
        report(keys, "wrong type", _EXPECTED[field.kind], describe(value))
        return False
    if field.enum is not None and value not in field.enum:
        hint = (
            suggest(value, field.enum)
            or suggest(str(value).upper(), field.enum)
            or suggest(str(value).lower(), field.enum)
        )
        shown = ", ".join(field.enum) if len(field.enum) <= 12 else "a known code"
        report(keys, "unknown value" + hint, f"one of {shown}", describe(value))
        return False
    if field.pattern is not None:
        pattern = _PATTERNS.get(field.pattern) or _PATTERNS.setdefault(field.pattern, re.compile(field.pattern))
        if not pattern.match(value):
            expected = {
                ID_PATTERN: "lower-case letters, digits and single dashes (e.g. paris-01)",
                NAME_PATTERN: "lower-case letters, digits and underscores (e.g. coin_acceptor)",
            }.get(field.pattern, f"text matching {field.pattern} (e.g. 02:30)")
            report(keys, "malformed value", expected, describe(value))
            return False
    if field.minimum is not None and value < field.minimum:
        report(keys, "value too small", f"at least {field.minimum}", describe(value))
        return False
    if field.maximum is not None and value > field.maximum:
        report(keys, "value too large", f"at most {field.maximum}", describe(value))
        return False
    if field.kind not in _CONTAINERS:
        return True
    if seen is None:
        return _check_items(field, value, keys, report, None)
    # A container reached through several YAML aliases is one object: checked once, where first met.
    mark = (id(value), id(field))
    clean = seen.get(mark)
    if clean is None:
        clean = seen[mark] = _check_items(field, value, keys, report, seen)
    return clean


def _check_items(field: Field, value, keys, report, seen) -> bool:
    if field.kind == "list":
        if not value and field.required:
            report(keys, "empty list", "at least one item", "[]")
            return False
        clean = True
        for index, item in enumerate(value):
            clean = _check_value(field.item, item, (*keys, index), report, seen) and clean
        return clean
    if field.kind == "object":
        return check_fields(value, OBJECTS[field.obj], keys, report, seen)
    if field.kind == "map":
        clean = True
        for key, item in value.items():
            if not isinstance(key, str):
                report((*keys, key), "key is not a string", "a name", describe(key))
                clean = False
                continue
            clean = _check_value(field.item, item, (*keys, key), report, seen) and clean
        return clean
    if field.kind in ("params", "settings"):
        clean = True
        for key, item in value.items():
            if not isinstance(key, str):
                report((*keys, key), "key is not a string", "a name", describe(key))
                clean = False
            elif field.kind == "settings" and (
                isinstance(item, VaultValue)
                or (isinstance(item, list) and any(isinstance(i, VaultValue) for i in item))
            ):
                clean = _vault_misplaced((*keys, key), report)
            elif not (
                _is_scalar(item) or (field.kind == "settings" and isinstance(item, list) and all(map(_is_scalar, item)))
            ):
                report((*keys, key), "wrong type", "a string, number or true/false", describe(item))
                clean = False
        return clean
    return True


def check_fields(value, spec: dict[str, Field], keys, report, seen=None) -> bool:
    """Check a mapping against its object spec: unknown keys, missing keys, each value.

    ``seen``, a dict, makes every container met again (the same object, through YAML aliases) count
    as checked: its faults are reported once, at its first place. ``None`` when nothing is shared.
    """
    if not isinstance(value, dict):
        report(keys, "wrong type", "a mapping", describe(value))
        return False
    clean = True
    for key, item in value.items():
        field = spec.get(key) if isinstance(key, str) else None
        if field is None:
            report((*keys, key), "unknown key" + suggest(key, spec), "one of " + ", ".join(spec), describe(key))
            clean = False
        else:
            clean = _check_value(field, item, (*keys, key), report, seen) and clean
    for key, field in spec.items():
        if field.required and key not in value:
            report((*keys, key), "missing required key", _EXPECTED[field.kind], "nothing")
            clean = False
    return clean


def good(value, field: Field):
    """The value if it has the field's type (so semantic checks never trip over bad shapes)."""
    return value if type_ok(field.kind, value) else None
