"""Go-typed decoding of compose values, as compose-go's types and Go's encoding/json print them.

Used by the model step: scalar, list and map converters mirror compose-go types (UnitBytes, Duration,
ShellCommand, Mapping, HostsList...), ``struct`` mirrors a Go struct (field order, `omitempty`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from reconciler.render.gofmt import (
    float32_number,
    format_duration,
    go_value_str,
    parse_bytes,
    parse_duration,
    shell_split,
)

OMIT = object()  # a converter's way of saying "Go would omit this field"


class ModelError(Exception):
    """A value compose's typed decode would reject; ``path`` locates it (e.g. services.web.ports.0)."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


Convert = Callable[[Any, tuple[str, ...]], Any]


def scalar_str(value: Any, path: tuple[str, ...]) -> str:
    if type(value) is str:
        return value
    if isinstance(value, dict | list):
        raise ModelError(path, f"{'.'.join(path)} must be a string")
    return go_value_str(value) if value is not None else ""


def t_str(value: Any, path: tuple[str, ...]) -> Any:
    text = scalar_str(value, path)
    return text if text else OMIT


def t_bool(value: Any, path: tuple[str, ...]) -> Any:
    parsed = to_bool(value, path)
    return True if parsed else OMIT


def t_ptr_bool(value: Any, path: tuple[str, ...]) -> Any:
    return OMIT if value is None else to_bool(value, path)


def to_bool(value: Any, path: tuple[str, ...]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "t", "true", "0", "f", "false"):
        return value.lower() in ("1", "t", "true")
    raise ModelError(path, f"{'.'.join(path)} must be a boolean, got {value!r}")


