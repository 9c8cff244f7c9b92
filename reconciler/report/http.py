"""The daemon's HTTP server: /metrics, /healthz, /api/environments, the status page and push webhooks.

The daemon calls ``serve(view, metrics, host, port)`` and ``.stop()`` on the handle at shutdown. Standard
library only (a thread per request); every answer is built from the view at request time and names the
reconciler instance it comes from (``X-Reconciler-Instance``), so `reconciler status` can tell ours apart.
"""

from __future__ import annotations

import io
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import structlog

from reconciler.config.http_auth import HttpAuth
from reconciler.errors import ConfigError, Location
from reconciler.report import auth
from reconciler.report.api import environments_json
from reconciler.report.metrics import Metrics
from reconciler.report.page import render_page
from reconciler.report.view import DaemonView
from reconciler.report.webhooks import MAX_BODY, PROVIDERS, HookResponse, ReplayGuard, WebhookHandler

log = structlog.get_logger("reconciler.http")

REQUEST_TIMEOUT: Final = 10.0  # seconds a client may take per socket read
BODY_SECONDS: Final = 30.0  # and for a whole webhook body: a client trickling bytes can't pin a thread
# After refusing an oversized body, read and drop at most this much for at most this long, so the client
# sees our 413 instead of a connection reset (nginx's "lingering close").
_DRAIN_BYTES: Final = 4 * MAX_BODY
_DRAIN_SECONDS: Final = 2.0
_SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_PAGE_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
# The instance id (state_dir's `instance-id`) of the daemon answering, on every response: another
# configuration's daemon may listen on the address a configuration names.
INSTANCE_HEADER: Final = "X-Reconciler-Instance"


@dataclass
class ServerHandle:
    """A running server: where it listens, and how to stop it."""

    host: str
    port: int
    _server: ThreadingHTTPServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting requests and close the socket; requests in flight finish on their threads."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


MAX_HANDLERS: Final = 64  # requests served at once; past that a client gets an immediate 503
HEADER_SECONDS: Final = 15.0  # for a request line and headers in all: slow-loris clients are cut off
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
)
# A client that hangs up or stalls is its own problem, not ours: logged at debug, never as a traceback.
_CLIENT_GONE: Final = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _Server(ThreadingHTTPServer):
    """A thread per request, at most ``max_handlers`` at once."""

    daemon_threads = True
    allow_reuse_address = True
    max_handlers = MAX_HANDLERS

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_handlers)
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:  # a few bytes into a fresh socket's empty buffer: never blocks the accept loop
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            log.warning(
                "http server busy: request refused", client=client_address[0], limit=self.max_handlers
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, _CLIENT_GONE):
            log.debug("http client went away", client=client_address[0], error=type(error).__name__)
        else:
            log.error("http connection failed", client=client_address[0], exc_info=True)


class _DeadlineReader(io.RawIOBase):
    """The request's socket, read with a deadline: each read waits at most until ``deadline``, so a client
    trickling a byte at a time cannot stretch headers (or a body) past it."""

    def __init__(self, sock: socket.socket, per_read: float) -> None:
        self.sock = sock
        self.per_read = per_read
        self.deadline = time.monotonic() + HEADER_SECONDS

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the client took too long to send its request")
        self.sock.settimeout(min(self.per_read, remaining))
        return self.sock.recv_into(buffer)


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve(
    view: DaemonView,
    metrics: Metrics,
    host: str = "127.0.0.1",
    port: int = 9469,
    *,
    instance: str | None = None,
    http_auth: HttpAuth | None = None,
) -> ServerHandle:
    """Start the server on a daemon thread; ``port=0`` picks a free port (see ``handle.port``).

    ``instance``: the id sent as ``X-Reconciler-Instance``; by default the view's ``instance`` attribute
    if it has one (the daemon does), else no such header. Raises ConfigError when the address cannot be
    bound (in use, not local...).
    """
    if instance is None:
        found = getattr(view, "instance", None)
        instance = found if isinstance(found, str) and found else None
    hooks = WebhookHandler(view, metrics, ReplayGuard())
    handler = _make_handler(view, metrics, hooks, instance)
    handler.auth = http_auth
    server_class = _Server6 if ":" in host else _Server
    try:
        server = server_class((host, port), handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            Location(key="listen"),
            hint="choose a free local address in `listen:`, e.g. 127.0.0.1:9469",
        ) from exc
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="reconciler-http", daemon=True
    )
    thread.start()
    bound_port = int(server.server_address[1])
    log.info("http server listening", host=host, port=bound_port)
    return ServerHandle(host, bound_port, server, thread)


Route = Callable[["_Handler"], None]


