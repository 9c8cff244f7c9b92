"""Real remote-engine transports for the second test engine (tests/engines.py): a local sshd forwarding to
its socket, and a TLS-terminating TCP proxy in front of it (certificates made with the openssl CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engines import engine_url, second_engine_lock, start_engine

SSHD = "/usr/sbin/sshd"
ENGINE2_SOCKET = "/run/reconciler-test-2.sock"
_WAIT = 30.0  # seconds for sshd or the proxy to listen


@pytest.fixture(scope="package")
def engine2() -> Iterator[str]:
    """Engine 2's unix:// URL, held (other sessions' tests stop and restart it) for this package's tests."""
    with second_engine_lock():
        start_engine(2)
        yield engine_url(2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*argv: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")


def keygen(path: Path) -> Path:
    """A fresh passphrase-less ed25519 key pair at ``path`` (and ``path``.pub)."""
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return path


@dataclass(frozen=True)
class Sshd:
    port: int
    dir: Path
    identity: Path  # a key sshd accepts for root
    known_hosts: Path  # sshd's host key, for [127.0.0.1]:port
    log: Path

    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"


def _wait_banner(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    """Whether sshd greets on ``port`` before it exits or the deadline passes."""
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            if s.recv(64).startswith(b"SSH-"):
                return True
        time.sleep(0.05)
    raise AssertionError(f"sshd did not listen on {port} within {_WAIT}s:\n{log.read_text()}")


@pytest.fixture(scope="package")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A local sshd on a free loopback port with its own host key, letting root in with one test key."""
    d = tmp_path_factory.mktemp("sshd")
    host_key = keygen(d / "host_ed25519")
    client = keygen(d / "client_ed25519")
    # As docs/hosts.md advises: the key may forward, nothing else (no shell, no terminal).
    (d / "authorized_keys").write_text("restrict,port-forwarding " + (d / "client_ed25519.pub").read_text())
    # sshd refuses to start without its privilege separation directory (the package's service makes it).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = d / "sshd.log"
    for _ in range(3):  # a port found free may be taken before sshd binds it
        port = _free_port()
        config = d / "sshd_config"
        config.write_text(
            textwrap.dedent(
                f"""\
                Port {port}
                ListenAddress 127.0.0.1
                HostKey {host_key}
                PidFile {d}/sshd.pid
                AuthorizedKeysFile {d}/authorized_keys
                StrictModes no
                UsePAM no
                PermitRootLogin prohibit-password
                PubkeyAuthentication yes
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                AllowStreamLocalForwarding yes
                # Not "no": sshd then refuses stream-local -L forwards too ("the request was denied").
                AllowTcpForwarding local
                X11Forwarding no
                PrintMotd no
                LogLevel VERBOSE
                """
            )
        )
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        if _wait_banner(port, proc, log):
            break
    else:
        raise AssertionError(f"sshd did not start:\n{log.read_text()}")
    pub = (d / "host_ed25519.pub").read_text().split()
    known = d / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    try:
        yield Sshd(port=port, dir=d, identity=client, known_hosts=known, log=log)
    finally:
        proc.terminate()
        proc.wait(10)


# --- TLS ---


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed neither


def _ca(d: Path, name: str) -> Path:
    _run(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    return d / f"{name}.pem"


def _signed(d: Path, ca: str, name: str, usage: str) -> tuple[Path, Path]:
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _run(
        "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    _run(
        "openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2",
        "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=d,
    )  # fmt: skip
    return d / f"{name}.pem", d / f"{name}.key"


@pytest.fixture(scope="package")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    ca = _ca(d, "ca")
    server = _signed(d, "ca", "server", "serverAuth")
    client = _signed(d, "ca", "client", "clientAuth")
    other = _ca(d, "other-ca")
    return Certs(ca, *server, *client, other_ca=other)


class Proxy:
    """A TCP listener on a loopback port that forwards each connection to a unix socket, optionally
    terminating TLS (client certificate required) first. Its event loop runs in a thread of its own."""

    def __init__(self, target: str, tls: ssl.SSLContext | None) -> None:
        self.target = target
        self.tls = tls
        self.loop = asyncio.new_event_loop()
        # Refused handshakes are what some tests are about: asyncio would log each one.
        self.loop.set_exception_handler(lambda loop, ctx: None)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.port = 0

    def __enter__(self) -> Proxy:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(_WAIT)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(_WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(_WAIT)
        self.loop.close()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)

    async def _close(self) -> None:
        assert self.server is not None
        self.server.close()
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def server_context(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    ctx.load_verify_locations(certs.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture(scope="package")
def tls_proxy(engine2: str, certs: Certs) -> Iterator[Proxy]:
    with Proxy(ENGINE2_SOCKET, server_context(certs)) as proxy:
        yield proxy


@pytest.fixture(scope="package")
def plain_proxy(engine2: str) -> Iterator[Proxy]:
    with Proxy(ENGINE2_SOCKET, None) as proxy:
        yield proxy
