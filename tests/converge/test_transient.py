"""Transient vs permanent at the Docker boundary: the real engine behind tests/dockerproxy.py, and a real pull
from a fake registry on loopback (Docker pulls from 127.0.0.0/8 over plain HTTP without configuration)."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconciler.engine import DockerEngine, EngineError, EngineUnavailable, pull_retry_reason
from reconciler.errors import DockerError, PermanentError, TransientError
from tests.converge.conftest import BUSYBOX, docker
from tests.dockerproxy import DockerProxy

pytestmark = pytest.mark.docker


@pytest.fixture
def proxy() -> Iterator[DockerProxy]:
    p = DockerProxy().start()
    p.start()  # idempotent
    yield p
    p.stop()


@pytest.fixture
def name() -> Iterator[str]:
    """A unique container name; whatever carries it is removed afterwards."""
    n = f"ttr-{uuid.uuid4().hex[:10]}"
    yield n
    ids = docker("ps", "-aq", "--filter", f"name=^{n}").stdout.split()
    if ids:
        docker("rm", "-f", *ids, check=False)


def exists(container: str) -> bool:
    return docker("ps", "-aq", "--filter", f"name=^{container}$").stdout.strip() != ""


def body() -> dict[str, Any]:
    return {"Image": BUSYBOX, "Cmd": ["true"]}


# --- the Engine answers 5xx, 429, nothing, or is gone ---


@pytest.mark.parametrize(
    ("status", "reason"), [(500, "docker_5xx"), (503, "docker_5xx"), (429, "docker_429")]
)
def test_engine_5xx_and_429_are_transient(proxy: DockerProxy, name: str, status: int, reason: str) -> None:
    """A 5xx or 429 from the Engine is a transient DockerError with reason and status; nothing is created."""
    engine = DockerEngine(base_url=proxy.url)
    rule = proxy.fail("POST", r"/containers/create", status=status)
    with pytest.raises(DockerError) as err:
        engine.create_container(name, body())
    assert isinstance(err.value, EngineUnavailable) and not isinstance(err.value, PermanentError)
    assert (err.value.reason, err.value.status) == (reason, status)
    assert name in str(err.value)
    assert rule.hits == 1 and not exists(name)
    proxy.clear()
    engine.create_container(name, body())  # the same call, once the Engine recovers
    assert exists(name)


def test_start_failure_keeps_status(proxy: DockerProxy, name: str) -> None:
    """A 500 answering a start keeps its HTTP status, so converge can judge a fresh container's start."""
    engine = DockerEngine(base_url=proxy.url)
    engine.create_container(name, body())
    proxy.fail("POST", rf"/containers/{name}/start")
    with pytest.raises(EngineUnavailable) as err:
        engine.start_container(name)
    assert (err.value.reason, err.value.status) == ("docker_5xx", 500)


def test_engine_4xx_stays_permanent(name: str) -> None:
    """A request the real Engine refuses with a 4xx (a bad container name) is a permanent EngineError."""
    engine = DockerEngine()
    with pytest.raises(EngineError) as err:
        engine.create_container(f"{name}/bad", body())
    assert err.value.status == 400 and not isinstance(err.value, TransientError)


def test_hang_beyond_client_timeout_is_timeout(proxy: DockerProxy, name: str) -> None:
    """An Engine silent past the client timeout gives reason "timeout"; nothing is created."""
    engine = DockerEngine(base_url=proxy.url, timeout=1)
    engine.list_containers()  # connected: the hang hits the create itself
    rule = proxy.hang("POST", r"/containers/create")
    with pytest.raises(DockerError) as err:
        engine.create_container(name, body())
    assert err.value.reason == "timeout"
    rule.release()
    assert rule.hits == 1 and not exists(name)
    engine.create_container(name, body())
    assert exists(name)


def test_refused_socket_is_connection(proxy: DockerProxy, name: str) -> None:
    """An Engine refusing connections gives reason "connection", connected or not; calls pass again after."""
    engine = DockerEngine(base_url=proxy.url)
    engine.list_containers()
    with proxy.outage():
        with pytest.raises(DockerError) as err:
            engine.create_container(name, body())
        assert err.value.reason == "connection"
        with pytest.raises(DockerError) as fresh:
            DockerEngine(base_url=proxy.url).list_containers()  # the first call asks the API version
        assert fresh.value.reason == "connection"
    assert not exists(name)
    engine.create_container(name, body())
    assert exists(name)


