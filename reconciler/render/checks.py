"""Reference and consistency checks on the merged model (compose-go checkConsistency and friends).

Called by the renderer after profiles are applied: every depends_on, network, volume, secret and config a
service names must exist; a few keys exclude each other; dependencies must not form a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.errors import ComposeError
from reconciler.render import gotypes as gt

ErrorAt = Callable[..., ComposeError]  # (message, path, *, hint=None) -> a located ComposeError


class Checker:
    """Runs the checks; ``error`` builds a located ComposeError for a model path."""

    def __init__(self, error: ErrorAt) -> None:
        self.error = error

    def check(self, merged: dict[str, Any], enabled: dict[str, Any], disabled: set[str]) -> None:
        """compose-go checkConsistency: every reference must resolve (and a few exclusive keys)."""
        networks = merged.get("networks") or {}
        volumes = merged.get("volumes") or {}
        secrets = merged.get("secrets") or {}
        configs = merged.get("configs") or {}
        for name in sorted(enabled):
            service = enabled[name]
            here = ("services", name)
            if not service.get("build") and not service.get("image"):
                raise self.error(
                    f"service {name!r} has neither an image nor a build context specified",
                    here,
                    hint="add `image:` or `build:`",
                )
            build = service.get("build")
            if isinstance(build, dict):
                if build.get("dockerfile_inline") and build.get("dockerfile") not in (None, "Dockerfile"):
                    raise self.error(
                        f"service {name!r} declares mutually exclusive dockerfile and dockerfile_inline",
                        (*here, "build"),
                    )
                platforms = build.get("platforms")
                if platforms and service.get("platform") and service["platform"] not in platforms:
                    raise self.error(
                        f"service.build.platforms MUST include service.platform {service['platform']!r}",
                        (*here, "build", "platforms"),
                    )
                for secret in build.get("secrets") or ():
                    source = secret.get("source") if isinstance(secret, dict) else secret
                    if source not in secrets:
                        raise self.error(
                            f"service {name!r} refers to undefined build secret {source}",
                            (*here, "build", "secrets"),
                        )
            attached = service.get("networks") or {}
            if service.get("network_mode") and attached:
                raise self.error(
                    f"service {name} declares mutually exclusive `network_mode` and `networks`",
                    (*here, "network_mode"),
                )
            for network in attached:
                if network not in networks:
                    raise self.error(
                        f"service {name!r} refers to undefined network {network}",
                        (*here, "networks", network),
                        hint=f"declare it under the top-level `networks:` ({network}: {{}})",
                    )
            health = service.get("healthcheck")
            test = health.get("test") if isinstance(health, dict) else None
            if isinstance(test, list) and test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                raise self.error(
                    'healthcheck.test must start either by "CMD", "CMD-SHELL" or "NONE"',
                    (*here, "healthcheck", "test"),
                )
            for dependency, config in (service.get("depends_on") or {}).items():
                if dependency in enabled:
                    continue
                required = not isinstance(config, dict) or config.get("required", True) not in (
                    False,
                    "false",
                )
                if dependency in disabled and not required:
                    continue
                reason = " (disabled by its profiles)" if dependency in disabled else ""
                raise self.error(
                    f"service {name!r} depends on undefined service {dependency!r}{reason}",
                    (*here, "depends_on", dependency),
                )
            mode = service.get("network_mode")
            if isinstance(mode, str) and mode.startswith("service:") and mode[8:] not in enabled:
                raise self.error(
                    f"service {mode[8:]!r} not found for network_mode 'service:{mode[8:]}'",
                    (*here, "network_mode"),
                )
            for i, volume in enumerate(service.get("volumes") or ()):
                if not isinstance(volume, dict) or volume.get("type") != "volume":
                    continue
                source = volume.get("source")
                if source and source not in volumes:
                    raise self.error(
                        f"service {name!r} refers to undefined volume {source}",
                        (*here, "volumes", i),
                        hint=f"declare it under the top-level `volumes:` ({source}: {{}})",
                    )
            for kind, defined in (("config", configs), ("secret", secrets)):
                for i, ref in enumerate(service.get(f"{kind}s") or ()):
                    source = ref.get("source") if isinstance(ref, dict) else ref
                    if source not in defined:
                        raise self.error(
                            f"service {name!r} refers to undefined {kind} {source}", (*here, f"{kind}s", i)
                        )
            self._check_scale(name, service)
            self._check_mounts(name, service)
        for key, secret in secrets.items():
            secret = secret or {}
            if (
                not _truthy(secret.get("external"))
                and not secret.get("file")
                and not secret.get("environment")
            ) and "driver" not in secret:
                raise self.error(
                    f"secret {key!r} must declare either `file` or `environment`", ("secrets", key)
                )
        for key, config in configs.items():
            config = config or {}
            given = [k for k in ("file", "environment", "content") if k in config]
            if len(given) > 1:
                raise self.error(
                    f"configs.{key}: file|environment|content attributes are mutually exclusive",
                    ("configs", key),
                )
            if not given and "external" not in config and "driver" not in config:
                raise self.error(
                    f"configs.{key}: one of file|environment|content must be set", ("configs", key)
                )
        self._check_cycles(enabled)

    def _check_scale(self, name: str, service: dict[str, Any]) -> None:
        """`scale`, `cpus`, `mem_*` and `pids_limit` must agree with their `deploy` counterparts."""
        deploy = service.get("deploy") if isinstance(service.get("deploy"), dict) else None
        replicas = deploy.get("replicas") if deploy else None
        scale = service.get("scale")
        if scale is not None and replicas is not None and scale != replicas:
            raise self.error(
                f"services.{name}: can't set distinct values on 'scale' and 'deploy.replicas'",
                ("services", name, "scale"),
            )
        resources = (deploy or {}).get("resources") or {}
        limits, reservations = resources.get("limits"), resources.get("reservations")
        pairs = (
            ("cpus", limits, "cpus", "deploy.resources.limits.cpus", gt.t_float32),
            ("mem_limit", limits, "memory", "deploy.resources.limits.memory", gt.t_bytes),
            ("mem_reservation", reservations, "memory", "deploy.resources.reservations.memory", gt.t_bytes),
            ("pids_limit", limits, "pids", "deploy.resources.limits.pids", gt.t_int),
        )
        for key, section, deploy_key, deploy_path, convert in pairs:
            if key not in service or section is None:
                continue
            try:
                mine = convert(service[key], ("services", name, key))
                theirs = convert(section.get(deploy_key), ("services", name, *deploy_path.split(".")))
            except gt.ModelError as exc:
                raise self.error(str(exc), exc.path) from None
            if mine is not gt.OMIT and mine != (0 if theirs is gt.OMIT else theirs):
                raise self.error(
                    f"services.{name}: can't set distinct values on '{key}' and '{deploy_path}'",
                    ("services", name, key),
                )
        count = scale if scale is not None else replicas
        if isinstance(count, int) and count > 1 and service.get("container_name"):
            raise self.error(
                f"services.{name}: can't set container_name and "
                f"{'scale' if scale is not None else 'deploy.replicas'} as container name must be unique",
                ("services", name, "container_name"),
            )

    def _check_mounts(self, name: str, service: dict[str, Any]) -> None:
        """Docker compose refuses two mounts on one container path (tmpfs entries first, then volumes)."""
        seen: dict[str, str] = {}
        tmpfs = service.get("tmpfs")
        entries: list[tuple[str, int, Any]] = [
            ("tmpfs", i, str(item).split(":", 1)[0])
            for i, item in enumerate([tmpfs] if isinstance(tmpfs, str) else tmpfs or ())
        ]
        entries += [
            ("volumes", i, volume.get("target"))
            for i, volume in enumerate(service.get("volumes") or ())
            if isinstance(volume, dict)
        ]
        for key, i, target in entries:
            if not target:
                continue
            here = f"services.{name}.{key}[{i}]"
            if target in seen:
                raise self.error(
                    f"{here}: target {target} already mounted as {seen[target]}", ("services", name, key, i)
                )
            seen[target] = here

    def _check_cycles(self, enabled: dict[str, Any]) -> None:
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(name: str, trail: list[str]) -> None:
            state[name] = 1
            for dependency in sorted(enabled[name].get("depends_on") or {}):
                if dependency not in enabled:
                    continue
                if state.get(dependency) == 1:
                    cycle = (
                        [*trail[trail.index(dependency) :], dependency]
                        if dependency in trail
                        else [name, dependency]
                    )
                    raise self.error(
                        f"dependency cycle detected: {' -> '.join(cycle)}", ("services", name, "depends_on")
                    )
                if state.get(dependency) is None:
                    visit(dependency, [*trail, dependency])
            state[name] = 2

        for name in sorted(enabled):
            if state.get(name) is None:
                visit(name, [name])


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "t", "true"))