class _Handler(BaseHTTPRequestHandler):
    """One request. Class attributes are filled in by ``_make_handler``."""

    view: DaemonView
    metrics: Metrics
    hooks: WebhookHandler
    instance: str | None = None
    auth: HttpAuth | None = None  # http_auth: checked before any route but /healthz and webhooks
    server_version = "reconciler"
    sys_version = ""
    timeout = REQUEST_TIMEOUT
    protocol_version = "HTTP/1.1"
    header_seconds = HEADER_SECONDS
    _responded = False
    _reader: _DeadlineReader

    # -- bounds ---------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self._reader = _DeadlineReader(self.connection, self.timeout or REQUEST_TIMEOUT)
        self.rfile = io.BufferedReader(self._reader, 65536)

    def handle_one_request(self) -> None:
        # the clock for a request line and headers starts when we wait for them (keep-alive included)
        self._reader.deadline = time.monotonic() + self.header_seconds
        try:
            super().handle_one_request()
        except _CLIENT_GONE as exc:
            log.debug("http client went away", client=self.client_address[0], error=type(exc).__name__)
            self.close_connection = True

    # -- dispatch -------------------------------------------------------------------------------------

    def _routes(self) -> dict[str, dict[str, Route]]:
        routes: dict[str, dict[str, Route]] = {
            "/": {"GET": _Handler._page},
            "/metrics": {"GET": _Handler._metrics},
            "/healthz": {"GET": _Handler._healthz},
            "/api/environments": {"GET": _Handler._environments},
        }
        for provider in PROVIDERS:
            routes[f"/hooks/{provider}"] = {"POST": _Handler._hook}
        return routes

    def _dispatch(self) -> None:
        self._responded = False
        self._reader.deadline = time.monotonic() + BODY_SECONDS  # headers are in: the body has its own
        # A body we won't read would be parsed as the next request on this keep-alive connection.
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            self.close_connection = True
        try:
            path = self.path.split("?", 1)[0]
            methods = self._routes().get(path)
            if not auth.allows(self.auth, path, self.headers.get("Authorization")):
                assert self.auth is not None
                self._send_json(401, {"error": "authentication required"}, auth.challenge(self.auth))
            elif methods is None:
                self._send_json(404, {"error": "not found"})
            elif self.command not in methods:
                allow = ", ".join(sorted(methods))
                self._send_json(405, {"error": f"method not allowed; use {allow}"}, {"Allow": allow})
            else:
                methods[self.command](self)
        except _CLIENT_GONE:
            self.close_connection = True  # nobody to answer
        except Exception:
            # Log the traceback for operators; the client only ever sees a one-line 500.
            log.exception("http request failed", method=self.command, path=self.path)
            if not self._responded:
                self.close_connection = True
                self._send_json(500, {"error": "internal error"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    # -- routes ---------------------------------------------------------------------------------------

    def _page(self) -> None:
        envs = self.view.environments()
        page = render_page(
            envs, docker_up=self.view.docker_up(), generated_at=time.time(), hosts_up=self.view.hosts_up()
        )
        self._send(200, page.encode(), "text/html; charset=utf-8", {"Content-Security-Policy": _PAGE_CSP})

    def _metrics(self) -> None:
        body, content_type = self.metrics.exposition()
        self._send(200, body, content_type)

    def _healthz(self) -> None:
        alive = self.view.alive()
        self._send(200 if alive else 503, b"ok\n" if alive else b"unhealthy\n", "text/plain; charset=utf-8")

    def _environments(self) -> None:
        self._send_json(200, environments_json(self.view.environments()))

    def _hook(self) -> None:
        provider = self.path.split("?", 1)[0].rsplit("/", 1)[1]
        # Length first, so an oversized body is refused before a byte of it is read.
        lengths = self.headers.get_all("Content-Length") or []
        if "Transfer-Encoding" in self.headers:
            return self._refuse(provider, 411, "bad_request", "send a Content-Length", _DRAIN_BYTES)
        if not lengths:  # and no Transfer-Encoding: there is no body to drop
            return self._refuse(provider, 411, "bad_request", "send a Content-Length", 0)
        if len(lengths) > 1 or not lengths[0].strip().isdigit():
            return self._refuse(provider, 400, "bad_request", "bad Content-Length", _DRAIN_BYTES)
        length = int(lengths[0])
        if length > MAX_BODY:
            return self._refuse(provider, 413, "too_large", f"body over {MAX_BODY} bytes refused", length)
        body = self._read_body(length)
        if body is None:
            return self._refuse(provider, 400, "bad_request", "body incomplete or too slow", 0)
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.hooks.handle(provider, headers, body)
        log.info("webhook", provider=provider, status=response.status, result=response.result)
        self._answer_hook(response)

    def _refuse(self, provider: str, status: int, result: str, message: str, unread: int) -> None:
        """Answer without reading the body, then drop up to ``unread`` bytes of it and close."""
        self.close_connection = True
        self._answer_hook(self.hooks.reject(provider, status, result, message))
        if unread:
            self._drain(unread)

    def _read_body(self, length: int) -> bytes | None:
        """Exactly ``length`` bytes within BODY_SECONDS, or None (short body, stalled or gone client)."""
        deadline = time.monotonic() + BODY_SECONDS
        chunks: list[bytes] = []
        left = length
        try:
            while left > 0:
                if time.monotonic() > deadline:
                    return None
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    return None
                chunks.append(chunk)
                left -= len(chunk)
        except OSError:
            return None
        return b"".join(chunks)

    def _answer_hook(self, response: HookResponse) -> None:
        self._send_json(response.status, response.body)

    def _drain(self, length: int) -> None:
        """Read and drop part of a refused body, bounded in bytes and time; then the connection closes."""
        self.wfile.flush()
        deadline = time.monotonic() + _DRAIN_SECONDS
        left = min(length, _DRAIN_BYTES)
        try:
            self.connection.settimeout(_DRAIN_SECONDS)
            while left > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    # -- responses ------------------------------------------------------------------------------------

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = (json.dumps(data, indent=1, sort_keys=False) + "\n").encode()
        self._send(status, body, "application/json", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self._responded = True
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def end_headers(self) -> None:
        # Here rather than in _send, so the standard library's own error answers (a malformed request
        # line, an unknown method) name the instance too.
        if self.instance is not None:
            self.send_header(INSTANCE_HEADER, self.instance)
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http", client=self.client_address[0], message=format % args)


def _make_handler(
    view: DaemonView, metrics: Metrics, hooks: WebhookHandler, instance: str | None
) -> type[_Handler]:
    attrs = {"view": view, "metrics": metrics, "hooks": hooks, "instance": instance}
    return type("Handler", (_Handler,), attrs)
