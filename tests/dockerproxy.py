"""A test's own Docker Engine in front of the real one: an HTTP proxy on a unix socket that forwards to
/var/run/docker.sock, except for the requests its rules pick, which get a 500 or 429, hang, or are dropped.

Used by tests/converge/test_transient.py and the daemon tests (stdlib only, one thread per connection)::

    proxy = DockerProxy().start()
    rule = proxy.fail("POST", r"/containers/create", status=500, times=1)
    engine = DockerEngine(base_url=proxy.url)
    ...
    assert rule.hits == 1
    proxy.stop()

Every request is parsed (request line, headers, body) so rules apply to each request of a keep-alive
connection; responses are relayed as they arrive (chunked streams: events, pulls, logs) and a 101
upgrade (attach, exec) turns the connection into a plain byte pump.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from io import BufferedReader
from typing import Any

ENGINE_SOCKET = "/var/run/docker.sock"
ACTIONS = ("respond", "hang", "drop", "forward")
_MAX_LINE = 65536


@dataclass(frozen=True)
class Request:
    """One Engine API request as the client sent it."""

    method: str
    target: str  # path and query as sent, e.g. "/v1.41/containers/create?name=x"
    headers: Mapping[str, str]  # names lower-cased
    body: bytes  # de-chunked

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(eq=False)
class Rule:
    """Which requests to interfere with, how, and for how long.

    ``method`` (None: any) and ``path`` (a regex searched in the request target, query included) pick
    requests. ``action``: "respond" answers ``status`` with ``body`` (None: Docker's ``{"message": ...}``; a
    dict: JSON; a list of dicts: a chunked JSON stream like a pull's; str or bytes as is); "hang" holds the
    request, unanswered and never forwarded, until ``release()`` (or the proxy stops), then drops the
    connection; "drop" closes the connection at once; "forward" passes it on (with ``before``, to see or
    delay it). The rule applies ``times`` times (None: unlimited) and only until ``until`` is set (a flag
    the test flips) or ``release()`` is called. ``before(request)`` runs on each match before the action.
    ``hits`` counts the requests it matched.
    """

    method: str | None
    path: str
    action: str = "respond"
    status: int = 500
    body: Any = None
    times: int | None = None
    until: threading.Event | None = None
    before: Callable[[Request], None] | None = None
    hits: int = 0
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}: one of {ACTIONS}")
        re.compile(self.path)

    @property
    def active(self) -> bool:
        if self.released.is_set() or (self.until is not None and self.until.is_set()):
            return False
        return self.times is None or self.hits < self.times

    def matches(self, request: Request) -> bool:
        method_ok = self.method is None or self.method.upper() == request.method
        return method_ok and re.search(self.path, request.target) is not None

    def release(self) -> None:
        """End this rule: hung requests are dropped, later ones pass."""
        self.released.set()


class DockerProxy:
    """An Engine API proxy on its own unix socket (``url``), forwarding to ``upstream`` unless a rule says."""

    def __init__(self, upstream: str = ENGINE_SOCKET) -> None:
        self.upstream = upstream
        self._dir = tempfile.mkdtemp(prefix="dproxy-")  # short: unix socket paths stop at 107 bytes
        self.path = os.path.join(self._dir, "docker.sock")
        self.url = f"unix://{self.path}"
        self.rules: list[Rule] = []
        self.seen: list[Request] = []  # every request, in order of arrival
        self.errors: list[Exception] = []  # exceptions raised by rules' before() hooks
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._stopped = False

    # --- lifecycle ---

    def start(self) -> DockerProxy:
        """Listen (again, after ``refuse()``); a no-op while listening."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("a stopped DockerProxy cannot restart: make a new one")
            if self._listener is not None:
                return self
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.path)
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="dproxy-accept", daemon=True).start()
        return self

    def refuse(self) -> None:
        """An engine outage: stop listening (connecting is refused) and drop every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets = list(self._sockets)
        if listener is not None:
            _shut(listener)  # wakes the accept() blocked on it
        for sock in sockets:
            _shut(sock)

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """``refuse()`` for the duration of the block, then ``start()`` again."""
        self.refuse()
        try:
            yield
        finally:
            self.start()

    def stop(self) -> None:
        """Release every rule, close everything, remove the socket. Idempotent."""
        with self._lock:
            self._stopped = True
            rules = list(self.rules)
        for rule in rules:
            rule.release()
        self.refuse()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DockerProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- rules ---

    def add(self, method: str | None, path: str, **kwargs: Any) -> Rule:
        """Add a rule (see ``Rule``) after the others: the first active matching rule applies."""
        rule = Rule(method, path, **kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def fail(self, method: str | None, path: str, status: int = 500, **kwargs: Any) -> Rule:
        """Answer matching requests with ``status`` (500, 429, ...) without forwarding them."""
        return self.add(method, path, action="respond", status=status, **kwargs)

    def hang(self, method: str | None, path: str, **kwargs: Any) -> Rule:
        """Hold matching requests unanswered until ``rule.release()``."""
        return self.add(method, path, action="hang", **kwargs)

    def remove(self, rule: Rule) -> None:
        rule.release()
        with self._lock:
            if rule in self.rules:
                self.rules.remove(rule)

    def clear(self) -> None:
        """Remove (and release) every rule: everything is forwarded again."""
        with self._lock:
            rules, self.rules[:] = list(self.rules), []
        for rule in rules:
            rule.release()

    def requests(self, method: str | None = None, path: str = "") -> list[Request]:
        """The requests seen so far, filtered like a rule."""
        probe = Rule(method, path, action="forward")
        with self._lock:
            return [r for r in self.seen if probe.matches(r)]

    def _match(self, request: Request) -> Rule | None:
        with self._lock:
            self.seen.append(request)
            for rule in self.rules:
                if rule.active and rule.matches(request):
                    rule.hits += 1
                    return rule
        return None

    # --- serving ---

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                listener.close()
                return  # refuse() or stop()
            if not self._track(client):
                _shut(client)
                continue
            threading.Thread(target=self._serve, args=(client,), name="dproxy-conn", daemon=True).start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._listener is None:
                return False  # refused meanwhile
            self._sockets.add(sock)
            return True

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        files: list[BufferedReader] = []
        cin = client.makefile("rb")
        uin: BufferedReader | None = None
        files.append(cin)
        try:
            while True:
                raw_head, request = _read_request(cin)
                if request is None:
                    return  # the client closed the connection
                rule = self._match(request)
                if rule is not None and rule.before is not None:
                    try:
                        rule.before(request)
                    except Exception as exc:  # the test's own hook failed: say so, loudly
                        self.errors.append(exc)
                        client.sendall(_response(599, {"message": f"dockerproxy: before() failed: {exc!r}"}))
                        continue
                if rule is not None and rule.action == "respond":
                    client.sendall(_response(rule.status, rule.body))
                    continue
                if rule is not None and rule.action == "hang":
                    rule.released.wait()
                    return
                if rule is not None and rule.action == "drop":
                    return
                if upstream is None or uin is None:
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    upstream.connect(self.upstream)
                    if not self._track(upstream):
                        return
                    uin = upstream.makefile("rb")
                    files.append(uin)
                upstream.sendall(raw_head + request.body)
                outcome = _relay_response(uin, client, request.method)
                if outcome == "upgrade":
                    _pump(cin, client, uin, upstream)
                    return
                if outcome == "close":
                    return
        except (OSError, ValueError):
            return  # a side went away mid-request: the other side sees its connection close
        finally:
            for f in files:
                with contextlib.suppress(OSError):
                    f.close()
            for sock in (client, upstream):
                if sock is not None:
                    _shut(sock)
                    with self._lock:
                        self._sockets.discard(sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _read_head(f: BufferedReader) -> list[bytes] | None:
    """The lines of an HTTP head (without the blank line), or None at a clean end of the stream."""
    lines: list[bytes] = []
    while True:
        line = f.readline(_MAX_LINE)
        if not line:
            if lines:
                raise ValueError("connection closed inside an HTTP head")
            return None
        if line in (b"\r\n", b"\n"):
            if not lines:
                continue  # tolerated before a request line (RFC 9112 2.2)
            return lines
        lines.append(line)


def _headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def _read_request(f: BufferedReader) -> tuple[bytes, Request | None]:
    lines = _read_head(f)
    if lines is None:
        return b"", None
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    headers = _headers(lines)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b"".join(_chunks(f, None))
    else:
        body = _read_exact(f, int(headers.get("content-length") or 0))
    # The body travels on as Content-Length: drop the chunked framing from the head.
    kept = [ln for ln in lines[1:] if not ln.lower().startswith((b"transfer-encoding:", b"content-length:"))]
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        kept.append(f"Content-Length: {len(body)}\r\n".encode())
    head = b"".join([lines[0], *kept, b"\r\n"])
    return head, Request(method.upper(), target, headers, body)


def _read_exact(f: BufferedReader, n: int) -> bytes:
    data = f.read(n) if n else b""
    if len(data) != n:
        raise ValueError("connection closed inside an HTTP body")
    return data


def _chunks(f: BufferedReader, relay: socket.socket | None) -> Iterator[bytes]:
    """The data of a chunked body, each chunk relayed as it arrives (framing included) when ``relay``."""
    while True:
        line = f.readline(_MAX_LINE)
        if not line:
            raise ValueError("connection closed inside a chunked body")
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            trailer = [line]
            while (end := f.readline(_MAX_LINE)) not in (b"\r\n", b"\n", b""):
                trailer.append(end)
            trailer.append(end or b"\r\n")
            if relay is not None:
                relay.sendall(b"".join(trailer))
            return
        data = _read_exact(f, size + 2)  # the chunk and its CRLF
        if relay is not None:
            relay.sendall(line + data)
        yield data[:-2]


def _relay_response(uin: BufferedReader, client: socket.socket, method: str) -> str:
    """Relay one response: "keep" the connection, "close" it, or "upgrade" it to a byte pump."""
    while True:
        lines = _read_head(uin)
        if lines is None:
            raise ValueError("the engine closed the connection without answering")
        client.sendall(b"".join([*lines, b"\r\n"]))
        version, status = lines[0].decode("latin-1").split(" ", 2)[:2]
        code = int(status)
        if code == 101:
            return "upgrade"
        if code >= 200:
            break  # 1xx interim answers are followed by the real one
    headers = _headers(lines)
    close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
    if method == "HEAD" or code in (204, 304):
        return "close" if close else "keep"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        for _ in _chunks(uin, client):
            pass
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            data = uin.read(min(left, 65536))
            if not data:
                raise ValueError("the engine closed the connection inside a body")
            client.sendall(data)
            left -= len(data)
    else:
        while data := uin.read1(65536):
            client.sendall(data)
        return "close"
    return "close" if close else "keep"


def _pump(cin: BufferedReader, client: socket.socket, uin: BufferedReader, upstream: socket.socket) -> None:
    """Copy bytes both ways until both sides are done (a hijacked attach or exec stream)."""

    def copy(src: BufferedReader, dst: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while data := src.read1(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    other = threading.Thread(target=copy, args=(cin, upstream), name="dproxy-pump", daemon=True)
    other.start()
    copy(uin, client)
    other.join()


def _response(status: int, body: Any) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"  # 599: the proxy's own failure
    if isinstance(body, list):  # a stream of JSON messages, as a pull or build sends them
        chunks = b""
        for item in body:
            data = (json.dumps(item) + "\r\n").encode()
            chunks += f"{len(data):x}\r\n".encode() + data + b"\r\n"
        head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
        return head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    if body is None:
        body = {"message": f"{phrase} (injected by tests/dockerproxy.py)"}
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    data = data.encode() if isinstance(data, str) else data
    head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return head.encode() + b"\r\n" + data
