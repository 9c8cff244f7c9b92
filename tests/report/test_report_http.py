"""The HTTP server on a real socket: routes, status codes, JSON API, status page, error handling."""

from __future__ import annotations

import dataclasses
import html
import http.client
import json
import re
import socket

import pytest

from reconciler.errors import ConfigError
from reconciler.report import Metrics, StaticView, serve

from .conftest import FAILURE, HEAD, NASTY_BRANCH, OLD, PREVIEW_URL, Live, production, staging
from .promtext import samples, value

API_KEYS = {
    "app",
    "environment",
    "project",
    "host",
    "branch",
    "head_commit",
    "deployed_commit",
    "sync",
    "health",
    "drifts",
    "suspended",
    "suspend_reason",
    "url",
    "ephemeral",
    "error",
    "failed_commit",
    "last_success",
    "last_deploy",
}


def test_healthz_follows_alive(live: Live) -> None:
    """/healthz answers 200 while the view is alive and 503 when it is not."""
    assert live.request("GET", "/healthz")[0] == 200
    live.view.is_alive = False
    assert live.request("GET", "/healthz")[0] == 503


def test_api_environments(live: Live) -> None:
    """/api/environments lists every environment with the documented fields, in the view's order."""
    status, headers, body = live.request("GET", "/api/environments")
    assert status == 200
    assert headers["content-type"] == "application/json"
    envs = json.loads(body)
    assert [e["project"] for e in envs] == ["mrs-production", "mrs-staging", "test-feature-login"]
    assert all(set(e) == API_KEYS for e in envs)
    stg = envs[1]
    assert stg["sync"] == "OutOfSync"
    assert stg["health"] == "Degraded"
    assert stg["head_commit"] == HEAD
    assert stg["deployed_commit"] == OLD
    assert stg["drifts"] == [
        {"service": "web", "reason": "stopped", "detail": "exited (3)"},
        {"service": "old-worker", "reason": "orphan", "detail": "not in the config"},
    ]
    assert stg["last_deploy"] == {
        "result": "failure",
        "error": FAILURE,
        "commit": HEAD,
        "started": 1_700_000_100.0,
        "finished": 1_700_000_160.0,
        "trigger": "webhook",
        "rollback_of": None,
    }
    prv = envs[2]
    assert prv["branch"] == NASTY_BRANCH
    assert prv["url"] == PREVIEW_URL
    assert prv["ephemeral"] is True
    assert prv["last_deploy"] is None
    assert prv["deployed_commit"] is None


def test_metrics_route(live: Live) -> None:
    """/metrics serves the registry in Prometheus text format."""
    status, headers, body = live.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert value(text, "reconciler_environment_drift", project="mrs-staging") == 2
    assert value(text, "reconciler_docker_up") == 1


def test_status_page(live: Live) -> None:
    """/ is a self-refreshing HTML page with every environment, the preview link and the failure message."""
    status, headers, body = live.request("GET", "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["content-security-policy"]
    page = body.decode()
    assert re.search(r'<meta http-equiv="refresh" content="\d+">', page)
    for project in ("mrs-production", "mrs-staging", "test-feature-login"):
        assert project in page
    assert f'href="{PREVIEW_URL}"' in page
    assert html.escape(FAILURE) in page
    assert "<script>" not in page
    assert html.escape(NASTY_BRANCH) in page


def test_routes_agree(live: Live) -> None:
    """/, /api/environments and /metrics report the same sync, health and drift for each environment."""
    envs = json.loads(live.request("GET", "/api/environments")[2])
    text = live.request("GET", "/metrics")[2].decode()
    page = live.request("GET", "/")[2].decode()
    for env in envs:
        key = {"app": env["app"], "environment": env["environment"], "project": env["project"]}
        assert value(text, "reconciler_environment_out_of_sync", **key) == (env["sync"] == "OutOfSync")
        assert value(text, "reconciler_environment_health", **key, status=env["health"]) == 1
        assert value(text, "reconciler_environment_drift", **key) == len(env["drifts"])
        row = re.search(rf'<tr id="env-mrs-{env["project"]}">(.*?)</tr>', page, re.S)
        assert row, env["project"]
        assert f">{env['sync']}<" in row.group(1)
        assert f">{env['health']}<" in row.group(1)
        for drift in env["drifts"]:
            assert f">{drift['reason']}<" in row.group(1)


def test_unknown_path_and_wrong_method(live: Live) -> None:
    """Unknown paths get 404; known paths with the wrong method get 405 and an Allow header."""
    assert live.request("GET", "/nope")[0] == 404
    status, headers, _ = live.request("POST", "/metrics", b"x")
    assert status == 405
    assert headers["allow"] == "GET"
    status, headers, _ = live.request("GET", "/hooks/github")
    assert status == 405
    assert headers["allow"] == "POST"
    assert live.request("DELETE", "/api/environments")[0] == 405


def test_query_strings_are_ignored(live: Live) -> None:
    """A query string does not change the route (Prometheus and browsers add them)."""
    assert live.request("GET", "/healthz?probe=1")[0] == 200


def test_keep_alive_connection_serves_several_requests(live: Live) -> None:
    """Several requests on one HTTP/1.1 connection each get their answer."""
    conn = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=10)
    try:
        for path in ("/healthz", "/api/environments", "/metrics", "/nope"):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == (404 if path == "/nope" else 200)
    finally:
        conn.close()


def test_failure_in_the_view_is_a_plain_500(live: Live) -> None:
    """An exception inside the daemon gives a one-line 500 to the client, never a traceback."""

    def broken() -> list[object]:
        raise RuntimeError("secret internal detail")

    live.view.environments = broken  # type: ignore[method-assign,assignment]
    for path in ("/", "/api/environments", "/metrics"):
        status, _, body = live.request("GET", path)
        assert status == 500
        assert json.loads(body) == {"error": "internal error"}
        assert b"Traceback" not in body
        assert b"secret internal detail" not in body


def test_port_zero_and_url(live: Live) -> None:
    """serve(port=0) picks a free port and reports it."""
    assert live.server.port > 0
    assert live.server.url == f"http://127.0.0.1:{live.server.port}"


def test_address_in_use_is_a_config_error(live: Live) -> None:
    """Binding a port already in use raises ConfigError naming the address and the `listen` key."""
    view = StaticView()
    with pytest.raises(ConfigError, match=rf"127\.0\.0\.1:{live.server.port}.*") as err:
        serve(view, Metrics(view), "127.0.0.1", live.server.port)
    assert "listen" in str(err.value)


def test_stop_closes_the_socket() -> None:
    """After stop(), the port no longer accepts connections."""
    view = StaticView([production(), staging()])
    server = serve(view, Metrics(view), "127.0.0.1", 0)
    port = server.port
    server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_suspended_and_error_show_on_the_page(live: Live) -> None:
    """A suspended environment's reason and an environment-level error appear on the page."""
    live.view.set_environments(
        [
            dataclasses.replace(production(), suspended=True, suspend_reason="manual hotfix in progress"),
            dataclasses.replace(staging(), error="git ls-remote failed: connection refused"),
        ]
    )
    page = live.request("GET", "/")[2].decode()
    assert "suspended" in page
    assert "manual hotfix in progress" in page
    assert "git ls-remote failed: connection refused" in page
    assert samples(live.request("GET", "/metrics")[2].decode())
