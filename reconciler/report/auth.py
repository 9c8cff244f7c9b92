"""``http_auth``: the bearer token or basic credentials the HTTP API, status page and /metrics require.

``/healthz`` stays open (liveness probes carry no secret) and webhooks keep their own signatures. The
server calls ``allows`` once per request; `reconciler status` sends ``header``. Comparison is constant-time.
"""

from __future__ import annotations

import base64
import hmac
from typing import Final

from reconciler.config.http_auth import HttpAuth

OPEN_PATHS: Final = ("/healthz",)
OPEN_PREFIXES: Final = ("/hooks/",)  # signed by the forge with the app's webhook secret


def header(auth: HttpAuth | None) -> dict[str, str]:
    """The ``Authorization`` header a client sends (empty when no auth is configured)."""
    if auth is None:
        return {}
    if auth.bearer_token is not None:
        return {"Authorization": f"Bearer {auth.bearer_token}"}
    pair = f"{auth.username}:{auth.password}".encode()
    return {"Authorization": f"Basic {base64.b64encode(pair).decode('ascii')}"}


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def allows(auth: HttpAuth | None, path: str, authorization: str | None) -> bool:
    """True when ``path`` needs no credentials or ``authorization`` carries the configured ones."""
    if auth is None or is_open(path):
        return True
    expected = header(auth)["Authorization"]
    given = (authorization or "").strip()
    scheme, _, value = given.partition(" ")
    want_scheme, _, want_value = expected.partition(" ")
    # The scheme is case-insensitive (RFC 9110); the credentials are compared in constant time.
    same_scheme = scheme.lower() == want_scheme.lower()
    same_value = hmac.compare_digest(value.strip().encode(), want_value.encode())
    return same_scheme and same_value


def challenge(auth: HttpAuth) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 answer."""
    scheme = "Bearer" if auth.bearer_token is not None else "Basic"
    return {"WWW-Authenticate": f'{scheme} realm="reconciler"'}
