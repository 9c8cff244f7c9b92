"""Merging compose layers the way compose-go's `override` package does, plus `!reset`/`!override`.

Called by the renderer for each file (in order) and by `extends`. Mappings merge recursively; the special
rules below (command/entrypoint/healthcheck.test replace, environment/labels as sequences, depends_on
and networks as mappings...) and the unicity pass (ports, volumes, expose, secrets, configs by key) follow
compose v2.40's `override/merge.go` and `override/uncity.go`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from reconciler.render.gofmt import go_value_str
from reconciler.render.syntax import SpecError, parse_volume

Path = tuple[str, ...]


class MergeError(Exception):
    """Two layers disagree on a value's kind (mapping vs list...); carries the dotted path."""

    def __init__(self, path: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.path = tuple(path)


def to_sequence(value: Any) -> list[Any]:
    """compose-go convertIntoSequence: `{K: V}` -> sorted `["K=V"]`, `{K: null}` -> `["K"]`."""
    if isinstance(value, dict):
        seq: list[str] = []
        for key, item in value.items():
            if item is None:
                seq.append(key)
            elif isinstance(item, list):
                seq.extend(f"{key}={go_value_str(sub)}" for sub in item)
            else:
                seq.append(f"{key}={go_value_str(item)}")
        seq.sort()
        return list(seq)
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [value]
    return []


def _to_mapping(value: Any, default: dict[str, Any] | None) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(item): (dict(default) if default is not None else None) for item in value}
    return {}


def _merge_to_sequence(base: Any, other: Any, path: Path) -> Any:
    return to_sequence(base) + to_sequence(other)


def _merge_extra_hosts(base: Any, other: Any, path: Path) -> Any:
    right = to_sequence(base)
    return right + [item for item in to_sequence(other) if item not in right]


def _override(base: Any, other: Any, path: Path) -> Any:
    return other


def _merge_logging(base: Any, other: Any, path: Path) -> Any:
    if not isinstance(base, dict) or not isinstance(other, dict):
        return other
    # options merge only when both layers name the same driver (or one names none)
    if "driver" not in other or "driver" not in base or other["driver"] == base["driver"]:
        return merge_mappings(base, other, path)
    return other