def test_missing_socket_is_connection(tmp_path: Any) -> None:
    """A Docker socket that does not exist gives reason "connection"."""
    engine = DockerEngine(base_url=f"unix://{tmp_path}/docker.sock")
    with pytest.raises(DockerError) as err:
        engine.list_containers()
    assert err.value.reason == "connection"


def test_dropped_connection_is_connection(proxy: DockerProxy, name: str) -> None:
    """A connection the Engine drops without answering gives reason "connection"."""
    engine = DockerEngine(base_url=proxy.url)
    engine.list_containers()
    proxy.add("POST", r"/containers/create", action="drop", times=1)
    with pytest.raises(DockerError) as err:
        engine.create_container(name, body())
    assert err.value.reason == "connection" and not exists(name)


# --- pulls ---


class Registry:
    """A fake registry on 127.0.0.1: ``answer(method, path) -> (status, errors code)``."""

    def __init__(self, answer: Any) -> None:
        outer = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def reply(self) -> None:
                outer.requests.append(f"{self.command} {self.path}")
                status, code = answer(self.command, self.path)
                data = json.dumps({"errors": [{"code": code, "message": code.lower()}]} if code else {})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data.encode())

            do_GET = do_HEAD = reply

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry() -> Iterator[Any]:
    made: list[Registry] = []

    def make(answer: Any) -> Registry:
        made.append(Registry(answer))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (429, "TOOMANYREQUESTS", "registry_throttled"),
        (503, "UNAVAILABLE", "registry_5xx"),
        (500, "", "registry_5xx"),
    ],
)
def test_failing_registry_is_transient(registry: Any, status: int, code: str, reason: str) -> None:
    """A registry answering 429 or 5xx to everything makes the real pull transient, with the reason."""
    reg = registry(lambda method, path: (status, code))
    with pytest.raises(DockerError) as err:
        DockerEngine().pull_image(f"127.0.0.1:{reg.port}/x:1")
    assert err.value.reason == reason
    assert any("/v2/" in r for r in reg.requests)


def test_missing_manifest_is_permanent(registry: Any) -> None:
    """A registry that knows no such tag (404 manifest unknown) makes the pull a permanent EngineError."""
    reg = registry(lambda method, path: (200, "") if path == "/v2/" else (404, "MANIFEST_UNKNOWN"))
    with pytest.raises(EngineError) as err:
        DockerEngine().pull_image(f"127.0.0.1:{reg.port}/x:1")
    assert err.value.status == 404 and "manifest unknown" in str(err.value)


def test_unreachable_registry_is_connection() -> None:
    """A registry port nobody listens on makes the pull transient with reason "connection"."""
    with socket.socket() as held:  # bound, never listening: connecting is refused, and nobody takes the port
        held.bind(("127.0.0.1", 0))
        with pytest.raises(DockerError) as err:
            DockerEngine().pull_image(f"127.0.0.1:{held.getsockname()[1]}/x:1")
    assert err.value.reason == "connection"


def test_unknown_registry_host_is_dns() -> None:
    """A registry host that does not resolve (.invalid never does) makes the pull transient: "dns"."""
    with pytest.raises(DockerError) as err:
        DockerEngine().pull_image(f"ttr-{uuid.uuid4().hex[:8]}.invalid/x:1")
    assert err.value.reason == "dns"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("toomanyrequests: You have reached your pull rate limit.", DockerError),
        ("manifest for 127.0.0.1:5000/x:1 not found: manifest unknown: manifest unknown", EngineError),
    ],
)
def test_error_in_pull_stream(proxy: DockerProxy, message: str, expected: type[Exception]) -> None:
    """An `error` message in the middle of a pull stream is judged like an error at its start."""
    chunks = [
        {"status": "Pulling from x", "id": "1"},
        {"errorDetail": {"message": message}, "error": message},
    ]
    proxy.fail("POST", r"/images/create", status=200, body=chunks)
    with pytest.raises(expected) as err:
        DockerEngine(base_url=proxy.url).pull_image(f"ttr-{uuid.uuid4().hex[:8]}.example/x:1")
    if expected is DockerError:
        assert getattr(err.value, "reason", None) == "registry_throttled"


