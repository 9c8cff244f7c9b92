"""The Docker Engine adapter: the only module that imports docker-py, and only when a DockerEngine is made.

``reconciler.converge`` talks to the small ``Engine`` protocol with plain Engine API dicts. docker-py and
requests errors never escape: an unreachable engine is a ``DockerError`` (transient: retry later), a
request the engine refuses is an ``EngineError`` (a deploy failure for this input).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from reconciler.errors import ConfigError, DeployError, DockerError, Location
from reconciler.labels import PROJECT
from reconciler.spec import BuildSpec, NetworkSpec, VolumeSpec

if TYPE_CHECKING:
    from reconciler.config.hosts import HostConfig
    from reconciler.sshtunnel import SshTunnel

T = TypeVar("T")
_BUILD_TIMEOUT = 3600  # seconds without output before a build is abandoned (a silent RUN step may be long)


class EngineError(DeployError):
    """The Engine refused a request (an API error): retrying the same request fails the same way."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, reason="EngineError")
        self.status = status


class EngineUnavailable(DockerError):
    """The Engine, or a registry it pulls from, failed in a way that may pass: a 5xx or 429 answer, a
    timeout, a refused or dropped connection. ``status`` is the Engine's HTTP status when it answered, so
    a caller may still judge one call permanent (a fresh container that fails to start)."""

    def __init__(
        self, message: str, *, reason: str, status: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, reason=reason)
        self.status = status


class Engine(Protocol):
    """What the converge engine needs from a Docker Engine. Unknown objects read as None; removing
    something already gone is not an error. In label filters, a None value means "has this label"."""

    def list_containers(
        self, project: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]: ...
    def events(
        self, since: float, until: float, filters: Mapping[str, list[str]]
    ) -> Iterator[dict[str, Any]]: ...
    def inspect_container(self, ref: str) -> dict[str, Any] | None: ...
    def create_container(self, name: str, body: Mapping[str, Any], *, platform: str | None = None) -> str: ...
    def connect_network(self, network: str, container: str, endpoint: Mapping[str, Any]) -> None: ...
    def disconnect_network(self, network: str, container: str) -> None: ...
    def rename_container(self, ref: str, new_name: str) -> None: ...
    def start_container(self, ref: str) -> None: ...
    def stop_container(self, ref: str, timeout: float | None = None) -> None: ...
    def restart_container(self, ref: str, timeout: float | None = None) -> None: ...
    def unpause_container(self, ref: str) -> None: ...
    def remove_container(self, ref: str, *, volumes: bool = False, force: bool = False) -> None: ...
    def container_logs(self, ref: str, tail: int = 20) -> str: ...
    def image_id(self, ref: str) -> str | None: ...
    def pull_image(self, ref: str, *, platform: str | None = None) -> str: ...
    def build_image(self, tag: str, build: BuildSpec, labels: Mapping[str, str]) -> str: ...
    def list_images(self, labels: Mapping[str, str | None]) -> list[str]: ...
    def remove_image(self, ref: str) -> None: ...
    def inspect_network(self, name: str) -> dict[str, Any] | None: ...
    def create_network(self, spec: NetworkSpec, labels: Mapping[str, str]) -> None: ...
    def list_networks(self, labels: Mapping[str, str | None]) -> list[dict[str, Any]]: ...
    def remove_network(self, name: str) -> None: ...
    def inspect_volume(self, name: str) -> dict[str, Any] | None: ...
    def create_volume(self, spec: VolumeSpec, labels: Mapping[str, str]) -> None: ...
    def list_volumes(self, labels: Mapping[str, str | None]) -> list[dict[str, Any]]: ...
    def remove_volume(self, name: str) -> None: ...


def _label_filter(labels: Mapping[str, str | None]) -> dict[str, list[str]]:
    # Docker ANDs repeated label filters: ["a=1", "b"] means a is 1 and b is set.
    return {"label": [k if v is None else f"{k}={v}" for k, v in labels.items()]}


