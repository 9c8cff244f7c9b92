"""Hostile webhook requests, fed to the handler as functions: always an HTTP answer, never an exception."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from reconciler.report import Metrics, StaticView, WebhookApp
from reconciler.report.webhooks import PROVIDERS, WebhookHandler, repo_key, sign
from tests.fuzz.guard import budget, time_limit

SECRET = "s3cret"
REPO = "https://git.example.org/shop/app.git"
HEADER_NAMES = (
    "x-github-event",
    "x-gitea-event",
    "x-gitlab-event",
    "x-github-delivery",
    "x-gitea-delivery",
    "idempotency-key",
    "x-hub-signature-256",
    "x-gitea-signature",
    "x-gitlab-token",
    "content-type",
)
header_values = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=255), max_size=80),
    st.sampled_from(("push", "Push Hook", "sha256=", "sha256=" + "0" * 64, "sha1=x", SECRET, "", " ")),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.just(REPO)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(("repository", "project", "clone_url", "url", "ssh_url", "homepage", "x")),
            children,
        ),
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.just(b"[" * 100_000),  # deep nesting: RecursionError in json
    st.just(b'{"repository": {"url": "\xff"}}'),
)


def handler() -> tuple[WebhookHandler, StaticView]:
    view = StaticView(webhook_apps=[WebhookApp(app="shop", repo=REPO, secret=SECRET.encode())])
    return WebhookHandler(view, Metrics(view)), view


@budget(1500)
@given(
    provider=st.sampled_from(PROVIDERS),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_values, max_size=5),
    body=bodies,
    signed=st.booleans(),
)
@example(provider="github", headers={"x-github-event": "push"}, body=b"[" * 100_000, signed=True)
@example(
    provider="gitlab",
    headers={"x-gitlab-token": "é\u0100", "x-gitlab-event": "Push Hook"},
    body=b"{}",
    signed=False,
)
@example(provider="gitea", headers={"x-gitea-signature": "Z" * 64}, body=b"", signed=False)
def test_any_request_gets_an_http_answer(
    provider: str, headers: dict[str, str], body: bytes, signed: bool
) -> None:
    """Unsigned, mis-signed, signed garbage or signed JSON of any shape: a status and a result, no exception;
    only an authenticated push naming the repository is accepted."""
    hook, view = handler()
    if signed:
        headers = {**headers, "x-hub-signature-256": sign(SECRET.encode(), body), "x-gitlab-token": SECRET}
    with time_limit():
        answer = hook.handle(provider, headers, body)
    assert answer.status in (200, 202, 400, 401, 404, 409), answer
    assert isinstance(answer.body, dict) and answer.result
    json.dumps(answer.body)  # the server can always send it
    if answer.status == 202:
        assert view.polls and view.polls[0][0] == "shop"
    else:
        assert not view.polls


@budget(1000)
@given(
    url=st.one_of(st.text(max_size=60), st.sampled_from(("[::1", "ssh://[", "git@:", "://", "a:b:c", "@@@")))
)
def test_repo_key_never_fails(url: str) -> None:
    """Any URL-ish text reduces to a key without an exception."""
    with time_limit():
        assert isinstance(repo_key(url), str)


def push(extra: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": REPO}, **(extra or {})}).encode()


def test_signed_push_is_accepted_once() -> None:
    """The well-formed case still works, and a replayed delivery is refused."""
    hook, view = handler()
    body = push()
    headers = {
        "x-github-event": "push",
        "x-github-delivery": "d1",
        "x-hub-signature-256": sign(SECRET.encode(), body),
    }
    assert hook.handle("github", headers, body).status == 202
    assert hook.handle("github", headers, body).status == 409
    assert view.polls == [("shop", "webhook:github")]
