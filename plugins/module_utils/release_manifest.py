# -*- coding: utf-8 -*-
# Copyright: (c) 2026, ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Release definitions of the terminal application and its parameter rules.

One file, standard library only (PyYAML used when present), because it runs in three places:
the controller (``ipm-release``, the rollout), the terminals (Ansible modules) and inside every
built release, where ``ipm-app`` validates its own parameters with the very same rules.

A release definition (``app/releases/<version>.yml``, see docs/application.md) holds
``version``, ``compatibility``, ``parameters`` (the schema), and optionally ``renamed``,
``removed``, ``description``, ``defect`` and ``os`` (the Debian packages the release needs, with
version constraints: held by OS patching); a built manifest adds ``artifact`` and ``sha256``.
"""

from __future__ import annotations

import hashlib
import json
import re

try:
    import yaml

    HAS_YAML = True
except ImportError:  # a terminal without python3-yaml still reads JSON, a subset of YAML
    yaml = None
    HAS_YAML = False

PARAMETER_TYPES = ("str", "int", "float", "bool")
PARAMETER_SPEC_KEYS = ("type", "default", "min", "max", "choices", "secret", "description")
DEFINITION_KEYS = ("version", "description", "compatibility", "parameters", "renamed", "removed", "defect", "os")
MANIFEST_KEYS = ("artifact", "sha256")
COMPATIBILITY_KEYS = ("models", "os", "upgrades_from", "interfaces", "min_free_disk_mib")
DEFECTS = ("health-fails-after-start",)
# A defect is written as its kind alone, or as a mapping with its kind and options:
#   defect: health-fails-after-start
#   defect: {kind: health-fails-after-start, healthy_for_s: 20}
DEFECT_KEYS = ("kind", "healthy_for_s")
# Seconds a release with the health-fails-after-start defect answers healthy when its definition does not say.
DEFAULT_DEFECT_HEALTHY_FOR_S = 5.0

_VERSION_RE = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
_PARAMETER_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_MODEL_RE = re.compile(r"^[A-Z]{2}-[0-9]{3}$")
_OS_RE = re.compile(r"^[a-z]+-[0-9]+$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# The ``os`` section: Debian package names and version constraints such as ">=3.11,<3.12".
_PACKAGE_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_CONSTRAINT_RE = re.compile(r"^\s*(>=|<=|>>|<<|==|!=|=|>|<)\s*([0-9][A-Za-z0-9.+~:-]*)\s*$")
CONSTRAINT_OPERATORS = (">=", "<=", ">", "<", "=", "!=")
CONSTRAINT_EXPECTED = 'version constraints like ">=3.11,<3.12" (comma-separated, operators >=, <=, >, <, =, !=)'


class ReleaseError(ValueError):
    """A release definition, manifest or parameter set is not valid; the message is one line."""


class ParameterError:
    """One invalid parameter: its key, what was expected, what was found."""

    __slots__ = ("expected", "found", "key")

    def __init__(self, key, expected, found):
        self.key = key
        self.expected = expected
        self.found = found

    def __eq__(self, other):
        return isinstance(other, ParameterError) and (self.key, self.expected, self.found) == (
            other.key,
            other.expected,
            other.found,
        )

    def __repr__(self):
        return f"ParameterError({self.key!r}, {self.expected!r}, {self.found!r})"

    def __str__(self):
        return f"{self.key}: expected {self.expected}, found {self.found}"


def describe_value(value):
    """Short text for a found value, with its YAML type: ``'abc' (str)``, ``(missing)``."""
    if isinstance(value, bool):
        return "%s (bool)" % ("true" if value else "false")
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return "a %s" % ("mapping" if isinstance(value, dict) else "list")
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({_type_name(value)})"


def _type_name(value):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return type(value).__name__


# --- versions ---------------------------------------------------------------------------------


def version_tuple(text):
    """``"2.4.1"`` -> ``(2, 4, 1)``; None for anything that is not MAJOR.MINOR.PATCH (never raises)."""
    match = _VERSION_RE.match(text) if isinstance(text, str) else None
    return tuple(int(part) for part in match.groups()) if match else None


def parse_version(text):
    """``"2.4.1"`` -> ``(2, 4, 1)``; ReleaseError for anything else."""
    match = _VERSION_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise ReleaseError(f'version {describe_value(text)} is not MAJOR.MINOR.PATCH (for example "2.4.0")')
    return tuple(int(part) for part in match.groups())


# --- loading ----------------------------------------------------------------------------------


def load_yaml_text(text, source):
    """Parse YAML (or JSON when PyYAML is missing); ReleaseError naming SOURCE on bad syntax."""
    try:
        if HAS_YAML:
            return yaml.safe_load(text)
        return json.loads(text) if text.strip() else None
    except Exception as exc:  # yaml.YAMLError or ValueError, both user mistakes in a file
        detail = " ".join(str(exc).split())
        raise ReleaseError("{}: not valid {}: {}".format(source, "YAML" if HAS_YAML else "JSON", detail)) from None


def load_definition(path):
    """Read and validate the release definition or manifest at PATH; returns the mapping."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ReleaseError(f"{path}: cannot read: {exc.strerror or exc}") from None
    definition = load_yaml_text(text, path)
    validate_definition(definition, source=str(path))
    return definition


