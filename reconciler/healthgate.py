"""The health gate: after a deploy, an HTTP URL on this host must answer the expected status with the
environment's ``Host`` header before the deploy counts as a success. Called by ``reconciler.daemon.deploy``.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from dataclasses import dataclass

from reconciler.errors import DeployError

REQUEST_TIMEOUT = 5.0  # seconds for one request: a hung server costs one attempt, not the whole gate
_POLL_FIRST, _POLL_MAX = 0.25, 2.0


@dataclass(frozen=True)
class GateCheck:
    """A gate with its templates expanded for one environment instance."""

    url: str
    host: str | None
    expect_status: int
    timeout: float


class HealthGateFailed(DeployError):
    def __init__(self, message: str) -> None:
        super().__init__(message, reason="HealthGateFailed")


def probe(check: GateCheck, timeout: float = REQUEST_TIMEOUT) -> tuple[int | None, str]:
    """One request: (status, "") or (None, the error). Redirects are answers, never followed."""
    parts = urllib.parse.urlsplit(check.url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "", parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {"Host": check.host} if check.host else {}
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read(64 * 1024)
        return response.status, ""
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        conn.close()


def wait_healthy(check: GateCheck, cancel: threading.Event | None = None) -> int:
    """Poll until the URL answers the expected status (returns the number of attempts); raise
    HealthGateFailed naming the URL and the last status or error once ``check.timeout`` has passed."""
    deadline = time.monotonic() + check.timeout
    delay = _POLL_FIRST
    attempts = 0
    waiter = cancel or threading.Event()
    while True:
        attempts += 1
        left = deadline - time.monotonic()
        status, error = probe(check, timeout=max(0.5, min(REQUEST_TIMEOUT, left)))
        if status == check.expect_status:
            return attempts
        last = f"last answer: HTTP {status}" if status is not None else f"last error: {error}"
        if time.monotonic() + delay > deadline:
            host = f" with Host {check.host!r}" if check.host else ""
            raise HealthGateFailed(
                f"health gate: {check.url}{host} did not answer HTTP {check.expect_status} within "
                f"{check.timeout:g}s ({attempts} attempts; {last})"
            )
        if waiter.wait(delay):
            raise DeployError("cancelled during the health gate", reason="Cancelled")
        delay = min(delay * 2, _POLL_MAX)
