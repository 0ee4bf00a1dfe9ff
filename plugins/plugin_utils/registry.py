# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet registry: loading, validation, parameter layering and the inventory it yields.

Controller-side only (the inventory plugin and ``ipm-registry`` use it), so PyYAML is fine here; the
C loader is used when available because it is several times faster than the pure-Python one.

A registry is a directory holding ``catalog.yml`` (hardware models, and ``releases_dir``: where the
release definitions live) and one YAML file per customer (the customer, its sites, their terminals)
anywhere else below it. :func:`load_fleet` reads it and returns a :class:`Fleet` plus the list of
every :class:`Problem` found in one pass; an empty list means the registry is valid.
"""

from __future__ import annotations

import difflib
import functools
import gc
import ipaddress
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import yaml

from ansible_collections.ipm.fleet.plugins.module_utils.release_manifest import check_value
from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_spec import (
    DEFAULTS,
    ID_PATTERN,
    NAME_PATTERN,
    OBJECTS,
    Field,
)

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader

try:
    import zoneinfo
except ImportError:  # pragma: no cover - Python < 3.9
    zoneinfo = None

CATALOG_FILE = "catalog.yml"
YAML_SUFFIXES = (".yml", ".yaml")
PARAMETER_TYPES = ("str", "int", "float", "bool")

_ID_RE = re.compile(ID_PATTERN)
_PATTERNS: dict[str, re.Pattern] = {}
_UNSAFE = re.compile(r"[^a-z0-9_]")


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


def sanitize(value: str) -> str:
    """A group-name suffix: lower case, every other character turned into ``_``."""
    return _UNSAFE.sub("_", str(value).lower())


@functools.cache
def valid_timezone(name: str) -> bool:
    """True for an IANA time zone name that this machine's tz database knows."""
    if zoneinfo is None or not name or name.startswith(("/", ".")) or "\\" in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, ValueError, IsADirectoryError, ...
        return False
    return True


@functools.lru_cache(maxsize=1)
def _all_timezones():
    return sorted(zoneinfo.available_timezones()) if zoneinfo else []


# --------------------------------------------------------------------------- loading


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class _SlowPath(Exception):
    """The document needs PyYAML's full constructor (merge keys, odd tags, unhashable keys...)."""


def _construct(node):
    # PyYAML's constructor is pure Python even under the C loader and costs more than parsing: plain
    # strings, mappings and lists (nearly all of a registry) are built directly from the node tree.
    tag = node.tag
    kind = type(node)
    if kind is yaml.ScalarNode:
        if tag == _STR:
            return node.value
        constructor = _CONSTRUCTOR.yaml_constructors.get(tag)
        if constructor is None:
            raise _SlowPath
        return constructor(_CONSTRUCTOR, node)
    if kind is yaml.MappingNode and tag == _MAP:
        result = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _SlowPath
            key = _construct(key_node)
            if isinstance(key, (dict, list)):
                raise _SlowPath
            result[key] = _construct(value_node)
        return result
    if kind is yaml.SequenceNode and tag == _SEQ:
        return [_construct(item) for item in node.value]
    raise _SlowPath


# First characters with which a plain scalar may resolve to something else than a string under YAML 1.1
# (bool, int, float, null, timestamp, merge, value): PyYAML's resolver is pure Python and runs on
# every scalar; plain words starting otherwise, and every quoted scalar, are strings.
_IMPLICIT_FIRST = frozenset("yYnNtTfFoO-+0123456789.~<=")


class _FastLoader(_Loader):
    def resolve(self, kind, value, implicit):
        if kind is yaml.ScalarNode and value and (not implicit[0] or value[0] not in _IMPLICIT_FIRST):
            return _STR
        return super().resolve(kind, value, implicit)


def load_yaml(path: str):
    """Parse one YAML file with the fastest safe loader (same results as ``yaml.load`` with SafeLoader)."""
    with open(path, "rb") as stream:
        loader = _FastLoader(stream)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    if node is None:
        return None
    try:
        return _construct(node)
    except (_SlowPath, RecursionError, TypeError, ValueError, yaml.YAMLError):
        pass
    with open(path, "rb") as stream:
        return yaml.load(stream, Loader=_Loader)


