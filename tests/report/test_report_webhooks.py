"""Push webhooks against the real server: signatures, tokens, replays, sizes, unknown repos, other events."""

from __future__ import annotations

import http.client
import json
import socket
import uuid
from typing import Any

import pytest

from reconciler.report.webhooks import MAX_BODY, repo_key, sign

from .conftest import OTHER_SECRET, SECRET, Live
from .promtext import value

PROVIDERS = ("github", "gitlab", "gitea")


def payload(provider: str, repo_url: str = "https://github.com/betagouv/mrs") -> dict[str, Any]:
    """A push payload as each provider shapes it (only the repository URLs matter to us)."""
    ssh = repo_url.replace("https://", "git@").replace("/", ":", 1)  # git@host:org/repo
    if provider == "gitlab":
        return {
            "object_kind": "push",
            "ref": "refs/heads/develop",
            "after": "f" * 40,
            "project": {"web_url": repo_url, "git_http_url": repo_url + ".git", "git_ssh_url": ssh},
            "repository": {"url": ssh, "homepage": repo_url},
        }
    return {
        "ref": "refs/heads/develop",
        "after": "f" * 40,
        "repository": {"clone_url": repo_url + ".git", "ssh_url": ssh, "html_url": repo_url},
    }


def signed(
    provider: str,
    body: bytes,
    secret: bytes = SECRET,
    *,
    event: str = "push",
    delivery: str | None = None,
) -> dict[str, str]:
    """Headers a provider sends for ``body``: event, delivery ID, and signature or token."""
    delivery = delivery or str(uuid.uuid4())
    if provider == "github":
        return {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(secret, body),
            "Content-Type": "application/json",
        }
    if provider == "gitea":
        return {
            "X-Gitea-Event": event,
            "X-Gitea-Delivery": delivery,
            "X-Hub-Signature-256": sign(secret, body),
            "Content-Type": "application/json",
        }
    return {
        "X-Gitlab-Event": "Push Hook" if event == "push" else event,
        "Idempotency-Key": delivery,
        "X-Gitlab-Token": secret.decode(),
        "Content-Type": "application/json",
    }


