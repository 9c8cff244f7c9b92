"""Read the top-level ``http_auth:`` (bearer token or basic auth for the HTTP API and status page).

The secrets are read from their files when the configuration is loaded, so the daemon and `reconciler
status` (its client) agree; an unreadable or empty file is a located ConfigError. Reference:
docs/environments.md, http_auth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reconciler.config.readers import _Readers
from reconciler.config.yaml_lines import _Map


@dataclass(frozen=True, kw_only=True)
class HttpAuth:
    """Exactly one of ``bearer_token`` or ``username`` + ``password`` is set."""

    bearer_token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    files: tuple[str, ...] = ()  # where the secrets were read (for the world-readable warning)


def read_http_auth(r: _Readers, doc: _Map) -> HttpAuth | None:
    m = r.mapping(doc, "http_auth", "http_auth")
    if m is None:
        return None
    r.check_keys(m, ("bearer_token_file", "basic"), "http_auth")
    if ("bearer_token_file" in m) == ("basic" in m):
        raise r.fail(
            "`http_auth` needs exactly one of `bearer_token_file` or `basic`",
            doc.key_lines["http_auth"],
            "http_auth",
            hint="e.g. http_auth: {bearer_token_file: /etc/reconciler/token}",
        )
    if "bearer_token_file" in m:
        path, token = _secret_file(r, m, "bearer_token_file", "http_auth")
        return HttpAuth(bearer_token=token, files=(path,))
    basic = r.mapping(m, "basic", "http_auth.basic")
    assert basic is not None
    r.check_keys(basic, ("username", "password_file"), "http_auth.basic")
    username = r.string(basic, "username", "http_auth.basic.username", required=True)
    if not username or ":" in username:
        raise r.fail(
            "`username` must be non-empty and contain no ':'",
            basic.key_lines.get("username", basic.line),
            "http_auth.basic.username",
        )
    if "password_file" not in basic:
        raise r.fail("missing required key `password_file`", basic.line, "http_auth.basic")
    path, password = _secret_file(r, basic, "password_file", "http_auth.basic")
    return HttpAuth(username=username, password=password, files=(path,))


def _secret_file(r: _Readers, m: _Map, key: str, where: str) -> tuple[str, str]:
    raw = r.string(m, key, f"{where}.{key}", required=True)
    assert raw is not None
    line = m.key_lines[key]
    file = (r.base / Path(raw).expanduser()).resolve()
    try:
        secret = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise r.fail(f"cannot read {str(file)!r}: {reason}", line, f"{where}.{key}") from None
    if not secret:
        raise r.fail(f"{str(file)!r} is empty", line, f"{where}.{key}", hint="write the secret in it")
    return str(file), secret