def resolve_registry_dir(path: str) -> str:
    """The registry directory from a registry directory, a catalog file or an inventory config file.

    An inventory directory holding a ``*.ipm_registry.yml`` file, or that file itself, leads to the
    ``registry:`` it names (relative to the file).
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, CATALOG_FILE)):
            return path
        configs = sorted(
            name for name in os.listdir(path) if name.endswith((".ipm_registry.yml", ".ipm_registry.yaml"))
        )
        if configs:
            path = os.path.join(path, configs[0])
        else:
            return path
    if os.path.basename(path) == CATALOG_FILE:
        return os.path.dirname(path)
    if path.endswith((".ipm_registry.yml", ".ipm_registry.yaml")):
        config = load_yaml(path)
        if isinstance(config, dict) and isinstance(config.get("registry"), str):
            return os.path.normpath(os.path.join(os.path.dirname(path), config["registry"]))
    return path


def registry_files(registry_dir: str, skip_dirs=()) -> list[str]:
    """Customer files: every YAML file below the registry directory except the catalog (sorted)."""
    skip = {os.path.realpath(d) for d in skip_dirs}
    found = []
    for root, dirs, files in os.walk(registry_dir):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and os.path.realpath(os.path.join(root, d)) not in skip
        )
        for name in files:
            if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                full = os.path.join(root, name)
                if full != os.path.join(registry_dir, CATALOG_FILE):
                    found.append(full)
    return sorted(found)


def fingerprint(registry_dir: str) -> list:
    """Names, sizes and modification times of every file the registry reads (for the plugin cache).

    The catalog, the release definitions it points to (wherever they are) and the customer files;
    not ``.git`` or other files the registry does not read, so a git operation does not invalidate it.
    """
    catalog = os.path.join(registry_dir, CATALOG_FILE)
    paths = [catalog]
    releases_dir = None
    try:
        relative = load_yaml(catalog).get("releases_dir")
        releases_dir = os.path.normpath(os.path.join(registry_dir, relative))
        paths += [
            os.path.join(releases_dir, name)
            for name in sorted(os.listdir(releases_dir))
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
        ]
    except (OSError, AttributeError, TypeError, ValueError, yaml.YAMLError):
        pass  # no usable catalog: loading will report it, and the stamp still follows the catalog's own file
    paths += registry_files(registry_dir, [releases_dir] if releases_dir else [])
    items = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue
        items.append([path, stat.st_size, stat.st_mtime_ns])
    return items


# --------------------------------------------------------------------------- generic shape checks


def _type_ok(kind: str, value) -> bool:
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


def _is_scalar(value) -> bool:
    return isinstance(value, (str, int, float, bool))


def _check_value(field: Field, value, keys, report) -> bool:
    """Check one value against its field; report faults; True when it can be used further."""
    if not _type_ok(field.kind, value):
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
    if field.kind == "list":
        if not value and field.required:
            report(keys, "empty list", "at least one item", "[]")
            return False
        clean = True
        for index, item in enumerate(value):
            clean = _check_value(field.item, item, (*keys, index), report) and clean
        return clean
    if field.kind == "object":
        return _check_fields(value, OBJECTS[field.obj], keys, report)
    if field.kind == "map":
        clean = True
        for key, item in value.items():
            if not isinstance(key, str):
                report((*keys, key), "key is not a string", "a name", describe(key))
                clean = False
                continue
            clean = _check_value(field.item, item, (*keys, key), report) and clean
        return clean
    if field.kind in ("params", "settings"):
        clean = True
        for key, item in value.items():
            if not isinstance(key, str):
                report((*keys, key), "key is not a string", "a name", describe(key))
                clean = False
            elif not (
                _is_scalar(item) or (field.kind == "settings" and isinstance(item, list) and all(map(_is_scalar, item)))
            ):
                report((*keys, key), "wrong type", "a string, number or true/false", describe(item))
                clean = False
        return clean
    return True


def _check_fields(value, spec: dict[str, Field], keys, report) -> bool:
    """Check a mapping against its object spec: unknown keys, missing keys, each value."""
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
            clean = _check_value(field, item, (*keys, key), report) and clean
    for key, field in spec.items():
        if field.required and key not in value:
            report((*keys, key), "missing required key", _EXPECTED[field.kind], "nothing")
            clean = False
    return clean


def _good(value, field: Field):
    """The value if it has the field's type (so semantic checks never trip over bad shapes)."""
    return value if _type_ok(field.kind, value) else None


