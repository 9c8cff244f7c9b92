"""YAML loading for compose files: go-yaml v3 scalar rules, `!reset`/`!override` tags and locations.

Called by the renderer for every compose file and by ``extends`` for referenced files. Documents keep
their YAML node tree so errors can name the line of any key without paying for a line index up front.
"""

from __future__ import annotations

import datetime
import functools
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import yaml

from reconciler.errors import ComposeError, Location

Path = tuple[str, ...]

_STR = "tag:yaml.org,2002:str"
_PLAIN = "!<plain>"  # our marker for an untagged plain scalar, resolved like go-yaml v3 does
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
RESET = "!reset"
OVERRIDE = "!override"

MAX_FILE_BYTES = 4 * 1024 * 1024  # per file read by the renderer; real compose files are a few KiB
_SPECIAL_DIRS = ("/proc/", "/sys/", "/dev/")

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """libyaml parser/composer; scalar typing is ours (YAML 1.2 core as go-yaml v3, not PyYAML's 1.1)."""

    yaml_implicit_resolvers: dict[str, Any] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode:
            return _PLAIN if implicit[0] else _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP


# go-yaml v3 resolve.go: only these spellings are null/bool; `yes`, `on`, `22:22`, `1_000`-style
# sexagesimals stay strings (PyYAML would turn `22:22` into 1342).
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_TRUE = frozenset(("true", "True", "TRUE"))
_FALSE = frozenset(("false", "False", "FALSE"))
_SPECIAL_FLOATS = {
    ".nan": math.nan,
    ".NaN": math.nan,
    ".NAN": math.nan,
    ".inf": math.inf,
    ".Inf": math.inf,
    ".INF": math.inf,
    "+.inf": math.inf,
    "+.Inf": math.inf,
    "+.INF": math.inf,
    "-.inf": -math.inf,
    "-.Inf": -math.inf,
    "-.INF": -math.inf,
}
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$")
_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1


def _go_parse_int(text: str) -> int | None:
    """strconv.ParseInt(s, 0, 64) then ParseUint, as go-yaml v3 tries them."""
    if len(text) > 80 or not _GO_INT.match(text):
        return None  # longer than any 64-bit literal (and than Python's int-from-text limit)
    sign = -1 if text[0] == "-" else 1
    body = text[1:] if text[0] in "+-" else text
    if len(body) > 1 and body[0] == "0" and body[1] in "xXoObB":
        value = int(body[2:], {"x": 16, "o": 8, "b": 2}[body[1].lower()])
    elif len(body) > 1 and body[0] == "0":
        value = int(body, 8)  # Go base-0 parsing reads a leading 0 as octal
    else:
        value = int(body)
    value *= sign
    if -_INT64_MAX - 1 <= value <= _INT64_MAX or (sign > 0 and value <= _UINT64_MAX):
        return value
    return None


# go-yaml v3 allowedTimestampFormats: such scalars decode to time.Time, which compose's schema then
# refuses everywhere except in x- extensions (printed back in RFC 3339).
_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:(?P<sep>[Tt ])(\d{1,2}):(\d{1,2}):(\d{1,2})(\.\d+)?(?P<zone>Z|[+-]\d{2}:\d{2})?)?$"
)


