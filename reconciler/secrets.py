"""The scrubber: every value an environment takes from `env`, `env_files` or a decrypted file is a secret,
and is replaced by ``***`` wherever text leaves the daemon (logs, state, status, API, page, render/plan).

One process-wide registry, keyed by project; ``scrub`` masks the values of every registered project.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.config import Config

MASK = "***"
# Shorter values are not masked: replacing every "1", "yes" or "dev" would mangle all text (commit ids,
# words, numbers) and hide nothing worth hiding. Such values are not treated as secrets (documented).
MIN_LENGTH = 4

_lock = threading.Lock()
_by_key: dict[str, frozenset[str]] = {}
_pattern: re.Pattern[str] | None = None


def register(key: str, values: Iterable[str]) -> None:
    """Make ``values`` the secrets of ``key`` (a project), replacing what it had before."""
    global _pattern
    long_enough = [v for v in values if isinstance(v, str) and len(v) >= MIN_LENGTH]
    # Also as JSON spells them (a quote or newline in a value is escaped there), for text already
    # serialized: a rendered configuration, an API answer.
    kept = frozenset(long_enough) | frozenset(json.dumps(v)[1:-1] for v in long_enough)
    with _lock:
        if _by_key.get(key, frozenset()) == kept:
            return
        if kept:
            _by_key[key] = kept
        else:
            _by_key.pop(key, None)
        _pattern = _compile(frozenset().union(*_by_key.values()))


def forget(key: str) -> None:
    register(key, ())


def clear() -> None:
    """Forget every secret (tests)."""
    global _pattern
    with _lock:
        _by_key.clear()
        _pattern = None


def _compile(values: frozenset[str]) -> re.Pattern[str] | None:
    if not values:
        return None
    # Longest first: a secret that contains another is masked whole, not around the shorter one.
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=lambda v: (-len(v), v))))


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def scrub_value(value: Any) -> Any:
    """Strings inside ``value`` (dicts, lists, tuples) scrubbed; keys too; other values as they are."""
    if _pattern is None:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {scrub_value(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub_value(v) for v in value)
    return value


def env_secrets(environ: Mapping[str, str], env_files: Iterable[str]) -> set[str]:
    """The secret values of an environment: its `env` values and every value of its `env_files`."""
    from reconciler.errors import ReconcilerError
    from reconciler.render.envfile import read_env_file

    values = set(environ.values())
    for path in env_files:
        try:
            values.update(read_env_file(str(path), environ.get).values())
        except ReconcilerError:
            continue  # the render reports the unreadable file, by name only
    return values


def secret_files(config: Config) -> list[str]:
    """Every file of ``config`` that holds secrets: env files, http_auth files, age key files."""
    files: list[str] = list(config.http_auth.files) if config.http_auth is not None else []
    for env in config.environments():
        files.extend(env.env_files)
        if env.sops is not None:
            files.append(env.sops.age_key_file)
    return sorted(set(files))


def world_readable(paths: Iterable[str]) -> list[str]:
    """The paths among ``paths`` that any user of the host may read (mode o+r)."""
    out = []
    for path in paths:
        try:
            if os.stat(path).st_mode & stat.S_IROTH:
                out.append(path)
        except OSError:
            continue  # gone or unreadable: reading it reports that
    return out


def active() -> bool:
    return _pattern is not None