def dump_yaml(data):
    """Stable YAML text (key order kept) for definitions, manifests and app.yml."""
    if HAS_YAML:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- definition checks ------------------------------------------------------------------------


def validate_definition(definition, source="release definition"):
    """Raise ReleaseError (file, key path, expected, found) unless DEFINITION is well formed."""

    def fail(path, expected, found):
        raise ReleaseError(f"{source}: {path}: expected {expected}, found {found}")

    if not isinstance(definition, dict):
        fail("(top level)", "a mapping with version, compatibility and parameters", describe_value(definition))
    for key in definition:
        if key not in DEFINITION_KEYS + MANIFEST_KEYS:
            fail(key, "one of {}".format(", ".join(DEFINITION_KEYS + MANIFEST_KEYS)), f"unknown key {key!r}")
    for key in ("version", "compatibility", "parameters"):
        if key not in definition:
            fail(key, "a value", "(missing)")
    version = definition["version"]
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        fail("version", 'a quoted "MAJOR.MINOR.PATCH" string', describe_value(version))
    if "description" in definition and not isinstance(definition["description"], str):
        fail("description", "a string", describe_value(definition["description"]))
    if "defect" in definition:
        _validate_defect(definition["defect"], fail)
    if "artifact" in definition and not isinstance(definition["artifact"], str):
        fail("artifact", "a file name", describe_value(definition["artifact"]))
    if "sha256" in definition and not (
        isinstance(definition["sha256"], str) and _SHA256_RE.match(definition["sha256"])
    ):
        fail("sha256", "64 lowercase hexadecimal digits", describe_value(definition["sha256"]))

    _validate_compatibility(definition["compatibility"], fail)
    if "os" in definition:
        _validate_os(definition["os"], fail)
    parameters = definition["parameters"]
    if not isinstance(parameters, dict) or not parameters:
        fail("parameters", "a non-empty mapping of parameter name to spec", describe_value(parameters))
    for name, spec in parameters.items():
        _validate_parameter_spec(name, spec, fail)

    renamed = definition.get("renamed", {})
    if not isinstance(renamed, dict):
        fail("renamed", "a mapping old_name: new_name", describe_value(renamed))
    for old, new in renamed.items():
        if old in parameters:
            fail(f"renamed.{old}", "an old name no longer in parameters", "it is still a parameter")
        if new not in parameters:
            fail(f"renamed.{old}", "the new name of a parameter of this release", describe_value(new))
    removed = definition.get("removed", [])
    if not isinstance(removed, list):
        fail("removed", "a list of parameter names", describe_value(removed))
    for index, name in enumerate(removed):
        if not isinstance(name, str) or name in parameters or name in renamed:
            fail(f"removed[{index}]", "a name that is neither a parameter nor renamed", describe_value(name))


