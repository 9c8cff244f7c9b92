"""Variable interpolation in compose values, as compose-go's template package does it.

Called by the renderer on every document (before merge) and by the .env parser. Supports `$VAR`,
`${VAR}`, `:-`, `-`, `:?`, `?`, `:+`, `+`, nesting and `$$`; casts typed fields (ports, booleans...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Lookup = Callable[[str], "str | None"]

# compose-go template.DefaultPattern. `$` followed by anything else is left alone; `${` must be valid.
_PATTERN = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)|"
    r"\{(?:(?P<braced>[_a-z][_a-z0-9]*(?::?[-+?](?:.*))?)\}|(?P<invalid>)))",
    re.IGNORECASE,
)
_OPERATORS = (":?", "?", ":-", "-", ":+", "+")


class TemplateError(Exception):
    """A malformed `${...}` or a missing required variable; the caller adds the location."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


def _first_closing_brace(text: str) -> int:
    # Mirrors getFirstBraceClosingIndex, including its skip of the character after each '{'.
    depth = 0
    i = 0
    while i < len(text):
        char = text[i]
        if char == "}":
            depth -= 1
            if depth == 0:
                return i
        if char == "{":
            depth += 1
            i += 1
        i += 1
    return -1


def _operator(substring: str) -> str:
    """The operator appearing first in the matched text decides which rule applies."""
    best, best_at = _OPERATORS[0], -1
    for op in _OPERATORS:
        at = substring.find(op)
        if at >= 0 and (best_at < 0 or at < best_at):
            best, best_at = op, at
    return best


def _apply(op: str, substitution: str, lookup: Lookup) -> tuple[str, bool]:
    if op not in substitution:
        return "", False
    name, _, arg = substitution.partition(op)
    value = lookup(name)
    if op in (":?", "?"):
        if value is None or (op == ":?" and value == ""):
            reason = substitute(arg, lookup)
            message = f"required variable {name} is missing a value"
            raise TemplateError(f"{message}: {reason}" if reason else message, name)
        return value, True
    if op in (":-", "-"):
        if value is None or (op == ":-" and value == ""):
            return substitute(arg, lookup), True
        return value, True
    # ":+" / "+": the alternative when set (and non-empty for ":+")
    if value is not None and (op == "+" or value != ""):
        return substitute(arg, lookup), True
    return value or "", True


def substitute(template: str, lookup: Lookup) -> str:
    """Interpolate one string. Raises TemplateError for `${` syntax errors and missing required vars."""
    if "$" not in template:
        return template

    def replace(match: re.Match[str]) -> str:
        substring = match.group(0)
        op = _operator(substring)
        rest = ""
        closing = _first_closing_brace(substring)
        if closing >= 0:
            substring, rest = substring[: closing + 1], substring[closing + 1 :]
        groups = _PATTERN.match(substring)
        if groups is None:  # cannot happen for text the pattern matched; be safe
            raise TemplateError(f"invalid interpolation format: {template!r}")
        if groups.group("escaped"):
            return "$"
        name = groups.group("named")
        braced = False
        if not name:
            name = groups.group("braced")
            braced = True
        if not name:
            raise TemplateError(f"invalid interpolation format: {template!r}")
        if braced:
            value, applied = _apply(op, name, lookup)
            if applied:
                return value + substitute(rest, lookup)
        found = lookup(name)
        return found if found is not None else ""

    return _PATTERN.sub(replace, template)


# -- typed fields -------------------------------------------------------------------------------

_BOOLS = {
    "y": True,
    "yes": True,
    "true": True,
    "on": True,
    "n": False,
    "no": False,
    "false": False,
    "off": False,
}


def _to_bool(value: str) -> bool:
    try:
        return _BOOLS[value.lower()]
    except KeyError:
        raise ValueError(f"invalid boolean: {value}") from None


def _to_int(value: str) -> int:
    if not re.fullmatch(r"[-+]?[0-9]+", value):
        raise ValueError(f'strconv.Atoi: parsing "{value}": invalid syntax')
    return int(value)


def _to_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{value}": invalid syntax') from None