def _timestamp(text: str) -> datetime.datetime | None:
    match = _TIMESTAMP.match(text)
    if not match:
        return None
    sep, zone = match.group("sep"), match.group("zone")
    if sep is not None and (sep == " ") == (zone is not None):
        return None  # "T" needs a zone, " " must not have one
    year, month, day = int(match.group(1)), int(match.group(2)), int(match.group(3))
    hour = minute = second = micro = 0
    if sep is not None:
        hour, minute, second = int(match.group(5)), int(match.group(6)), int(match.group(7))
        micro = int((match.group(8) or ".0")[1:7].ljust(6, "0"))
    tz = datetime.UTC
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        tz = datetime.timezone(sign * datetime.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return datetime.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError:
        return None


def resolve_plain(text: str) -> Any:
    """Type of an untagged plain scalar the way go-yaml v3 decodes it into interface{}."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    first = text[0]
    if len(text) > 4 and text[4] == "-" and text[:4].isdigit():
        stamp = _timestamp(text)
        if stamp is not None:
            return stamp
    if first in "+-.0123456789":
        if text in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[text]
        plain = text.replace("_", "")
        if plain:
            as_int = _go_parse_int(plain)
            if as_int is not None:
                return as_int
            if _YAML_FLOAT.match(plain):
                number = float(plain)
                # strconv.ParseFloat fails with ErrRange on overflow: go-yaml keeps such a scalar a string
                return number if not math.isinf(number) else text
    return text


def _explicit(tag: str, value: str, where: str) -> Any:
    """Scalars with an explicit YAML core tag (`!!int 8`); unknown local tags keep plain typing."""
    short = tag.rsplit(":", 1)[-1] if tag.startswith("tag:yaml.org,2002:") else None
    try:
        if short == "str":
            return value
        if short == "int":
            return int(value.replace("_", ""), 0)
        if short == "float":
            return float(value)
        if short == "bool":
            return value in _TRUE or value.lower() == "true"
        if short == "null":
            return None
    except ValueError:
        raise ComposeError(f"cannot decode {value!r} as !!{short}", _loc(where)) from None
    return resolve_plain(value) if value else value


def _loc(where: str, line: int | None = None) -> Location:
    return Location(file=where, line=line)


@dataclass(frozen=True)
class Document:
    """One YAML document of a compose file (or one inline mapping), before interpolation.

    Documents are shared by the parse cache: nothing may mutate ``data`` (interpolation copies it).
    """

    source: str  # file path or inline label, for messages
    data: dict[str, Any]
    root: yaml.Node | None = None
    resets: tuple[Path, ...] = ()  # `!reset`: drop what earlier layers set here
    overrides: tuple[Path, ...] = ()  # `!override`: replace instead of merging

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """Line (1-based) of the deepest node of ``path`` that exists in this document's YAML."""
        return locate(self.root, path)


def locate(root: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """Walk the node tree along ``path`` (keys and list indices); return the best line found."""
    node = root
    line = None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            found = _find_key(node, str(part))
            if found is None:
                break
            key_node, node = found
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    if line is None and root is not None:
        line = root.start_mark.line + 1
    return line


def _find_key(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    merges: list[yaml.Node] = []
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value == key:
                return key_node, value_node
            if key_node.value == "<<" and key_node.tag == _PLAIN:
                merges.append(value_node)
    for merged in merges:
        targets = merged.value if isinstance(merged, yaml.SequenceNode) else [merged]
        for target in targets:
            if isinstance(target, yaml.MappingNode):
                found = _find_key(target, key)
                if found is not None:
                    return found
    return None


class _Builder:
    """Turns one composed YAML document into plain Python data, recording reset/override tags."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.resets: list[Path] = []
        self.overrides: list[Path] = []
        self._active: set[int] = set()  # node ids on the current path: catches recursive aliases
        # go-yaml v3's alias-expansion budget (decode.go allowedAliasRatio), so a "billion laughs" file
        # fails fast here as it does in compose instead of costing seconds and hundreds of MB
        self._seen: set[int] = set()  # collection nodes built once: meeting one again is an alias
        self._alias_depth = 0
        self._decoded = 0
        self._aliased = 0

    def error(self, message: str, node: yaml.Node) -> ComposeError:
        return ComposeError(message, _loc(self.source, node.start_mark.line + 1))

    def build(self, node: yaml.Node, path: Path) -> Any:
        if type(node) is yaml.ScalarNode:
            tag = node.tag
            if tag == _PLAIN:
                return resolve_plain(node.value)
            if tag == _STR:
                return node.value
            if tag in (RESET, OVERRIDE):
                return resolve_plain(node.value) if node.style is None else node.value
            return _explicit(tag, node.value, self.source)
        if id(node) in self._active:
            raise self.error("recursive YAML alias", node)
        self._active.add(id(node))
        alias = id(node) in self._seen
        self._seen.add(id(node))
        self._alias_depth += alias
        try:
            if type(node) is yaml.SequenceNode:
                self._count(node, len(node.value))
                # `!reset` paths never match inside sequences (as in compose), so items share the path
                return [self.build(item, path) for item in node.value]
            return self.mapping(node, path)
        finally:
            self._alias_depth -= alias
            self._active.discard(id(node))

    def _count(self, node: yaml.Node, children: int) -> None:
        """Charge ``children`` decoded values; refuse a document that is mostly alias expansion."""
        self._decoded += children + 1
        if self._alias_depth:
            self._aliased += children + 1
        if (
            self._aliased > 100
            and self._decoded > 1000
            and self._aliased / self._decoded > _allowed_alias_ratio(self._decoded)
        ):
            raise self.error(
                f"document contains excessive aliasing ({self._aliased} values expanded from YAML aliases "
                f"out of {self._decoded})",
                node,
            )

    def mapping(self, node: yaml.Node, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        merges: list[yaml.Node] = []
        scalar = yaml.ScalarNode
        self._count(node, 2 * len(node.value))
        for key_node, value_node in node.value:
            if key_node.tag == _PLAIN:
                if key_node.value == "<<":
                    merges.append(value_node)
                    continue
                key = resolve_plain(key_node.value)
            else:
                key = self.build(key_node, path)
            if type(key) is not str:
                where = ".".join(path) or "top level"
                raise self.error(f"non-string key {key!r} in {where}: quote it", key_node)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise self.error(f"mapping key {key!r} already defined at line {first}", key_node)
            seen[key] = key_node
            tag = value_node.tag
            if tag == _PLAIN:
                out[key] = resolve_plain(value_node.value)
            elif tag == _STR and type(value_node) is scalar:
                out[key] = value_node.value
            elif tag == RESET:
                self.resets.append((*path, key))
            else:
                if tag == OVERRIDE:
                    self.overrides.append((*path, key))
                out[key] = self.build(value_node, (*path, key))
        # YAML merge keys (`<<: *anchor`): explicit keys win, then earlier merged maps win.
        for merged in merges:
            targets = merged.value if isinstance(merged, yaml.SequenceNode) else [merged]
            for target in targets:
                if not isinstance(target, yaml.MappingNode):
                    raise self.error("map merge requires a mapping or a list of mappings", target)
                alias = id(target) in self._seen
                self._seen.add(id(target))
                self._alias_depth += alias
                try:
                    items = self.mapping(target, path).items()
                finally:
                    self._alias_depth -= alias
                for key, value in items:
                    out.setdefault(key, value)
        return out


def _allowed_alias_ratio(decoded: int) -> float:
    """go-yaml v3: up to 99% aliases in small documents, falling linearly to 10% at 4 million values."""
    if decoded <= 400_000:
        return 0.99
    if decoded >= 4_000_000:
        return 0.10
    return 0.99 - 0.89 * (decoded - 400_000) / 3_600_000


def is_special(path: str) -> bool:
    """Under /proc, /sys or /dev (symlinks followed): never configuration, even when a plain file."""
    return os.path.realpath(path).startswith(_SPECIAL_DIRS)


# (root, exempt files) while a confined render runs: see ``confined``.
_CONFINE: ContextVar[tuple[str, frozenset[str]] | None] = ContextVar("render_confine", default=None)


@contextmanager
def confined(root: str | None, exempt: Iterable[str] = ()) -> Iterator[None]:
    """While active, ``read_text`` refuses a file whose real path (symlinks followed) is outside ``root``,
    unless it is one of ``exempt`` (files the operator named). How a preview's compose files are kept from
    reading the host through `env_file`, `extends.file` or `include` (`env_file: /etc/shadow`, or a
    committed symlink `leak.env -> /proc/self/environ`): the read itself is the leak, so it is refused
    before it happens, not judged afterwards. ``root`` None: no confinement."""
    if root is None:
        yield
        return
    token = _CONFINE.set((os.path.realpath(root), frozenset(os.path.realpath(f) for f in exempt)))
    try:
        yield
    finally:
        _CONFINE.reset(token)


def _check_confined(path: str, what: str, where: Location) -> None:
    confine = _CONFINE.get()
    if confine is None:
        return
    root, exempt = confine
    real = os.path.realpath(path)
    if real in exempt or real == root or real.startswith(root.rstrip("/") + "/"):
        return
    raise ComposeError(
        f"{what} is outside the checkout: this environment's policy (binds_outside_checkout) reads no file "
        "a branch could point at the host",
        where,
        hint="keep the file in the repository, or give it to the environment with `env_files:` in "
        "environments.yaml",
    )


def read_text(path: str, *, what: str = "file", display: str | None = None) -> str:
    """The UTF-8 text of a regular file of at most MAX_FILE_BYTES; ComposeError naming it otherwise.

    Every file the renderer reads (compose, extends, include, env files) comes through here: a FIFO would
    block the worker, a device or /proc file may never end, and a huge file would cost memory for nothing.
    ``/dev/null`` reads as empty, the usual way to say "no file".
    """
    where = Location(file=display or path)
    if os.path.realpath(path) == "/dev/null":  # also through a symlink, e.g. `.env -> /dev/null`
        return ""
    _check_confined(path, what, where)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat on the open file then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ComposeError(f"{what} not found", where, hint="check the path") from None
    except IsADirectoryError:
        raise ComposeError(f"{what} is a directory, not a file", where) from None
    except OSError as exc:
        raise ComposeError(f"cannot read {what}: {exc.strerror}", where) from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ComposeError(f"{what} is a directory, not a file", where)
        if not stat.S_ISREG(info.st_mode) or is_special(path):
            raise ComposeError(
                f"{what} is not a regular file (a FIFO, device, /proc, /sys or /dev file is never read)",
                where,
                hint="point it at a plain file",
            )
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ComposeError(f"cannot read {what}: {exc.strerror}", where) from None
    if len(data) > MAX_FILE_BYTES:
        raise ComposeError(
            f"{what} is larger than the limit of {MAX_FILE_BYTES // (1024 * 1024)} MiB per file",
            where,
            hint="split it or remove what it does not need",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ComposeError(f"cannot read {what}: {reason}", where) from None
    # as open() in text mode: CRLF and CR become LF (a Windows-edited env file keeps no stray \r)
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _nodes(text: str, source: str) -> Iterator[yaml.Node]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "malformed YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise ComposeError(
            f"invalid YAML: {problem}", _loc(source, mark.line + 1 if mark else None)
        ) from None
    except yaml.YAMLError as exc:
        raise ComposeError(f"invalid YAML: {exc}", _loc(source)) from None
    finally:
        loader.dispose()


def load_file(path: str, *, display: str | None = None, allow_empty: bool = False) -> list[Document]:
    """Every non-empty document of a compose file, in order. Raises ComposeError (with a line).

    ``allow_empty``: a file without documents gives none (compose accepts an empty included file).
    """
    source = display or path
    docs = list(_parse(read_text(path, display=source), source))
    if not docs and not allow_empty:
        raise ComposeError(
            "empty compose file", _loc(source), hint="a compose file needs at least `services:`"
        )
    return docs


def clear_cache() -> None:
    """Forget parsed documents (benchmarks measure cold renders with it)."""
    _parse.cache_clear()


# The daemon renders the same files again and again (every poll, every drift check): parsing is
# most of a render's cost, and a document is a pure function of its text, so keep recent ones.
@functools.lru_cache(maxsize=256)
def _parse(text: str, source: str) -> tuple[Document, ...]:
    docs: list[Document] = []
    for node in _nodes(text, source):
        builder = _Builder(source)
        if isinstance(node, yaml.ScalarNode) and node.tag == _PLAIN and node.value == "":
            continue  # an empty document
        if not isinstance(node, yaml.MappingNode):
            raise builder.error("top-level object must be a mapping", node)
        data = builder.mapping(node, ())
        docs.append(Document(source, data, node, tuple(builder.resets), tuple(builder.overrides)))
    return tuple(docs)
