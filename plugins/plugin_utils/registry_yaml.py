# -*- coding: utf-8 -*-
# Copyright: ipm.fleet maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading registry YAML: fast, safe, and within input limits.

:func:`load_yaml` parses one file with PyYAML's C parser (when available) and a lean constructor for
the plain strings, mappings and lists that make up nearly all of a registry, with PyYAML's safe
constructor for the rest (merge keys, other tags); :func:`load_file` turns what goes wrong into a
:class:`~.registry_check.Problem`. Ansible's ``!vault`` tag (``ansible-vault encrypt_string`` output)
is read on every path as a :class:`~.vault_values.VaultValue`: the ciphertext, never decrypted.

Every path (fast or slow constructor, the second reading that finds line numbers, the catalog and
inventory configuration files) goes through the same input limits, so a small file cannot keep a
reader busy: its size (:data:`MAX_FILE_BYTES`), the nodes its document expands to, each node counted
once per reference through aliases (:data:`MAX_NODES`), and its nesting (:data:`MAX_DEPTH`). The
expansion is counted on the composed node graph with each node measured once, so counting an alias
bomb costs what its text does; a refused file is an :class:`InputLimitError` naming file and line.
Aliased nodes are built once and shared, as PyYAML itself does.
"""

from __future__ import annotations

import itertools
import os

import yaml

from ansible_collections.ipm.fleet.plugins.plugin_utils.registry_check import Problem
from ansible_collections.ipm.fleet.plugins.plugin_utils.vault_values import VAULT_TAG, VaultValue

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader

try:  # libyaml 0.2.5 and later refuse more than 1000 levels before its composer recurses that deep
    from yaml import _yaml as _libyaml

    _PARSER_BOUNDS_NESTING = _Loader is not yaml.SafeLoader and _libyaml.get_version() >= (0, 2, 5)
except (ImportError, AttributeError):  # pragma: no cover
    _PARSER_BOUNDS_NESTING = False

# The input limits. The 100,000-terminal bench registry (one file per customer of 500 terminals)
# needs at most 175 KB, 16,877 nodes and 7 levels per file; the limits leave room for a whole fleet
# of tens of thousands of terminals in one file.
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_NODES = 2_000_000
MAX_DEPTH = 64

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_VAULT = VAULT_TAG


class _RegistryConstructor(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor plus Ansible's ``!vault`` tag (the ciphertext is carried, not decrypted)."""

    def construct_vault(self, node):
        if not isinstance(node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the {VAULT_TAG} tag needs a string (the output of ansible-vault encrypt_string), found a {_kind(node)}",
                node.start_mark,
            )
        return VaultValue(node.value)


_RegistryConstructor.add_constructor(_VAULT, _RegistryConstructor.construct_vault)
_CONSTRUCTOR = _RegistryConstructor()
_SCALAR = yaml.ScalarNode
_MAPPING = yaml.MappingNode
_SEQUENCE = yaml.SequenceNode


class InputLimitError(yaml.YAMLError):
    """A YAML file beyond one of the input limits: too large, expanding too far, nested too deep."""

    def __init__(self, path, line, message, expected):
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path = path
        self.line = line
        self.message = message
        self.expected = expected


class _SlowPath(Exception):
    """The document needs PyYAML's full constructor (merge keys, odd tags, unhashable keys...)."""


class _TooDeep(Exception):
    """A node nested deeper than :data:`MAX_DEPTH` (raised while building, before recursing further)."""

    def __init__(self, node):
        super().__init__()
        self.node = node


def _line(node):
    return node.start_mark.line + 1 if node.start_mark is not None else None


def _kind(node) -> str:
    return "mapping" if isinstance(node, _MAPPING) else "list"


def _too_large(path, size):
    limit = MAX_FILE_BYTES
    return InputLimitError(
        path,
        None,
        f"file of {size:,} bytes or more is larger than the limit ({limit:,} bytes)",
        f"a registry file under {limit / 1048576:g} MiB (one file per customer)",
    )


def _too_deep(path, line):
    limit = MAX_DEPTH
    return InputLimitError(
        path,
        line,
        f"YAML nested deeper than {limit} levels (limit {limit})",
        "a registry nested less deeply (a real one is under 10 levels)",
    )


