"""The final step: the merged compose dict as `docker compose config --format json` prints it.

Called by the renderer once per render. Mirrors compose-go's types.ServiceConfig and friends: struct field
order, `omitempty`, defaults (port mode/protocol, secret targets), byte sizes and durations as strings,
float32 numbers, `command`/`entrypoint` always present. Generic Go-typed converters live in ``gotypes``.
"""

from __future__ import annotations

from typing import Any

from reconciler.render.gotypes import (
    OMIT,
    Convert,
    ModelError,
    list_of,
    mapping_with_equals,
    scalar_str,
    struct,
    t_bool,
    t_bytes,
    t_duration,
    t_float32,
    t_hosts,
    t_int,
    t_mapping,
    t_mapping_with_equals,
    t_options,
    t_ptr_bool,
    t_ptr_duration,
    t_ptr_int,
    t_shell,
    t_str,
    t_string_or_list,
    t_strlist,
    to_bool,
    to_int,
    value_struct,
)

# -- service sub-structures ---------------------------------------------------------------------


def _port(value: Any, path: tuple[str, ...]) -> Any:
    if not isinstance(value, dict):
        raise ModelError(path, f"{'.'.join(path)} must be a port mapping")
    out: dict[str, Any] = {}
    if value.get("name"):
        out["name"] = scalar_str(value["name"], (*path, "name"))
    out["mode"] = scalar_str(value.get("mode") or "ingress", (*path, "mode"))
    if value.get("host_ip"):
        out["host_ip"] = scalar_str(value["host_ip"], (*path, "host_ip"))
    target = to_int(value.get("target", 0), (*path, "target"))
    if target:
        out["target"] = target
    published = value.get("published")
    if published is not None and published != "":
        out["published"] = scalar_str(published, (*path, "published"))
    out["protocol"] = scalar_str(value.get("protocol") or "tcp", (*path, "protocol"))
    for key in value:
        known = ("name", "mode", "host_ip", "target", "published", "protocol", "app_protocol")
        if key not in known and not key.startswith("x-"):
            raise ModelError((*path, key), f"{'.'.join(path)}: unsupported port key {key!r}")
    if value.get("app_protocol"):
        out["app_protocol"] = scalar_str(value["app_protocol"], (*path, "app_protocol"))
    return out


_VOLUME_BIND = struct(
    [
        ("selinux", t_str),
        ("propagation", t_str),
        ("create_host_path", t_bool),
        ("recursive", t_str),
    ],
    name="volume bind",
)
_VOLUME_VOLUME = struct(
    [("labels", t_mapping), ("nocopy", t_bool), ("subpath", t_str)],
    name="volume option",
)


def _file_mode(value: Any, path: tuple[str, ...]) -> Any:
    """FileMode: ints as given, strings as octal; printed as an octal string ("0440")."""
    if value is None:
        return OMIT
    if isinstance(value, str):
        try:
            number = int(value, 8)
        except ValueError:
            raise ModelError(path, f"{'.'.join(path)}: invalid file mode {value!r}") from None
    else:
        number = to_int(value, path)
    return f"0{number:o}" if number >= 0 else f"-0{-number:o}"


_VOLUME_TMPFS = struct([("size", t_bytes), ("mode", t_int)], name="tmpfs option")
_VOLUME_IMAGE = struct([("subpath", t_str)], name="image volume option")
_VOLUME = struct(
    [
        ("type", t_str),
        ("source", t_str),
        ("target", t_str),
        ("read_only", t_bool),
        ("consistency", t_str),
        ("bind", _VOLUME_BIND),
        ("volume", _VOLUME_VOLUME),
        ("tmpfs", _VOLUME_TMPFS),
        ("image", _VOLUME_IMAGE),
    ],
    name="volume",
)


def _file_reference(*, default_target: str | None) -> Convert:
    fields = struct(
        [("source", t_str), ("target", t_str), ("uid", t_str), ("gid", t_str), ("mode", _file_mode)],
        name="file reference",
    )

    def convert(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, str):
            value = {"source": value}
        out = fields(value, path)
        if default_target is not None and "target" not in out and "source" in out:
            out = {"source": out["source"], "target": f"{default_target}/{out['source']}", **out}
        return out

    return convert


_DEPENDENCY = struct(
    [("condition", t_str), ("restart", t_bool), ("required", lambda v, p: to_bool(v, p))],
    name="depends_on",
)


def _depends_on(value: Any, path: tuple[str, ...]) -> Any:
    if value is None:
        return OMIT
    if not isinstance(value, dict):
        raise ModelError(path, f"{'.'.join(path)} must be a list or a mapping")
    out = {}
    for name, dep in value.items():
        dep = dep if isinstance(dep, dict) else {}
        converted = _DEPENDENCY(dep, (*path, name))
        converted.setdefault("required", False)
        out[name] = converted
    return out if out else OMIT


