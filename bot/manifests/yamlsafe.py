"""Bounded YAML reading that keeps every node's position, for errors at file:line:column.

Parsing is done by libyaml when available (PyYAML's C loader), falling back to the pure
Python loader. Values are built from the composed node graph by our own walker instead of
PyYAML's constructor, so that:

* keys are always the text the author wrote (``1:`` and ``yes:`` are the keys "1" and "yes"),
* duplicate keys, non-string keys and unknown tags are reported instead of silently accepted,
* aliases are expanded under a node budget (no "billion laughs") and nesting is bounded
  (libyaml's composer recurses in C, so very deep input is rejected before composing),
* the node graph stays available to find the position of any value after validation.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

try:
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

MAX_DEPTH = 64
MAX_NODES = 10_000
# Below this bound on nesting, the recursive composer is safe to call directly: libyaml's
# recurses in C, PyYAML's own takes a few Python frames per level.
_SAFE_COMPOSE_BOUND = 200 if _Loader is yaml.SafeLoader else 2_000

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_TEXT_TAGS = frozenset({"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary", "tag:yaml.org,2002:value"})
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_OMAP_TAGS = frozenset({"tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"})
_SET = "tag:yaml.org,2002:set"

_PLAIN_TEXT_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, *_TEXT_TAGS})
_OVERRIDE_LEVELS = frozenset({"app", "deployment"})
# ints whose decimal text stays well under Python's 4300-digit conversion limit
_MAX_INT_BITS = 4096

_KIND_NAMES = {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}


@dataclass(frozen=True)
class Problem:
    """A reading problem at a 1-based position (None when the file has no usable position)."""

    line: int | None
    column: int | None
    message: str
    field: str = ""


class ReadError(Exception):
    """The file could not be read as YAML; carries the problem to report."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


_RESOLVED: dict[str, str] = {}
_RESOLVED_MAX = 50_000


class MarkedLoader(_Loader):  # type: ignore[misc, valid-type]
    """Safe loader whose documents are kept as node graphs with positions (marks).

    Tag resolution of plain scalars is memoised by text: no path resolvers are registered,
    so the tag depends on the text alone, and manifests repeat the same keys and values.
    """

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:
                return _STR
            tag = _RESOLVED.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(_RESOLVED) < _RESOLVED_MAX:
                    _RESOLVED[value] = tag
            return tag
        if kind is yaml.SequenceNode:
            return _SEQ
        return _MAP

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        """No path resolvers are registered: nothing to track."""

    def ascend_resolver(self) -> None:
        """No path resolvers are registered: nothing to track."""


# Scalar construction (int, float, bool) is stateless; one constructor serves every thread.
_SCALARS = yaml.constructor.SafeConstructor()


def position(mark: Any) -> tuple[int, int]:
    """1-based (line, column) of a yaml Mark."""
    return mark.line + 1, mark.column + 1