def _too_many(path, node, size, through_aliases):
    limit = MAX_NODES
    if through_aliases:
        return InputLimitError(
            path,
            _line(node),
            f"YAML aliases expand to more than {limit:,} nodes (limit {limit:,}): "
            f"the {_kind(node)} here stands for {size:,} or more",
            "a registry without alias bombs (an anchored node may be repeated, not multiplied)",
        )
    return InputLimitError(
        path,
        _line(node),
        f"YAML document of more than {limit:,} nodes (limit {limit:,}): the {_kind(node)} here holds {size:,} or more",
        "smaller files (one file per customer)",
    )


def _cycle(path, node):
    return InputLimitError(
        path,
        _line(node),
        f"YAML alias inside the {_kind(node)} it names: it expands forever (limit {MAX_NODES:,} nodes)",
        "aliases to nodes that do not contain them",
    )


def _read(path: str) -> bytes:
    with open(path, "rb") as stream:
        try:
            size = os.fstat(stream.fileno()).st_size
        except OSError:  # pragma: no cover
            size = 0
        if size > MAX_FILE_BYTES:
            raise _too_large(path, size)
        data = stream.read(MAX_FILE_BYTES + 1)  # a pipe or device has no size: read no more than the limit
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(path, len(data))
    return data


def _deep_line(data):
    """The line where the document first nests deeper than :data:`MAX_DEPTH`, from its events (no recursion)."""
    loader = _Loader(data)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    return event.start_mark.line + 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return mark.line + 1 if mark else None
    except yaml.YAMLError:
        return None
    finally:
        loader.dispose()
    return None


def _compose(path: str, data: bytes):
    """The node graph of one document, refused before any recursion can nest deeper than it may."""
    if not _PARSER_BOUNDS_NESTING and _Loader is not yaml.SafeLoader:  # pragma: no cover - old libyaml
        line = _deep_line(data)
        if line is not None:
            raise _too_deep(path, line)
    loader = _FastLoader(data)
    try:
        return loader.get_single_node()
    except RecursionError:  # the pure-Python composer, thousands of levels deep
        pass
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" not in str(exc.problem):  # libyaml: "exceeded maximum nesting depth"
            raise
    finally:
        loader.dispose()
    raise _too_deep(path, _deep_line(data))


def _measure(path: str, root) -> bool:
    """Check the node graph against the limits; True when some node is reached through an alias.

    One iterative walk in which each node is measured once (its expanded size and height are kept
    by identity): linear in the text however far the aliases expand. Raises :class:`InputLimitError`
    at the node where a limit is crossed, or at an anchored node that contains an alias to itself.
    """
    if isinstance(root, _SCALAR):
        return False
    max_nodes, max_depth = MAX_NODES, MAX_DEPTH
    if max_depth < 1:
        raise _too_deep(path, _line(root))
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, levels of containers)
    open_ids = {id(root)}
    shared = False
    # Frames: [node, its child nodes, its level, expanded nodes so far, levels below it so far].
    stack = [[root, _children(root), 1, 1, 0]]
    while stack:
        frame = stack[-1]
        for child in frame[1]:
            if isinstance(child, _SCALAR):
                frame[3] += 1
                continue
            key = id(child)
            if key in open_ids:
                raise _cycle(path, child)
            known = done.get(key)
            if known is not None:  # an alias: its node is measured already
                shared = True
                size, height = known
                if frame[2] + height > max_depth:
                    raise _too_deep(path, _line(child))
                frame[3] += size
                if frame[3] > max_nodes:
                    raise _too_many(path, frame[0], frame[3], True)
                if height > frame[4]:
                    frame[4] = height
                continue
            if frame[2] >= max_depth:
                raise _too_deep(path, _line(child))
            open_ids.add(key)
            stack.append([child, _children(child), frame[2] + 1, 1, 0])
            break
        else:
            stack.pop()
            node, size, height = frame[0], frame[3], frame[4]
            if size > max_nodes:
                raise _too_many(path, node, size, shared)
            key = id(node)
            open_ids.discard(key)
            done[key] = (size, height + 1)
            if stack:
                parent = stack[-1]
                parent[3] += size
                if height + 1 > parent[4]:
                    parent[4] = height + 1
    return shared


def _children(node):
    if isinstance(node, _MAPPING):
        return itertools.chain.from_iterable(node.value)
    return iter(node.value)