# A failed pull, in Docker's and registries' words. Docker answers 500 for nearly every registry failure
# ("toomanyrequests: ...", "received unexpected HTTP status: 503 Service Unavailable", "unauthorized: ..."),
# so only the message tells a throttled registry from a tag that does not exist.
_PULL_PERMANENT = re.compile(
    r"manifest unknown|not found|unauthorized|denied|invalid reference format|does not exist"
    r"|authentication required|no basic auth credentials|no matching manifest|x509|certificate"
    r"|HTTP response to HTTPS client",
    re.IGNORECASE,
)
_PULL_TRANSIENT = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        ("registry_throttled", r"toomanyrequests|too many requests|\b429\b"),
        (
            "registry_5xx",
            r"\bHTTP (?:status:? *)?5\d\d\b|\bstatus(?: code)?:? *5\d\d\b"
            r"|Internal Server Error|Bad Gateway|Service Unavailable|Gateway Time-?out",
        ),
        (  # Go's resolver: "lookup <host> on <server>:53: no such host" / "server misbehaving"
            "dns",
            r"no such host|server misbehaving|temporary failure in name resolution"
            r"|name or service not known|\blookup \S+ on \S+:53\b",
        ),
        ("timeout", r"timeout|timed out|deadline exceeded"),
        (
            "connection",
            r"connection refused|connection reset|broken pipe|unexpected EOF|network is unreachable"
            r"|no route to host|use of closed network connection",
        ),
    )
)
_PULL_HINTS = {
    "registry_throttled": "the registry is rate-limiting pulls: the deploy is retried with backoff "
    "(`docker login` on this host raises Docker Hub's limit)",
}


def pull_retry_reason(message: str) -> str | None:
    """Why a pull that failed with ``message`` may pass later ("registry_throttled", "registry_5xx", "dns",
    "timeout", "connection"), or None when the message names no passing failure. Pure: unit-tested on
    real Docker and registry messages."""
    if _PULL_PERMANENT.search(message):
        return None
    return next((reason for reason, pattern in _PULL_TRANSIENT if pattern.search(message)), None)


def pull_is_permanent(message: str) -> bool:
    """Whether a failed pull names something retrying cannot fix: no such tag, no access, a bad name."""
    return _PULL_PERMANENT.search(message) is not None


def _pull_failure(what: str, message: str, status: int | None = None) -> DockerError | DeployError | None:
    reason = pull_retry_reason(message)
    if reason is not None:
        hint = _PULL_HINTS.get(reason)
        return EngineUnavailable(f"{what}: {message}", reason=reason, status=status, hint=hint)
    return EngineError(f"{what}: {message}", status=status) if pull_is_permanent(message) else None


_TRANSPORT_HINTS = {
    "connection": "is dockerd running, and may this user use its socket? The call is retried",
    "timeout": "the Docker Engine is overloaded or stuck; the call is retried",
}
_TLS_HINT = (
    "the TLS handshake failed: the engine's certificate must verify against the host's tls.ca, and the "
    "engine must accept the client certificate tls.cert/tls.key (it names the CA it trusts with --tlscacert)"
)
# An engine that refuses a client certificate may just hang up, without a TLS alert to say why.
_TLS_DROPPED_HINT = (
    "is the engine up at that address? A TLS engine also hangs up on a client whose certificate "
    "(tls.cert/tls.key) it does not accept. The call is retried"
)


def _status_reason(status: int | None) -> str | None:
    """The retry reason for an Engine HTTP status, or None when the refusal is permanent."""
    if status == 429:
        return "docker_429"
    return "docker_5xx" if status is not None and status >= 500 else None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: causes, contexts, and what requests and urllib3 keep in ``args``
    and ``reason`` (ConnectionError(MaxRetryError(reason=ProtocolError(..., ConnectionRefusedError)))."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        context = None if err.__suppress_context__ else err.__context__
        linked = (err.__cause__, context, getattr(err, "reason", None), *err.args)
        todo.extend(x for x in linked if isinstance(x, BaseException))


def _is_tls_failure(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLError) for e in _chain(exc))