# --------------------------------------------------------------------------- the fleet


class Release:
    """What the registry needs of one release definition or manifest."""

    __slots__ = ("defaults", "file", "models", "parameters", "version")

    def __init__(self, version, models, parameters, file):
        self.version = version
        self.models = models
        self.parameters = parameters
        self.defaults = {name: spec.get("default") for name, spec in parameters.items() if "default" in spec}
        self.file = file


class Fleet:
    """The validated registry: catalog, releases, customers (each with sites and terminals)."""

    def __init__(self, registry_dir):
        self.registry_dir = registry_dir
        self.models: dict = {}
        self.releases: dict[str, Release] = {}
        self.customers: list[dict] = []

    def terminals(self):
        """Every terminal as ``(customer, site, terminal)``."""
        for customer_doc in self.customers:
            for site in customer_doc["sites"]:
                for terminal in site["terminals"]:
                    yield customer_doc["customer"], site, terminal

    def find_terminal(self, terminal_id):
        for customer, site, terminal in self.terminals():
            if terminal.get("id") == terminal_id:
                return customer, site, terminal
        return None


def desired_release(customer, site, terminal):
    """The desired release: the terminal's, else the site's, else the customer's."""
    return terminal.get("release") or site.get("release") or customer.get("release")


def layered_parameters(release: Release | None, customer, site, terminal, with_sources=False):
    """Parameters as the terminal must run them: release defaults < customer < site < terminal.

    With ``with_sources`` each value comes as ``{"value": v, "source": "release 2.4.0" | "customer" |
    "site" | "terminal"}``.
    """
    layers = [
        (f"release {release.version}" if release else "release", release.defaults if release else {}),
        ("customer", customer.get("parameters") or {}),
        ("site", site.get("parameters") or {}),
        ("terminal", terminal.get("parameters") or {}),
    ]
    merged: dict = {}
    known = release.parameters if release else None
    for source, values in layers:
        for name, value in values.items():
            if known is not None and name not in known:
                continue  # a customer or site value meant for the other releases of its terminals
            merged[name] = {"value": value, "source": source} if with_sources else value
    return merged


