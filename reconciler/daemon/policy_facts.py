"""Resolve on the host what the pure policy needs to judge a revision: real paths, socket, object owners.

Called by the deployer's checks (``deploy.Deployer._check``) before anything is pulled or created.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlparse

from reconciler import labels as L
from reconciler.policy import DOCKER_SOCKETS, Facts, Policy, host_paths


class _Lookups(Protocol):
    def inspect_volume(self, name: str) -> dict[str, Any] | None: ...
    def inspect_network(self, name: str) -> dict[str, Any] | None: ...


def resolve_facts(
    model: Mapping[str, Any], policy: Policy, *, project: str, stable: str, tree: str, engine: _Lookups
) -> Facts:
    """Facts for ``model`` rendered under the stable checkout path ``stable``, whose files are in
    ``tree`` (the checkout still shows the running revision: paths under it are read in ``tree``)."""
    tree = os.path.realpath(tree)
    real: dict[str, str] = {}
    for source in host_paths(model):
        path = source
        if source == stable or source.startswith(stable + "/"):
            path = os.path.join(tree, os.path.relpath(source, stable))
        real[source] = os.path.realpath(path)  # follows every symlink, as Docker does when it mounts
    return Facts(
        checkout=tree,
        real_paths=real,
        sockets=_sockets(),
        owners=_owners(model, engine) if not policy.external else {},
        project=project,
    )


def _sockets() -> tuple[str, ...]:
    """The Docker socket's usual paths, DOCKER_HOST's, and the real path of each."""
    paths = list(DOCKER_SOCKETS)
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths.append(urlparse(host).path)
    return tuple(dict.fromkeys([*paths, *(os.path.realpath(p) for p in paths)]))


def _owners(model: Mapping[str, Any], engine: _Lookups) -> dict[tuple[str, str], str]:
    """The compose project of each existing volume and network the model names ('' for none).
    DockerError (an outage) propagates: no answer is never taken as "not there"."""
    out: dict[tuple[str, str], str] = {}
    for kind, section, inspect in (
        ("volume", "volumes", engine.inspect_volume),
        ("network", "networks", engine.inspect_network),
    ):
        for obj in (model.get(section) or {}).values():
            name = str((obj or {}).get("name") or "")
            if not name or (obj or {}).get("external"):
                continue
            found = inspect(name)
            if found is not None:
                out[(kind, name)] = str((found.get("Labels") or {}).get(L.PROJECT) or "")
    return out
