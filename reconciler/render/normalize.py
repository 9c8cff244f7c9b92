"""Short syntax to long syntax, relative paths, and compose's implicit defaults (default network, names).

Called by the renderer: `canonical` after every merged layer (compose-go transform.Canonical),
`resolve_paths` once against the project directory, `normalize` once at the end (loader.Normalize).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reconciler.render.syntax import SpecError, parse_device, parse_ports, parse_volume

Path = tuple[str, ...]


class NormalizeError(Exception):
    """A value that cannot be brought to long syntax; carries the path for the location."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


def _where(path: Path) -> str:
    return ".".join(path)


# -- canonical (transform/canonical.go) ----------------------------------------------------------


def _build(value: Any, path: Path) -> Any:
    if isinstance(value, str):
        return {"context": value}
    if not isinstance(value, dict):
        raise NormalizeError(path, f"{_where(path)} must be a string or a mapping")
    value.setdefault("context", ".")
    secrets = value.get("secrets")
    if isinstance(secrets, list):
        value["secrets"] = [_file_mount(item, (*path, "secrets")) for item in secrets]
    contexts = value.get("additional_contexts")
    if isinstance(contexts, list):
        value["additional_contexts"] = _key_values(contexts, (*path, "additional_contexts"))
    return value


def _key_values(items: list[Any], path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep:
            raise NormalizeError(path, f"{_where(path)}: invalid key=value entry {item!r}")
        out[key] = value
    return out


def _depends_on(value: Any, path: Path) -> Any:
    if isinstance(value, list):
        return {str(name): {"condition": "service_started", "required": True} for name in value}
    if isinstance(value, dict):
        for name, dep in value.items():
            if not isinstance(dep, dict):
                raise NormalizeError((*path, name), f"{_where((*path, name))} must be a mapping")
            dep.setdefault("condition", "service_started")
            dep.setdefault("required", True)
        return value
    raise NormalizeError(path, f"{_where(path)} must be a list or a mapping")


def _env_file_entry(value: Any) -> Any:
    if isinstance(value, str):
        return {"path": value, "required": True}
    if isinstance(value, dict):
        value.setdefault("required", True)
    return value


def _env_file(value: Any, path: Path) -> Any:
    if isinstance(value, str):
        return [_env_file_entry(value)]
    if isinstance(value, list):
        return [_env_file_entry(item) for item in value]
    raise NormalizeError(path, f"{_where(path)} must be a string or a list")


def _string_or_list(value: Any, path: Path) -> Any:
    return [value] if isinstance(value, str) else value


def _extends(value: Any, path: Path) -> Any:
    return {"service": value} if isinstance(value, str) else value


def _networks(value: Any, path: Path) -> Any:
    if isinstance(value, list):
        return {str(name): None for name in value}
    return value


def _volumes(value: Any, path: Path) -> Any:
    if not isinstance(value, list):
        return value
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            try:
                out.append(parse_volume(item))
            except SpecError as exc:
                raise NormalizeError((*path, str(i)), str(exc)) from None
        elif isinstance(item, dict):
            target = item.get("target")
            if isinstance(target, str) and target:
                # compose-go cleans a long-syntax target as Go's path.Clean does: `/opt/app/` -> `/opt/app`
                item = {**item, "target": _go_clean(target)}
            out.append(item)
        else:
            raise NormalizeError((*path, str(i)), f"{_where(path)}: invalid volume {item!r}")
    return out


def _go_clean(path: str) -> str:
    """Go's path.Clean: like posixpath.normpath, except that a leading `//` is not kept."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def _devices(value: Any, path: Path) -> Any:
    if not isinstance(value, list):
        return value
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            try:
                out.append(parse_device(item))
            except SpecError as exc:
                raise NormalizeError((*path, str(i)), str(exc)) from None
        else:
            out.append(item)
    return out


def _file_mount(value: Any, path: Path) -> Any:
    return {"source": value} if isinstance(value, str) else value


def _file_mounts(value: Any, path: Path) -> Any:
    if isinstance(value, list):
        return [_file_mount(item, path) for item in value]
    return value


def _ports(value: Any, path: Path) -> Any:
    if not isinstance(value, list):
        raise NormalizeError(path, f"{_where(path)} must be a list")
    out: list[Any] = []
    for i, item in enumerate(value):
        if isinstance(item, bool):
            raise NormalizeError((*path, str(i)), f"{_where(path)}: invalid port {item!r}")
        if isinstance(item, int):
            out.append({"target": item})
        elif isinstance(item, str):
            try:
                out.extend(parse_ports(item))
            except SpecError as exc:
                raise NormalizeError((*path, str(i)), str(exc)) from None
        elif isinstance(item, dict):
            out.append(item)
        else:
            raise NormalizeError((*path, str(i)), f"{_where(path)}: invalid port {item!r}")
    return out


_SERVICE_TRANSFORMS: dict[str, Callable[[Any, Path], Any]] = {
    "build": _build,
    "depends_on": _depends_on,
    "env_file": _env_file,
    "label_file": _string_or_list,
    "extends": _extends,
    "networks": _networks,
    "volumes": _volumes,
    "dns": _string_or_list,
    "devices": _devices,
    "secrets": _file_mounts,
    "configs": _file_mounts,
    "ports": _ports,
}


def _maybe_external(value: Any, path: Path) -> Any:
    if not isinstance(value, dict):
        return value
    external = value.get("external")
    if isinstance(external, dict):
        value["external"] = True
        if "name" in external:
            if "name" in value and value["name"] != external["name"]:
                raise NormalizeError(path, f"{_where(path)}: name and external.name conflict; only use name")
            value.setdefault("name", external["name"])
    return value


def canonical(model: dict[str, Any], only: Iterable[str] | None = None) -> None:
    """Rewrite short syntax to long syntax in place (idempotent on already-canonical data).

    ``only`` limits the pass to the services a layer touched: the others are canonical already.
    """
    services = model.get("services")
    if isinstance(services, dict):
        names = services if only is None else [n for n in only if n in services]
        for name in names:
            service = services[name]
            if not isinstance(service, dict):
                continue
            for key, transform in _SERVICE_TRANSFORMS.items():
                if key in service and service[key] is not None:
                    service[key] = transform(service[key], ("services", name, key))
            dns = service.get("dns")
            if isinstance(dns, list):  # loader.OmitEmpty: blank DNS entries are dropped
                service["dns"] = [entry for entry in dns if entry is not None and entry != ""]
    for kind in ("volumes", "networks", "secrets", "configs"):
        section = model.get(kind)
        if isinstance(section, dict):
            for key, value in section.items():
                section[key] = _maybe_external(value, (kind, key))


# -- relative paths (paths/resolve.go) -----------------------------------------------------------

_REMOTE_PREFIXES = ("https://", "http://", "git://", "ssh://", "github.com/", "git@")
_WINDOWS_ABS = re.compile(r"^[a-zA-Z]:[\\/]")


def expand_user(path: str, home: str) -> str:
    if path.startswith("~"):
        return posixpath.normpath(posixpath.join(home or "/", path[1:].lstrip("/"))) if home else path[1:]
    return path


def _join(base: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(base, path))


def abs_path(path: str, base: str, home: str) -> str:
    path = expand_user(path, home)
    if posixpath.isabs(path) or not path:
        return path
    return _join(base, path)


def _maybe_unix_path(path: str, base: str, home: str) -> str:
    path = expand_user(path, home)
    if not posixpath.isabs(path) and not _WINDOWS_ABS.match(path) and not path.startswith("\\\\"):
        return _join(base, path)
    return path


def _context_path(path: str, base: str, home: str) -> str:
    if "://" in path or path.startswith("service:") or path.startswith(_REMOTE_PREFIXES):
        return path
    return abs_path(path, base, home)


def resolve_paths(model: dict[str, Any], base: str, home: str) -> None:
    """Make build contexts, bind sources, env files and secret/config files absolute, in place."""
    services = model.get("services")
    if isinstance(services, dict):
        for service in services.values():
            if not isinstance(service, dict):
                continue
            build = service.get("build")
            if isinstance(build, dict):
                if isinstance(build.get("context"), str):
                    build["context"] = _context_path(build["context"], base, home)
                contexts = build.get("additional_contexts")
                if isinstance(contexts, dict):
                    for key, value in contexts.items():
                        if isinstance(value, str):
                            contexts[key] = _context_path(value, base, home)
            for entry in service.get("env_file") or ():
                if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                    entry["path"] = abs_path(entry["path"], base, home)
            for volume in service.get("volumes") or ():
                if isinstance(volume, dict) and volume.get("type") == "bind":
                    source = volume.get("source")
                    if not isinstance(source, str):
                        raise NormalizeError(
                            ("services",),
                            'invalid mount config for type "bind": field Source must not be empty',
                        )
                    volume["source"] = _maybe_unix_path(source, base, home)
    for kind in ("configs", "secrets"):
        section = model.get(kind)
        if isinstance(section, dict):
            for item in section.values():
                if isinstance(item, dict) and isinstance(item.get("file"), str):
                    item["file"] = _maybe_unix_path(item["file"], base, home)
    volumes = model.get("volumes")
    if isinstance(volumes, dict):
        for volume in volumes.values():
            if not isinstance(volume, dict) or volume.get("driver") != "local":
                continue
            opts = volume.get("driver_opts")
            if isinstance(opts, dict) and opts.get("o") == "bind" and isinstance(opts.get("device"), str):
                opts["device"] = _maybe_unix_path(opts["device"], base, home)


# -- implicit defaults (loader/normalize.go) -----------------------------------------------------


def _resolve(value: Any, env: Mapping[str, str], keep_empty: bool) -> Any:
    """Fill `KEY` entries (no value) from the environment; drop them if unknown unless keep_empty."""
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, str):
                if "=" not in item:
                    if item in env:
                        out.append(f"{item}={env[item]}")
                    elif keep_empty:
                        out.append(item)
                    continue
                out.append(item)
            # non-string entries are dropped, as compose's resolve does
        return out
    if isinstance(value, dict):
        resolved: dict[str, Any] = {}
        for key, item in value.items():
            if item is not None:
                resolved[key] = item
            elif key in env:
                resolved[key] = env[key]
            elif keep_empty:
                resolved[key] = None
        return resolved
    return value


def resolve_list_environment(value: list[Any], env: Mapping[str, str]) -> list[Any]:
    """compose-go ResolveEnvironment: `- KEY` items of a list take their value from ``env``."""
    resolved = _resolve(value, env, True)
    assert isinstance(resolved, list)
    return resolved


def _is_true(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "t", "true"))


def _dependency(restart: bool) -> dict[str, Any]:
    return {"condition": "service_started", "restart": restart, "required": True}


def normalize(model: dict[str, Any], env: Mapping[str, str], project: str) -> None:
    """Implicit default network, service defaults, implied depends_on and resource names, in place."""
    networks = model.get("networks")
    if not isinstance(networks, dict):
        networks = {}
    uses_default = False
    services = model.get("services")
    if isinstance(services, dict):
        for service in services.values():
            if "network_mode" in service:
                continue
            attached = service.get("networks")
            if not attached:
                service["networks"] = {"default": None}
                uses_default = True
            elif "default" in attached:
                uses_default = True
    if uses_default and "default" not in networks:
        networks["default"] = None
    if networks:
        model["networks"] = networks

    for service in (services or {}).values():
        if service.get("pull_policy") == "if_not_present":
            service["pull_policy"] = "missing"
        build = service.get("build")
        if isinstance(build, dict):
            if build.get("context") is None:
                build["context"] = "."
            if build.get("dockerfile") is None and build.get("dockerfile_inline") is None:
                build["dockerfile"] = "Dockerfile"
            if "args" in build:
                build["args"] = _resolve(build["args"], env, False)
        if "environment" in service:
            service["environment"] = _resolve(service["environment"], env, True)
        depends = service.get("depends_on")
        depends_on: dict[str, Any] = depends if isinstance(depends, dict) else {}
        for link in service.get("links") or ():
            parts = str(link).split(":")
            name = parts[0] if len(parts) == 2 else str(link)
            depends_on.setdefault(name, _dependency(True))
        for namespace in ("network_mode", "ipc", "pid", "uts", "cgroup"):
            ref = service.get(namespace)
            if isinstance(ref, str) and ref.startswith("service:"):
                depends_on.setdefault(ref[len("service:") :], _dependency(True))
        for source in service.get("volumes_from") or ():
            if not str(source).startswith("container:"):
                depends_on.setdefault(str(source).split(":")[0], _dependency(False))
        if depends_on:
            service["depends_on"] = depends_on

    for kind in ("networks", "volumes", "configs", "secrets"):
        section = model.get(kind)
        if not isinstance(section, dict):
            continue
        for key, resource in list(section.items()):
            resource = resource if isinstance(resource, dict) else {}
            if resource.get("name") is None:
                resource["name"] = key if _is_true(resource.get("external")) else f"{project}_{key}"
            section[key] = resource
