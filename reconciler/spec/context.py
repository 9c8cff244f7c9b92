"""What normalizing a service needs to know of its project (``_Context``), and the helpers every normalizer
shares: ``_unsupported`` (the error naming service and key), ``_put`` and ``_str_list``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import Location, UnsupportedError


@dataclass(frozen=True)
class _Context:
    project: str
    networks: Mapping[str, str]  # compose key -> Docker name
    volumes: Mapping[str, str]
    secrets: Mapping[str, str]  # compose key -> absolute file path
    configs: Mapping[str, str]
    # bind/secret/config source path (as written) -> content digest, resolved by the deployer at deploy
    # time (git object ids of the checkout): a push that leaves a mounted file alone recreates nothing.
    digests: Mapping[str, str] = field(default_factory=dict)
    # "secrets"/"configs" -> compose key -> sha256 of the value, for those with `content:`/`environment:`.
    contents: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The same paths with symlinks resolved by the adapter (only release 0's hash, ``_legacy``, uses them).
    real_paths: Mapping[str, str] = field(default_factory=dict)


def _unsupported(service: str, key: str, why: str, hint: str | None = None) -> UnsupportedError:
    return UnsupportedError(
        why, Location(service=service, key=key), hint=hint or "remove it, or deploy with docker compose"
    )


def _put(c: dict[str, Any], key: str, value: Any) -> None:
    """Defaults (empty) stay out of the normalized spec, so `[]` and a missing key hash the same."""
    if value:
        c[key] = value


def _str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]
