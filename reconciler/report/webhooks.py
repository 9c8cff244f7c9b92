"""Push webhooks from GitHub, GitLab and Gitea: authenticate, then ask the daemon for an immediate git poll.

Called by the HTTP server with the raw body (already size-checked). The payload is never trusted for content:
only its repository URLs pick which app to poll; the poll asks git itself what the branches are.

Order of checks (unauthenticated callers learn nothing about which repositories are configured):
1. the signature/token is checked against the secret of **every** app; none matches -> 401;
2. a delivery ID seen before -> 409 (bounded memory of recent IDs);
3. not a push event -> 200, ignored;
4. only now is the JSON parsed; its repository must match an app authenticated in 1 -> 202, else 404.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from reconciler.report.metrics import Metrics
from reconciler.report.view import DaemonView

MAX_BODY: Final = 1024 * 1024  # GitHub caps payloads at 25 MB; a push of one branch is a few kB
PROVIDERS: Final = ("github", "gitlab", "gitea")
REPLAY_MEMORY: Final = 4096  # delivery IDs remembered; older ones are forgotten first

# Header carrying the event name, the value meaning "push", and the header carrying a delivery ID.
_EVENT_HEADER: Final = {"github": "x-github-event", "gitea": "x-gitea-event", "gitlab": "x-gitlab-event"}
_PUSH_EVENT: Final = {"github": "push", "gitea": "push", "gitlab": "Push Hook"}
# GitLab sends Idempotency-Key (the same on retries of one event) since 17.x; older versions send none.
_DELIVERY_HEADER: Final = {
    "github": "x-github-delivery",
    "gitea": "x-gitea-delivery",
    "gitlab": "idempotency-key",
}
# Payload keys that hold a repository URL: GitHub/Gitea `repository`, GitLab `project` and `repository`.
_URL_KEYS: Final = (
    "clone_url",
    "ssh_url",
    "html_url",
    "git_url",
    "url",
    "svn_url",
    "git_http_url",
    "git_ssh_url",
    "web_url",
    "http_url",
    "homepage",
)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(.*)$")  # git@github.com:org/repo.git


@dataclass(frozen=True)
class HookResponse:
    """What to answer: HTTP status, the metrics result label, and a small JSON body."""

    status: int
    result: str
    body: dict[str, Any] = field(default_factory=dict)


def repo_key(url: str) -> str:
    """A repository URL reduced to ``host/path``: no scheme, user, port, case, trailing ``/`` or ``.git``.

    So ``https://github.com/Org/App.git``, ``git@github.com:org/app`` and ``ssh://git@github.com:22/org/app``
    are the same repository. Local paths and ``file://`` URLs become ``/path``.
    """
    s = url.strip().lower()
    scheme = _SCHEME.match(s)
    if scheme:
        authority, _, path = s[scheme.end() :].partition("/")
        host = authority.rpartition("@")[2]  # drop user:password@
        host = host[: host.find("]") + 1] if host.startswith("[") else host.partition(":")[0]
    elif scp := _SCP_LIKE.match(s):
        host, path = scp.group(1), scp.group(2)
    else:
        host, path = "", s
    path = re.sub(r"/+", "/", path).strip("/")
    path = path.removesuffix(".git").rstrip("/")
    return f"{host}/{path}"


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub and Gitea send for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class ReplayGuard:
    """Remembers the last ``capacity`` delivery IDs; thread-safe."""

    def __init__(self, capacity: int = REPLAY_MEMORY) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, provider: str, delivery: str) -> bool:
        """True, and remember it, the first time; False for a replay."""
        key = (provider, delivery)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True

    def forget(self, provider: str, delivery: str) -> None:
        """Let a delivery be retried (its processing failed on our side)."""
        with self._lock:
            self._seen.pop((provider, delivery), None)


class WebhookHandler:
    """Authenticates push webhooks and triggers polls; counts every answer in ``metrics``."""

    def __init__(self, view: DaemonView, metrics: Metrics, replay: ReplayGuard | None = None) -> None:
        self._view = view
        self._metrics = metrics
        self._replay = replay or ReplayGuard()

    def reject(self, provider: str, status: int, result: str, message: str) -> HookResponse:
        """An answer decided before the body was read (size, length); counted like the others."""
        self._metrics.webhook(provider, result)
        return HookResponse(status, result, {"result": result, "error": message})

    def handle(self, provider: str, headers: Mapping[str, str], body: bytes) -> HookResponse:
        """Answer one request; ``headers`` keys are lower-case."""
        response = self._handle(provider, headers, body)
        self._metrics.webhook(provider, response.result)
        return response

    def _handle(self, provider: str, headers: Mapping[str, str], body: bytes) -> HookResponse:
        apps = [
            a for a in self._view.webhook_apps() if a.secret and _verify(provider, headers, body, a.secret)
        ]
        if not apps:
            return _answer(401, "unauthorized", "missing or invalid signature")

        delivery = headers.get(_DELIVERY_HEADER[provider], "").strip()
        if delivery and not self._replay.first_time(provider, delivery):
            return _answer(409, "replayed", f"delivery {delivery!r} was already received")

        event = headers.get(_EVENT_HEADER[provider], "").strip()
        if not event:
            return _answer(400, "bad_request", f"missing {_EVENT_HEADER[provider]} header")
        if event != _PUSH_EVENT[provider]:
            return HookResponse(200, "ignored", {"result": "ignored", "event": event})

        urls = _payload_repo_urls(body)
        if urls is None:
            return _answer(400, "bad_request", "body is not a JSON object with a repository URL")
        keys = {repo_key(u) for u in urls}
        matching = sorted({a.app for a in apps if repo_key(a.repo) in keys})
        if not matching:
            return _answer(404, "unknown_repo", "no app watches this repository")
        try:
            queued = {app: self._view.trigger_poll(app, f"webhook:{provider}") for app in matching}
        except Exception:
            if delivery:  # let the provider's retry through
                self._replay.forget(provider, delivery)
            raise
        return HookResponse(202, "accepted", {"result": "accepted", "apps": matching, "queued": queued})


def _answer(status: int, result: str, message: str) -> HookResponse:
    return HookResponse(status, result, {"result": result, "error": message})


def _verify(provider: str, headers: Mapping[str, str], body: bytes, secret: bytes) -> bool:
    """Constant-time check of the provider's signature or token against one app's secret."""
    if provider == "gitlab":
        token = headers.get("x-gitlab-token")
        if token is None:
            return False
        # http.server decodes headers as latin-1, so this gives back the bytes sent. Comparing digests
        # keeps even the secret's length out of the timing.
        given = hashlib.sha256(token.encode("latin-1", "replace")).digest()
        return hmac.compare_digest(given, hashlib.sha256(secret).digest())
    signature = headers.get("x-hub-signature-256")
    if signature is not None:
        scheme, _, hexdigest = signature.strip().partition("=")
        if scheme != "sha256":
            return False
    elif provider == "gitea":
        # Gitea sent only this bare-hex header before it added X-Hub-Signature-256.
        hexdigest = headers.get("x-gitea-signature", "").strip()
    else:
        return False
    if not _HEX64.fullmatch(hexdigest):
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), hexdigest.lower().encode())


def _payload_repo_urls(body: bytes) -> list[str] | None:
    """Every repository URL in an (authenticated) push payload, or None when there is none."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(payload, dict):
        return None
    urls = [
        value
        for section in _sections(payload)
        for key in _URL_KEYS
        if isinstance(value := section.get(key), str) and value.strip()
    ]
    return urls or None


def _sections(payload: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for name in ("repository", "project"):
        section = payload.get(name)
        if isinstance(section, dict):
            yield section
