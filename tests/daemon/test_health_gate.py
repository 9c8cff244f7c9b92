"""The health gate against real HTTP servers: a deploy succeeds only once the URL answers the expected
status with the environment's Host header; otherwise it fails, and a persistent environment rolls back."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.healthgate import GateCheck, HealthGateFailed, wait_healthy
from reconciler.status import Result
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

GOOD_HOST = "good.example.test"


class _HostOnly(BaseHTTPRequestHandler):
    """200 only for the right Host (as a Django app with ALLOWED_HOSTS would); /moved redirects."""

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/")
        else:
            self.send_response(200 if self.headers.get("Host") == GOOD_HOST else 421)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1 of this host; yields its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HostOnly)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gate_sends_the_host_header(server: str) -> None:
    """The right Host passes; a wrong one fails naming the URL, the Host and the last status."""
    assert wait_healthy(GateCheck(f"{server}/", GOOD_HOST, 200, 5.0)) == 1
    with pytest.raises(HealthGateFailed) as info:
        wait_healthy(GateCheck(f"{server}/", "wrong.example.test", 200, 1.0))
    message = str(info.value)
    assert f"{server}/" in message and "wrong.example.test" in message and "last answer: HTTP 421" in message


def test_gate_does_not_follow_redirects(server: str) -> None:
    """A redirect is the answer: it passes only when 302 is what is expected."""
    with pytest.raises(HealthGateFailed, match="HTTP 302"):
        wait_healthy(GateCheck(f"{server}/moved", GOOD_HOST, 200, 1.0))
    assert wait_healthy(GateCheck(f"{server}/moved", GOOD_HOST, 302, 5.0)) == 1


def test_gate_names_the_last_error() -> None:
    """Nothing listening: the failure names the connection error, not a status."""
    url = f"http://127.0.0.1:{_free_port()}/"
    with pytest.raises(HealthGateFailed, match="last error: ConnectionRefusedError"):
        wait_healthy(GateCheck(url, None, 200, 1.0))


@pytest.mark.docker
def test_deploy_passes_the_gate_on_a_published_port(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """busybox httpd published on 127.0.0.1: the deploy succeeds once it answers 200."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    port = _free_port()
    production = {
        "override": {"services": {"web": {"ports": [f"127.0.0.1:{port}:8000"]}}},
        "health_gate": {"url": f"http://127.0.0.1:{port}/", "host": "{HOST}", "timeout": "30s"},
    }
    daemon = _daemon(load_config(write_config(tmp_path, repo.bare, prefix, envs={"production": production})))
    sync_all(daemon)
    record = daemon.state.history(project)[0]
    assert record.result is Result.SUCCESS, record.error
    assert containers(docker_client, project)["web"].status == "running"
    daemon.queue.shutdown()


@pytest.mark.docker
def test_failing_gate_rolls_back(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any, server: str
) -> None:
    """`host: "{HOST}"` takes the revision's HOST variable (here from the repository's .env): a commit
    that changes it to a host the server refuses fails the gate, and production rolls back."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    repo.commit("master", {".env": f"HOST={GOOD_HOST}\n"})
    production = {
        "env": {},
        "health_gate": {"url": f"{server}/", "host": "{HOST}", "timeout": "3s"},
    }
    daemon = _daemon(load_config(write_config(tmp_path, repo.bare, prefix, envs={"production": production})))
    sync_all(daemon)
    good = daemon.state.last_applied(project)
    assert daemon.state.history(project)[0].result is Result.SUCCESS

    bad = repo.commit("master", {".env": "HOST=bad.example.test\n"})
    sync_all(daemon)
    history = daemon.state.history(project)
    assert history[0].trigger == "rollback" and history[0].result is Result.SUCCESS
    assert history[0].commit == good and history[0].rollback_of == bad
    assert history[1].commit == bad and history[1].result is Result.FAILURE
    assert f"{server}/" in history[1].error and "bad.example.test" in history[1].error
    assert "last answer: HTTP 421" in history[1].error
    web = containers(docker_client, project)["web"]
    assert web.status == "running" and f"HOST={GOOD_HOST}" in web.attrs["Config"]["Env"]
    daemon.queue.shutdown()
