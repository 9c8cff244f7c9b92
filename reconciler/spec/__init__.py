"""Normalize a rendered compose project into the networks, volumes and containers we create, and hash them.
Pure (no Docker, no clock): ``plan`` compares these specs with live containers, ``converge`` creates them.
A service key we cannot converge faithfully raises ``UnsupportedError``: a key is never silently ignored."""

from __future__ import annotations

from reconciler.spec.hash import FIELDS_LABEL, HASH_VERSION, host_paths
from reconciler.spec.model import (
    NAMESPACE_KEYS,
    BuildSpec,
    Condition,
    NetworkSpec,
    ProjectSpec,
    PullPolicy,
    RenderedLike,
    ServiceSpec,
    VolumeSpec,
)
from reconciler.spec.project import project_spec
from reconciler.spec.request import COMPOSE_VERSION, container_request

__all__ = [
    "COMPOSE_VERSION",
    "FIELDS_LABEL",
    "HASH_VERSION",
    "NAMESPACE_KEYS",
    "BuildSpec",
    "Condition",
    "NetworkSpec",
    "ProjectSpec",
    "PullPolicy",
    "RenderedLike",
    "ServiceSpec",
    "VolumeSpec",
    "container_request",
    "host_paths",
    "project_spec",
]