_HEALTH_FIELDS = struct(
    [
        ("test", lambda v, p: OMIT),  # converted below
        ("timeout", t_ptr_duration),
        ("interval", t_ptr_duration),
        ("retries", t_ptr_int),
        ("start_period", t_ptr_duration),
        ("start_interval", t_ptr_duration),
        ("disable", t_bool),
    ],
    name="healthcheck",
)


def _healthcheck(value: Any, path: tuple[str, ...]) -> Any:
    out = _HEALTH_FIELDS(value, path)
    if out is OMIT:
        return OMIT
    test = value.get("test")
    if isinstance(test, str):
        out = {"test": ["CMD-SHELL", test], **out}
    elif isinstance(test, list) and test:
        out = {"test": [scalar_str(item, (*path, "test")) for item in test], **out}
    elif test is not None and not isinstance(test, list):
        raise ModelError((*path, "test"), f"{'.'.join(path)}.test must be a string or a list")
    return out


def _logging(value: Any, path: tuple[str, ...]) -> Any:
    return struct([("driver", t_str), ("options", t_options)], name="logging")(value, path)


def _service_network(value: Any, path: tuple[str, ...]) -> Any:
    if value is None:
        return None
    converted = struct(
        [
            ("aliases", t_strlist),
            ("driver_opts", t_options),
            ("gw_priority", t_int),
            ("interface_name", t_str),
            ("ipv4_address", t_str),
            ("ipv6_address", t_str),
            ("link_local_ips", t_strlist),
            ("mac_address", t_str),
            ("priority", t_int),
        ],
        name="service network",
    )(value, path)
    return {} if converted is OMIT else converted


def _service_networks(value: Any, path: tuple[str, ...]) -> Any:
    if value is None:
        return OMIT
    if not isinstance(value, dict):
        raise ModelError(path, f"{'.'.join(path)} must be a list or a mapping")
    return {name: _service_network(item, (*path, name)) for name, item in value.items()} or OMIT


