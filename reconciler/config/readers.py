"""Typed readers for every level of environments.yaml: each checks one key, or raises a located ConfigError.

The base class of the parser (``reconciler.config.parser``); ``fail`` builds errors with file, line and key.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reconciler.config.globs import branch_problem, glob_problem
from reconciler.config.units import format_duration, parse_duration
from reconciler.config.yaml_lines import _Map, _Seq, _type_name
from reconciler.errors import ConfigError, Location

# App and environment names end up in labels, CLI targets and cache paths: keep them boring.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Every duration is a timer or a deadline: below a second it is a busy loop (poll_interval: 1ms would be a
# thousand `git ls-remote` a second), past a year a typo; `1e400` is infinity and breaks the scheduler.
_MIN_DURATION, _MAX_DURATION = 1.0, 365 * 86400.0
_DURATION_BOUNDS = {
    "poll_interval": (1.0, _MAX_DURATION),  # each poll is a `git ls-remote`; webhooks give fast deploys
    "ttl": (60.0, _MAX_DURATION),
    "timeout": (1.0, 86400.0),
}
_DURATION_HINTS = {
    "poll_interval": "each poll runs `git ls-remote`; for faster deploys configure a webhook",
    "drift_interval": "each drift check lists every container of every environment",
}
_MAX_PATH = 255  # bytes of one path entry: a longer one is a mistake, and filesystems refuse it anyway


class _Readers:
    """Readers for one file; relative paths resolve against its directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.file = str(path)

    def fail(self, message: str, line: int | None, key: str | None, hint: str | None = None) -> ConfigError:
        return ConfigError(message, Location(file=self.file, line=line, key=key), hint=hint)

    # Each reader takes the containing mapping, the key and the dotted path of the key, and returns a
    # validated Python value (or the default when the key is absent).

    def check_keys(self, m: _Map, allowed: tuple[str, ...], where: str) -> None:
        for key in m:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                path = f"{where}.{key}" if where else str(key)
                raise self.fail(
                    f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                    m.key_lines[key],
                    path,
                    hint=f"allowed here: {', '.join(allowed)}",
                )

    def check_name(self, name: Any, line: int, where: str, what: str) -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise self.fail(
                f"invalid {what} name {name!r}: use lower-case letters, digits, '-' and '_' "
                "(at most 63, starting with a letter or digit)",
                line,
                where,
                hint="YAML reads yes/no/on/off as booleans and digits as numbers: quote such names",
            )

    def value(self, m: _Map, key: str, where: str, required: bool) -> Any:
        if key not in m:
            if required:
                raise self.fail(f"missing required key `{key}`", m.line, where)
            return None
        return m[key]

    def mapping(self, m: _Map, key: Any, where: str, *, required: bool = False) -> _Map | None:
        value = self.value(m, key, where, required)
        if value is None and not required and key not in m:
            return None
        if not isinstance(value, _Map):
            raise self.fail(f"`{where}` must be a mapping, not {_type_name(value)}", m.key_lines[key], where)
        return value

    def string(self, m: _Map, key: str, where: str, *, required: bool = False) -> str | None:
        value = self.value(m, key, where, required)
        if key not in m:
            return None
        if not isinstance(value, str):
            raise self.fail(
                f"`{key}` must be a string, not {_type_name(value)}",
                m.key_lines[key],
                where,
                hint="quote the value",
            )
        if "\0" in value:  # no path, URL or name may hold one; os functions raise ValueError on it
            raise self.fail(f"`{key}` contains a NUL character", m.key_lines[key], where)
        return value

    def branch(self, m: _Map, key: str, where: str) -> str | None:
        """A branch name git would accept (a typo like `a b` would otherwise never match anything)."""
        value = self.string(m, key, where)
        if value is None or not value.strip():
            return value
        problem = branch_problem(value)
        if problem:
            raise self.fail(
                f"{value[:80]!r} is not a valid git branch name: {problem}",
                m.key_lines[key],
                where,
                hint="write the branch as `git branch` shows it",
            )
        return value

    def boolean(self, m: _Map, key: str, where: str) -> bool:
        value = m.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(
                f"`{key}` must be true or false, not {_type_name(value)}", m.key_lines[key], where
            )
        return value

    def integer(self, m: _Map, key: str, where: str, *, minimum: int) -> int | None:
        if key not in m:
            return None
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(
                f"`{key}` must be a whole number >= {minimum}, not {_type_name(value)}",
                m.key_lines[key],
                where,
            )
        return value

    def duration(self, m: _Map, key: str, where: str, default: Any) -> Any:
        if key not in m:
            return default
        seconds = parse_duration(m[key])
        if seconds is None or seconds <= 0:
            raise self.fail(
                f"`{key}` must be a positive duration, not {_type_name(m[key])}",
                m.key_lines[key],
                where,
                hint="write a number of seconds or e.g. 15s, 5m, 2h, 14d, 1h30m",
            )
        low, high = _DURATION_BOUNDS.get(key, (_MIN_DURATION, _MAX_DURATION))
        if not low <= seconds <= high:
            raise self.fail(
                f"`{key}` must be between {format_duration(low)} and {format_duration(high)}, not {m[key]!r}",
                m.key_lines[key],
                where,
                hint=_DURATION_HINTS.get(key, "timers outside these bounds are mistakes"),
            )
        return seconds

    def strings(self, m: _Map, key: str, where: str, *, required: bool = False) -> list[tuple[str, int]]:
        """A list of strings with the line of each item; a single string is accepted as a list of one."""
        value = self.value(m, key, where, required)
        if key not in m:
            return []
        if isinstance(value, str):
            return [(value, m.key_lines[key])]
        if not isinstance(value, _Seq):
            raise self.fail(
                f"`{key}` must be a list of strings, not {_type_name(value)}", m.key_lines[key], where
            )
        out = []
        for item, line in zip(value, value.item_lines, strict=True):
            if not isinstance(item, str):
                raise self.fail(
                    f"each entry of `{key}` must be a string, not {_type_name(item)}",
                    line,
                    where,
                    hint="quote the value",
                )
            out.append((item, line))
        return out

    def globs(self, m: _Map, key: str, where: str) -> tuple[str, ...]:
        out = []
        for pattern, line in self.strings(m, key, f"{where}.{key}"):
            problem = glob_problem(pattern)
            if problem:
                raise self.fail(
                    f"glob {pattern!r} can never match a branch: {problem}",
                    line,
                    f"{where}.{key}",
                    hint="globs use fnmatch syntax (* ? [abc]); '*' also matches '/'",
                )
            out.append(pattern)
        return tuple(out)

    def paths(
        self, m: _Map, key: str, where: str, *, required: bool = False, in_repo: bool = False
    ) -> tuple[str, ...]:
        out = []
        for raw, line in self.strings(m, key, f"{where}.{key}", required=required):
            if not raw.strip():
                raise self.fail(f"empty path in `{key}`", line, f"{where}.{key}")
            if len(raw.encode("utf-8", "surrogatepass")) > _MAX_PATH or "\0" in raw:
                raise self.fail(
                    f"path {raw[:40]!r}... in `{key}` is longer than {_MAX_PATH} bytes or contains a NUL",
                    line,
                    f"{where}.{key}",
                    hint="shorten the path",
                )
            if in_repo:
                # Paths inside the checkout: refuse anything that escapes it.
                norm = Path(raw).as_posix()
                parts = Path(norm).parts
                if Path(raw).is_absolute() or ".." in parts or raw.startswith("~"):
                    raise self.fail(
                        f"{raw!r} must be a path inside the repository",
                        line,
                        f"{where}.{key}",
                        hint="use a relative path such as docker-compose.yml; files outside git go "
                        "in `overlays`",
                    )
                out.append(str(Path(norm)))
            else:
                # Checked now, not at the first deploy: a typo should stop the daemon from starting.
                file = (self.base / Path(raw).expanduser()).resolve()
                if not _is_file(file):
                    raise self.fail(
                        f"{str(file)!r} is not a readable file",
                        line,
                        f"{where}.{key}",
                        hint=f"paths in `{key}` are relative to {self.file}",
                    )
                out.append(str(file))
        return tuple(out)

    def env(self, m: _Map, where: str) -> Mapping[str, str]:
        value = self.mapping(m, "env", f"{where}.env")
        if value is None:
            return MappingProxyType({})
        out: dict[str, str] = {}
        for key, item in value.items():
            line = value.key_lines[key]
            if not isinstance(key, str) or not _VAR_RE.fullmatch(key):
                raise self.fail(
                    f"invalid variable name {key!r}", line, f"{where}.env", hint="use [A-Za-z_][A-Za-z0-9_]*"
                )
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.fail(
                    f"variable {key} must be a string or a number, not {_type_name(item)}",
                    line,
                    f"{where}.env.{key}",
                    hint="quote the value",
                )
            out[key] = str(item)
        return MappingProxyType(out)

    def template(
        self, m: _Map, key: str, where: str, fields: tuple[str, ...], *, required: bool = False
    ) -> str | None:
        value = self.string(m, key, f"{where}.{key}", required=required)
        if value is None:
            return None
        line, path = m.key_lines[key], f"{where}.{key}"
        allowed = ", ".join("{" + f + "}" for f in fields)
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise self.fail(
                f"invalid template {value!r}: {exc}",
                line,
                path,
                hint=f"placeholders are {allowed}; write {{{{ and }}}} for literal braces",
            ) from None
        for _, name, spec, conversion in parsed:
            if name is not None and (name not in fields or spec or conversion):
                raise self.fail(
                    f"unknown placeholder {{{name}}} in {value!r}", line, path, hint=f"use {allowed}"
                )
        if not value.strip():
            raise self.fail(f"`{key}` is empty", line, path)
        return value


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # ENAMETOOLONG, EACCES...: not a file we can read either
        return False
