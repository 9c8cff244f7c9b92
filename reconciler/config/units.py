"""Durations as written in environments.yaml (``15s``, ``5m``, ``1h30m`` or a number of seconds)."""

from __future__ import annotations

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
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    if not _DURATION_RE.fullmatch(text):
        return None
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