def _ulimit(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key in ("soft", "hard"):
            if key in value and to_int(value[key], (*path, key)):
                out[key] = to_int(value[key], (*path, key))
        return out
    number = to_int(value, path)
    return number if number else {}


def _ulimits(value: Any, path: tuple[str, ...]) -> Any:
    if value is None:
        return OMIT
    if not isinstance(value, dict):
        raise ModelError(path, f"{'.'.join(path)} must be a mapping")
    return {name: _ulimit(item, (*path, name)) for name, item in value.items()} or OMIT


def _device_count(value: Any, path: tuple[str, ...]) -> Any:
    if value == "all":
        return -1
    return t_int(value, path)


_DEVICE_REQUEST = struct(
    [
        ("capabilities", t_strlist),
        ("driver", t_str),
        ("count", _device_count),
        ("device_ids", t_strlist),
        ("options", t_mapping),
    ],
    name="device request",
)
_RESOURCE = struct(
    [
        ("cpus", t_float32),
        ("memory", t_bytes),
        ("pids", t_int),
        ("devices", list_of(_DEVICE_REQUEST)),
    ],
    name="resource",
)
_UPDATE = struct(
    [
        ("parallelism", t_ptr_int),
        ("delay", t_duration),
        ("failure_action", t_str),
        ("monitor", t_duration),
        ("max_failure_ratio", t_float32),
        ("order", t_str),
    ],
    name="update_config",
)
_DEPLOY = struct(
    [
        ("mode", t_str),
        ("replicas", t_ptr_int),
        ("labels", t_mapping),
        ("update_config", _UPDATE),
        ("rollback_config", _UPDATE),
        (
            "resources",
            value_struct(struct([("limits", _RESOURCE), ("reservations", _RESOURCE)], name="resources")),
        ),
        (
            "restart_policy",
            struct(
                [
                    ("condition", t_str),
                    ("delay", t_ptr_duration),
                    ("max_attempts", t_ptr_int),
                    ("window", t_ptr_duration),
                ],
                name="restart_policy",
            ),
        ),
        (
            "placement",
            value_struct(
                struct(
                    [
                        ("constraints", t_strlist),
                        ("preferences", list_of(struct([("spread", t_str)], name="preference"))),
                        ("max_replicas_per_node", t_int),
                    ],
                    name="placement",
                )
            ),
        ),
        ("endpoint_mode", t_str),
    ],
    name="deploy",
)


def _deploy(value: Any, path: tuple[str, ...]) -> Any:
    out = _DEPLOY(value if value is not None else None, path)
    if out is OMIT:
        return OMIT
    # Resources and Placement are value structs in compose-go: always printed
    ordered: dict[str, Any] = {}
    for key in (
        "mode",
        "replicas",
        "labels",
        "update_config",
        "rollback_config",
        "resources",
        "restart_policy",
        "placement",
        "endpoint_mode",
    ):
        if key in out:
            ordered[key] = out[key]
        elif key in ("resources", "placement"):
            ordered[key] = {}
    return ordered


_BUILD = struct(
    [
        ("context", t_str),
        ("dockerfile", t_str),
        ("dockerfile_inline", t_str),
        ("entitlements", t_strlist),
        ("args", lambda v, p: OMIT),  # resolved by the renderer (needs the environment)
        ("provenance", t_str),
        ("sbom", t_str),
        ("labels", t_mapping),
        ("cache_from", t_string_or_list),
        ("cache_to", t_string_or_list),
        ("no_cache", t_bool),
        ("additional_contexts", t_mapping),
        ("pull", t_bool),
        ("extra_hosts", t_hosts),
        ("isolation", t_str),
        ("network", t_str),
        ("target", t_str),
        ("secrets", list_of(_file_reference(default_target=None))),
        ("shm_size", t_bytes),
        ("tags", t_string_or_list),
        ("platforms", t_string_or_list),
        ("privileged", t_bool),
    ],
    name="build",
)


def _build(value: Any, path: tuple[str, ...]) -> Any:
    out = _BUILD(value, path)
    if out is OMIT:
        return OMIT
    args = mapping_with_equals(value.get("args"), (*path, "args"))
    if args:
        ordered: dict[str, Any] = {}
        for key in ("context", "dockerfile", "dockerfile_inline", "entitlements"):
            if key in out:
                ordered[key] = out.pop(key)
        ordered["args"] = args
        ordered.update(out)
        out = ordered
    return out


_CREDENTIAL_SPEC = struct([("config", t_str), ("file", t_str), ("registry", t_str)], name="credential_spec")

# compose-go types.ServiceConfig, in field order. Keys absent here are refused (see UNSUPPORTED).
SERVICE_FIELDS: list[tuple[str, Convert]] = [
    ("profiles", t_strlist),
    ("annotations", t_mapping),
    ("attach", t_ptr_bool),
    ("build", _build),
    ("cap_add", t_strlist),
    ("cap_drop", t_strlist),
    ("cgroup_parent", t_str),
    ("cgroup", t_str),
    ("cpu_count", t_int),
    ("cpu_percent", t_float32),
    ("cpu_period", t_int),
    ("cpu_quota", t_int),
    ("cpu_rt_period", t_int),
    ("cpu_rt_runtime", t_int),
    ("cpus", t_float32),
    ("cpuset", t_str),
    ("cpu_shares", t_int),
    ("command", t_shell),
    ("configs", list_of(_file_reference(default_target=None))),
    ("container_name", t_str),
    ("credential_spec", _CREDENTIAL_SPEC),
    ("depends_on", _depends_on),
    ("deploy", _deploy),
    ("device_cgroup_rules", t_strlist),
    (
        "devices",
        list_of(struct([("source", t_str), ("target", t_str), ("permissions", t_str)], name="device")),
    ),
    ("dns", t_string_or_list),
    ("dns_opt", t_strlist),
    ("dns_search", t_string_or_list),
    ("domainname", t_str),
    ("entrypoint", t_shell),
    ("environment", t_mapping_with_equals),
    ("expose", t_strlist),
    ("external_links", t_strlist),
    ("extra_hosts", t_hosts),
    ("group_add", t_strlist),
    ("hostname", t_str),
    ("healthcheck", _healthcheck),
    ("image", t_str),
    ("init", t_ptr_bool),
    ("ipc", t_str),
    ("isolation", t_str),
    ("labels", t_mapping),
    ("links", t_strlist),
    ("logging", _logging),
    ("mem_limit", t_bytes),
    ("mem_reservation", t_bytes),
    ("memswap_limit", t_bytes),
    ("mem_swappiness", t_bytes),
    ("mac_address", t_str),
    ("network_mode", t_str),
    ("networks", _service_networks),
    ("oom_kill_disable", t_bool),
    ("oom_score_adj", t_int),
    ("pid", t_str),
    ("pids_limit", t_int),
    ("platform", t_str),
    ("ports", list_of(_port)),
    ("privileged", t_bool),
    ("pull_policy", t_str),
    ("read_only", t_bool),
    ("restart", t_str),
    ("runtime", t_str),
    ("scale", t_ptr_int),
    ("secrets", list_of(_file_reference(default_target="/run/secrets"))),
    ("security_opt", t_strlist),
    ("shm_size", t_bytes),
    ("stdin_open", t_bool),
    ("stop_grace_period", t_ptr_duration),
    ("stop_signal", t_str),
    ("storage_opt", t_options),
    ("sysctls", t_mapping),
    ("tmpfs", t_string_or_list),
    ("tty", t_bool),
    ("ulimits", _ulimits),
    ("use_api_socket", t_bool),
    ("user", t_str),
    ("userns_mode", t_str),
    ("uts", t_str),
    ("volumes", list_of(_VOLUME)),
    ("volumes_from", t_strlist),
    ("working_dir", t_str),
]
_ALWAYS = frozenset(("command", "entrypoint"))  # json:"command" without omitempty

# Valid compose keys this renderer refuses rather than render differently from compose.
UNSUPPORTED = {
    "develop": "`develop` (compose watch) is not supported",
    "blkio_config": "`blkio_config` is not supported",
    "gpus": "`gpus` is not supported; use deploy.resources.reservations.devices",
    "models": "`models` is not supported",
    "provider": "`provider` services are not supported",
    "post_start": "`post_start` lifecycle hooks are not supported",
    "pre_stop": "`pre_stop` lifecycle hooks are not supported",
    "label_file": "`label_file` is not supported; put the labels in `labels`",
    "pull_refresh_after": "`pull_refresh_after` is not supported",
}
# Consumed before this step (extends) or inlined into `environment` (env_file).
_CONSUMED = frozenset(("extends", "env_file"))


def service_model(
    name: str, service: dict[str, Any], environment: dict[str, str | None] | None
) -> dict[str, Any]:
    """One service as compose prints it; ``environment`` is the resolved env (env_file + environment)."""
    path = ("services", name)
    out: dict[str, Any] = {}
    for key, convert in SERVICE_FIELDS:
        if key == "environment":
            if environment:
                out[key] = environment
            continue
        if key not in service:
            if key in _ALWAYS:
                out[key] = None
            continue
        converted = convert(service[key], (*path, key))
        if converted is not OMIT:
            out[key] = converted
    return out


# -- top-level resources ------------------------------------------------------------------------

_IPAM = struct(
    [
        ("driver", t_str),
        (
            "config",
            list_of(
                struct(
                    [
                        ("subnet", t_str),
                        ("gateway", t_str),
                        ("ip_range", t_str),
                        ("aux_addresses", t_mapping),
                    ],
                    name="ipam config",
                )
            ),
        ),
        ("options", lambda v, p: OMIT),  # compose v2.40 does not print IPAM options
    ],
    name="ipam",
)
NETWORK = struct(
    [
        ("name", t_str),
        ("driver", t_str),
        ("driver_opts", t_options),
        ("ipam", value_struct(_IPAM)),
        ("external", t_bool),
        ("internal", t_bool),
        ("attachable", t_bool),
        ("labels", t_mapping),
        ("enable_ipv4", t_ptr_bool),
        ("enable_ipv6", t_ptr_bool),
    ],
    name="network",
)
VOLUME = struct(
    [
        ("name", t_str),
        ("driver", t_str),
        ("driver_opts", t_options),
        ("external", t_bool),
        ("labels", t_mapping),
    ],
    name="volume",
)
SECRET = struct(
    [
        ("name", t_str),
        ("file", t_str),
        ("environment", t_str),
        ("content", lambda v, p: OMIT),  # never printed for secrets
        ("external", t_bool),
        ("labels", t_mapping),
        ("driver", t_str),
        ("driver_opts", t_options),
        ("template_driver", t_str),
    ],
    name="secret",
)
CONFIG = struct(
    [
        ("name", t_str),
        ("file", t_str),
        ("environment", t_str),
        ("content", t_str),
        ("external", t_bool),
        ("labels", t_mapping),
        ("template_driver", t_str),
    ],
    name="config",
)


def network_model(name: str, value: Any) -> dict[str, Any]:
    converted = NETWORK(value if value is not None else {}, ("networks", name))
    out: dict[str, Any] = {} if converted is OMIT else converted
    # IPAMConfig is a value struct in compose-go: `ipam: {}` is always printed, after driver_opts
    head = {k: v for k, v in out.items() if k in ("name", "driver", "driver_opts")}
    return {**head, "ipam": out.get("ipam", {}), **out}


def volume_model(name: str, value: Any) -> dict[str, Any]:
    out = VOLUME(value if value is not None else {}, ("volumes", name))
    return {} if out is OMIT else out


def secret_model(name: str, value: Any) -> dict[str, Any]:
    out = SECRET(value if value is not None else {}, ("secrets", name))
    return {} if out is OMIT else out


def config_model(name: str, value: Any) -> dict[str, Any]:
    out = CONFIG(value if value is not None else {}, ("configs", name))
    out = {} if out is OMIT else out
    if "environment" in out:
        out.pop("content", None)
    return out
