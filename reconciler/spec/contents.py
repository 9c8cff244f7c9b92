"""Secrets and configs whose value is in the project (``content:``, or ``environment: VAR``): their values
and digests (``_values``), their mounts (``_content_mount``) and the files to write (``ContentFile``).
Pure: ``reconciler.contentfiles`` writes the files; a value is never put in a label, a log or a message."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import ComposeError, Location, UnsupportedError
from reconciler.spec.context import _unsupported

# The value's sources each kind accepts, as in the Compose specification (`content` is configs-only).
SOURCES = {"secrets": ("environment",), "configs": ("content", "environment")}
DEFAULT_MODE = 0o400  # owner-read only on the host: the bind mount shows the file as it is
_DIGEST_IN_NAME = 16


@dataclass(frozen=True)
class ContentFile:
    """One file to write under ``<state_dir>/files/<project>/``; its repr never shows the value."""

    path: str  # relative: "<secrets|configs>/<name>-<sha256[:16]>[-<uid>.<gid>.<mode>]"
    value: bytes = field(repr=False)
    mode: int = DEFAULT_MODE
    uid: int | None = None
    gid: int | None = None


def is_content(kind: str, raw: Mapping[str, Any]) -> bool:
    """Whether a top-level secret/config gets its value from the project rather than from a file."""
    return any(raw.get(k) is not None for k in SOURCES[kind])


def _values(model: Mapping[str, Any], kind: str, environment: Mapping[str, str] | None) -> dict[str, bytes]:
    """Compose key -> value of every content-based ``kind``. ``environment: VAR`` reads VAR from the
    environment the project was rendered with (`.env`, the environment's `env`), as compose-go does."""
    out: dict[str, bytes] = {}
    for key, raw in (model.get(kind) or {}).items():
        raw = raw or {}
        if not is_content(kind, raw):
            continue
        extra = {k for k, v in raw.items() if v and k not in (*SOURCES[kind], "name")}
        if extra or len([k for k in SOURCES[kind] if raw.get(k) is not None]) > 1:
            raise UnsupportedError(
                f"{kind[:-1]} option(s) {sorted(set(raw) - {'name'})} are not supported together",
                Location(key=f"{kind}.{key}"),
                hint=f"give {kind} one of `file`, {', '.join(f'`{s}`' for s in SOURCES[kind])}",
            )
        if raw.get("content") is not None:
            out[key] = str(raw["content"]).encode()
            continue
        var = str(raw["environment"])
        if environment is None or var not in environment:
            # Names the variable, never a value (compose-go refuses the same).
            raise ComposeError(
                f"environment variable {var!r} required by {kind[:-1]} {key!r} is not set",
                Location(key=f"{kind}.{key}.environment"),
                hint=f"set {var} in the project's .env or the environment's `env`",
            )
        out[key] = environment[var].encode()
    return out


# Public name for other backends (reconciler.swarm): same function.
content_values = _values


def _digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def _content_mount(
    service: str, kind: str, ref: Mapping[str, Any], target: str, digest: str
) -> dict[str, Any]:
    """The normalized mount: name, digest and target (the value's digest, never the value, is hashed, so new
    content recreates the container), with long syntax's uid/gid/mode as the host file's owner and mode."""
    extra = set(ref) - {"source", "target", "uid", "gid", "mode"}
    if extra:
        raise _unsupported(service, kind, f"{kind} option(s) {sorted(extra)} are not supported")
    m: dict[str, Any] = {"name": str(ref["source"]), "digest": digest, "target": target}
    for key in ("uid", "gid"):
        if ref.get(key) not in (None, ""):
            if not (str(ref[key]).isascii() and str(ref[key]).isdigit()):
                raise _unsupported(service, kind, f"{key} {ref[key]!r} is not a number")
            m[key] = int(str(ref[key]))
    if ref.get("mode") not in (None, ""):
        mode = ref["mode"]
        try:
            mode = int(mode, 8) if isinstance(mode, str) else int(mode)
        except ValueError:
            raise _unsupported(service, kind, f"mode {mode!r} is not an octal mode (e.g. 0440)") from None
        if not 0 <= mode <= 0o777:
            raise _unsupported(service, kind, f"mode {ref['mode']!r} is not a file mode (0000-0777)")
        m["mode"] = mode
    return m


def content_path(kind: str, mount: Mapping[str, Any]) -> str:
    """Where a content mount's file lives under the project's files directory: named by the value's digest
    (so a new value is a new file, and a running container keeps its own), and by owner and mode if set."""
    name = f"{mount['name']}-{mount['digest'][:_DIGEST_IN_NAME]}"
    if any(k in mount for k in ("uid", "gid", "mode")):
        uid, gid = mount.get("uid", ""), mount.get("gid", "")
        name += f"-{uid}.{gid}.{mount.get('mode', DEFAULT_MODE):o}"
    return f"{kind}/{name}"


def content_files(
    configs: Mapping[str, Mapping[str, Any]], values: Mapping[str, Mapping[str, bytes]]
) -> tuple[ContentFile, ...]:
    """Every file the services' content mounts need (``configs``: service -> normalized config), once."""
    out: dict[str, ContentFile] = {}
    for config in configs.values():
        for kind in ("secrets", "configs"):
            for m in config.get(kind, ()):
                if "name" not in m:
                    continue  # file-based: bind-mounted from the checkout
                path = content_path(kind, m)
                out[path] = ContentFile(
                    path=path,
                    value=values[kind][m["name"]],
                    mode=m.get("mode", DEFAULT_MODE),
                    uid=m.get("uid"),
                    gid=m.get("gid"),
                )
    return tuple(out[p] for p in sorted(out))
