"""The Swarm half of the Docker Engine adapter: services, tasks, configs and secrets through docker-py's
APIClient. Built on ``reconciler.engine.DockerEngine`` (connection, and the translation of docker-py and
requests errors into EngineError / EngineUnavailable), so containers, networks and volumes are the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.engine import DockerEngine, _label_filter
from reconciler.swarm.model import DataDef, NetworkDef


class SwarmEngine(DockerEngine):
    """``DockerEngine`` plus what a Swarm manager answers. Every service call sends or returns plain Engine
    API dicts (ServiceSpec, Task): the shapes docs.docker.com/engine/api documents."""

    @classmethod
    def sharing(cls, engine: DockerEngine) -> SwarmEngine:
        """A SwarmEngine over ``engine``'s connection (its client, lock and ssh tunnel: the same attributes,
        not copies, so a client made later by either is the other's too)."""
        out = cls.__new__(cls)
        out.__dict__ = engine.__dict__
        return out

    def swarm_state(self) -> tuple[str, bool]:
        """(LocalNodeState, ControlAvailable) of the engine: ("active", True) on a manager."""
        info = self._do("read the engine's info", self._api.info)
        swarm = info.get("Swarm") or {}
        return str(swarm.get("LocalNodeState") or "inactive"), bool(swarm.get("ControlAvailable"))

    # --- services and tasks ---

    def list_services(self, labels: Mapping[str, str | None]) -> list[dict[str, Any]]:
        return list(self._do("list services", self._api.services, filters=_label_filter(labels)))

    def inspect_service(self, ref: str) -> dict[str, Any] | None:
        out: dict[str, Any] | None = self._maybe(f"inspect service {ref}", self._api.inspect_service, ref)
        return out

    def create_service(self, spec: Mapping[str, Any]) -> str:
        """Create a service from a full ServiceSpec (docker-py's helpers would rebuild it field by field)."""
        api = self._api
        what = f"create service {spec.get('Name')}"
        out = self._do(
            what, lambda: api._result(api._post_json(api._url("/services/create"), data=dict(spec)), True)
        )
        return str(out["ID"])

    def update_service(self, ref: str, version: int, spec: Mapping[str, Any]) -> None:
        """Replace the spec of service ``ref`` at ``version`` (Swarm refuses a stale version)."""
        api = self._api
        url = api._url("/services/{0}/update", ref)
        self._do(
            f"update service {spec.get('Name')}",
            lambda: api._result(api._post_json(url, data=dict(spec), params={"version": version}), True),
        )

    def remove_service(self, ref: str) -> None:
        self._maybe(f"remove service {ref}", self._api.remove_service, ref)

    def list_tasks(self, services: Sequence[str]) -> list[dict[str, Any]]:
        """Tasks of the services named (or by ID); none asked, none returned."""
        if not services:
            return []
        found = self._maybe("list tasks", self._api.tasks, filters={"service": list(services)})
        if found is not None:
            return list(found)
        # Swarm answers 404 when one of the services is gone (removed since it was listed): ask for every
        # task and keep those of the services asked for (by ID; a removed service's name can't be matched).
        wanted = set(services)
        return [t for t in self._do("list tasks", self._api.tasks) if t.get("ServiceID") in wanted]

    # --- configs and secrets ---

    def list_data(self, kind: str, labels: Mapping[str, str | None]) -> list[dict[str, Any]]:
        """Configs (``kind`` "config") or secrets ("secret") carrying ``labels``."""
        fn = self._api.configs if kind == "config" else self._api.secrets
        return list(self._do(f"list {kind}s", fn, filters=_label_filter(labels)))

    def find_data(self, kind: str, name: str) -> dict[str, Any] | None:
        """The config or secret named exactly ``name`` (Swarm's name filter matches prefixes too)."""
        fn = self._api.configs if kind == "config" else self._api.secrets
        found = self._do(f"find {kind} {name}", fn, filters={"name": [name]})
        return next((d for d in found if (d.get("Spec") or {}).get("Name") == name), None)

    def create_data(self, obj: DataDef) -> str:
        if obj.kind == "config":
            out = self._do(
                f"create config {obj.name}", self._api.create_config, obj.name, obj.data, dict(obj.labels)
            )
        else:
            out = self._do(
                f"create secret {obj.name}", self._api.create_secret, obj.name, obj.data, dict(obj.labels)
            )
        return str(out["ID"])

    def remove_data(self, kind: str, ref: str) -> None:
        fn = self._api.remove_config if kind == "config" else self._api.remove_secret
        self._maybe(f"remove {kind} {ref}", fn, ref)

    # --- overlay networks ---

    def create_overlay(self, net: NetworkDef) -> None:
        self._do(
            f"create network {net.name}",
            self._api.create_network,
            net.name,
            driver=net.driver,
            options=dict(net.options) or None,
            ipam=dict(net.ipam) if net.ipam else None,
            check_duplicate=True,
            internal=net.internal,
            labels=dict(net.labels),
            attachable=net.attachable,
            scope="swarm",
        )