def test_pull_stream_cut_short_is_connection(proxy: DockerProxy) -> None:
    """A pull stream that ends before the engine says it finished is transient, not "no such image"."""
    proxy.fail("POST", r"/images/create", status=200, body=[{"status": "Pulling from x", "id": "1"}])
    with pytest.raises(DockerError) as err:
        DockerEngine(base_url=proxy.url).pull_image(f"ttr-{uuid.uuid4().hex[:8]}.example/x:1")
    assert err.value.reason == "connection"


def test_events_stream_through_proxy(proxy: DockerProxy, name: str) -> None:
    """Streams relay through the proxy as they happen: a container's create event arrives while streaming."""
    engine = DockerEngine(base_url=proxy.url)
    since = time.time()
    engine.create_container(name, body())
    events = engine.events(since - 1, time.time() + 30, {"type": ["container"], "container": [name]})
    first = next(iter(events))
    assert first["Action"] == "create" and first["Actor"]["Attributes"]["name"] == name


# --- the message classifier, on real Docker and registry messages ---


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            "toomanyrequests: You have reached your pull rate limit. You may increase the limit by "
            "authenticating and upgrading: https://www.docker.com/increase-rate-limit",
            "registry_throttled",
        ),
        ("received unexpected HTTP status: 429 Too Many Requests", "registry_throttled"),
        ("received unexpected HTTP status: 503 Service Unavailable", "registry_5xx"),
        ("received unexpected HTTP status: 500 Internal Server Error", "registry_5xx"),
        ("received unexpected HTTP status: 502 Bad Gateway", "registry_5xx"),
        ("received unexpected HTTP status: 504 Gateway Time-out", "registry_5xx"),
        (
            "error pulling image configuration: download failed after attempts=6: "
            "received unexpected HTTP status: 504 Gateway Timeout",
            "registry_5xx",
        ),
        (
            'Get "https://registry-1.docker.io/v2/": net/http: request canceled while waiting for '
            "connection (Client.Timeout exceeded while awaiting headers)",
            "timeout",
        ),
        ('Get "https://registry-1.docker.io/v2/": net/http: TLS handshake timeout', "timeout"),
        (
            'Get "https://registry.example.com/v2/": dial tcp 10.1.2.3:443: i/o timeout',
            "timeout",
        ),
        ("context deadline exceeded", "timeout"),
        (
            'Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
            "connection",
        ),
        ("read tcp 10.0.0.2:40312->104.18.121.25:443: read: connection reset by peer", "connection"),
        ("unexpected EOF", "connection"),
        (
            'Get "https://nope.invalid/v2/": dial tcp: lookup nope.invalid on 10.255.255.53:53: no such host',
            "dns",
        ),
        (
            'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on '
            "127.0.0.53:53: server misbehaving",
            "dns",
        ),
        (
            'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: '
            "Temporary failure in name resolution",
            "dns",
        ),
        (
            'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on '
            "192.168.1.1:53: read udp 192.168.1.5:51234->192.168.1.1:53: i/o timeout",
            "dns",
        ),
        ("manifest for busybox:nope not found: manifest unknown: manifest unknown", None),
        (
            "pull access denied for nosuchimage, repository does not exist or may require 'docker login': "
            "denied: requested access to the resource is denied",
            None,
        ),
        ("unauthorized: authentication required", None),
        ("invalid reference format", None),
        ("invalid reference format: repository name must be lowercase", None),
        ("no matching manifest for linux/arm64/v8 in the manifest list entries", None),
        (
            'Get "https://registry.example.com/v2/": x509: certificate signed by unknown authority',
            None,
        ),
        ("something nobody has seen before", None),
    ],
)
def test_pull_retry_reason(message: str, reason: str | None) -> None:
    """Registry messages map to a retry reason, and messages retrying cannot fix map to None."""
    assert pull_retry_reason(message) == reason