def post(live: Live, provider: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    status, _, raw = live.request("POST", f"/hooks/{provider}", body, headers)
    return status, json.loads(raw)


def counted(live: Live, provider: str, result: str) -> float | None:
    text = live.request("GET", "/metrics")[2].decode()
    return value(text, "reconciler_webhook_requests_total", provider=provider, result=result)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_valid_push_triggers_one_poll(live: Live, provider: str) -> None:
    """A correctly signed push for a watched repository queues exactly one poll of that app: 202."""
    body = json.dumps(payload(provider)).encode()
    status, answer = post(live, provider, body, signed(provider, body))
    assert status == 202
    assert answer["apps"] == ["mrs"]
    assert live.view.polls == [("mrs", f"webhook:{provider}")]
    assert counted(live, provider, "accepted") == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_signature_is_refused(live: Live, provider: str) -> None:
    """A signature or token made with the wrong secret gets 401 and no poll."""
    body = json.dumps(payload(provider)).encode()
    status, _ = post(live, provider, body, signed(provider, body, b"wrong-secret"))
    assert status == 401
    assert live.view.polls == []
    assert counted(live, provider, "unauthorized") == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tampered_body_is_refused(live: Live, provider: str) -> None:
    """A body changed after signing no longer verifies (GitHub/Gitea); 401 and no poll."""
    body = json.dumps(payload(provider)).encode()
    headers = signed(provider, body)
    tampered = body.replace(b"develop", b"masterx")
    status, _ = post(live, provider, tampered, headers)
    # GitLab's token does not cover the body: the request is authentic, only the content changed,
    # and the content is never trusted anyway.
    assert status == (202 if provider == "gitlab" else 401)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_missing_signature_is_refused(live: Live, provider: str) -> None:
    """A request without signature or token gets 401 and no poll."""
    body = json.dumps(payload(provider)).encode()
    headers = signed(provider, body)
    for name in ("X-Hub-Signature-256", "X-Gitlab-Token"):
        headers.pop(name, None)
    status, _ = post(live, provider, body, headers)
    assert status == 401
    assert live.view.polls == []


@pytest.mark.parametrize(
    "signature",
    ["sha1=" + "0" * 40, "sha256=", "sha256=zz" + "0" * 62, "sha256=" + "0" * 64, "garbage", "sha256=é"],
)
def test_malformed_github_signatures_are_refused(live: Live, signature: str) -> None:
    """Malformed or wrong-algorithm signature headers are 401, never a server error."""
    body = json.dumps(payload("github")).encode()
    headers = signed("github", body)
    headers["X-Hub-Signature-256"] = signature
    status, _, _ = live.request("POST", "/hooks/github", body, headers)
    assert status == 401


def test_gitea_legacy_signature_header(live: Live) -> None:
    """Gitea's bare-hex X-Gitea-Signature is accepted when X-Hub-Signature-256 is absent."""
    body = json.dumps(payload("gitea")).encode()
    headers = signed("gitea", body)
    headers["X-Gitea-Signature"] = headers.pop("X-Hub-Signature-256").removeprefix("sha256=")
    status, _ = post(live, "gitea", body, headers)
    assert status == 202


@pytest.mark.parametrize("provider", PROVIDERS)
def test_replayed_delivery_is_refused(live: Live, provider: str) -> None:
    """The same delivery ID a second time gets 409 and does not poll again."""
    body = json.dumps(payload(provider)).encode()
    headers = signed(provider, body, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert post(live, provider, body, headers)[0] == 202
    status, answer = post(live, provider, body, headers)
    assert status == 409
    assert answer["result"] == "replayed"
    assert len(live.view.polls) == 1
    assert counted(live, provider, "replayed") == 1


def test_replay_of_unsigned_request_does_not_poison_delivery_ids(live: Live) -> None:
    """An unauthenticated request cannot burn a delivery ID that a real delivery later uses."""
    body = json.dumps(payload("github")).encode()
    delivery = "11111111-2222-3333-4444-555555555555"
    forged = signed("github", body, b"wrong", delivery=delivery)
    assert post(live, "github", body, forged)[0] == 401
    assert post(live, "github", body, signed("github", body, delivery=delivery))[0] == 202


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_repository(live: Live, provider: str) -> None:
    """An authenticated push for a repository no app watches gets 404 and is counted."""
    body = json.dumps(payload(provider, "https://github.com/someone/else")).encode()
    status, _ = post(live, provider, body, signed(provider, body))
    assert status == 404
    assert live.view.polls == []
    assert counted(live, provider, "unknown_repo") == 1


def test_unknown_repository_unauthenticated_is_401(live: Live) -> None:
    """Without a valid signature the answer is 401 whatever the repository: no probing for watched repos."""
    for repo in ("https://github.com/someone/else", "https://github.com/betagouv/mrs"):
        body = json.dumps(payload("github", repo)).encode()
        assert post(live, "github", body, signed("github", body, b"guess"))[0] == 401


def test_secret_of_another_app_does_not_trigger(live: Live) -> None:
    """Signed with app blog's secret, a push naming app mrs's repository triggers nothing: 404."""
    body = json.dumps(payload("github")).encode()
    status, _ = post(live, "github", body, signed("github", body, OTHER_SECRET))
    assert status == 404
    assert live.view.polls == []


def test_gitlab_ssh_configured_repo_matches_https_payload(live: Live) -> None:
    """App blog is configured with an scp-style SSH URL; GitLab's https URLs in the payload still match."""
    body = json.dumps(payload("gitlab", "https://gitlab.com/acme/blog")).encode()
    status, answer = post(live, "gitlab", body, signed("gitlab", body, OTHER_SECRET))
    assert status == 202
    assert answer["apps"] == ["blog"]
    assert live.view.polls == [("blog", "webhook:gitlab")]


def test_app_without_secret_never_triggers(live: Live) -> None:
    """An app with no webhook secret accepts no webhook, even an unsigned one."""
    body = json.dumps(payload("github", "https://github.com/acme/nohook")).encode()
    headers = signed("github", body)
    del headers["X-Hub-Signature-256"]
    assert post(live, "github", body, headers)[0] == 401
    assert live.view.polls == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_non_push_event_is_ignored(live: Live, provider: str) -> None:
    """A ping (or any non-push event) that authenticates gets 200 and triggers nothing."""
    body = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode()
    event = "Tag Push Hook" if provider == "gitlab" else "ping"
    status, answer = post(live, provider, body, signed(provider, body, event=event))
    assert status == 200
    assert answer["result"] == "ignored"
    assert live.view.polls == []
    assert counted(live, provider, "ignored") == 1


def test_bad_json_is_400(live: Live) -> None:
    """An authenticated push whose body is not a JSON object with a repository URL gets 400."""
    for body in (b"{not json", b"[1, 2]", b'{"repository": {}}', b"\xff\xfe", b"[" * 100_000):
        status, answer = post(live, "github", body, signed("github", body))
        assert status == 400, body[:20]
        assert answer["result"] == "bad_request"
    assert live.view.polls == []


def test_missing_event_header_is_400(live: Live) -> None:
    """An authenticated request without the provider's event header gets 400."""
    body = json.dumps(payload("github")).encode()
    headers = signed("github", body)
    del headers["X-GitHub-Event"]
    assert post(live, "github", body, headers)[0] == 400


def test_oversize_declared_length_is_refused_before_reading(live: Live) -> None:
    """A Content-Length over 1 MiB gets 413 at once, without the server waiting for the body."""
    conn = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=10)
    try:
        conn.putrequest("POST", "/hooks/github")
        conn.putheader("Content-Length", str(MAX_BODY + 1))
        conn.putheader("X-GitHub-Event", "push")
        conn.endheaders()  # no body sent: an answer proves the server did not wait for it
        resp = conn.getresponse()
        assert resp.status == 413
        assert json.loads(resp.read())["result"] == "too_large"
    finally:
        conn.close()
    assert counted(live, "github", "too_large") == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_oversize_body_is_413(live: Live, provider: str) -> None:
    """A body of 1 MiB + 1 byte, actually sent, gets 413 (not a connection reset) and no poll."""
    body = b" " * (MAX_BODY + 1)
    status, answer = post(live, provider, body, signed(provider, body))
    assert status == 413
    assert answer["result"] == "too_large"
    assert live.view.polls == []


def test_body_of_exactly_the_limit_is_accepted(live: Live) -> None:
    """A signed push padded to exactly 1 MiB is still processed."""
    raw = json.dumps(payload("github")).encode()
    body = raw + b" " * (MAX_BODY - len(raw))
    assert len(body) == MAX_BODY
    assert post(live, "github", body, signed("github", body))[0] == 202


def test_chunked_body_without_length_is_411(live: Live) -> None:
    """A chunked request (no Content-Length) gets 411: the size must be known before reading."""
    conn = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=10)
    try:
        conn.request("POST", "/hooks/github", body=iter([b"{}"]), headers={"X-GitHub-Event": "push"})
        resp = conn.getresponse()
        assert resp.status == 411
    finally:
        conn.close()