def _position_in_text(text: str, index: int) -> tuple[int, int]:
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def read_text(path: str | os.PathLike[str], max_bytes: int) -> str:
    """Read a regular file as UTF-8 text, refusing symlinks, non-files, big and binary files."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise ReadError(Problem(None, None, "is a symlink; manifests must be regular files")) from None
        raise ReadError(Problem(None, None, f"cannot be read: {exc.strerror}")) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReadError(Problem(None, None, "is not a regular file"))
        if info.st_size > max_bytes:
            raise ReadError(Problem(None, None, f"is larger than {_size(max_bytes)} ({_size(info.st_size)})"))
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ReadError(Problem(None, None, f"is larger than {_size(max_bytes)}"))
    return decode_text(data)


def decode_text(data: bytes) -> str:
    """Decode UTF-8 bytes (an optional BOM is dropped), reporting where decoding fails."""
    if b"\x00" in data:
        index = data.index(b"\x00")
        line = data.count(b"\n", 0, index) + 1
        column = index - (data.rfind(b"\n", 0, index) + 1) + 1
        raise ReadError(
            Problem(
                line,
                column,
                "contains NUL bytes: it is binary or not UTF-8; save it as UTF-8 text",
            )
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ReadError(Problem(line, column, "is not valid UTF-8 text; save it as UTF-8")) from None


def _size(count: int) -> str:
    if count >= 1 << 20 and count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count >= 1024 and count % 1024 == 0:
        return f"{count >> 10} KiB"
    return f"{count} bytes"


def _nesting_bound(text: str) -> int:
    # Every nesting level needs a bracket, a block indicator or a new line; this sum bounds
    # the depth from above without parsing.
    return text.count("[") + text.count("{") + text.count("-") + text.count("?") + text.count(":") + text.count("\n")


def _check_depth_by_events(text: str, loader_class: type = MarkedLoader) -> None:
    # Parsers are iterative: walk events and stop as soon as nesting is too deep.
    loader = loader_class(text)
    depth = 0
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line, column = position(event.start_mark)
                    raise ReadError(Problem(line, column, f"is nested more than {MAX_DEPTH} levels deep"))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _is_parser_depth_limit(exc: yaml.YAMLError) -> bool:
    # libyaml 0.2.6 and later (in PyYAML's wheels from 6.0.3 on) refuse more than 1000 levels.
    return "maximum nesting depth" in (getattr(exc, "problem", None) or "")


def _check_depth(text: str) -> None:
    """Raise ReadError where nesting passes MAX_DEPTH, or the YAML error met first."""
    try:
        _check_depth_by_events(text)
    except yaml.YAMLError as exc:
        if _is_parser_depth_limit(exc):
            _check_depth_past_parser_limit(text, exc)
        raise


def _check_depth_past_parser_limit(text: str, exc: yaml.YAMLError) -> None:
    """Find where MAX_DEPTH is passed when libyaml stopped at its own, larger limit first.

    libyaml scans ahead while a simple key is possible, so a dense flow nest ("[[[[...") meets
    its limit before the first event. Cut where it stopped, the text holds no more levels than
    its limit and more than ours, so its events reach MAX_DEPTH; a syntax error before the cut
    is in the whole text too. PyYAML's own parser (no limit, slower) settles anything else.
    """
    cut = exc.problem_mark.index if getattr(exc, "problem_mark", None) else 0
    try:
        _check_depth_by_events(text[:cut])
    except yaml.YAMLError as earlier:
        mark = getattr(earlier, "problem_mark", None)
        if mark is not None and mark.index < cut and not _is_parser_depth_limit(earlier):
            raise
    _check_depth_by_events(text, yaml.SafeLoader)


def compose(text: str) -> yaml.Node | None:
    """Parse one YAML document into a node graph with marks; None for an empty document."""
    checked = _nesting_bound(text) > _SAFE_COMPOSE_BOUND
    try:
        if checked:
            _check_depth(text)
        loader = MarkedLoader(text)
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        problem = exc
        if not checked:
            # The composer reads to the end before values are built and their depth checked:
            # nesting that is too deep before the error is the first problem, whatever the parser.
            try:
                _check_depth(text)
            except yaml.YAMLError as earlier:
                problem = earlier
        raise ReadError(_yaml_problem(problem, text)) from None


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = _position_in_text(text, exc.position)
        return Problem(line, column, f"is not valid YAML: {exc.reason} (character {exc.character!r})")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    parts = [p for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p]
    detail = ", ".join(parts) if parts else str(exc).splitlines()[0]
    if mark is None:
        return Problem(None, None, f"is not valid YAML: {detail}")
    line, column = position(mark)
    if not text.endswith("\n") and line > text.count("\n") + 1:
        # libyaml places end-of-input problems after the last line; show its end instead.
        line = text.count("\n") + 1
        column = len(text) - (text.rfind("\n") + 1) + 1
    return Problem(line, column, f"is not valid YAML: {detail}")


def format_field(path: Iterable[str | int]) -> str:
    """Dotted field name of a path: ("oob", "update-image", "file") -> oob.update-image.file."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _is_override_value(path: tuple[str | int, ...]) -> bool:
    # overrides.app.KEY and overrides.deployment.KEY are passed to scripts as text.
    return len(path) == 3 and path[0] == "overrides" and path[1] in _OVERRIDE_LEVELS


