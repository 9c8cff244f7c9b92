"""`http_auth`: the API, page and /metrics need the configured credentials; /healthz and webhooks don't."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.config import load_config
from reconciler.config.http_auth import HttpAuth
from reconciler.errors import ConfigError
from reconciler.report import Metrics, serve
from reconciler.report.auth import allows, header
from tests.report.conftest import Live, sample_view
from tests.report.test_report_webhooks import payload, signed

TOKEN = "t0ken-" + "x" * 30
BEARER = HttpAuth(bearer_token=TOKEN)
BASIC = HttpAuth(username="ops", password="pa55-word")
PROTECTED = ("/", "/api/environments", "/metrics")


def _live(auth: HttpAuth) -> Iterator[Live]:
    view = sample_view()
    metrics = Metrics(view)
    server = serve(view, metrics, "127.0.0.1", 0, http_auth=auth)
    try:
        yield Live(view, metrics, server)
    finally:
        server.stop()


@pytest.fixture
def bearer() -> Iterator[Live]:
    yield from _live(BEARER)


@pytest.fixture
def basic() -> Iterator[Live]:
    yield from _live(BASIC)


@pytest.mark.parametrize("path", PROTECTED)
def test_bearer_token_is_required(bearer: Live, path: str) -> None:
    status, headers, body = bearer.request("GET", path)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert b"mrs-production" not in body
    assert bearer.request("GET", path, headers={"Authorization": "Bearer wrong"})[0] == 401
    assert bearer.request("GET", path, headers={"Authorization": f"Basic {TOKEN}"})[0] == 401
    assert bearer.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert bearer.request("GET", path, headers={"Authorization": f"bearer {TOKEN}"})[0] == 200


@pytest.mark.parametrize("path", PROTECTED)
def test_basic_auth_is_required(basic: Live, path: str) -> None:
    def creds(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    status, headers, _ = basic.request("GET", path)
    assert status == 401 and headers["www-authenticate"].startswith("Basic")
    assert basic.request("GET", path, headers=creds("ops", "wrong"))[0] == 401
    assert basic.request("GET", path, headers=creds("other", "pa55-word"))[0] == 401
    assert basic.request("GET", path, headers=creds("ops", "pa55-word"))[0] == 200


def test_healthz_stays_open(bearer: Live) -> None:
    assert bearer.request("GET", "/healthz")[0] == 200


def test_webhooks_keep_their_own_signatures(bearer: Live) -> None:
    """No Authorization header: a signed push is accepted, an unsigned one refused by its signature."""
    body = json.dumps(payload("github")).encode()
    status, _, raw = bearer.request("POST", "/hooks/github", body, signed("github", body))
    assert status == 202, raw
    status, _, _ = bearer.request("POST", "/hooks/github", body, signed("github", body, b"wrong"))
    assert status == 401


def test_allows_without_auth_configured() -> None:
    assert allows(None, "/api/environments", None)
    assert header(None) == {}
    assert not allows(BEARER, "/api/environments", "")
    assert allows(BEARER, "/api/environments", header(BEARER)["Authorization"])
    assert allows(BASIC, "/metrics", header(BASIC)["Authorization"])


def _config(tmp_path: Path, http_auth: str) -> Path:
    cfg = tmp_path / "environments.yaml"
    (tmp_path / "repo").mkdir(exist_ok=True)
    cfg.write_text(
        f"{http_auth}\napps:\n  a:\n    repo: {tmp_path / 'repo'}\n    environments:\n"
        "      production: {branch: main, project: a-prod, compose: [compose.yml]}\n"
    )
    return cfg


def test_config_reads_the_secret_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    cfg = load_config(_config(tmp_path, "http_auth: {bearer_token_file: token}"))
    assert cfg.http_auth is not None and cfg.http_auth.bearer_token == TOKEN
    assert TOKEN not in repr(cfg.http_auth)
    (tmp_path / "pw").write_text("pa55-word")
    cfg = load_config(_config(tmp_path, "http_auth: {basic: {username: ops, password_file: pw}}"))
    assert cfg.http_auth == HttpAuth(username="ops", password="pa55-word", files=(str(tmp_path / "pw"),))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http_auth: {bearer_token_file: missing}", "cannot read"),
        ("http_auth: {bearer_token_file: empty}", "is empty"),
        ("http_auth: {}", "exactly one of"),
        ("http_auth: {basic: {username: ops}}", "password_file"),
        ("http_auth: {basic: {password_file: pw}}", "username"),
        ("http_auth: {token: x}", "unknown key"),
    ],
)
def test_config_errors_are_located(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "pw").write_text("pw-pw-pw")
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, text))
    assert message in str(err.value) and "http_auth" in str(err.value)


def test_world_readable_secret_files_are_found(tmp_path: Path) -> None:
    from reconciler.secrets import secret_files, world_readable

    token = tmp_path / "token"
    token.write_text(TOKEN)
    os.chmod(token, 0o644)
    cfg = load_config(_config(tmp_path, "http_auth: {bearer_token_file: token}"))
    assert world_readable(secret_files(cfg)) == [str(token)]
    os.chmod(token, 0o600)
    assert world_readable(secret_files(cfg)) == []