def _validate_defect(defect, fail):
    kinds = "one of {}".format(", ".join(DEFECTS))
    if isinstance(defect, str):
        if defect not in DEFECTS:
            fail("defect", kinds, describe_value(defect))
        return
    if not isinstance(defect, dict):
        fail("defect", f"{kinds} (or a mapping with kind and healthy_for_s)", describe_value(defect))
    for key in defect:
        if key not in DEFECT_KEYS:
            fail(f"defect.{key}", "one of {}".format(", ".join(DEFECT_KEYS)), f"unknown key {key!r}")
    if "kind" not in defect:
        fail("defect.kind", kinds, "(missing)")
    if defect["kind"] not in DEFECTS:
        fail("defect.kind", kinds, describe_value(defect["kind"]))
    if "healthy_for_s" in defect:
        seconds = defect["healthy_for_s"]
        # NaN and infinity are numbers YAML can write (.nan, .inf) but no time a test can wait for.
        if not _is_number(seconds, "float") or not 0 < seconds < float("inf"):
            fail("defect.healthy_for_s", "a number of seconds > 0", describe_value(seconds))


def defect_of(definition):
    """The deliberate defect of a (validated) release as ``{"kind", "healthy_for_s"}``, or None.

    The plain form ``defect: health-fails-after-start`` means the default time,
    :data:`DEFAULT_DEFECT_HEALTHY_FOR_S` seconds.
    """
    defect = definition.get("defect")
    if defect is None:
        return None
    if isinstance(defect, str):
        defect = {"kind": defect}
    return {"kind": defect["kind"], "healthy_for_s": float(defect.get("healthy_for_s", DEFAULT_DEFECT_HEALTHY_FOR_S))}


def describe_defect(definition):
    """The defect in words for listings (``health-fails-after-start after 20 s``), '' when there is none."""
    defect = defect_of(definition)
    if defect is None:
        return ""
    return "{} after {:g} s".format(defect["kind"], defect["healthy_for_s"])


def parse_constraint(text):
    """``">=3.11,<3.12"`` -> ``[(">=", "3.11"), ("<", "3.12")]``; ReleaseError for anything else.

    Debian's ``>>`` and ``<<`` are read as ``>`` and ``<``, ``==`` as ``=``. The versions are
    compared in Debian's order by the OS patch rules (``os_patch_rules.allows``).
    """
    if not isinstance(text, str) or not text.strip():
        raise ReleaseError("expected %s, found %s" % (CONSTRAINT_EXPECTED, describe_value(text)))
    clauses = []
    for part in text.split(","):
        match = _CONSTRAINT_RE.match(part)
        if not match:
            raise ReleaseError("expected %s, found %s" % (CONSTRAINT_EXPECTED, describe_value(text)))
        operator = {">>": ">", "<<": "<", "==": "="}.get(match.group(1), match.group(1))
        clauses.append((operator, match.group(2)))
    return clauses


def _validate_os(section, fail):
    if not isinstance(section, dict) or not section:
        found = "an empty mapping" if section == {} else describe_value(section)
        fail("os", 'a mapping of Debian package name to version constraint (python3: ">=3.11,<3.12")', found)
    for package, constraint in section.items():
        if not isinstance(package, str) or not _PACKAGE_NAME_RE.match(package):
            fail(f"os.{package}", "a Debian package name (lowercase letters, digits, + . -)", describe_value(package))
        try:
            parse_constraint(constraint)
        except ReleaseError:
            fail(f"os.{package}", CONSTRAINT_EXPECTED, describe_value(constraint))


def os_requirements(definition):
    """The packages a (validated) release needs, ``{package: constraint}`` (empty without ``os``)."""
    section = definition.get("os") if isinstance(definition, dict) else None
    return dict(section) if isinstance(section, dict) else {}