def test_poll_failure_is_500_and_delivery_can_be_retried(live: Live) -> None:
    """If asking for the poll fails, the client gets a plain 500 and the provider's retry is not a replay."""
    calls: list[str] = []

    def flaky(app: str, reason: str) -> bool:
        calls.append(app)
        if len(calls) == 1:
            raise RuntimeError("scheduler gone")
        return True

    live.view.trigger_poll = flaky  # type: ignore[method-assign]
    body = json.dumps(payload("github")).encode()
    headers = signed("github", body)
    status, answer = post(live, "github", body, headers)
    assert status == 500
    assert answer == {"error": "internal error"}
    assert post(live, "github", body, headers)[0] == 202
    assert calls == ["mrs", "mrs"]


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://github.com/Org/App.git", "github.com/org/app"),
        ("https://github.com/org/app/", "github.com/org/app"),
        ("git@github.com:org/app.git", "github.com/org/app"),
        ("ssh://git@github.com:22/org/app.git", "github.com/org/app"),
        ("https://user:token@gitlab.example.com:8443/group/sub/app.git", "gitlab.example.com/group/sub/app"),
        ("git://github.com/org/app.git", "github.com/org/app"),
        ("/srv/git/app.git", "/srv/git/app"),
        ("file:///srv/git/app.git", "/srv/git/app"),
    ],
)
def test_repo_key_normalises_urls(url: str, key: str) -> None:
    """Scheme, credentials, port, case, trailing slash and .git do not matter when matching repositories."""
    assert repo_key(url) == key


def _raw(live: Live, request: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes on a socket and return everything the server answers."""
    with socket.create_connection(("127.0.0.1", live.server.port), timeout=30) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


@pytest.mark.parametrize(
    "length_headers",
    [b"Content-Length: 1_0\r\n", b"Content-Length: -1\r\n", b"Content-Length: 2\r\nContent-Length: 2\r\n"],
)
def test_malformed_content_length_is_400(live: Live, length_headers: bytes) -> None:
    """A Content-Length that is not one plain decimal number gets 400."""
    request = b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + length_headers + b"\r\n{}"
    assert _raw(live, request, half_close=True).startswith(b"HTTP/1.1 400 ")


def test_truncated_body_is_400(live: Live) -> None:
    """A body shorter than its Content-Length (client gave up) gets 400, not a hang or a 500."""
    request = b'POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"short": 1}'
    assert _raw(live, request, half_close=True).startswith(b"HTTP/1.1 400 ")
    assert live.view.polls == []


def test_missing_content_length_is_411(live: Live) -> None:
    """A POST with neither Content-Length nor Transfer-Encoding gets 411."""
    request = b"POST /hooks/gitlab HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Push Hook\r\n\r\n"
    assert _raw(live, request, half_close=True).startswith(b"HTTP/1.1 411 ")