def display_path(path: str) -> str:
    """A path as messages show it: relative to the working directory when below it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _load_file(path, rel, problems):
    try:
        return load_yaml(path), True
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problems.append(
            Problem(rel, (), "YAML syntax error: " + " ".join(str(exc.problem or exc).split()), "valid YAML", "", line)
        )
    except yaml.reader.ReaderError as exc:
        problems.append(
            Problem(
                rel,
                (),
                f"character {exc.character!r} not allowed in YAML at byte {exc.position}",
                "a UTF-8 text file",
                "a control character or invalid byte",
            )
        )
    except yaml.YAMLError as exc:
        problems.append(Problem(rel, (), "YAML error: " + " ".join(str(exc).split()), "valid YAML"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(
            Problem(rel, (), "cannot read the file: " + " ".join(str(exc).split()), "a readable UTF-8 file")
        )
    except (ValueError, TypeError, OverflowError) as exc:
        # YAML that parses but whose value cannot be built: an impossible date (2024-13-01), !!int abc, ...
        problems.append(
            Problem(
                rel,
                (),
                "a value YAML cannot build: " + " ".join(str(exc).split()),
                "valid dates and numbers; quote a value meant as text",
                "",
            )
        )
    return None, False


def _load_releases(fleet, releases_dir, catalog_rel, problems):
    if not os.path.isdir(releases_dir):
        problems.append(
            Problem(
                catalog_rel,
                ("releases_dir",),
                "no such directory",
                "a directory of release definitions",
                repr(releases_dir),
            )
        )
        return
    for name in sorted(os.listdir(releases_dir)):
        if not name.endswith(YAML_SUFFIXES) or name.startswith("."):
            continue
        path = os.path.join(releases_dir, name)
        rel = display_path(path)
        data, ok = _load_file(path, rel, problems)
        if not ok:
            continue
        _add_release(fleet, data, rel, problems)


def _add_release(fleet, data, rel, problems):
    if not isinstance(data, dict):
        problems.append(Problem(rel, (), "wrong type", "a release definition (mapping)", describe(data)))
        return
    version = data.get("version")
    if not isinstance(version, str):
        problems.append(
            Problem(rel, ("version",), "missing or not a string", 'a quoted version, e.g. "2.4.0"', describe(version))
        )
        return
    compatibility = data.get("compatibility")
    models = compatibility.get("models") if isinstance(compatibility, dict) else None
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        problems.append(
            Problem(rel, ("compatibility", "models"), "wrong type", "a list of model names", describe(models))
        )
        models = []
    parameters = data.get("parameters", {})
    good_parameters = {}
    if not isinstance(parameters, dict):
        problems.append(
            Problem(rel, ("parameters",), "wrong type", "a mapping of parameter schemas", describe(parameters))
        )
    else:
        for name, spec in parameters.items():
            if not isinstance(spec, dict) or spec.get("type") not in PARAMETER_TYPES:
                problems.append(
                    Problem(
                        rel,
                        ("parameters", name),
                        "bad parameter schema",
                        "{type: str|int|float|bool, ...}",
                        describe(spec),
                    )
                )
                continue
            good_parameters[str(name)] = spec
    if version in fleet.releases:
        # A definition and its built manifest describe the same release: keep the first.
        return
    fleet.releases[version] = Release(version, models, good_parameters, rel)


def _parameter_problem(name, spec, value):
    """(expected, found) when ``value`` does not fit the release's parameter schema, else None.

    The rules are the application's own (``module_utils/release_manifest.py``), so the registry
    accepts exactly what a terminal will.
    """
    try:
        fault = check_value(name, value, spec)
    except (TypeError, KeyError, ValueError):
        return "a value the release's (malformed) schema accepts", describe(value)
    return (fault.expected, fault.found) if fault else None


def load_fleet(path: str, workers: int = 0) -> tuple[Fleet, list[Problem]]:
    """Load and validate the registry at ``path``; return the fleet and every problem found.

    ``path`` is the registry directory (or its catalog, or an inventory config file naming it). The
    problems come sorted by file, then line; each names the file, the key path, what was expected
    and what was found.

    ``workers`` is how many processes read the customer files at once: ``0`` picks one per CPU (at
    most :data:`MAX_WORKERS`) when the files add up to :data:`PARALLEL_MIN_BYTES` or more, ``1`` reads
    them all in this process. The result is the same either way.
    """
    # Hundreds of thousands of small containers, none cyclic: the cyclic collector would rescan them
    # over and over while they are built (a third of the load time at 10,000 terminals).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_fleet(path, workers)
    finally:
        if collecting:
            gc.enable()


def _load_fleet(path: str, workers: int) -> tuple[Fleet, list[Problem]]:
    problems: list[Problem] = []
    try:
        registry_dir = resolve_registry_dir(path)
    except (OSError, yaml.YAMLError) as exc:
        return Fleet(path), [Problem(str(path), (), f"cannot read: {exc}", "a registry directory")]
    fleet = Fleet(registry_dir)
    catalog_path = os.path.join(registry_dir, CATALOG_FILE)
    catalog_rel = display_path(catalog_path)
    if not os.path.isfile(catalog_path):
        problems.append(
            Problem(catalog_rel, (), "no catalog", f"a registry directory holding {CATALOG_FILE}", repr(registry_dir))
        )
        return fleet, problems

    releases_dir = None
    catalog, ok = _load_file(catalog_path, catalog_rel, problems)
    if ok:
        report = _reporter(catalog_rel, problems)
        _check_fields(catalog, OBJECTS["catalog"], (), report)
        if isinstance(catalog, dict):
            models = _good(catalog.get("models"), OBJECTS["catalog"]["models"]) or {}
            fleet.models = {name: model for name, model in models.items() if isinstance(model, dict)}
            relative = _good(catalog.get("releases_dir"), OBJECTS["catalog"]["releases_dir"])
            if relative is not None:
                releases_dir = os.path.normpath(os.path.join(registry_dir, relative))
                _load_releases(fleet, releases_dir, catalog_rel, problems)

    # Each customer file is read and checked on its own (possibly in another process); what must be
    # unique across the fleet (ids, addresses) is checked here afterwards, in file order, so the
    # first occurrence is the one the others are reported against.
    seen: dict[str, dict] = {}
    paths = registry_files(registry_dir, [releases_dir] if releases_dir else [])
    for rel, document, file_problems, occurrences in _read_customer_files(fleet, paths, workers):
        problems.extend(file_problems)
        report = _reporter(rel, problems)
        for what, value, keys in occurrences:
            _duplicate(seen.setdefault(what, {}), value, rel, keys, what, report)
        if document is not None:
            fleet.customers.append(document)

    _locate(problems)
    problems.sort(key=lambda p: (p.file, p.line or 0))
    return fleet, problems


# Registries whose customer files add up to this much are read by several processes at once: parsing
# YAML is most of the load time (about 10 s per 100,000 terminals on one core).
PARALLEL_MIN_BYTES = 4 * 1024 * 1024
MAX_WORKERS = 8

_WORKER_FLEET: Fleet | None = None


def worker_count(paths, workers: int = 0) -> int:
    """How many processes :func:`load_fleet` uses for ``paths`` (see its ``workers``)."""
    if workers == 1 or len(paths) < 2:
        return 1
    if workers > 1:
        return min(workers, len(paths))
    try:
        size = sum(os.path.getsize(p) for p in paths)
    except OSError:
        return 1
    if size < PARALLEL_MIN_BYTES:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_WORKERS, len(paths)))


def _read_customer_files(fleet, paths, workers):
    count = worker_count(paths, workers)
    if count > 1:
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(count, mp_context=context, initializer=_worker_init, initargs=(fleet,)) as pool:
                return list(pool.map(_worker_read, paths, chunksize=max(1, len(paths) // (count * 8))))
        except (OSError, ValueError, BrokenProcessPool):
            pass  # no fork on this system, or a worker was killed: read them here instead
    return [_read_customer_file(fleet, path) for path in paths]


def _worker_init(fleet):
    global _WORKER_FLEET  # pylint: disable=global-statement
    _WORKER_FLEET = fleet


def _worker_read(path):
    return _read_customer_file(_WORKER_FLEET, path)


def _read_customer_file(fleet, path):
    """One customer file, loaded and checked: ``(rel, document or None, problems, occurrences)``.

    ``occurrences`` lists ``(what, value, keys)`` for every id and address that must be unique
    across the fleet, in file order.
    """
    rel = display_path(path)
    problems: list[Problem] = []
    occurrences: list[tuple] = []
    document = None
    data, ok = _load_file(path, rel, problems)
    if ok:
        report = _reporter(rel, problems)
        if _check_fields(data, OBJECTS["customer_file"], (), report) or isinstance(data, dict):
            document = _check_customer_file(fleet, data, rel, report, occurrences.append)
    return rel, document, problems, occurrences


def _reporter(rel, problems):
    def report(keys, message, expected="", found=""):
        problems.append(Problem(rel, keys, message, expected, found))

    return report


def _duplicate(seen, value, rel, keys, what, report):
    first = seen.get(value)
    if first is None:
        seen[value] = (rel, keys)
        return False
    report(
        keys,
        f"duplicate {what}",
        f"a {what} used once in the fleet",
        f"{value!r}, already at {first[0]} {key_path(first[1])}",
    )
    return True


def _check_customer_file(fleet, data, rel, report, occur):
    """Check one customer file's data; return its document (customer, clean sites, file) or None."""
    spec = OBJECTS["customer_file"]
    customer = data.get("customer")
    if not isinstance(customer, dict):
        customer = {}
    cspec = OBJECTS["customer"]
    customer_id = _good(customer.get("id"), cspec["id"])
    if customer_id and _ID_RE.match(customer_id):
        occur(("customer id", customer_id, ("customer", "id")))
    customer_release = _good(customer.get("release"), cspec["release"])
    if customer_release is not None:
        _check_release_name(fleet, customer_release, ("customer", "release"), report)
    contract = customer.get("contract")
    if isinstance(contract, dict) and isinstance(contract.get("targets"), dict):
        for severity, target in contract["targets"].items():
            if isinstance(target, dict):
                response, repair = target.get("response_hours"), target.get("repair_hours")
                if _type_ok("number", response) and _type_ok("number", repair) and repair < response:
                    report(
                        ("customer", "contract", "targets", severity, "repair_hours"),
                        "repair target shorter than the response target",
                        f"at least {response}",
                        describe(repair),
                    )
    sites = _good(data.get("sites"), spec["sites"]) or []
    clean_sites = []
    for site_index, site in enumerate(sites):
        if not isinstance(site, dict):
            continue
        clean_sites.append(site)
        _check_site(fleet, customer, site, ("sites", site_index), report, occur)
    if customer_id:
        return {"customer": customer, "sites": clean_sites, "file": rel}
    return None


