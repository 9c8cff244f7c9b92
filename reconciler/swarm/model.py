"""A compose project as a Swarm stack: the services, networks, configs and secrets `docker stack deploy`
would make, as Engine API specs (pure data, built by ``reconciler.swarm.translate``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServiceDef:
    """One compose service as a Swarm service. ``spec`` is the Engine API ServiceSpec, except that its
    configs and secrets name their objects only (``ConfigName``/``SecretName``): the adapter fills in the
    IDs. ``spec_hash`` covers the whole spec, ``task_hash`` its task template (what restarts tasks)."""

    key: str  # the compose service name
    name: str  # the Swarm service name: {project}_{key}
    spec: Mapping[str, Any]
    spec_hash: str
    task_hash: str
    image: str
    replicas: int | None  # None: global mode
    ignored: tuple[str, ...] = ()  # keys `docker stack deploy` ignores too (logged by up, in docs/swarm.md)

    @property
    def global_mode(self) -> bool:
        return self.replicas is None


@dataclass(frozen=True)
class NetworkDef:
    key: str
    name: str
    external: bool = False
    driver: str = "overlay"
    options: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    ipam: Mapping[str, Any] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataDef:
    """A config or secret: ``name`` carries the digest of ``data``, so new content is a new object (Swarm's
    configs and secrets are immutable) and the services using it roll over to it."""

    kind: str  # "config" | "secret"
    key: str
    name: str
    data: bytes = field(repr=False)
    external: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeDef:
    key: str
    name: str
    external: bool = False


@dataclass(frozen=True)
class StackSpec:
    name: str  # the project: com.docker.stack.namespace
    services: tuple[ServiceDef, ...]
    networks: tuple[NetworkDef, ...]
    data: tuple[DataDef, ...]  # configs and secrets
    volumes: tuple[VolumeDef, ...] = ()

    def service(self, key: str) -> ServiceDef | None:
        return next((s for s in self.services if s.key == key), None)
