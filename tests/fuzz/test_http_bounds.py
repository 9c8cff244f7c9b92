"""The HTTP server with real sockets: slow clients are cut off, handler threads are bounded, and a client
that goes away is not an error in the log."""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from reconciler.report import Metrics, ServerHandle, StaticView, serve
from reconciler.report.http import _Handler, _Server


@contextlib.contextmanager
def http_logs() -> Iterator[list[dict[str, Any]]]:
    """What the HTTP server logs meanwhile. Its module logger gets a fresh one made under capture_logs:
    an earlier in-process command (`reconciler.cli.main`) configures structlog to cache loggers on first
    use, after which capture_logs alone would see nothing."""
    import reconciler.report.http as http_module

    with capture_logs() as logs, pytest.MonkeyPatch.context() as patch:
        patch.setattr(http_module, "log", structlog.get_logger("reconciler.http"))
        yield logs


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    monkeypatch.setattr(_Handler, "header_seconds", 1.0)
    monkeypatch.setattr(_Server, "max_handlers", 3)
    view = StaticView()
    handle = serve(view, Metrics(view), "127.0.0.1", 0)
    try:
        yield handle
    finally:
        handle.stop()


def healthz(server: ServerHandle) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def half_request(server: ServerHandle) -> socket.socket:
    """A client that sends the start of a request, then nothing."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (bounded) for the server to answer or hang up: True once it did."""
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False


def wait_for(predicate: Any, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def idle(server: ServerHandle) -> bool:
    """Every handler thread has finished."""
    return server._server._slots._value == _Server.max_handlers  # type: ignore[attr-defined]


def test_slow_client_does_not_block_others_and_is_cut_off(server: ServerHandle) -> None:
    """Half a request pins nothing: /healthz answers meanwhile, and the stalled client is disconnected once
    its header time is up."""
    slow = half_request(server)
    try:
        assert healthz(server) == 200
        assert closed_by_server(slow)
    finally:
        slow.close()


def test_trickling_client_is_cut_off(server: ServerHandle) -> None:
    """A client sending one header byte at a time (each read well within the socket timeout) still has one
    deadline for its whole request."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        cut = False
        for _ in range(200):  # 200 bytes, 50 ms apart: 10 s if nothing cut it
            try:
                sock.sendall(b"X")
            except OSError:
                cut = True
                break
            time.sleep(0.05)
        assert cut or closed_by_server(sock)
    finally:
        sock.close()


def test_handler_threads_are_bounded(server: ServerHandle) -> None:
    """With every handler busy, a new client gets an immediate 503; once the slow ones are cut off, the
    server answers again."""
    slow = [half_request(server) for _ in range(3)]
    try:
        assert wait_for(lambda: server._server._slots._value == 0)  # type: ignore[attr-defined]
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert extra.recv(4096).startswith(b"HTTP/1.1 503")
        extra.close()
        assert all(closed_by_server(sock) for sock in slow)
        assert wait_for(lambda: idle(server))
        assert healthz(server) == 200
    finally:
        for sock in slow:
            sock.close()


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a client that crashed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_client_going_away_is_not_an_error(server: ServerHandle) -> None:
    """A client resetting mid-request or mid-body is logged at debug at most: no error-level entry."""
    with http_logs() as logs:
        for request in (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"{" * 10,
            b"GET /metri",
        ):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(request)
            reset(sock)
        assert wait_for(lambda: idle(server))
        assert healthz(server) == 200
    # only the HTTP server's entries: other tests' daemon threads may still be logging in this process
    errors = [
        entry
        for entry in logs
        if entry["log_level"] in ("error", "critical", "exception") and entry["event"].startswith("http")
    ]
    assert errors == []


def test_handle_error_sorts_client_errors_from_ours(server: ServerHandle) -> None:
    """The server's last-resort handler: a vanished client is debug, anything else an error with its trace."""
    with http_logs() as logs:
        for error in (BrokenPipeError(), ConnectionResetError(), TimeoutError(), ValueError("bug")):
            try:
                raise error
            except Exception:
                server._server.handle_error(None, ("127.0.0.1", 1))
    # debug entries show only when the process logs at debug (the daemon's setup in another test may not)
    gone = [entry["log_level"] for entry in logs if entry["event"] == "http client went away"]
    failed = [entry["log_level"] for entry in logs if entry["event"] == "http connection failed"]
    assert set(gone) <= {"debug"} and failed == ["error"]