def _check_release_name(fleet, version, keys, report):
    if fleet.releases and version not in fleet.releases:
        report(
            keys,
            "unknown release" + suggest(version, fleet.releases),
            "one of " + ", ".join(sorted(fleet.releases)),
            describe(version),
        )
        return False
    return version in fleet.releases


def _check_site(fleet, customer, site, base, report, occur):
    sspec = OBJECTS["site"]
    base = tuple(base)
    site_id = _good(site.get("id"), sspec["id"])
    if site_id and _ID_RE.match(site_id):
        occur(("site id", site_id, (*base, "id")))
    timezone = _good(site.get("timezone"), sspec["timezone"])
    if timezone is not None and not valid_timezone(timezone):
        hint = suggest(timezone, _all_timezones())
        report(
            (*base, "timezone"),
            "unknown IANA time zone" + hint,
            "a zone such as Europe/Paris or Australia/Sydney",
            describe(timezone),
        )
    network = site.get("network")
    if isinstance(network, dict) and isinstance(network.get("vpn_subnet"), str):
        try:
            ipaddress.ip_network(network["vpn_subnet"], strict=True)
        except ValueError as exc:
            report(
                (*base, "network", "vpn_subnet"),
                f"not a network ({exc})",
                "a CIDR such as 10.20.1.0/24",
                describe(network["vpn_subnet"]),
            )
    windows = site.get("windows")
    if isinstance(windows, list):
        for index, window in enumerate(windows):
            if (
                isinstance(window, dict)
                and isinstance(window.get("days"), list)
                and len(set(map(str, window["days"]))) != len(window["days"])
            ):
                report(
                    (*base, "windows", index, "days"), "a day listed twice", "each day once", describe(window["days"])
                )
    site_release = _good(site.get("release"), sspec["release"])
    if site_release is not None:
        _check_release_name(fleet, site_release, (*base, "release"), report)
    terminals = _good(site.get("terminals"), sspec["terminals"]) or []
    clean = []
    tspec = OBJECTS["terminal"]
    for index, terminal in enumerate(terminals):
        if not isinstance(terminal, dict):
            continue
        keys = (*base, "terminals", index)
        clean.append(terminal)
        terminal_id = _good(terminal.get("id"), tspec["id"])
        if terminal_id and _ID_RE.match(terminal_id):
            occur(("terminal id", terminal_id, (*keys, "id")))
        address = _good(terminal.get("address"), tspec["address"])
        if address is not None:
            _check_address(address, (*keys, "address"), report)
            occur(("terminal address", address, (*keys, "address")))
        model_name = _good(terminal.get("model"), tspec["model"])
        model = None
        if model_name is not None:
            model = fleet.models.get(model_name)
            if model is None and fleet.models:
                report(
                    (*keys, "model"),
                    "unknown model" + suggest(model_name, fleet.models),
                    "one of " + ", ".join(sorted(fleet.models)),
                    describe(model_name),
                )
        interfaces = terminal.get("interfaces")
        if model is not None and isinstance(interfaces, dict) and isinstance(model.get("interfaces"), list):
            for name in interfaces:
                if isinstance(name, str) and name not in model["interfaces"]:
                    report(
                        (*keys, "interfaces", name),
                        f"model {model_name} has no such interface" + suggest(name, model["interfaces"]),
                        "one of " + ", ".join(map(str, model["interfaces"])),
                        describe(name),
                    )
        version = desired_release(customer, site, terminal)
        release = None
        if version is None:
            report(
                (*keys, "release"),
                "no desired release",
                "release: on the terminal, its site or its customer",
                "nothing",
            )
        elif isinstance(version, str):
            if "release" in terminal:
                if isinstance(terminal["release"], str) and _check_release_name(
                    fleet, version, (*keys, "release"), report
                ):
                    release = fleet.releases[version]
            else:
                release = fleet.releases.get(version)
        if terminal.get("status") == "retired":
            continue  # not maintained any more: its release and parameters are history
        if release is not None and model_name is not None and model is not None and model_name not in release.models:
            report(
                (*keys, "model"),
                f"release {version} does not support model {model_name}",
                "a model among " + (", ".join(release.models) or "none") + f", or another release than {version}",
                describe(model_name),
            )
        if release is not None:
            _check_parameters(fleet, release, customer, site, terminal, keys, base, report)
    site["terminals"] = clean