class _Builder:
    """Turns a node graph into plain Python values under a node budget and a depth limit."""

    def __init__(self, loader: yaml.constructor.SafeConstructor) -> None:
        self.loader = loader
        self.budget = MAX_NODES
        self.problems: list[Problem] = []

    def problem(self, node: yaml.Node, message: str, path: tuple[str | int, ...]) -> None:
        line, column = position(node.start_mark)
        self.problems.append(Problem(line, column, message, format_field(path)))

    def spend(self, node: yaml.Node, depth: int) -> None:
        """Charge one value to the budget and check the nesting depth (collections around node)."""
        self.budget -= 1
        if self.budget < 0:
            raise ReadError(
                Problem(
                    *position(node.start_mark),
                    f"has more than {MAX_NODES} values once aliases are expanded",
                )
            )
        # The same count as the event walk: the root collection is level 1, so the collection
        # with MAX_DEPTH collections around it is the first one too deep.
        if depth >= MAX_DEPTH and isinstance(node, yaml.CollectionNode):
            raise ReadError(Problem(*position(node.start_mark), f"is nested more than {MAX_DEPTH} levels deep"))

    def build(self, node: yaml.Node, path: tuple[str | int, ...], depth: int) -> Any:
        self.spend(node, depth)
        if isinstance(node, yaml.ScalarNode):
            if _is_override_value(path):
                return self.override_scalar(node, path)
            return self.scalar(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag not in (_SEQ, *_OMAP_TAGS):
                self.problem(node, f"unsupported YAML tag {node.tag!r}", path)
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag not in (_MAP, _SET):
                self.problem(node, f"unsupported YAML tag {node.tag!r}", path)
            return self.mapping(node, path, depth)
        raise ReadError(Problem(*position(node.start_mark), "has an unknown YAML node"))

    def scalar(self, node: yaml.ScalarNode, path: tuple[str | int, ...]) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        try:
            if tag == _INT:
                value = self.loader.construct_yaml_int(node)
                # Numbers too big to print (Python limits int to text conversion) stay text.
                return value if value.bit_length() <= _MAX_INT_BITS else node.value
            if tag == _FLOAT:
                return self.loader.construct_yaml_float(node)
            if tag == _BOOL:
                return self.loader.construct_yaml_bool(node)
        except (ValueError, yaml.YAMLError):
            return node.value
        if tag == _NULL:
            return None
        if tag in _TEXT_TAGS:
            # Dates and the like are kept as written: no manifest field is a date.
            return node.value
        self.problem(node, f"unsupported YAML tag {tag!r}", path)
        return node.value

    def override_scalar(self, node: yaml.ScalarNode, path: tuple[str | int, ...]) -> Any:
        """An override value: the text as written (YAML 1.1 would turn 01234 into 668, on into true)."""
        if node.tag == _NULL and node.style is None:
            return None  # reported by the schema: an override needs a value
        if node.tag in _PLAIN_TEXT_TAGS:
            return node.value
        return self.scalar(node, path)

    def mapping(self, node: yaml.MappingNode, path: tuple[str | int, ...], depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                self.merge(value_node, merged, path, depth)
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _NULL:
                kind = _KIND_NAMES.get(type(key_node), "null")
                self.problem(key_node, f"keys must be plain strings, found {kind}", path)
                continue
            key = key_node.value
            if key in seen:
                first_line = seen[key].start_mark.line + 1
                self.problem(
                    key_node,
                    f"duplicate key {key!r} (first defined on line {first_line})",
                    (*path, key),
                )
            seen[key] = key_node
            result[key] = self.build(value_node, (*path, key), depth + 1)
        for key, value in merged.items():
            result.setdefault(key, value)
        return result

    def merge(self, node: yaml.Node, into: dict[str, Any], path: tuple[str | int, ...], depth: int) -> None:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.problem(source, "a merge key (<<) takes a mapping or a list of mappings", path)
                continue
            # Each merge source and each merged key is a value: a chain of merges of merges
            # ("<<: [*a, *a, ...]") would otherwise expand without ever touching the budget.
            self.spend(source, depth + 1)
            for key, value in self.mapping(source, path, depth + 1).items():
                self.spend(source, depth + 1)
                into.setdefault(key, value)


@dataclass
class Document:
    """A parsed YAML document: plain values, the node graph for positions, and problems."""

    data: Any
    node: yaml.Node | None
    problems: list[Problem]


def load_document(text: str) -> Document:
    """Compose and build one YAML document; raises ReadError when nothing usable results."""
    node = compose(text)
    if node is None:
        return Document(None, None, [])
    builder = _Builder(_SCALARS)
    data = builder.build(node, (), 0)
    return Document(data, node, builder.problems)


def node_at(root: yaml.Node | None, path: Iterable[str | int]) -> tuple[yaml.Node | None, bool]:
    """Return (node, found) for a path: the deepest existing node and whether all of it exists.

    For a mapping entry, the key node is returned when the path ends at a key that has no
    usable value node position of its own.
    """
    node = root
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = _value_in_mapping(node, part)
            if match is None:
                return node, False
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return node, False
            node = node.value[part]
        else:
            return node, False
    return node, True


def key_node_at(root: yaml.Node | None, path: tuple[str | int, ...]) -> yaml.Node | None:
    """Return the key node of the mapping entry at path (or None)."""
    if not path or not isinstance(path[-1], str):
        return None
    parent, found = node_at(root, path[:-1])
    if not found or not isinstance(parent, yaml.MappingNode):
        return None
    return _key_in_mapping(parent, path[-1])


def _entries(node: yaml.MappingNode) -> Iterable[tuple[yaml.Node, yaml.Node]]:
    """The entries of a mapping: its own, then those of its merge sources, in merge order.

    Each merge source is visited once (a source seen before adds no key that is not already
    there), so a chain of merges of merges ("<<: [*a, *a, ...]") is walked in linear time;
    at most MAX_NODES sources are followed.
    """
    yield from ((k, v) for k, v in node.value if k.tag != _MERGE)
    seen = {id(node)}
    stack = [_merge_sources(node)]
    budget = MAX_NODES
    while stack:
        source = next(stack[-1], None)
        if source is None:
            stack.pop()
            continue
        if id(source) in seen or len(stack) > MAX_DEPTH:
            continue
        budget -= 1
        if budget < 0:
            return
        seen.add(id(source))
        yield from ((k, v) for k, v in source.value if k.tag != _MERGE)
        stack.append(_merge_sources(source))


def _merge_sources(node: yaml.MappingNode) -> Iterator[yaml.MappingNode]:
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            yield from (source for source in sources if isinstance(source, yaml.MappingNode))


def _value_in_mapping(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for key_node, value_node in _entries(node):
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found = value_node
            # The last occurrence wins among direct keys, as when building values.
            for later_key, later_value in node.value:
                if isinstance(later_key, yaml.ScalarNode) and later_key.value == key:
                    found = later_value
            return found
    return None


def _key_in_mapping(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    found = None
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found = key_node
    if found is not None:
        return found
    for key_node, _ in _entries(node):
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node
    return None