# compose-go loader/interpolate.go interpolateTypeCastMapping ("*" any key, "[]" any list item).
_CASTS: dict[tuple[str, ...], Callable[[str], Any]] = {}
for _path, _cast in (
    ("cpu_count", _to_int),
    ("cpu_percent", _to_float),
    ("cpu_period", _to_int),
    ("cpu_quota", _to_int),
    ("cpu_rt_period", _to_int),
    ("cpu_rt_runtime", _to_int),
    ("cpus", _to_float),
    ("cpu_shares", _to_int),
    ("init", _to_bool),
    ("depends_on.*.restart", _to_bool),
    ("deploy.replicas", _to_int),
    ("deploy.update_config.parallelism", _to_int),
    ("deploy.update_config.max_failure_ratio", _to_float),
    ("deploy.rollback_config.parallelism", _to_int),
    ("deploy.rollback_config.max_failure_ratio", _to_float),
    ("deploy.restart_policy.max_attempts", _to_int),
    ("deploy.placement.max_replicas_per_node", _to_int),
    ("healthcheck.retries", _to_int),
    ("healthcheck.disable", _to_bool),
    ("oom_kill_disable", _to_bool),
    ("oom_score_adj", _to_int),
    ("pids_limit", _to_int),
    ("ports.[].target", _to_int),
    ("privileged", _to_bool),
    ("read_only", _to_bool),
    ("scale", _to_int),
    ("stdin_open", _to_bool),
    ("tty", _to_bool),
    ("ulimits.*", _to_int),
    ("ulimits.*.hard", _to_int),
    ("ulimits.*.soft", _to_int),
    ("volumes.[].read_only", _to_bool),
    ("volumes.[].volume.nocopy", _to_bool),
):
    _CASTS[("services", "*", *_path.split("."))] = _cast
for _kind in ("networks", "volumes", "secrets", "configs"):
    _CASTS[(_kind, "*", "external")] = _to_bool
for _flag in ("internal", "attachable", "enable_ipv6"):
    _CASTS[("networks", "*", _flag)] = _to_bool


def _build_trie() -> dict[str, Any]:
    trie: dict[str, Any] = {}
    for path, cast in _CASTS.items():
        node = trie
        for part in path:
            node = node.setdefault(part, {})
        node[""] = cast
    return trie


_TRIE = _build_trie()
_EMPTY: dict[str, Any] = {}


class InterpolationError(Exception):
    """Raised with the dotted path of the failing value; the renderer turns it into a ComposeError."""

    def __init__(self, path: tuple[str | int, ...], message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.variable = variable


def interpolate(data: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
    """A copy of ``data`` with every string value interpolated and typed fields cast."""
    return {key: _walk(value, (key,), _TRIE.get(key, _EMPTY), lookup) for key, value in data.items()}


def _plain_walk(value: Any, path: tuple[str | int, ...], lookup: Lookup) -> Any:
    """_walk for subtrees without typed fields (most of a file): copy, interpolating strings."""
    if isinstance(value, str):
        if "$" not in value:
            return value
        try:
            return substitute(value, lookup)
        except TemplateError as exc:
            raise InterpolationError(path, str(exc), exc.variable) from None
    if isinstance(value, dict):
        return {key: _plain_walk(item, (*path, key), lookup) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_walk(item, (*path, i), lookup) for i, item in enumerate(value)]
    return value


def _walk(value: Any, path: tuple[str | int, ...], trie: dict[str, Any], lookup: Lookup) -> Any:
    if not trie:
        return _plain_walk(value, path, lookup)
    if isinstance(value, str):
        try:
            result = substitute(value, lookup) if "$" in value else value
        except TemplateError as exc:
            raise InterpolationError(path, str(exc), exc.variable) from None
        cast = trie.get("")
        if cast is None:
            return result
        try:
            return cast(result.strip())
        except ValueError as exc:
            raise InterpolationError(path, f"failed to cast to expected type: {exc}") from None
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            # the "" entry is this level's cast, never a child: a user key "" must not pick it up
            sub = (trie.get(key) if key != "" else None) or trie.get("*") or _EMPTY if trie else _EMPTY
            out[key] = _walk(item, (*path, key), sub, lookup)
        return out
    if isinstance(value, list):
        sub = trie.get("[]", _EMPTY) if trie else _EMPTY
        return [_walk(item, (*path, i), sub, lookup) for i, item in enumerate(value)]
    return value


def mapping_lookup(env: Mapping[str, str]) -> Lookup:
    """A lookup function over a mapping of variables."""
    return env.get