def _check_address(address, keys, report):
    try:
        ipaddress.ip_address(address)
        return
    except ValueError:
        pass
    if (
        not re.match(
            r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
            address,
        )
        or address.replace(".", "").isdigit()
    ):
        report(keys, "not an IP address or DNS name", "e.g. 127.0.10.1 or ps-001.example.net", describe(address))


def _known_elsewhere(name, fleet):
    return any(name in release.parameters for release in fleet.releases.values())


def _check_parameters(fleet, release, customer, site, terminal, keys, site_keys, report):
    """Each layer's values against the desired release's schema (customer/site reported once each)."""
    layers = (
        (customer.get("parameters"), ("customer", "parameters"), ("customer",)),
        (site.get("parameters"), (*site_keys, "parameters"), ("site",)),
        (terminal.get("parameters"), (*keys, "parameters"), ("terminal",)),
    )
    for values, where, (layer,) in layers:
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            spec = release.parameters.get(name)
            if spec is None and layer != "terminal" and _known_elsewhere(name, fleet):
                # Customer and site values may target the newer releases of their other terminals.
                continue
            if spec is None:
                report(
                    (*where, name),
                    f"release {release.version} has no parameter {name!r}" + suggest(name, release.parameters),
                    "a parameter of " + release.file,
                    describe(name),
                )
                continue
            fault = _parameter_problem(name, spec, value)
            if fault:
                report((*where, name), f"value outside release {release.version}'s schema", fault[0], fault[1])


