"""The Docker Engine adapter: the only module that imports docker-py, and only when a DockerEngine is made.

``reconciler.converge`` talks to the small ``Engine`` protocol with plain Engine API dicts. docker-py and
requests errors never escape: an unreachable engine is a ``DockerError`` (transient: retry later), a
request the engine refuses is an ``EngineError`` (a deploy failure for this input).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

from reconciler.errors import DeployError, DockerError
from reconciler.labels import PROJECT
from reconciler.spec import BuildSpec, NetworkSpec, VolumeSpec

T = TypeVar("T")
_BUILD_TIMEOUT = 3600  # seconds without output before a build is abandoned (a silent RUN step may be long)


class EngineError(DeployError):
    """The Engine refused a request (an API error): retrying the same request fails the same way."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, reason="EngineError")
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
    def create_container(self, name: str, body: Mapping[str, Any]) -> str: ...
    def connect_network(self, network: str, container: str, endpoint: Mapping[str, Any]) -> None: ...
    def start_container(self, ref: str) -> None: ...
    def stop_container(self, ref: str, timeout: float | None = None) -> None: ...
    def restart_container(self, ref: str, timeout: float | None = None) -> None: ...
    def unpause_container(self, ref: str) -> None: ...
    def remove_container(self, ref: str, *, volumes: bool = False, force: bool = False) -> None: ...
    def container_logs(self, ref: str, tail: int = 20) -> str: ...
    def image_id(self, ref: str) -> str | None: ...
    def pull_image(self, ref: str) -> str: ...
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


class DockerEngine:
    """``Engine`` over docker-py's low-level APIClient: one HTTP request per call, no hidden inspects."""

    def __init__(self, base_url: str | None = None, *, timeout: float = 60.0) -> None:
        import docker.errors  # lazily: `reconciler render` and `--help` never pay for docker-py and requests
        import requests.exceptions

        self._errors = docker.errors
        self._requests = requests.exceptions
        self._base_url = base_url
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def _api(self) -> Any:
        """The APIClient, connected on first use: making a DockerEngine never touches Docker."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        import docker
        import docker.utils

        kwargs: dict[str, Any] = dict(docker.utils.kwargs_from_env())
        if self._base_url:
            kwargs["base_url"] = self._base_url
        # "auto" asks the engine its API version once; pinning one would break on engines that raised
        # their minimum (Docker 29 refuses < 1.44) or lack a newer one (20.10 speaks 1.41).
        version = os.environ.get("DOCKER_API_VERSION") or "auto"
        try:
            return docker.APIClient(version=version, timeout=math.ceil(self._timeout), **kwargs)
        except docker.errors.DockerException as exc:
            where = kwargs.get("base_url") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            raise DockerError(
                f"cannot reach the Docker Engine at {where}: {exc}",
                hint="is dockerd running, and may this user use its socket?",
            ) from exc

    @contextlib.contextmanager
    def _call(self, what: str, *, missing_ok: bool = False) -> Iterator[None]:
        try:
            yield
        except self._errors.NotFound as exc:
            if not missing_ok:
                raise EngineError(f"{what}: {exc.explanation or exc}", status=404) from exc
        except self._errors.APIError as exc:  # before DockerException/RequestException: it is both
            raise EngineError(f"{what}: {exc.explanation or exc}", status=exc.status_code) from exc
        except (self._requests.RequestException, self._errors.DockerException, OSError) as exc:
            raise DockerError(f"Docker Engine failed while trying to {what}: {exc}") from exc

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

    def create_container(self, name: str, body: Mapping[str, Any]) -> str:
        out = self._do(
            f"create container {name}", self._api.create_container_from_config, dict(body), name=name
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

    def pull_image(self, ref: str) -> str:
        with self._call(f"pull image {ref}"):
            for chunk in self._api.pull(ref, stream=True, decode=True):
                if chunk.get("error"):
                    raise EngineError(f"pull image {ref}: {chunk['error']}")
        image = self.image_id(ref)
        if image is None:
            raise EngineError(f"pull image {ref}: the engine reported success but has no such image")
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
