"""Go value formatting and parsing that `docker compose config` output depends on.

Used by the merge, short-syntax and model modules: `fmt` %v for scalars, time.Duration strings,
docker/go-units byte sizes, float32 JSON numbers and go-shellwords command splitting.
"""

from __future__ import annotations

import datetime
import math
import re
import struct
from decimal import Decimal
from typing import Any


def go_float_str(value: float) -> str:
    """fmt.Sprint(float64): shortest digits, exponent form below 1e-4 or from 1e6 ("1e+06")."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(str(d) for d in digits)
    point = len(text) + exponent  # position of the decimal point relative to the digits
    exp10 = point - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return prefix + text + "0" * (point - len(text))
    return f"{prefix}{text[:point]}.{text[point:]}"


def go_time(value: datetime.datetime) -> str:
    """time.Time as JSON: RFC 3339 with nanoseconds trimmed, "Z" for UTC."""
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset() or datetime.timedelta(0)
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def go_value_str(value: Any) -> str:
    """fmt.Sprintf("%v") of a YAML scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float_str(value)
    if value is None:
        return "<nil>"
    return str(value)


def float32_number(value: float) -> float | int:
    """A float32 as Go's encoding/json prints it (shortest float32 digits); integral values as int."""
    as32: float = struct.unpack("f", struct.pack("f", value))[0]
    if as32 == int(as32) and abs(as32) < 2**53:
        return int(as32)
    for digits in range(1, 10):
        text = f"{as32:.{digits}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == as32:
            return float(text)
    return as32


def float64_number(value: float) -> float | int:
    """A float64 as a JSON number the way Go prints it (integral values without a fraction)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return int(value)
    return value


# -- durations ----------------------------------------------------------------------------------

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5
    "μs": 1_000,  # U+03BC
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,  # str2duration, as compose uses: days and weeks too
    "w": 604_800_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration string ("1m30s", "1.5h", "1d"); ValueError with Go's message."""
    original = text
    if text in ("0", "+0", "-0"):
        return 0
    if not text:
        raise ValueError(f'time: invalid duration "{original}"')
    negative = text[0] == "-"
    if text[0] in "+-":
        text = text[1:]
    if not text:
        raise ValueError(f'time: invalid duration "{original}"')
    total = Decimal(0)
    while text:
        match = _DURATION_PART.match(text)
        assert match is not None
        number, unit = match.group(1), match.group(2)
        if number in ("", "."):
            raise ValueError(f'time: invalid duration "{original}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{original}"')
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{original}"')
        total += Decimal(number) * _UNITS[unit]
        text = text[match.end() :]
    nanos = int(total)
    if nanos > 2**63 - 1:
        raise ValueError(f'time: invalid duration "{original}"')
    return -nanos if negative else nanos


def _fraction(value: int, precision: int) -> tuple[str, int]:
    digits = ""
    printed = False
    for _ in range(precision):
        digit = value % 10
        printed = printed or digit != 0
        if printed:
            digits = str(digit) + digits
        value //= 10
    return ("." + digits if printed else ""), value


def format_duration(nanos: int) -> str:
    """time.Duration.String(): "1h2m3.5s", "500ms", "100µs", "0s"."""
    if nanos == 0:
        return "0s"
    negative = nanos < 0
    value = -nanos if negative else nanos
    sign = "-" if negative else ""
    if value < 1_000_000_000:
        if value < 1_000:
            return f"{sign}{value}ns"
        if value < 1_000_000:
            frac, whole = _fraction(value, 3)
            return f"{sign}{whole}{frac}µs"
        frac, whole = _fraction(value, 6)
        return f"{sign}{whole}{frac}ms"
    frac, seconds = _fraction(value, 9)
    out = f"{seconds % 60}{frac}s"
    minutes = seconds // 60
    if minutes:
        out = f"{minutes % 60}m{out}"
        hours = minutes // 60
        if hours:
            out = f"{hours}h{out}"
    return sign + out


# -- byte sizes ---------------------------------------------------------------------------------

_SIZE = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_MULTIPLIERS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_bytes(value: Any) -> int:
    """docker/go-units RAMInBytes ("512m" -> 536870912); ints pass through."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    text = str(value)
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size: '{text}'")
    try:
        number = float(match.group(1))
    except ValueError:
        raise ValueError(f"invalid size: '{text}'") from None
    unit = (match.group(3) or "").lower()
    return int(number * _MULTIPLIERS.get(unit, 1))


# -- go-shellwords ------------------------------------------------------------------------------


def shell_split(line: str) -> list[str]:
    """mattn/go-shellwords Parse (no env or backtick expansion); ValueError on unbalanced quotes.

    Like compose, parsing stops at an unquoted `;`, `&`, `|`, `<` or `>`.
    """
    args: list[str] = []
    buf: list[str] = []
    escaped = double = single = backquote = dollar = False
    got = 0  # 0 no arg, 1 plain arg, 2 quoted arg
    for char in line:
        if escaped:
            buf.append(char)
            escaped = False
            got = 1
            continue
        if char == "\\":
            if single:
                buf.append(char)
            else:
                escaped = True
            continue
        if char in " \t\r\n":
            if single or double or backquote or dollar:
                buf.append(char)
            elif got:
                args.append("".join(buf))
                buf = []
                got = 0
            continue
        if char == "`":
            if not single and not double and not dollar:
                backquote = not backquote
        elif char == ")":
            if not single and not double and not backquote:
                dollar = False
        elif char == "(":
            if not single and not double and not backquote:
                if not dollar and buf and buf[-1] == "$":
                    dollar = True
                    buf.append(char)
                    continue
                raise ValueError("invalid command line string")
        elif char == '"':
            if not single and not dollar:
                if double:
                    got = 2
                double = not double
                continue
        elif char == "'":
            if not double and not dollar:
                if single:
                    got = 2
                single = not single
                continue
        elif char in ";&|<>" and not (single or double or backquote or dollar):
            break
        got = 1
        buf.append(char)
    else:
        if escaped or single or double or backquote or dollar:
            raise ValueError("invalid command line string")
    if got:
        args.append("".join(buf))
    return args