def _locate(problems):
    """Fill in line numbers by walking each file's YAML node tree (only when problems exist)."""
    by_file: dict[str, list[Problem]] = {}
    for problem in problems:
        if problem.line is None and problem.keys:
            by_file.setdefault(problem.file, []).append(problem)
    for rel, items in by_file.items():
        try:
            with open(rel, "rb") as stream:
                root = yaml.compose(stream, Loader=_Loader)
        except Exception:  # the file was unreadable or broken: those problems are already reported
            continue
        for problem in items:
            problem.line = _node_line(root, problem.keys)
    # Deduplicate: a customer-level parameter fault is found once per terminal using it.
    seen = set()
    unique = []
    for problem in problems:
        identity = (problem.file, problem.keys, problem.message, problem.expected, problem.found)
        if identity not in seen:
            seen.add(identity)
            unique.append(problem)
    problems[:] = unique


def _node_line(node, keys):
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(key) or (
                    isinstance(key, bool) and key_node.value.lower() in ("yes", "no", "true", "false", "on", "off")
                ):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line if line is not None else node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


# --------------------------------------------------------------------------- the inventory


def customer_vars(customer) -> dict:
    """Variables of the ``customer_<id>`` group."""
    return {
        "ipm_customer_name": customer.get("name"),
        "ipm_customer_country": customer.get("country"),
        "ipm_customer_languages": customer.get("languages") or [],
        "ipm_contract": customer.get("contract") or {},
        "ipm_contacts": customer.get("contacts") or [],
        "ipm_customer_parameters": customer.get("parameters") or {},
    }


def site_vars(customer, site) -> dict:
    """Variables of the ``site_<id>`` group (country and language default to the customer's)."""
    languages = customer.get("languages") or []
    return {
        "ipm_site_name": site.get("name"),
        "ipm_site_city": site.get("city"),
        "ipm_site_country": site.get("country") or customer.get("country"),
        "ipm_site_timezone": site.get("timezone"),
        "ipm_site_language": site.get("language") or (languages[0] if languages else None),
        "ipm_site_windows": site.get("windows") or [],
        "ipm_site_network": site.get("network") or {},
        "ipm_site_address": site.get("address") or {},
        "ipm_site_parameters": site.get("parameters") or {},
    }