def _construct_tree(node, level, counts):
    # PyYAML's constructor is pure Python even under the C loader and costs more than parsing: plain
    # strings, mappings and lists (nearly all of a registry) are built directly from the node tree.
    # ``level`` is how many containers enclose the node; ``counts`` gathers each container's children.
    tag = node.tag
    kind = type(node)
    if kind is _SCALAR:
        if tag == _STR:
            return node.value
        if tag == _VAULT:
            return VaultValue(node.value)
        constructor = _CONSTRUCTOR.yaml_constructors.get(tag)
        if constructor is None:
            raise _SlowPath
        return constructor(_CONSTRUCTOR, node)
    if level >= MAX_DEPTH:
        raise _TooDeep(node)
    level += 1
    value = node.value
    if kind is _MAPPING and tag == _MAP:
        counts.append(2 * len(value))
        result = {}
        for key_node, value_node in value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _SlowPath
            key = _construct_tree(key_node, level, counts)
            if isinstance(key, (dict, list)):
                raise _SlowPath
            result[key] = _construct_tree(value_node, level, counts)
        return result
    if kind is _SEQUENCE and tag == _SEQ:
        counts.append(len(value))
        return [_construct_tree(item, level, counts) for item in value]
    raise _SlowPath


def _construct_shared(node, memo):
    # The same for a graph that :func:`_measure` accepted: each aliased container is built once and shared.
    tag = node.tag
    kind = type(node)
    if kind is _SCALAR:
        if tag == _STR:
            return node.value
        if tag == _VAULT:
            return VaultValue(node.value)
        constructor = _CONSTRUCTOR.yaml_constructors.get(tag)
        if constructor is None:
            raise _SlowPath
        return constructor(_CONSTRUCTOR, node)
    key = id(node)
    if key in memo:
        return memo[key]
    if kind is _MAPPING and tag == _MAP:
        result = memo[key] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise _SlowPath
            item_key = _construct_shared(key_node, memo)
            if isinstance(item_key, (dict, list)):
                raise _SlowPath
            result[item_key] = _construct_shared(value_node, memo)
        return result
    if kind is _SEQUENCE and tag == _SEQ:
        result = memo[key] = []
        result.extend(_construct_shared(item, memo) for item in node.value)
        return result
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


def read_yaml(path: str):
    """``(data, shared)``: one YAML file parsed safely within the limits; ``shared`` when aliases were used.

    The data is what ``yaml.load`` with SafeLoader gives (aliased nodes shared, as there); raises
    :class:`InputLimitError` for a file beyond a limit, ``yaml.YAMLError`` for broken YAML, ``OSError``.
    """
    data = _read(path)
    root = _compose(path, data)
    if root is None:
        return None, False
    if b"&" not in data or b"*" not in data:  # no anchor or no alias: a tree, measured while it is built
        counts: list[int] = []
        try:
            value = _construct_tree(root, 0, counts)
        except _TooDeep as exc:
            raise _too_deep(path, _line(exc.node)) from None
        except (_SlowPath, RecursionError, TypeError, ValueError, yaml.YAMLError):
            _measure(path, root)
        else:
            if 1 + sum(counts) > MAX_NODES:
                _measure(path, root)  # raises, at the node where the limit is crossed
            return value, False
        return _construct_slowly(root), False
    shared = _measure(path, root)
    try:
        return (_construct_shared(root, {}) if shared else _construct_tree(root, 0, [])), shared
    except (_SlowPath, RecursionError, TypeError, ValueError, yaml.YAMLError):
        return _construct_slowly(root), shared


def _construct_slowly(root):
    # PyYAML's safe constructor (plus ``!vault``) on the measured graph: what yaml.load would build.
    return _RegistryConstructor().construct_document(root)


def load_yaml(path: str):
    """Parse one YAML file with the fastest safe loader, within the input limits (see :func:`read_yaml`)."""
    return read_yaml(path)[0]


def compose_file(path: str):
    """The node graph of one YAML file (for line numbers), within the same input limits."""
    data = _read(path)
    root = _compose(path, data)
    if root is not None:
        _measure(path, root)
    return root


def load_file(path, rel, problems):
    """``(data, True, shared)`` for a readable YAML file, else ``(None, False, False)`` with its problem appended.

    ``shared``: some of the data is reached through more than one alias (see :func:`read_yaml`).
    """
    try:
        data, shared = read_yaml(path)
        return data, True, shared
    except InputLimitError as exc:
        problems.append(Problem(rel, (), exc.message, exc.expected, "", exc.line))
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
    return None, False, False
