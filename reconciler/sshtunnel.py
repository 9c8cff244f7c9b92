"""An ``ssh://`` Docker Engine through the system ``ssh`` client: a local unix socket forwarded to the
engine's socket on the remote machine (``ssh -N -L LOCAL:REMOTE``).

docker-py speaks ssh:// only through paramiko (a dependency we don't take) or by running the docker CLI on
the remote machine (``docker system dial-stdio``, which must be installed there). A forwarded socket needs
neither: the remote side only needs sshd allowing stream-local forwarding and a user who may use the Docker
socket, and the user's own ssh configuration (ProxyJump, agent, ciphers) keeps applying. The Engine API,
event streams included, then runs over ``unix://LOCAL`` as for a local engine.

The tunnel is one ``ssh`` process per host, started on first use, checked (a waitpid, no I/O) before each
API call and started again once it has died. Its stderr goes to a file next to the socket, so a failure is
reported in ssh's own words ("Permission denied (publickey)", "Host key verification failed").
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.config.hosts import HostConfig
from reconciler.engine import EngineUnavailable
from reconciler.errors import ConfigError, Location

_START_TIMEOUT = 30.0  # seconds for ssh to connect, authenticate and bind the local socket
_ALIVE_INTERVAL = 15  # seconds between ssh keep-alives; three unanswered ones end the tunnel
_STOP_TIMEOUT = 5.0
# sun_path is 108 bytes with its terminating NUL; longer paths cannot be bound at all.
_MAX_SOCKET_PATH = 107
_HINTS = (
    ("Permission denied", "the remote machine refused the key: check ssh.identity_file and authorized_keys"),
    (
        "Host key verification failed",
        "the remote host key is not in ssh.known_hosts (or changed): add it, e.g. with ssh-keyscan",
    ),
    ("Connection refused", "is sshd running on that machine and port?"),
    ("Could not resolve", "the host name does not resolve"),
    ("forwarding failed", "sshd must allow stream-local forwarding (AllowStreamLocalForwarding yes)"),
)
_DEFAULT_HINT = "the tunnel is started again on the next call"
_SEQ = itertools.count(1)
# The tunnels of this process, shared by its engines: (state directory, host) -> (tunnel, users).
_TUNNELS: dict[tuple[Path, HostConfig], tuple[SshTunnel, int]] = {}
_TUNNELS_LOCK = threading.Lock()


class TunnelError(EngineUnavailable):
    """The ssh tunnel to an engine could not be started: transient, as an unreachable engine is."""


class SshTunnel:
    """The ``ssh -N -L`` process for one host; thread-safe. ``ensure()`` returns the local socket's path.

    Get one with ``acquire`` (engines of one process share a host's tunnel) and give it back with ``release``.
    Its files are named for this process too (``ssh/HOST-PID-N.sock``): another process on the same
    state directory (a CLI command next to the daemon) runs a tunnel of its own and never ends ours."""

    def __init__(
        self, host: HostConfig, state_dir: str | os.PathLike[str], *, start_timeout: float = _START_TIMEOUT
    ) -> None:
        self.host = host
        self.dir = Path(state_dir) / "ssh"
        stem = f"{host.name}-{os.getpid()}-{next(_SEQ)}"
        self.socket = self.dir / f"{stem}.sock"
        self._log = self.dir / f"{stem}.log"
        self._pidfile = self.dir / f"{stem}.pid"
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        if len(os.fsencode(self.socket)) > _MAX_SOCKET_PATH or ":" in str(self.socket):
            raise ConfigError(
                f"host {host.name!r}: the ssh tunnel's socket {str(self.socket)!r} is longer than a unix "
                f"socket path may be ({_MAX_SOCKET_PATH} bytes) or holds a colon",
                Location(key="state_dir"),
                hint="use a shorter state_dir without ':'",
            )

    @property
    def pid(self) -> int | None:
        """The running ssh process's id, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def argv(self) -> list[str]:
        return ssh_argv(self.host, self.socket, connect_timeout=self._start_timeout)

    def ensure(self) -> str:
        """Start the tunnel unless its ssh runs; the local socket path. Raises TunnelError (with ssh's
        message) when ssh exits or the socket does not appear in time."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None and self.socket.is_socket():
                return str(self.socket)
            self._stop_locked()
            self._start_locked()
            return str(self.socket)

    def close(self) -> None:
        with self._lock:
            self._stop_locked()
            with contextlib.suppress(FileNotFoundError):
                self._log.unlink()

    def _start_locked(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)  # the socket is as good as the remote Docker socket: ours alone
        self._kill_leftovers()
        # A socket left by a dead ssh must not pass for the new one (ssh unlinks it too before binding).
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with self._log.open("wb") as log:
            try:
                # stdin closed: BatchMode already forbids prompts, and ssh must never read ours.
                proc = subprocess.Popen(
                    self.argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    close_fds=True,
                )
            except OSError as exc:
                raise TunnelError(
                    f"host {self.host.name!r}: cannot run ssh: {exc.strerror or exc}",
                    reason="connection",
                    hint="an ssh:// engine needs the OpenSSH client (Debian: apt-get install openssh-client)",
                ) from exc
        self._proc = proc
        self._pidfile.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + self._start_timeout
        while True:
            if proc.poll() is not None:
                self._stop_locked()
                raise self._failure(f"ssh exited with status {proc.returncode}")
            if self.socket.exists() and stat.S_ISSOCK(self.socket.stat().st_mode):
                return
            if time.monotonic() > deadline:
                self._stop_locked()
                raise self._failure(f"the tunnel's socket did not appear within {self._start_timeout:g}s")
            time.sleep(0.05)

    def _stop_locked(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(FileNotFoundError):
                self._pidfile.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()

    def _kill_leftovers(self) -> None:
        """End the tunnels that processes since gone left behind (killed before they could stop them):
        files ``HOST-OWNER-N.*`` whose OWNER no longer runs. Only an ssh whose command line names that
        tunnel's socket is signalled, since pids are reused."""
        for pidfile in self.dir.glob("*.pid"):
            try:
                owner = int(pidfile.stem.rsplit("-", 2)[1])
                os.kill(owner, 0)
                continue  # its owner runs (or is not ours to judge)
            except (IndexError, ValueError, PermissionError):
                continue
            except ProcessLookupError:
                pass
            socket = pidfile.with_suffix(".sock")
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                ours = any(os.fsencode(socket) in arg for arg in cmdline)
                if Path(os.fsdecode(cmdline[0])).name == "ssh" and ours:
                    os.kill(pid, signal.SIGTERM)
            for path in (pidfile, socket, pidfile.with_suffix(".log")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def said(self, lines: int = 5) -> str:
        """The last lines ssh wrote to stderr, joined ("" when none): why a forwarded connection failed
        ("open failed: connect failed: No such file or directory") or why ssh exited."""
        try:
            text = self._log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "; ".join(line.strip() for line in text[-lines:] if line.strip())

    def _failure(self, what: str) -> TunnelError:
        said = self.said()
        hint = next((h for pattern, h in _HINTS if pattern in said), _DEFAULT_HINT)
        target = ssh_destination(self.host)
        message = f"host {self.host.name!r}: cannot open the ssh tunnel to {target}: {what}"
        return TunnelError(f"{message}: {said}" if said else message, reason="connection", hint=hint)


def acquire(host: HostConfig, state_dir: str | os.PathLike[str]) -> SshTunnel:
    """This process's tunnel for ``host`` (made, not yet started, on first use)."""
    key = (Path(state_dir).resolve(), host)
    with _TUNNELS_LOCK:
        tunnel, users = _TUNNELS.get(key) or (SshTunnel(host, key[0]), 0)
        _TUNNELS[key] = (tunnel, users + 1)
        return tunnel


def release(tunnel: SshTunnel) -> None:
    """Give a tunnel back; its last user stops its ssh."""
    with _TUNNELS_LOCK:
        for key, (t, users) in list(_TUNNELS.items()):
            if t is tunnel:
                if users > 1:
                    _TUNNELS[key] = (t, users - 1)
                    return
                del _TUNNELS[key]
    tunnel.close()


@atexit.register
def _close_all() -> None:
    """No ssh outlives the process that started it on a normal exit (a killed one: see _kill_leftovers)."""
    with _TUNNELS_LOCK:
        tunnels = [t for t, _ in _TUNNELS.values()]
        _TUNNELS.clear()
    for tunnel in tunnels:
        tunnel.close()


def ssh_destination(host: HostConfig) -> str:
    """``user@host`` (or ``host``) of an ssh:// URL, without the port."""
    parts = urlsplit(host.url)
    name = parts.hostname or ""
    return f"{parts.username}@{name}" if parts.username else name


def ssh_argv(
    host: HostConfig, local_socket: Path | str, *, connect_timeout: float = _START_TIMEOUT
) -> list[str]:
    """The ssh command line forwarding ``local_socket`` to the host's engine socket. Pure."""
    port = urlsplit(host.url).port
    argv = [
        "ssh",
        "-N",  # no remote command: the forward is all
        "-o", "BatchMode=yes",  # never prompt (no terminal): fail instead
        "-o", "ExitOnForwardFailure=yes",  # no socket, no process: a failure shows as an exit
        "-o", "StreamLocalBindUnlink=yes",
        "-o", "StreamLocalBindMask=0177",
        "-o", f"ServerAliveInterval={_ALIVE_INTERVAL}",
        "-o", "ServerAliveCountMax=3",
        "-o", f"ConnectTimeout={max(1, int(connect_timeout))}",
        # A connection of its own, never a multiplexed one of the user's: its process is the tunnel's life.
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-L", f"{local_socket}:{host.ssh_socket}",
    ]  # fmt: skip
    if port is not None:
        argv += ["-p", str(port)]
    if host.ssh_identity:
        argv += ["-i", host.ssh_identity, "-o", "IdentitiesOnly=yes"]
    if host.ssh_known_hosts:
        argv += ["-o", f"UserKnownHostsFile={host.ssh_known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    # "--": a destination starting with "-" is a host name, never an option.
    return [*argv, "--", ssh_destination(host)]