def _tls_config(host: HostConfig) -> Any:
    """docker-py's TLSConfig for a tcp:// host with ``tls:``: the client certificate, and the engine's
    certificate verified against ``tls.ca`` (else the system's CAs)."""
    import docker.errors
    import docker.tls

    tls = host.tls
    assert tls is not None
    client = (tls.cert, tls.key) if tls.cert and tls.key else None
    try:
        return docker.tls.TLSConfig(client_cert=client, ca_cert=tls.ca, verify=True)
    except docker.errors.TLSParameterError as exc:  # a file gone since the configuration was read
        raise ConfigError(
            f"host {host.name!r}: unusable TLS files ({exc})",
            Location(key=f"hosts.{host.name}.tls"),
            hint="tls.ca, tls.cert and tls.key must be readable files",
        ) from exc


def _is_transport_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from reaching the Engine (docker-py, requests, urllib3, sockets)."""
    import docker.errors
    import requests.exceptions
    import urllib3.exceptions

    kinds = (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,  # raised bare while docker-py reads a stream from response.raw
        OSError,
    )
    return isinstance(exc, kinds)


def _failure_reason(exc: BaseException) -> str:
    """The retry reason for a failed Engine call: "timeout", "connection", "docker_5xx", "docker_429",
    else "docker"."""
    import requests.exceptions
    import urllib3.exceptions

    chain = list(_chain(exc))
    timeouts = (TimeoutError, requests.exceptions.Timeout, urllib3.exceptions.TimeoutError)
    if any(isinstance(e, timeouts) for e in chain):
        return "timeout"
    lost = (
        ConnectionError,  # refused, reset, aborted, broken pipe
        requests.exceptions.ConnectionError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.NewConnectionError,
    )
    # A missing socket file: connect() raises ENOENT without a filename (open() would set one).
    if any(isinstance(e, lost) or (isinstance(e, FileNotFoundError) and not e.filename) for e in chain):
        return "connection"
    statuses = (getattr(e, "status_code", None) for e in chain)
    return next((r for s in statuses if isinstance(s, int) and (r := _status_reason(s))), "docker")


class DockerEngine:
    """``Engine`` over docker-py's low-level APIClient: one HTTP request per call, no hidden inspects."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        host: HostConfig | None = None,
        tls: Any = None,
        tunnel: SshTunnel | None = None,
    ) -> None:
        """``host``: the configured host this engine is (its name in messages; with a URL of its own, the
        DOCKER_* variables of this process no longer apply). ``tls``: docker-py's TLSConfig. ``tunnel``:
        the ssh tunnel ``base_url`` goes through, started and restarted before each call."""
        import docker.errors  # lazily: `reconciler render` and `--help` never pay for docker-py and requests
        import requests.exceptions

        self._errors = docker.errors
        self._requests = requests.exceptions
        self._base_url = base_url
        self._timeout = timeout
        self._host = host
        self._tls = tls
        self._tunnel = tunnel
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def host_name(self) -> str | None:
        """The name in ``hosts:`` of this engine (None: made without one)."""
        return self._host.name if self._host else None

    @property
    def tunnel(self) -> SshTunnel | None:
        """The ssh tunnel an ssh:// host's calls go through (None for other engines)."""
        return self._tunnel

    def api_client(self) -> Any:
        """docker-py's APIClient of this engine, for the one adapter that needs calls ``Engine`` lacks
        (``reconciler.jobs.oneoff`` streams a job's stdin and stdout through attach)."""
        return self._api

    @property
    def _api(self) -> Any:
        """The APIClient, connected on first use: making a DockerEngine never touches Docker."""
        if self._tunnel is not None:
            # A waitpid when the tunnel runs; when its ssh has died, a new one (or TunnelError, transient).
            # The client keeps its URL: the new ssh binds the same socket path.
            self._tunnel.ensure()
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    @property
    def _where(self) -> str:
        """The engine, for messages: the host's name and configured address (never a credential: the
        configuration refuses passwords in URLs)."""
        if self._host is not None:
            return f"host {self._host.name!r} ({self._host.url})"
        return self._base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def _connect(self) -> Any:
        import docker
        import docker.constants
        import docker.utils

        own_url = self._host is not None and self._host.docker is not None
        kwargs: dict[str, Any] = {} if own_url else dict(docker.utils.kwargs_from_env())
        if self._base_url:
            kwargs["base_url"] = self._base_url
        if self._tls is not None:
            kwargs["tls"] = self._tls
        # "auto" asks the engine its API version once; pinning one would break on engines that raised
        # their minimum (Docker 29 refuses < 1.44) or lack a newer one (20.10 speaks 1.41).
        version = os.environ.get("DOCKER_API_VERSION") or "auto"
        try:
            return self._open_client(version, kwargs)
        except Exception as exc:
            if not _is_transport_failure(exc):
                raise
            raise EngineUnavailable(
                f"cannot reach the Docker Engine of {self._where}: {exc}"
                if self._host
                else f"cannot reach the Docker Engine at {self._where}: {exc}",
                reason=_failure_reason(exc),
                hint=self._hint(exc) or "is dockerd running, and may this user use its socket?",
            ) from exc

    def _hint(self, exc: BaseException) -> str | None:
        """What to check after a failed TLS or ssh connection (None: neither)."""
        if (
            self._tunnel is not None
            and _failure_reason(exc) == "connection"
            and (said := self._tunnel.said(2))
        ):
            # The tunnel runs, but sshd could not reach the engine's socket for this connection.
            return f"the ssh tunnel says: {said} (is ssh.socket the engine's socket, may the user use it?)"
        if _is_tls_failure(exc):
            return _TLS_HINT
        if self._tls is not None and _failure_reason(exc) == "connection":
            return _TLS_DROPPED_HINT
        return None

    def _open_client(self, version: str, kwargs: dict[str, Any]) -> Any:
        import docker
        import docker.constants

        timeout = math.ceil(self._timeout)
        if self._tls is None:
            return docker.APIClient(version=version, timeout=timeout, **kwargs)
        # requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace a session's own CA file (psf/requests
        # issue 3829): the engine's certificate would be checked against the system's CAs, not tls.ca. So a
        # TLS engine's client ignores the environment, and "auto" (which asks before we could say so) is
        # done here: the unversioned /version, then the client pinned to the engine's answer.
        if version == "auto":
            probe = docker.APIClient(
                version=docker.constants.MINIMUM_DOCKER_API_VERSION, timeout=timeout, **kwargs
            )
            probe.trust_env = False
            try:
                version = str(probe.version(api_version=False)["ApiVersion"])
            finally:
                probe.close()
        client = docker.APIClient(version=version, timeout=timeout, **kwargs)
        client.trust_env = False
        return client

    def close(self) -> None:
        """Close the connections, and give back the ssh tunnel (its last user stops it)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            from reconciler import sshtunnel

            sshtunnel.release(tunnel)

    @contextlib.contextmanager
    def _call(self, what: str, *, missing_ok: bool = False) -> Iterator[None]:
        """Translate docker-py, requests and urllib3 errors. A 404 is None (``missing_ok``) or an EngineError;
        other 4xx are EngineError (permanent); 429, 5xx, timeouts and lost connections EngineUnavailable."""
        try:
            yield
        except self._errors.NotFound as exc:
            if not missing_ok:
                raise EngineError(f"{what}: {exc.explanation or exc}", status=404) from exc
        except self._errors.APIError as exc:  # before DockerException/RequestException: it is both
            status, message = exc.status_code, f"{what}: {exc.explanation or exc}"
            reason = _status_reason(status)
            if reason is None:
                raise EngineError(message, status=status) from exc
            raise EngineUnavailable(message, reason=reason, status=status) from exc
        except Exception as exc:
            if not _is_transport_failure(exc):
                raise
            reason = _failure_reason(exc)
            hint = self._hint(exc) or _TRANSPORT_HINTS.get(reason)
            engine = f"The Docker Engine of {self._where}" if self._host else "Docker Engine"
            message = f"{engine} failed while trying to {what}: {exc}"
            raise EngineUnavailable(message, reason=reason, hint=hint) from exc

    def _do(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._call(what):
            return fn(*args, **kwargs)
        raise AssertionError("unreachable: _call re-raises")  # pragma: no cover

    def _maybe(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Like _do, but a missing object reads as None."""
        with self._call(what, missing_ok=True):
            return fn(*args, **kwargs)
        return None

    # --- containers ---

    @classmethod
    def from_env(cls, *, timeout: float = 60.0) -> DockerEngine:
        """The engine that DOCKER_HOST (and the TLS variables) point at, else the local socket."""
        return cls(timeout=timeout)

    @classmethod
    def for_host(
        cls, host: HostConfig, *, state_dir: str | os.PathLike[str], timeout: float = 60.0
    ) -> DockerEngine:
        """The engine a ``hosts:`` entry names. No ``docker`` URL: this process's DOCKER_HOST and TLS
        variables, as ``from_env``. ``unix://`` and ``tcp://`` directly (with ``tls:``, a client certificate
        and the engine's verified against ``tls.ca``); ``ssh://`` through an ``ssh`` tunnel whose socket is
        under ``state_dir``/ssh. Touches no engine and starts no ssh until the first call; ``close()``
        ends both."""
        if host.docker is None:
            return cls(timeout=timeout, host=host)
        scheme = urlsplit(host.docker).scheme
        if scheme == "ssh":
            from reconciler import sshtunnel  # an adapter of its own: most daemons never run ssh

            tunnel = sshtunnel.acquire(host, state_dir)
            return cls(f"unix://{tunnel.socket}", timeout=timeout, host=host, tunnel=tunnel)
        tls = _tls_config(host) if scheme == "tcp" and host.tls is not None else None
        return cls(host.docker, timeout=timeout, host=host, tls=tls)

    def list_containers(
        self, project: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        filters = _label_filter({**(labels or {}), PROJECT: project})
        return list(self._do("list containers", self._api.containers, all=True, filters=filters))

    def events(
        self, since: float, until: float, filters: Mapping[str, list[str]]
    ) -> Iterator[dict[str, Any]]:
        """Engine events between two unix times; with ``until`` ahead, streams them as they happen."""
        with self._call("read Docker events"):
            yield from self._api.events(since=since, until=until, filters=dict(filters), decode=True)

    def inspect_container(self, ref: str) -> dict[str, Any] | None:
        out: dict[str, Any] | None = self._maybe(f"inspect container {ref}", self._api.inspect_container, ref)
        return out

    def create_container(self, name: str, body: Mapping[str, Any], *, platform: str | None = None) -> str:
        out = self._do(
            f"create container {name}",
            self._api.create_container_from_config,
            dict(body),
            name=name,
            platform=platform,
        )
        return str(out["Id"])

    def connect_network(self, network: str, container: str, endpoint: Mapping[str, Any]) -> None:
        ipam = endpoint.get("IPAMConfig") or {}
        self._do(
            f"connect {container} to network {network}",
            self._api.connect_container_to_network,
            container,
            network,
            aliases=endpoint.get("Aliases"),
            ipv4_address=ipam.get("IPv4Address") or None,
            ipv6_address=ipam.get("IPv6Address") or None,
        )

    def disconnect_network(self, network: str, container: str) -> None:
        """Take a container out of a network (and so out of its DNS); a missing one is not an error."""
        self._maybe(
            f"disconnect {container} from network {network}",
            self._api.disconnect_container_from_network,
            container,
            network,
        )

    def rename_container(self, ref: str, new_name: str) -> None:
        self._do(f"rename container {ref} to {new_name}", self._api.rename, ref, new_name)

    def start_container(self, ref: str) -> None:
        self._do(f"start container {ref}", self._api.start, ref)

    def stop_container(self, ref: str, timeout: float | None = None) -> None:
        seconds = None if timeout is None else math.ceil(timeout)  # None: the container's StopTimeout
        self._maybe(f"stop container {ref}", self._api.stop, ref, timeout=seconds)

    def restart_container(self, ref: str, timeout: float | None = None) -> None:
        seconds = 10 if timeout is None else math.ceil(timeout)
        self._do(f"restart container {ref}", self._api.restart, ref, timeout=seconds)

    def unpause_container(self, ref: str) -> None:
        self._do(f"unpause container {ref}", self._api.unpause, ref)

    def remove_container(self, ref: str, *, volumes: bool = False, force: bool = False) -> None:
        self._maybe(f"remove container {ref}", self._api.remove_container, ref, v=volumes, force=force)

    def container_logs(self, ref: str, tail: int = 20) -> str:
        raw = self._maybe(f"read the logs of {ref}", self._api.logs, ref, stdout=True, stderr=True, tail=tail)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")

    # --- images ---

    def image_id(self, ref: str) -> str | None:
        image = self._maybe(f"inspect image {ref}", self._api.inspect_image, ref)
        return str(image["Id"]) if image else None

    def image_repo_digests(self, ref: str) -> tuple[str, ...] | None:
        """The local image's ``RepoDigests`` (``name@sha256:...``: pulled or pushed as); None: no image."""
        image = self._maybe(f"inspect image {ref}", self._api.inspect_image, ref)
        return None if image is None else tuple(str(d) for d in image.get("RepoDigests") or ())

    def registry_digest(self, ref: str) -> str:
        """The digest the registry serves for tag ``ref`` now. Asked through the Engine (GET
        /distribution/{name}/json), so its insecure-registry, mirror and proxy settings apply; a registry
        that fails or is unreachable is EngineUnavailable or EngineError, never an answer."""
        what = f"ask the registry for the digest of {ref}"
        out = self._do(what, self._api.inspect_distribution, ref)
        digest = str(((out or {}).get("Descriptor") or {}).get("digest") or "")
        if not digest.startswith("sha256:"):
            raise EngineUnavailable(f"{what}: the answer names no digest", reason="registry")
        return digest

    def pull_image(self, ref: str, *, platform: str | None = None) -> str:
        """Pull ``ref``. A throttled, failing or unreachable registry is EngineUnavailable (transient) with
        reason registry_throttled, registry_5xx, dns, timeout or connection; no such tag or no access is
        an EngineError. Registries fail at the start (an API error) or mid-stream (an ``error`` chunk)."""
        what = f"pull image {ref}"
        finished = False
        with self._call(what):
            try:
                for chunk in self._api.pull(ref, stream=True, decode=True, platform=platform):
                    if chunk.get("error"):
                        message = str(chunk["error"]).strip()
                        raise _pull_failure(what, message) or EngineError(f"{what}: {message}")
                    # The last message: "Status: Downloaded newer image for ..." / "Image is up to date".
                    finished = finished or str(chunk.get("status", "")).startswith("Status:")
            except self._errors.APIError as exc:
                failure = _pull_failure(what, str(exc.explanation or exc), exc.status_code)
                if failure is None:
                    raise  # not a registry's words: _call judges the Engine's status
                raise failure from exc
        image = self.image_id(ref)
        if image is None and not finished:
            # docker-py ends a stream quietly when the connection drops: the pull did not finish.
            raise EngineUnavailable(
                f"{what}: the connection to the Docker Engine was lost before the pull finished",
                reason="connection",
            )
        if image is None:
            raise EngineError(f"{what}: the engine reported success but has no such image")
        return image

    def build_image(self, tag: str, build: BuildSpec, labels: Mapping[str, str]) -> str:
        tail: list[str] = []
        image: str | None = None
        with self._call(f"build image {tag} from {build.context}"):
            stream = self._api.build(
                path=build.context,
                dockerfile=build.dockerfile,
                tag=tag,
                buildargs=dict(build.args),
                target=build.target,
                labels={**build.labels, **labels},
                network_mode=build.network,
                extra_hosts=list(build.extra_hosts) or None,
                shmsize=build.shm_size,
                cache_from=list(build.cache_from) or None,
                nocache=build.no_cache,
                pull=build.pull,
                rm=True,
                forcerm=True,
                decode=True,
                timeout=_BUILD_TIMEOUT,
            )
            for chunk in stream:
                if chunk.get("error"):
                    log = "".join(tail[-20:]).rstrip()
                    raise EngineError(f"build image {tag}: {chunk['error'].strip()}\n{log}".rstrip())
                if chunk.get("stream"):
                    tail = [*tail[-40:], chunk["stream"]]
                image = (chunk.get("aux") or {}).get("ID") or image
        image = image or self.image_id(tag)
        if image is None:
            raise EngineError(f"build image {tag}: the build produced no image")
        return image

    def list_images(self, labels: Mapping[str, str | None]) -> list[str]:
        ids = self._do("list images", self._api.images, quiet=True, filters=_label_filter(labels))
        return [str(i) for i in ids]

    def remove_image(self, ref: str) -> None:
        self._maybe(f"remove image {ref}", self._api.remove_image, ref)

    # --- networks and volumes ---

    def inspect_network(self, name: str) -> dict[str, Any] | None:
        out = self._maybe(f"inspect network {name}", self._api.inspect_network, name)
        # Docker also matches an ID prefix: only an exact name is "this network".
        return dict(out) if out and out.get("Name") == name else None

    def create_network(self, spec: NetworkSpec, labels: Mapping[str, str]) -> None:
        self._do(
            f"create network {spec.name}",
            self._api.create_network,
            spec.name,
            driver=spec.driver,
            options=dict(spec.options) or None,
            ipam=dict(spec.ipam) if spec.ipam else None,
            check_duplicate=True,
            internal=spec.internal,
            labels=dict(labels),
            enable_ipv6=spec.enable_ipv6,
            attachable=spec.attachable,
        )

    def list_networks(self, labels: Mapping[str, str | None]) -> list[dict[str, Any]]:
        return list(self._do("list networks", self._api.networks, filters=_label_filter(labels)))

    def remove_network(self, name: str) -> None:
        self._maybe(f"remove network {name}", self._api.remove_network, name)

    def inspect_volume(self, name: str) -> dict[str, Any] | None:
        out: dict[str, Any] | None = self._maybe(f"inspect volume {name}", self._api.inspect_volume, name)
        return out

    def create_volume(self, spec: VolumeSpec, labels: Mapping[str, str]) -> None:
        self._do(
            f"create volume {spec.name}",
            self._api.create_volume,
            spec.name,
            driver=spec.driver,
            driver_opts=dict(spec.driver_opts) or None,
            labels=dict(labels),
        )

    def list_volumes(self, labels: Mapping[str, str | None]) -> list[dict[str, Any]]:
        out = self._do("list volumes", self._api.volumes, filters=_label_filter(labels))
        return list(out.get("Volumes") or [])

    def remove_volume(self, name: str) -> None:
        self._maybe(f"remove volume {name}", self._api.remove_volume, name)
