"""Run a command in a one-off container of a service, or in a running container, streaming its standard
input and output through the Docker Engine API (like ``docker compose run --rm -T`` / ``exec -T``).

Used by ``reconciler.jobs.runner``; never a host shell. Docker errors become ``DockerError``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler import labels as L
from reconciler.errors import DockerError

if TYPE_CHECKING:
    from reconciler.config.hosts import HostConfig

Sink = Callable[[bytes], None]
_STDOUT, _STDERR = 1, 2
_STDERR_KEEP = 64 * 1024


@dataclass(frozen=True)
class Finished:
    """How a streamed command ended."""

    exit_code: int
    stderr: str
    stdin_error: str | None = None  # the command stopped reading its input early

    def tail(self, lines: int = 5) -> str:
        text = self.stderr.strip().splitlines()[-lines:]
        return " | ".join(t.strip() for t in text) or "(no output on stderr)"


class Docker:
    """A thin docker-py adapter for jobs: a service's container, one-offs, execs, scratch servers."""

    def __init__(
        self,
        timeout: float = 3600.0,
        *,
        host: HostConfig | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """``host``: a ``hosts:`` entry with its own address (reached as the daemon reaches it: TLS, ssh
        tunnel); None, or one without ``docker:``, is this process's DOCKER_HOST."""
        import docker

        try:
            if host is not None and host.docker is not None:
                from reconciler.engine import DockerEngine

                engine = DockerEngine.for_host(host, state_dir=state_dir or ".", timeout=timeout)
                self.api = engine.api_client()
            else:
                self.api = docker.from_env(timeout=int(timeout)).api
        except DockerError:
            raise
        except Exception as exc:  # docker-py raises DockerException, requests errors, OSError
            raise DockerError(f"cannot reach the Docker Engine: {exc}") from exc
        self.timeout = timeout

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise DockerError(f"{what}: {exc}") from exc

    def service_container(self, project: str, service: str) -> dict[str, Any] | None:
        """The running container of ``service`` in ``project`` (replica 1 first), inspected; None if none."""
        found = self._call(
            "list containers",
            self.api.containers,
            filters={"label": [f"{L.PROJECT}={project}", f"{L.SERVICE}={service}", f"{L.ONEOFF}=False"]},
        )
        if not found:
            return None
        found.sort(key=lambda c: int(c.get("Labels", {}).get(L.CONTAINER_NUMBER, "1") or 1))
        info: dict[str, Any] = self._call("inspect container", self.api.inspect_container, found[0]["Id"])
        return info

    def oneoff(
        self,
        service_info: Mapping[str, Any],
        cmd: tuple[str, ...],
        labels: Mapping[str, str],
        *,
        stdin: Iterable[bytes] | None,
        stdout: Sink,
    ) -> Finished:
        """Run ``cmd`` in a new container made like ``service_info`` (image, environment, user, mounts,
        first network), streaming ``stdin`` in and standard output to ``stdout``; removed afterwards."""
        cfg, hc = service_info["Config"], service_info["HostConfig"]
        nets = list((service_info.get("NetworkSettings") or {}).get("Networks") or {})
        network = hc.get("NetworkMode") if hc.get("NetworkMode") in nets else (nets[0] if nets else "none")
        project = cfg.get("Labels", {}).get(L.PROJECT, "job")
        service = cfg.get("Labels", {}).get(L.SERVICE, "job")
        body: dict[str, Any] = {
            "Image": service_info["Image"],
            "Cmd": list(cmd),
            "Entrypoint": cfg.get("Entrypoint"),
            "Env": cfg.get("Env") or [],
            "User": cfg.get("User") or "",
            "WorkingDir": cfg.get("WorkingDir") or "",
            "Labels": {L.PROJECT: project, L.SERVICE: service, L.ONEOFF: "True", **labels},
            "HostConfig": {
                "Binds": hc.get("Binds") or None,
                "Mounts": hc.get("Mounts") or None,
                "NetworkMode": network,
            },
            "NetworkingConfig": {"EndpointsConfig": {network: {}}} if network != "none" else None,
        }
        name = f"{project}-{service}-run-{secrets.token_hex(6)}"
        return self._run_container(name, body, stdin=stdin, stdout=stdout)

    def _run_container(
        self, name: str, body: dict[str, Any], *, stdin: Iterable[bytes] | None, stdout: Sink
    ) -> Finished:
        body.update(AttachStdin=stdin is not None, AttachStdout=True, AttachStderr=True, Tty=False)
        body.update(OpenStdin=stdin is not None, StdinOnce=stdin is not None)
        body = {k: v for k, v in body.items() if v is not None}
        body["HostConfig"] = {k: v for k, v in body["HostConfig"].items() if v is not None}
        created = self._call("create one-off container", self.api.create_container_from_config, body, name)
        cid = created["Id"]
        try:
            params = {"stdin": int(stdin is not None), "stdout": 1, "stderr": 1, "stream": 1}
            sock = self._call("attach one-off container", self.api.attach_socket, cid, params=params)
            self._call("start one-off container", self.api.start, cid)
            stderr, stdin_error = _pump(sock, stdin, stdout, self.timeout)
            status = self._call("wait for one-off container", self.api.wait, cid, timeout=self.timeout)
            return Finished(int(status.get("StatusCode", -1)), stderr, stdin_error)
        finally:
            # v=True removes the one-off's anonymous volumes only; named volumes are never removed.
            self._call("remove one-off container", self.api.remove_container, cid, v=True, force=True)

    def exec(
        self, cid: str, cmd: tuple[str, ...], *, stdin: Iterable[bytes] | None, stdout: Sink
    ) -> Finished:
        """Run ``cmd`` inside the running container ``cid`` (``docker exec -i``), streaming as ``oneoff``."""
        eid = self._call(
            "create exec",
            self.api.exec_create,
            cid,
            list(cmd),
            stdin=stdin is not None,
            stdout=True,
            stderr=True,
        )["Id"]
        sock = self._call("start exec", self.api.exec_start, eid, socket=True)
        stderr, stdin_error = _pump(sock, stdin, stdout, self.timeout)
        code = self._call("inspect exec", self.api.exec_inspect, eid).get("ExitCode")
        return Finished(int(code if code is not None else -1), stderr, stdin_error)

    def start_scratch(self, image: str, labels: Mapping[str, str]) -> str:
        """Start ``image`` with its own command, no network, anonymous volumes only: touches no env."""
        name = f"reconciler-scratch-{secrets.token_hex(6)}"
        hc = self.api.create_host_config(network_mode="none")
        created = self._call(
            "create scratch container",
            self.api.create_container,
            image,
            name=name,
            labels=dict(labels),
            host_config=hc,
        )
        cid: str = created["Id"]
        try:
            self._call("start scratch container", self.api.start, cid)
        except DockerError:
            self.remove(cid)
            raise
        return cid

    def remove(self, cid: str) -> None:
        self._call("remove scratch container", self.api.remove_container, cid, v=True, force=True)

    def image_of(self, info: Mapping[str, Any]) -> str:
        return str(info["Image"])


def _pump(sock: Any, stdin: Iterable[bytes] | None, sink: Sink, timeout: float) -> tuple[str, str | None]:
    """Feed ``stdin`` from a thread while demultiplexing the attach stream (8-byte frame headers)."""
    raw: socket.socket = getattr(sock, "_sock", sock)
    raw.settimeout(timeout)
    stdin_error: list[str] = []
    feeder = None
    if stdin is not None:
        feeder = threading.Thread(target=_feed, args=(raw, stdin, stdin_error), daemon=True)
        feeder.start()
    stderr = bytearray()
    try:
        while True:
            header = _read_exact(raw, 8)
            if header is None:
                break
            kind, size = header[0], struct.unpack(">I", header[4:])[0]
            data = _read_exact(raw, size) or b""
            if kind == _STDOUT:
                sink(data)
            elif kind == _STDERR:
                stderr += data
                del stderr[:-_STDERR_KEEP]
    except OSError as exc:
        raise DockerError(f"the stream of a job's container broke: {exc}") from exc
    finally:
        if feeder is not None:
            feeder.join(timeout=5)
        sock.close()
    return stderr.decode("utf-8", "replace"), (stdin_error[0] if stdin_error else None)


def _feed(raw: socket.socket, chunks: Iterable[bytes], errors: list[str]) -> None:
    try:
        for chunk in chunks:
            raw.sendall(chunk)
    except OSError as exc:  # the command exited without reading all of its input
        errors.append(str(exc))
    except Exception as exc:  # the source failed (e.g. restic): the command sees a truncated input
        errors.append(str(exc))
    finally:
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)  # end of input: the command sees EOF


def _read_exact(raw: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = raw.recv(n - len(buf))
        if not chunk:
            return None if not buf else bytes(buf)
        buf += chunk
    return bytes(buf)
