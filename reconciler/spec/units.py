"""Durations and byte sizes as Compose and Docker parse them; used by ``service`` and ``mounts``."""

from __future__ import annotations

import re
from typing import Any

from reconciler.spec.context import _unsupported

# fmt: off
_DURATION_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                "h": 3600 * 10**9}
# fmt: on

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_BYTES_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)


def _duration_ns(service: str, key: str, value: Any) -> int:
    """A Go duration as Compose prints it ("1m30s", "500ms"), or a number of seconds, in nanoseconds."""
    if isinstance(value, bool):
        raise _unsupported(service, key, f"{value!r} is not a duration")
    if isinstance(value, int | float):
        return round(value * 10**9)
    text = str(value).strip()
    if text == "0":
        return 0
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise _unsupported(service, key, f"{value!r} is not a duration (e.g. 1m30s, 500ms)")
    return round(total)


def _bytes(service: str, key: str, value: Any) -> int:
    """Bytes from an integer or a size with a unit ("512m", "1g"), as Docker's RAMInBytes parses it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    m = _BYTES_RE.match(str(value).strip())
    if not m:
        raise _unsupported(service, key, f"{value!r} is not a size (e.g. 512m, 1g)")
    factor = 1024 ** " kmgt".index((m.group(2) or " ").lower())
    return int(float(m.group(1)) * factor)
