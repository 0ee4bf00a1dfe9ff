# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading registry YAML: fast, safe, and within input limits.

:func:`load_yaml` parses one file with PyYAML's C parser (when available) and a lean constructor for
the plain strings, mappings and lists that make up nearly all of a registry, with PyYAML's safe
constructor for the rest; :func:`load_file` turns what goes wrong into a :class:`~.registry_check.Problem`.
"""

from __future__ import annotations

import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import Problem

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader


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


def load_file(path, rel, problems):
    """``(data, True)`` for a readable YAML file, else ``(None, False)`` with its problem appended."""
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


def compose_file(path: str):
    """The node tree of one YAML file (for line numbers)."""
    with open(path, "rb") as stream:
        return yaml.compose(stream, Loader=_Loader)