def _validate_compatibility(compatibility, fail):
    if not isinstance(compatibility, dict):
        fail("compatibility", "a mapping", describe_value(compatibility))
    for key in compatibility:
        if key not in COMPATIBILITY_KEYS:
            fail(f"compatibility.{key}", "one of {}".format(", ".join(COMPATIBILITY_KEYS)), "unknown key")
    for key in COMPATIBILITY_KEYS:
        if key not in compatibility:
            fail(f"compatibility.{key}", "a value", "(missing)")
    checks = (("models", _MODEL_RE, "hardware models like PS-300"), ("os", _OS_RE, "OS ids like debian-12"))
    for key, pattern, what in checks:
        values = compatibility[key]
        if not isinstance(values, list) or not values:
            fail(f"compatibility.{key}", f"a non-empty list of {what}", describe_value(values))
        for index, value in enumerate(values):
            if not isinstance(value, str) or not pattern.match(value):
                fail(f"compatibility.{key}[{index}]", what, describe_value(value))
    upgrades_from = compatibility["upgrades_from"]
    if not isinstance(upgrades_from, str) or not _VERSION_RE.match(upgrades_from):
        fail("compatibility.upgrades_from", 'a quoted "MAJOR.MINOR.PATCH" string', describe_value(upgrades_from))
    interfaces = compatibility["interfaces"]
    if not isinstance(interfaces, list) or not all(isinstance(item, str) and item for item in interfaces):
        fail(
            "compatibility.interfaces", "a list of interface names (payment, printer, ...)", describe_value(interfaces)
        )
    disk = compatibility["min_free_disk_mib"]
    if isinstance(disk, bool) or not isinstance(disk, int) or disk < 0:
        fail("compatibility.min_free_disk_mib", "an integer >= 0", describe_value(disk))


def _validate_parameter_spec(name, spec, fail):
    path = f"parameters.{name}"
    if not isinstance(name, str) or not _PARAMETER_NAME_RE.match(name):
        fail(path, "a lowercase name (letters, digits, _)", describe_value(name))
    if not isinstance(spec, dict):
        fail(path, "a mapping with type and default", describe_value(spec))
    for key in spec:
        if key not in PARAMETER_SPEC_KEYS:
            fail(f"{path}.{key}", "one of {}".format(", ".join(PARAMETER_SPEC_KEYS)), "unknown key")
    kind = spec.get("type")
    if kind not in PARAMETER_TYPES:
        fail(path + ".type", "one of {}".format(", ".join(PARAMETER_TYPES)), describe_value(kind))
    if "default" not in spec:
        fail(path + ".default", "a default value", "(missing)")
    for bound in ("min", "max"):
        if bound in spec:
            if kind not in ("int", "float"):
                fail(f"{path}.{bound}", f"no bound on a {kind} parameter", describe_value(spec[bound]))
            if not _is_number(spec[bound], kind):
                fail(f"{path}.{bound}", f"a {kind}", describe_value(spec[bound]))
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        fail(path + ".min", "min <= max ({})".format(spec["max"]), describe_value(spec["min"]))
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            fail(path + ".choices", "a non-empty list", describe_value(choices))
        for index, choice in enumerate(choices):
            if _check_type(choice, kind) is None:
                fail(f"{path}.choices[{index}]", f"a {kind}", describe_value(choice))
    if "secret" in spec and not isinstance(spec["secret"], bool):
        fail(path + ".secret", "true or false", describe_value(spec["secret"]))
    if "description" in spec and not isinstance(spec["description"], str):
        fail(path + ".description", "a string", describe_value(spec["description"]))
    problem = check_value(name, spec["default"], spec)
    if problem is not None:
        fail(path + ".default", problem.expected, problem.found)


def _is_number(value, kind):
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float))


# --- parameter checks -------------------------------------------------------------------------


def _check_type(value, kind):
    """VALUE converted to KIND (int accepted for float), or None when it is not of that type."""
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "str":
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if kind == "int":
        return value if isinstance(value, int) else None
    if kind == "float":
        return float(value) if isinstance(value, (int, float)) else None
    return None


def expected_text(spec):
    """What a parameter accepts, in words: ``int between 5 and 600``."""
    kind = spec["type"]
    text = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}[kind]
    if "choices" in spec:
        text = "one of {}".format(", ".join(str(choice) for choice in spec["choices"]))
    if "min" in spec and "max" in spec:
        text += " between {} and {}".format(spec["min"], spec["max"])
    elif "min" in spec:
        text += " >= {}".format(spec["min"])
    elif "max" in spec:
        text += " <= {}".format(spec["max"])
    return text