def to_int(value: Any, path: tuple[str, ...]) -> int:
    if isinstance(value, bool):
        raise ModelError(path, f"{'.'.join(path)} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == int(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise ModelError(path, f"{'.'.join(path)} must be an integer, got {value!r}")


def t_int(value: Any, path: tuple[str, ...]) -> Any:
    number = to_int(value, path)
    return number if number else OMIT


def t_ptr_int(value: Any, path: tuple[str, ...]) -> Any:
    return OMIT if value is None else to_int(value, path)


def to_float(value: Any, path: tuple[str, ...]) -> float:
    if isinstance(value, bool):
        raise ModelError(path, f"{'.'.join(path)} must be a number, got {value!r}")
    try:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return float(value)
    except (ValueError, OverflowError):
        pass
    raise ModelError(path, f"{'.'.join(path)} must be a number, got {str(value)[:40]!r}")


def t_float32(value: Any, path: tuple[str, ...]) -> Any:
    number = to_float(value, path)
    if not math.isfinite(number):  # Go's encoding/json refuses to print ±Inf and NaN
        raise ModelError(path, f"{'.'.join(path)} must be a finite number, got {value!r}")
    return float32_number(number) if number else OMIT


def t_bytes(value: Any, path: tuple[str, ...]) -> Any:
    """UnitBytes: accepts 512m / 1g / ints; Go prints it as a quoted integer."""
    if value is None:
        return OMIT
    try:
        number = parse_bytes(value)
    except ValueError as exc:
        raise ModelError(path, f"{'.'.join(path)}: {exc}") from None
    return str(number) if number else OMIT


def _duration(value: Any, path: tuple[str, ...]) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return format_duration(value)
    if isinstance(value, float):
        return format_duration(int(value))
    if isinstance(value, str):
        try:
            return format_duration(parse_duration(value))
        except ValueError as exc:
            raise ModelError(path, f"{'.'.join(path)}: {exc}") from None
    raise ModelError(path, f"{'.'.join(path)} must be a duration like 10s, got {value!r}")


def t_ptr_duration(value: Any, path: tuple[str, ...]) -> Any:
    return OMIT if value is None else _duration(value, path)


def t_duration(value: Any, path: tuple[str, ...]) -> Any:
    if value is None:
        return OMIT
    text = _duration(value, path)
    return OMIT if text == "0s" else text


def t_strlist(value: Any, path: tuple[str, ...]) -> Any:
    """[]string (cap_add, links...): every scalar printed with %v."""
    if value is None:
        return OMIT
    if not isinstance(value, list):
        raise ModelError(path, f"{'.'.join(path)} must be a list")
    items = [scalar_str(item, (*path, str(i))) for i, item in enumerate(value)]
    return items if items else OMIT


def t_string_or_list(value: Any, path: tuple[str, ...]) -> Any:
    """StringList (dns, tmpfs, tags...): a single string is a one-item list."""
    if isinstance(value, str):
        return [value]
    return t_strlist(value, path)


def t_mapping(value: Any, path: tuple[str, ...]) -> Any:
    """Mapping/Labels: list of `k=v` (or `k`) or a map; missing values become ""."""
    if value is None:
        return OMIT
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out[key] = "" if item is None else scalar_str(item, (*path, key))
    elif isinstance(value, list):
        for item in value:
            key, _, text = go_value_str(item).partition("=")
            out[key] = text
    else:
        raise ModelError(path, f"{'.'.join(path)} must be a list or a mapping")
    return out if out else OMIT


def mapping_with_equals(value: Any, path: tuple[str, ...]) -> dict[str, str | None]:
    """MappingWithEquals (environment, build args): `k` without `=` maps to null."""
    out: dict[str, str | None] = {}
    if value is None:
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            out[key] = None if item is None else scalar_str(item, (*path, key))
    elif isinstance(value, list):
        for item in value:
            key, sep, text = go_value_str(item).partition("=")
            out[key] = text if sep else None
    else:
        raise ModelError(path, f"{'.'.join(path)} must be a list or a mapping")
    return out


def t_mapping_with_equals(value: Any, path: tuple[str, ...]) -> Any:
    out = mapping_with_equals(value, path)
    return out if out else OMIT


def t_options(value: Any, path: tuple[str, ...]) -> Any:
    """map[string]string (driver_opts, logging options, storage_opt)."""
    if value is None:
        return OMIT
    if not isinstance(value, dict):
        raise ModelError(path, f"{'.'.join(path)} must be a mapping")
    out = {key: ("" if item is None else scalar_str(item, (*path, key))) for key, item in value.items()}
    return out if out else OMIT


def t_shell(value: Any, path: tuple[str, ...]) -> Any:
    """ShellCommand: a string is split like a shell would (without expansion); always printed."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shell_split(value)
        except ValueError:
            raise ModelError(path, f"{'.'.join(path)}: invalid command line string {value!r}") from None
    if isinstance(value, list):
        return [scalar_str(item, (*path, str(i))) for i, item in enumerate(value)]
    raise ModelError(path, f"{'.'.join(path)} must be a string or a list")


def t_hosts(value: Any, path: tuple[str, ...]) -> Any:
    """HostsList: `host:ip`, `host=ip` or a map; printed sorted as `host=ip`."""
    if value is None:
        return OMIT
    hosts: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for host, ips in value.items():
            if ips is None:
                ips = ""
            if isinstance(ips, list):
                hosts.extend((host, go_value_str(ip)) for ip in ips)
            else:
                hosts.append((host, scalar_str(ips, (*path, host))))
    elif isinstance(value, list):
        for item in value:
            text = go_value_str(item)
            for sep in ("=", ":"):
                host, found, ips = text.partition(sep)
                if found:
                    hosts.extend((host, ip) for ip in ips.split(","))
                    break
            else:
                raise ModelError(path, f"invalid additional host, missing IP: {text}")
    else:
        raise ModelError(path, f"{'.'.join(path)} must be a list or a mapping")
    out = []
    for host, ip in hosts:
        if not host or ":" in host or "=" in host:
            raise ModelError(path, f"bad host name '{host}'")
        if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
            ip = ip[1:-1]
        out.append(f"{host}={ip}")
    out.sort()
    return out if out else OMIT


def struct(fields: list[tuple[str, Convert]], *, name: str) -> Convert:
    """A Go struct: known keys converted in field order; `x-` extensions dropped; unknown keys refused."""
    known = {key for key, _ in fields}

    def convert(value: Any, path: tuple[str, ...]) -> Any:
        if value is None:
            return OMIT
        if not isinstance(value, dict):
            raise ModelError(path, f"{'.'.join(path)} must be a mapping")
        for key in value:
            if key not in known and not key.startswith("x-"):
                raise ModelError((*path, key), f"{'.'.join(path)}: unsupported {name} key {key!r}")
        out: dict[str, Any] = {}
        for key, fn in fields:
            if key in value:
                converted = fn(value[key], (*path, key))
                if converted is not OMIT:
                    out[key] = converted
        return out

    return convert


def value_struct(convert: Convert) -> Convert:
    """A struct held by value in Go (not a pointer): printed even when empty."""

    def wrapped(value: Any, path: tuple[str, ...]) -> Any:
        converted = convert(value if value is not None else {}, path)
        return {} if converted is OMIT else converted

    return wrapped


def list_of(convert: Convert) -> Convert:
    def wrapped(value: Any, path: tuple[str, ...]) -> Any:
        if value is None:
            return OMIT
        if not isinstance(value, list):
            raise ModelError(path, f"{'.'.join(path)} must be a list")
        items = []
        for i, item in enumerate(value):
            converted = convert(item, (*path, str(i)))
            items.append({} if converted is OMIT else converted)
        return items if items else OMIT

    return wrapped


def escape_dollars(value: Any) -> Any:
    """compose `config` doubles every `$` in its output so the result can be loaded again."""
    if isinstance(value, dict) and "$" not in json.dumps(value):
        return value
    return _escape(value)


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$") if "$" in value else value
    if isinstance(value, dict):
        return {(k.replace("$", "$$") if "$" in k else k): _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(item) for item in value]
    return value
