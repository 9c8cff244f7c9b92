"""A snapshot of what runs for drift and plan: one list call per object kind (containers, networks, volumes),
and an inspect only of a container not seen before or `docker update`d since (cached by container ID).

Called by ``Converger.observe``; ``Converger.events`` tells it which containers were updated.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler import labels as L
from reconciler.drift import HOST_KEYS
from reconciler.engine import Engine, EngineError
from reconciler.plan import LiveContainer, LiveProject, parse_containers


@dataclass(frozen=True)
class Listing:
    """The raw list answers of one observation of every project (containers, networks, volumes)."""

    containers: tuple[Mapping[str, Any], ...]
    networks: tuple[Mapping[str, Any], ...]
    volumes: tuple[Mapping[str, Any], ...]


class Observer:
    """Lists containers, networks and volumes, and keeps each listed container's limits and restart policy
    (not in the container list) until Docker reports an `update` of it or it is no longer listed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._host: dict[str, tuple[str, Mapping[str, Any]]] = {}  # container ID -> (project, HOST_KEYS)
        self.inspections = 0  # containers inspected so far (tests check no inspect is repeated)
        self._forgets = 0  # bumped by forget(): an inspect that raced with an update is not cached
        self._last: tuple[float, Listing] | None = None  # (monotonic start, listings) of a full snapshot

    def snapshot(self, projects: Collection[str] | None = None) -> dict[str, LiveProject]:
        """``projects`` (every compose project if None) as they run now, with their networks and volumes."""
        names = None if projects is None else list(projects)
        one = names[0] if names and len(names) == 1 else None
        taken = time.monotonic()
        summaries = self._engine.list_containers(one)
        if names == []:
            return {}  # a ping (is Docker there?): the container list alone answers it
        networks = self._engine.list_networks({L.PROJECT: one})  # one None: every project's
        volumes = self._engine.list_volumes({L.PROJECT: one})
        if one is None:
            # Every project's objects: the poll's sweep of ephemeral stacks reuses them (``last_listing``)
            # instead of listing again, so a cycle costs one list call per kind.
            with self._lock:
                self._last = (taken, Listing(tuple(summaries), tuple(networks), tuple(volumes)))
        live = parse_containers(summaries)
        self._drop_unlisted(live, one)
        wanted = list(live) if names is None else list(dict.fromkeys(names))
        by_project: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
        for kind, objects in (("networks", networks), ("volumes", volumes)):
            for obj in objects:
                project = (obj.get("Labels") or {}).get(L.PROJECT)
                if project in wanted:
                    by_project[project][kind].append(obj)
        out = {}
        for name in wanted:
            stack = live.get(name, LiveProject(name))
            out[name] = replace(
                stack,
                containers=tuple(self._with_host(name, c) for c in stack.containers),
                networks=tuple(by_project[name]["networks"]),
                volumes=tuple(by_project[name]["volumes"]),
            )
        return out

    def last_listing(self, *, since: float) -> Listing | None:
        """The listings of the last snapshot of every project, if it began after ``since`` (monotonic)."""
        with self._lock:
            last = self._last
        return last[1] if last is not None and last[0] >= since else None

    def forget(self, container_id: str | None = None) -> None:
        """Inspect ``container_id`` again at the next snapshot (Docker reported an `update`); None: all."""
        with self._lock:
            self._forgets += 1
            if container_id is None:
                self._host.clear()
            else:
                self._host.pop(container_id, None)

    def knows(self, container_id: str | None) -> bool:
        """Whether the container is one of the observed projects' (so a network event about it matters)."""
        with self._lock:
            return container_id is not None and container_id in self._host

    def _drop_unlisted(self, live: Mapping[str, LiveProject], one: str | None) -> None:
        listed = {c.id for p in live.values() for c in p.containers}
        with self._lock:
            for cid, (project, _) in list(self._host.items()):
                if (one is None or project == one) and cid not in listed:
                    del self._host[cid]

    def _with_host(self, project: str, c: LiveContainer) -> LiveContainer:
        with self._lock:
            cached = self._host.get(c.id)
        if cached is None:
            with self._lock:
                forgets = self._forgets
            try:
                info = self._engine.inspect_container(c.id)
            except EngineError:  # refused (not an outage, which raises DockerError): no verdict on it
                return c
            if info is None:  # removed since the list: no verdict on it
                return c
            host = info.get("HostConfig") or {}
            cached = (project, {k: host.get(k) for k in HOST_KEYS})
            with self._lock:
                self.inspections += 1
                if forgets == self._forgets:
                    self._host[c.id] = cached
        return replace(c, host=cached[1])
