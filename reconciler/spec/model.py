"""The normalized project as frozen dataclasses: built by ``project_spec``, read by ``plan``, ``converge`` and
``engine``; and ``RenderedLike``, what spec needs of a rendered project."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from reconciler import labels as L
from reconciler.spec.contents import ContentFile
from reconciler.spec.hash import HASH_VERSION

# Keys that may name another service's container, whose namespace the container then joins.
NAMESPACE_KEYS = ("network_mode", "pid", "ipc")


class Condition(StrEnum):
    """A ``depends_on`` condition: what the dependency must reach before the dependent starts."""

    STARTED = "service_started"
    HEALTHY = "service_healthy"
    COMPLETED = "service_completed_successfully"


class PullPolicy(StrEnum):
    ALWAYS = "always"
    MISSING = "missing"
    NEVER = "never"
    BUILD = "build"


@dataclass(frozen=True)
class Dependency:
    service: str
    condition: Condition
    required: bool = True
    restart: bool = False  # restart the dependent when this dependency is recreated


@dataclass(frozen=True)
class BuildSpec:
    context: str
    dockerfile: str | None = None
    args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    extra_hosts: tuple[str, ...] = ()
    shm_size: int | None = None
    cache_from: tuple[str, ...] = ()
    no_cache: bool = False
    pull: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    """One service, normalized: ``config`` (compose keys, canonical values) is what the hash covers."""

    name: str
    image: str
    replicas: int
    pull_policy: PullPolicy
    build: BuildSpec | None
    depends_on: tuple[Dependency, ...]
    config: Mapping[str, Any]
    config_hash: str  # of ``hashed(config)``, algorithm HASH_VERSION
    field_hashes: Mapping[str, str]
    container_name: str | None = None
    stop_timeout: int | None = None  # seconds, from stop_grace_period
    has_healthcheck: bool = False
    restart: str = "no"
    # deploy.update_config.order: "start-first" starts the replacement next to the old container and
    # stops the old one once the new one is ready (only without a fixed host port or container_name).
    update_order: str = "stop-first"
    legacy_hash: str = ""  # the hash release 0 stamped (no io.reconciler.hash-version label)
    platform: str | None = None  # `platform`: passed to the image pull and the container create
    # Keys Compose accepts and drops outside Swarm (deploy.labels, deploy.placement...): converge logs them.
    ignored: tuple[str, ...] = ()

    def hash_matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a container's config-hash label says it was made from this spec, by whichever hash
        version stamped it: an upgrade of the reconciler never recreates unchanged containers."""
        live = labels.get(L.CONFIG_HASH)
        version = labels.get(L.HASH_VERSION)
        if version is None:
            return live in (self.legacy_hash, self.config_hash)
        return version == str(HASH_VERSION) and live == self.config_hash

    @property
    def joins(self) -> tuple[str, ...]:
        """Services whose replica 1 this one shares a namespace with (``network_mode``/``pid``/``ipc``
        ``service:NAME``): its containers must be recreated whenever that container is."""
        refs = (str(self.config.get(k) or "") for k in NAMESPACE_KEYS)
        return tuple(sorted({r.removeprefix("service:") for r in refs if r.startswith("service:")}))

    def container(self, project: str, number: int) -> str:
        """The container name: Compose's ``{project}-{service}-{n}`` unless ``container_name`` is set."""
        return self.container_name or f"{project}-{self.name}-{number}"


@dataclass(frozen=True)
class NetworkSpec:
    key: str
    name: str
    external: bool = False
    driver: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    ipam: Mapping[str, Any] | None = None  # Engine API IPAM object
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeSpec:
    key: str
    name: str
    external: bool = False
    driver: str | None = None
    driver_opts: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectSpec:
    name: str
    working_dir: str
    config_files: tuple[str, ...]
    services: tuple[ServiceSpec, ...]  # in dependency order: every dependency before its dependents
    networks: tuple[NetworkSpec, ...]
    volumes: tuple[VolumeSpec, ...]
    # Content-based secrets and configs the services mount, for reconciler.contentfiles to write.
    files: tuple[ContentFile, ...] = ()

    def service(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)

    @property
    def one_shots(self) -> frozenset[str]:
        """Services another service waits on to complete successfully (migrations, seeders...)."""
        return frozenset(
            d.service for s in self.services for d in s.depends_on if d.condition is Condition.COMPLETED
        )


class RenderedLike(Protocol):
    """What we need of ``reconciler.render.RenderedProject`` (kept structural: spec takes only
    ``unescape_dollars`` from render).

    An object may also carry ``bind_digests`` (source path -> content digest) and ``real_paths`` (source path
    -> the path with symlinks resolved), both fixed by the deployer at deploy time, and ``environment`` (the
    variables it was rendered with: `environment:` secrets and configs read them)."""

    @property
    def name(self) -> str: ...
    @property
    def working_dir(self) -> str: ...
    @property
    def config_files(self) -> tuple[str, ...]: ...
    @property
    def model(self) -> Mapping[str, Any]: ...