def check_value(name, value, spec):
    """ParameterError when VALUE does not fit SPEC, else None."""
    converted = _check_type(value, spec["type"])
    found = f"(secret of type {_type_name(value)})" if spec.get("secret") else describe_value(value)
    if converted is None:
        return ParameterError(name, expected_text(spec), found)
    if "choices" in spec and converted not in spec["choices"]:
        return ParameterError(name, expected_text(spec), found)
    if "min" in spec and converted < spec["min"]:
        return ParameterError(name, expected_text(spec), found)
    if "max" in spec and converted > spec["max"]:
        return ParameterError(name, expected_text(spec), found)
    return None


def validate_parameters(definition, parameters):
    """Every problem of PARAMETERS against DEFINITION's schema, as a list of ParameterError.

    Unknown keys are errors (a typo must not pass silently); a key this release renamed or
    removed says so in ``expected``. Missing keys are not errors: they take their default.
    """
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        return [ParameterError("(top level)", "a mapping of parameter: value", describe_value(parameters))]
    schema = definition["parameters"]
    renamed = definition.get("renamed", {})
    removed = definition.get("removed", [])
    errors = []
    for key in sorted(parameters, key=str):
        value = parameters[key]
        if key in schema:
            problem = check_value(key, value, schema[key])
            if problem is not None:
                errors.append(problem)
        elif key in renamed:
            errors.append(
                ParameterError(key, "{} (renamed in {})".format(renamed[key], definition["version"]), "the old name")
            )
        elif key in removed:
            errors.append(ParameterError(key, "nothing (removed in {})".format(definition["version"]), "a value"))
        else:
            errors.append(ParameterError(key, "a parameter of release {}".format(definition["version"]), "unknown key"))
    return errors


def defaults(definition):
    """The release's default parameters, in schema order."""
    return dict((name, spec["default"]) for name, spec in definition["parameters"].items())


def effective_parameters(definition, parameters):
    """Defaults overlaid with PARAMETERS, values normalised (int -> float where the type is float).

    Raises ReleaseError listing every problem when PARAMETERS is not valid.
    """
    errors = validate_parameters(definition, parameters)
    if errors:
        raise ReleaseError("; ".join(str(error) for error in errors))
    result = defaults(definition)
    for key, value in (parameters or {}).items():
        result[key] = _check_type(value, definition["parameters"][key]["type"])
    return result


def parameters_digest(parameters):
    """sha256 of the canonical JSON of PARAMETERS (sorted keys, no spaces): what /health reports."""
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- migration --------------------------------------------------------------------------------


def migrate_parameters(parameters, target, source=None):
    """Carry PARAMETERS (set on the installed SOURCE release) over to the TARGET release definition.

    Renamed keys take their new name (a value already set under the new name wins), removed
    keys and keys the target no longer knows are dropped, parameters new in the target take
    their default. Returns ``(migrated, notes)``; ``migrated`` is complete (defaults filled) and
    ``notes`` lists each change in words. With SOURCE, its defaults fill what PARAMETERS leaves
    unset first, so "new" means new in TARGET. Raises ReleaseError when a carried value is not valid
    for the target (for example a value outside a range the target narrowed).
    """
    if source is not None:
        # Defaults of the installed release count as set: a default that changed stays the old value.
        parameters = dict(defaults(source), **(parameters or {}))
    parameters = dict(parameters or {})
    schema = target["parameters"]
    renamed = target.get("renamed", {})
    removed = target.get("removed", [])
    notes = []
    carried = {}
    for key in sorted(parameters):
        value = parameters[key]
        if key in schema:
            carried[key] = value
    for key in sorted(parameters):
        value = parameters[key]
        if key in schema:
            continue
        if key in renamed:
            new = renamed[key]
            if new in carried:
                notes.append(f"{key}: dropped, {new} is already set")
            else:
                carried[new] = value
                notes.append(f"{key}: renamed to {new}")
        elif key in removed:
            notes.append("{}: removed in {}".format(key, target["version"]))
        else:
            notes.append("{}: not a parameter of {}, dropped".format(key, target["version"]))
    for key in schema:
        if key not in carried:
            notes.append("{}: new, default {}".format(key, json.dumps(schema[key]["default"])))
    migrated = effective_parameters(target, carried)
    return migrated, notes
