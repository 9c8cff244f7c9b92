"""``project_spec``, the entry point: normalize a rendered project (top-level keys, networks, volumes, then
each service) into a ProjectSpec in dependency order. Called by ``plan``, ``converge`` and the deployer."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.errors import Location, UnsupportedError
from reconciler.render import unescape_dollars
from reconciler.spec.contents import _digest, _values, content_files
from reconciler.spec.context import _Context
from reconciler.spec.model import ProjectSpec, RenderedLike, ServiceSpec
from reconciler.spec.mounts import _files
from reconciler.spec.networks import _network, _volume
from reconciler.spec.service import _service

_TOP_KEYS = frozenset({"name", "services", "networks", "volumes", "secrets", "configs"})


def project_spec(project: RenderedLike, real_paths: Mapping[str, str] | None = None) -> ProjectSpec:
    """Normalize a rendered project; raises UnsupportedError naming the service and key we cannot converge.

    ``real_paths`` (else the project's own ``real_paths``): mounted host paths (``host_paths``) with their
    symlinks resolved by the caller at deploy time, for the hash release 0 stamped."""
    # The model prints every `$` as `$$` (as `docker compose config` does); containers get the literal.
    model = unescape_dollars(project.model)
    for key in model:
        if key not in _TOP_KEYS and not key.startswith("x-"):
            raise UnsupportedError(
                f"top-level key {key!r} is not supported by the converge engine",
                Location(key=key),
                hint="remove it, or deploy this project with docker compose",
            )
    name = project.name
    networks = tuple(_network(name, k, v or {}) for k, v in sorted((model.get("networks") or {}).items()))
    volumes = tuple(_volume(name, k, v or {}) for k, v in sorted((model.get("volumes") or {}).items()))
    environment = getattr(project, "environment", None)
    values = {kind: _values(model, kind, environment) for kind in ("secrets", "configs")}
    ctx = _Context(
        project=name,
        networks={n.key: n.name for n in networks},
        volumes={v.key: v.name for v in volumes},
        secrets=_files(model, "secrets"),
        configs=_files(model, "configs"),
        digests=dict(getattr(project, "bind_digests", None) or {}),
        contents={kind: {k: _digest(v) for k, v in vs.items()} for kind, vs in values.items()},
        real_paths=dict(real_paths if real_paths is not None else getattr(project, "real_paths", None) or {}),
    )
    raw = model.get("services") or {}
    services = {s: _service(ctx, s, raw[s] or {}) for s in sorted(raw)}
    return ProjectSpec(
        files=content_files({s.name: s.config for s in services.values()}, values),
        name=name,
        working_dir=project.working_dir,
        config_files=tuple(project.config_files),
        services=tuple(services[s] for s in _dependency_order(services)),
        networks=networks,
        volumes=volumes,
    )


def _dependency_order(services: Mapping[str, ServiceSpec]) -> list[str]:
    """Services sorted so that each comes after its dependencies (name order among equals)."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise UnsupportedError("depends_on forms a cycle", Location(service=name, key="depends_on"))
        visiting.add(name)
        for dep in services[name].depends_on:
            if dep.service in services:
                visit(dep.service)
            elif dep.required:
                raise UnsupportedError(
                    f"depends on {dep.service!r}, which is not in the project (disabled by a profile?)",
                    Location(service=name, key="depends_on"),
                )
        visiting.discard(name)
        done.append(name)

    for name in sorted(services):
        visit(name)
    return done