def _merge_build(base: Any, other: Any, path: Path) -> Any:
    def as_build(value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            return {"context": value}
        return value if isinstance(value, dict) else {}

    return merge_mappings(as_build(base), as_build(other), path)


_DEPENDENCY = {"condition": "service_started", "required": True}


def _merge_depends_on(base: Any, other: Any, path: Path) -> Any:
    return merge_mappings(_to_mapping(base, _DEPENDENCY), _to_mapping(other, _DEPENDENCY), path)


def _merge_networks(base: Any, other: Any, path: Path) -> Any:
    return merge_mappings(_to_mapping(base, None), _to_mapping(other, None), path)


def _merge_ulimit(base: Any, other: Any, path: Path) -> Any:
    return other


def _merge_ipam_config(base: Any, other: Any, path: Path) -> Any:
    if not isinstance(base, list) or not isinstance(other, list):
        raise MergeError(path, "ipam.config must be a list in every file")
    configs: list[dict[str, Any]] = []
    for original in base:
        right = _to_mapping(original, None)
        for override in other:
            left = _to_mapping(override, None)
            if left.get("subnet") != right.get("subnet") and not any(
                c.get("subnet") == left.get("subnet") for c in configs
            ):
                configs.append(left)
                continue
            merged = merge_mappings(right, left, path)
            for i, existing in enumerate(configs):
                if existing.get("subnet") == merged.get("subnet"):
                    configs[i] = merged
                    break
            else:
                configs.append(merged)
    return configs


Merger = Callable[[Any, Any, Path], Any]

# compose-go override/merge.go mergeSpecials
_SPECIALS: dict[Path, Merger] = {
    ("networks", "*", "ipam", "config"): _merge_ipam_config,
    ("networks", "*", "labels"): _merge_to_sequence,
    ("volumes", "*", "labels"): _merge_to_sequence,
    ("services", "*", "annotations"): _merge_to_sequence,
    ("services", "*", "build"): _merge_build,
    ("services", "*", "build", "args"): _merge_to_sequence,
    ("services", "*", "build", "additional_contexts"): _merge_to_sequence,
    ("services", "*", "build", "extra_hosts"): _merge_extra_hosts,
    ("services", "*", "build", "labels"): _merge_to_sequence,
    ("services", "*", "command"): _override,
    ("services", "*", "depends_on"): _merge_depends_on,
    ("services", "*", "deploy", "labels"): _merge_to_sequence,
    ("services", "*", "dns"): _merge_to_sequence,
    ("services", "*", "dns_opt"): _merge_to_sequence,
    ("services", "*", "dns_search"): _merge_to_sequence,
    ("services", "*", "entrypoint"): _override,
    ("services", "*", "env_file"): _merge_to_sequence,
    ("services", "*", "label_file"): _merge_to_sequence,
    ("services", "*", "environment"): _merge_to_sequence,
    ("services", "*", "extra_hosts"): _merge_extra_hosts,
    ("services", "*", "healthcheck", "test"): _override,
    ("services", "*", "labels"): _merge_to_sequence,
    ("services", "*", "volumes", "*", "volume", "labels"): _merge_to_sequence,
    ("services", "*", "logging"): _merge_logging,
    ("services", "*", "networks"): _merge_networks,
    ("services", "*", "sysctls"): _merge_to_sequence,
    ("services", "*", "tmpfs"): _merge_to_sequence,
    ("services", "*", "ulimits", "*"): _merge_ulimit,
}


def matches(path: Sequence[str], pattern: Sequence[str]) -> bool:
    """compose-go tree.Path.Matches: same length, `*` matches any one part."""
    if len(path) != len(pattern):
        return False
    return all(p == "*" or p == part for part, p in zip(path, pattern, strict=True))


def _special(path: Path) -> Merger | None:
    # every pattern is `<section>.*.<keys>`, some with a second `*` in fourth place
    if len(path) < 2:
        return None
    key = (path[0], "*", *path[2:])
    found = _SPECIALS.get(key)
    if found is None and len(key) >= 4:
        found = _SPECIALS.get((*key[:3], "*", *key[4:]))
    return found


def merge_value(base: Any, other: Any, path: Path) -> Any:
    """compose-go mergeYaml: merge ``other`` (later layer) onto ``base``."""
    special = _special(path)
    if special is not None:
        return special(base, other, path)
    if other is None:
        return base
    if isinstance(base, dict):
        if not isinstance(other, dict):
            raise MergeError(
                path, f"cannot override {'.'.join(path)}: a mapping cannot be replaced by a value"
            )
        return merge_mappings(base, other, path)
    if isinstance(base, list):
        if not isinstance(other, list):
            raise MergeError(path, f"cannot override {'.'.join(path)}: a list cannot be replaced by a value")
        return base + other
    return other


def merge_mappings(base: dict[str, Any], other: dict[str, Any], path: Path) -> dict[str, Any]:
    """Recursive mapping merge; ``base`` is updated in place and returned."""
    for key, value in other.items():
        if key not in base:
            base[key] = value
        else:
            base[key] = merge_value(base[key], value, (*path, key))
    return base


def apply_resets(target: Any, paths: Sequence[Path]) -> None:
    """Delete from ``target`` every value a later layer `!reset`s or `!override`s (ResetProcessor.Apply)."""
    if not paths:
        return
    _reset(target, (), paths)


def _reset(target: Any, path: Path, paths: Sequence[Path]) -> None:
    if isinstance(target, dict):
        for key in list(target):
            child = (*path, key)
            if any(matches(child, pattern) for pattern in paths):
                del target[key]
                continue
            _reset(target[key], child, paths)
    elif isinstance(target, list):
        for i, item in enumerate(target):
            _reset(item, (*path, f"[{i}]"), paths)


# -- unicity (override/uncity.go) ----------------------------------------------------------------


def _volume_key(entry: Any, path: Path) -> str:
    if isinstance(entry, dict):
        target = entry.get("target")
        if not isinstance(target, str):
            raise MergeError(path, f"service volume {'.'.join(path)} is missing a mount target")
        return target
    if isinstance(entry, str):
        try:
            return _volume_target(entry)
        except SpecError as exc:
            raise MergeError(path, str(exc)) from None
    return ""


@functools.lru_cache(maxsize=4096)
def _volume_target(spec: str) -> str:
    return str(parse_volume(spec).get("target", ""))


def _expose_key(entry: Any, path: Path) -> str:
    if isinstance(entry, bool) or not isinstance(entry, str | int):
        raise MergeError(path, f"{'.'.join(path)}: unsupported expose value {entry!r}")
    return str(entry)


def _mount_key(default: str) -> Callable[[Any, Path], str]:
    def key(entry: Any, path: Path) -> str:
        if isinstance(entry, str):
            return f"{default}/{entry}"
        if isinstance(entry, dict):
            if "target" in entry:
                return str(entry["target"])
            return f"{default}/{entry.get('source')}"
        raise MergeError(path, f"{'.'.join(path)}: unsupported value {entry!r}")

    return key


def _port_key(entry: Any, path: Path) -> str:
    if isinstance(entry, int) and not isinstance(entry, bool):
        return str(entry)
    if isinstance(entry, dict):
        target = entry.get("target")
        if not isinstance(target, int) or isinstance(target, bool):
            raise MergeError(path, f"service ports {'.'.join(path)} is missing a target port")
        published = entry.get("published")
        # compose v2.40 formats the raw value with %s: 6004 and "6004" (or a missing one) differ
        published_text = published if isinstance(published, str) else f"%!s({published!r})"
        host = entry.get("host_ip") if isinstance(entry.get("host_ip"), str) else "0.0.0.0"  # noqa: S104 - a key, not a bind
        protocol = entry.get("protocol") if isinstance(entry.get("protocol"), str) else "tcp"
        return f"{host}:{published_text}:{target}/{protocol}"
    if isinstance(entry, str):
        return entry
    return ""


def _key_value_key(entry: Any, path: Path) -> str:
    if not isinstance(entry, str):
        raise MergeError(path, f"{'.'.join(path)}: unexpected value {entry!r}")
    return entry.split("=", 1)[0]


def _env_file_key(entry: Any, path: Path) -> str:
    if isinstance(entry, dict):
        return str(entry.get("path"))
    return str(entry)


# compose-go override/uncity.go (v2.9): sequences whose later entries replace earlier ones by key.
_UNIQUE: dict[str, Callable[[Any, Path], str]] = {
    "annotations": _key_value_key,
    "cap_add": _key_value_key,
    "cap_drop": _key_value_key,
    "devices": _volume_key,
    "configs": _mount_key(""),
    "dns": _key_value_key,
    "dns_opt": _key_value_key,
    "dns_search": _key_value_key,
    "environment": _key_value_key,
    "env_file": _env_file_key,
    "expose": _expose_key,
    "labels": _key_value_key,
    "links": _key_value_key,
    "ports": _port_key,
    "profiles": _key_value_key,
    "secrets": _mount_key("/run/secrets"),
    "sysctls": _key_value_key,
    "tmpfs": _key_value_key,
    "volumes": _volume_key,
}
_UNIQUE_BUILD = {key: _key_value_key for key in ("args", "additional_contexts", "tags", "labels")}
_UNIQUE_NETWORK = {key: _key_value_key for key in ("aliases", "link_local_ips")}


def _dedup(container: dict[str, Any], table: Mapping[str, Callable[[Any, Path], str]], path: Path) -> None:
    for key in container.keys() & table.keys():
        indexer = table[key]
        entries = container[key]
        if not isinstance(entries, list) or len(entries) < 2:
            continue
        keys = [indexer(entry, (*path, key, str(i))) for i, entry in enumerate(entries)]
        if len(set(keys)) == len(keys):
            continue  # the common case: nothing to replace
        seq: list[Any] = []
        seen: dict[str, int] = {}
        for index, entry in zip(keys, entries, strict=True):
            if index in seen:
                seq[seen[index]] = entry
            else:
                seen[index] = len(seq)
                seq.append(entry)
        container[key] = seq


def enforce_unicity(model: dict[str, Any], only: Iterable[str] | None = None) -> None:
    """Later entries replace earlier ones with the same key, in place of the first (EnforceUnicity).

    ``only`` limits the pass to the services a layer touched: the others are already unique.
    """
    services = model.get("services")
    if not isinstance(services, dict):
        return
    names = services if only is None else [n for n in only if n in services]
    for name in names:
        service = services[name]
        if not isinstance(service, dict):
            continue
        path = ("services", name)
        _dedup(service, _UNIQUE, path)
        build = service.get("build")
        if isinstance(build, dict):
            _dedup(build, _UNIQUE_BUILD, (*path, "build"))
        deploy = service.get("deploy")
        if isinstance(deploy, dict):
            _dedup(deploy, {"labels": _key_value_key}, (*path, "deploy"))
        networks = service.get("networks")
        if isinstance(networks, dict):
            for net, config in networks.items():
                if isinstance(config, dict):
                    _dedup(config, _UNIQUE_NETWORK, (*path, "networks", net))