def host_vars(customer, site, terminal) -> dict:
    """Variables of one terminal's host."""
    return {
        "ansible_host": terminal["address"],
        "ipm_terminal_id": terminal["id"],
        "ipm_customer_id": customer["id"],
        "ipm_site_id": site["id"],
        "ipm_model": terminal["model"],
        "ipm_serial_number": terminal["serial_number"],
        "ipm_release": desired_release(customer, site, terminal),
        "ipm_ring": terminal.get("ring") or DEFAULTS["ring"],
        "ipm_status": terminal.get("status") or DEFAULTS["status"],
        "ipm_interfaces": terminal.get("interfaces") or {},
        "ipm_parameters": terminal.get("parameters") or {},
        "ipm_tags": terminal.get("tags") or [],
    }


def host_groups(site, variables) -> list[str]:
    """The groups a terminal's host is put in directly (its site, model, release, ring, status)."""
    return [
        "site_" + sanitize(site["id"]),
        "model_" + sanitize(variables["ipm_model"]),
        "release_" + sanitize(variables["ipm_release"]),
        "ring_" + sanitize(variables["ipm_ring"]),
        "status_" + sanitize(variables["ipm_status"]),
    ]


def site_parents(customer, site, variables) -> list[str]:
    """Groups a site group is a child of: its customer, country, time zone and language."""
    parents = ["customer_" + sanitize(customer["id"])]
    if variables["ipm_site_country"]:
        parents.append("country_" + sanitize(variables["ipm_site_country"]))
    if variables["ipm_site_timezone"]:
        parents.append("tz_" + sanitize(variables["ipm_site_timezone"]))
    if variables["ipm_site_language"]:
        parents.append("language_" + sanitize(variables["ipm_site_language"]))
    return parents


def inventory_plan_for(fleet: Fleet, customer, site, terminal) -> dict:
    """One terminal as the inventory shows it: host variables, every group it belongs to, site and customer facts."""
    variables = host_vars(customer, site, terminal)
    site_group_vars = site_vars(customer, site)
    groups = host_groups(site, variables) + site_parents(customer, site, site_group_vars)
    tier = (customer.get("contract") or {}).get("sla_tier")
    if tier:
        groups.append("sla_" + sanitize(tier))
    return {
        "host_vars": variables,
        "groups": groups,
        "site_vars": site_group_vars,
        "customer_vars": customer_vars(customer),
    }


def inventory_plan(fleet: Fleet, include_retired: bool = False) -> dict:
    """The inventory the registry yields, as plain data (JSON-serialisable, so the plugin can cache it).

    ``groups``: name -> variables; ``children``: [parent, child] pairs; ``hosts``: [name, variables,
    [group, ...]]. Site groups are children of their customer group and of the country, time zone
    and language groups; customer groups are children of their SLA group; hosts sit in their site,
    model, release, ring and status groups. Site and customer facts live on their groups only.
    """
    groups: dict[str, dict] = {}
    children: list[list[str]] = []
    hosts: list[list] = []
    for version, release in fleet.releases.items():
        groups["release_" + sanitize(version)] = {"ipm_release_defaults": release.defaults}
    for document in fleet.customers:
        customer = document["customer"]
        customer_group = "customer_" + sanitize(customer["id"])
        groups[customer_group] = customer_vars(customer)
        tier = (customer.get("contract") or {}).get("sla_tier")
        if tier:
            groups.setdefault("sla_" + sanitize(tier), {})
            children.append(["sla_" + sanitize(tier), customer_group])
        for site in document["sites"]:
            site_group = "site_" + sanitize(site["id"])
            variables = site_vars(customer, site)
            groups[site_group] = variables
            for parent in site_parents(customer, site, variables):
                groups.setdefault(parent, {})
                children.append([parent, site_group])
            for terminal in site["terminals"]:
                if terminal.get("status") == "retired" and not include_retired:
                    continue
                variables = host_vars(customer, site, terminal)
                hosts.append([terminal["id"], variables, host_groups(site, variables)])
    for host in hosts:
        for group in host[2]:
            if group not in groups:
                groups[group] = {}
    return {"groups": groups, "children": children, "hosts": hosts}
