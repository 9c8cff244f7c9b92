"""Durations as written in environments.yaml (``15s``, ``5m``, ``1h30m`` or a number of seconds)."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like ``15s``, ``5m``, ``2h``, ``14d``, ``1h30m``; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _finite(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    try:
        return _finite(float(text))  # `nan`, `inf` and `1e400` parse as floats but are no duration
    except ValueError:
        pass
    if not _DURATION_RE.fullmatch(text):
        return None
    return _finite(sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text)))


def _finite(value: float) -> float | None:
    try:
        seconds = float(value)  # an int too big for a float raises OverflowError
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def format_duration(seconds: float) -> str:
    """``90`` -> ``1m30s``: bounds in messages, written as users write durations."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    out = ""
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNITS[unit])
        if count:
            out += f"{count:g}{unit}"
    return out or "0s"
