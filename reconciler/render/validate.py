"""Schema validation of compose documents: known keys and value types, with compose's rules.

Called by the renderer on each interpolated document, so every error can name file, line, service
and key. The rules follow the Compose Specification JSON schema shipped with compose v2.40; keys
that are valid compose but that we refuse to render are reported by the model step instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

Path = tuple[str | int, ...]


class SchemaError(Exception):
    """One schema violation at ``path``; the renderer adds the location."""

    def __init__(self, path: Path, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.hint = hint


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path) or "top level"


_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "null": "null",
    "object": "a mapping",
    "array": "a list",
}
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int, float),  # JSON schema integers include 2.0
    "boolean": (bool,),
    "null": (type(None),),
    "object": (dict,),
    "array": (list,),
}


def _expected(kinds: Iterable[str]) -> str:
    names = [_TYPE_NAMES[k] for k in kinds]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


class Check:
    """A compiled schema rule. ``kinds`` are the Python types it can accept (None: anything)."""

    kinds: frozenset[type] | None = None

    def __call__(self, value: Any, path: Path) -> None:
        raise NotImplementedError


class _Any(Check):
    def __call__(self, value: Any, path: Path) -> None:
        return None


class types(Check):
    def __init__(self, *names: str) -> None:
        self.names = names
        self.kinds: frozenset[type] = frozenset(t for name in names for t in _PY_TYPES[name])
        self.integer_only = "integer" in names and "number" not in names

    def __call__(self, value: Any, path: Path) -> None:
        kind = type(value)
        if kind not in self.kinds or (self.integer_only and kind is float and not value.is_integer()):
            raise SchemaError(path, f"{dotted(path)} must be {_expected(self.names)}, not {_got(value)}")


STR = types("string")
BOOL_OR_STR = types("boolean", "string")
INT_OR_STR = types("integer", "string")
NUM_OR_STR = types("number", "string")
NUMBER = types("number")
ANY = _Any()


class enum(Check):
    kinds = frozenset((str,))

    def __init__(self, *values: str) -> None:
        self.values = values

    def __call__(self, value: Any, path: Path) -> None:
        if value not in self.values:
            raise SchemaError(path, f"{dotted(path)} must be one of {', '.join(self.values)}, not {value!r}")


class array(Check):
    kinds = frozenset((list,))

    def __init__(self, item: Check = ANY) -> None:
        self.item = item

    def __call__(self, value: Any, path: Path) -> None:
        if type(value) is not list:
            raise SchemaError(path, f"{dotted(path)} must be a list, not {_got(value)}")
        if self.item is not ANY:
            for i, element in enumerate(value):
                self.item(element, (*path, i))


class one_of(Check):
    """The first alternative that accepts the value's type decides; errors come from inside it."""

    def __init__(self, *checks: Check, expected: str) -> None:
        self.checks = checks
        self.expected = expected
        kinds: set[type] = set()
        for check in checks:
            if check.kinds is None:
                self.kinds = None
                break
            kinds |= check.kinds
        else:
            self.kinds = frozenset(kinds)

    def __call__(self, value: Any, path: Path) -> None:
        candidates = [c for c in self.checks if c.kinds is None or type(value) in c.kinds]
        if len(candidates) == 1:
            candidates[0](value, path)
            return
        deepest: SchemaError | None = None
        for candidate in candidates:
            try:
                candidate(value, path)
                return
            except SchemaError as exc:
                if len(exc.path) > len(path) and (deepest is None or len(exc.path) > len(deepest.path)):
                    deepest = exc
        if deepest is not None:  # the value had the right shape; report the inner problem
            raise deepest
        raise SchemaError(path, f"{dotted(path)} must be {self.expected}, not {_got(value)}")


class mapping(Check):
    """An object: ``props`` are known keys; ``values`` checks any other key (matching ``key_pattern``)."""

    kinds = frozenset((dict,))

    def __init__(
        self,
        props: dict[str, Check] | None = None,
        *,
        values: Check | None = None,
        key_pattern: str | None = None,
        required: tuple[str, ...] = (),
        extensions: bool = True,
        what: str = "key",
    ) -> None:
        self.props = props or {}
        self.values = values
        self.pattern = re.compile(key_pattern) if key_pattern else None
        self.required = required
        self.extensions = extensions
        self.what = what

    def __call__(self, value: Any, path: Path) -> None:
        if type(value) is not dict:
            raise SchemaError(path, f"{dotted(path)} must be a mapping, not {_got(value)}")
        props = self.props
        for key, item in value.items():
            sub = props.get(key)
            if sub is not None:
                sub(item, (*path, key))
            elif self.extensions and key.startswith("x-"):
                continue
            elif self.values is not None and (self.pattern is None or self.pattern.search(key)):
                self.values(item, (*path, key))
            elif self.values is not None:
                raise SchemaError((*path, key), f"{dotted(path)}: invalid {self.what} name {key!r}")
            else:
                close = difflib.get_close_matches(key, list(props), n=1)
                hint = f"did you mean {close[0]!r}?" if close else None
                raise SchemaError((*path, key), f"{dotted(path)}: unknown key {key!r}", hint)
        for key in self.required:
            if key not in value:
                raise SchemaError(path, f"{dotted(path)}: missing required key {key!r}")


# -- definitions (compose-spec.json) ------------------------------------------------------------

_NAME = r"^[a-zA-Z0-9._-]+$"
LIST_OF_STRINGS = array(STR)
STRING_OR_LIST = one_of(STR, LIST_OF_STRINGS, expected="a string or a list of strings")
LIST_OR_DICT = one_of(
    mapping(values=types("string", "number", "boolean", "null"), extensions=False),
    LIST_OF_STRINGS,
    expected="a list of KEY=VALUE strings or a mapping",
)
COMMAND = one_of(types("null"), STR, LIST_OF_STRINGS, expected="a string or a list of strings")
EXTRA_HOSTS = one_of(
    mapping(values=one_of(STR, LIST_OF_STRINGS, expected="a string or a list"), extensions=False),
    LIST_OF_STRINGS,
    expected="a list of host:ip strings or a mapping",
)
DRIVER_OPTS = mapping(values=types("string", "number"), extensions=False)
ULIMITS = mapping(
    values=one_of(
        INT_OR_STR,
        mapping({"hard": INT_OR_STR, "soft": INT_OR_STR}, required=("soft", "hard")),
        expected="an integer or a mapping with soft and hard",
    ),
    key_pattern=r"^[a-z]+$",
    extensions=False,
    what="ulimit",
)
FILE_REFERENCES = array(
    one_of(
        STR,
        mapping({"source": STR, "target": STR, "uid": STR, "gid": STR, "mode": NUM_OR_STR}),
        expected="a name or a mapping",
    )
)
EXTERNAL = types("boolean", "string", "object")
BLKIO_LIMIT = mapping({"path": STR, "rate": INT_OR_STR}, extensions=False)

HEALTHCHECK = mapping(
    {
        "disable": BOOL_OR_STR,
        "interval": STR,
        "retries": NUM_OR_STR,
        "test": one_of(STR, array(STR), expected="a string or a list of strings"),
        "timeout": STR,
        "start_period": STR,
        "start_interval": STR,
    }
)


class _DeviceRequest(mapping):
    """A device request; compose refuses `count` together with `device_ids`."""

    def __call__(self, value: Any, path: Path) -> None:
        super().__call__(value, path)
        if "count" in value and "device_ids" in value:
            raise SchemaError(path, f'{dotted(path)}: "count" and "device_ids" attributes are exclusive')


DEVICE_REQUESTS = array(
    _DeviceRequest(
        {
            "capabilities": LIST_OF_STRINGS,
            "count": INT_OR_STR,
            "device_ids": LIST_OF_STRINGS,
            "driver": STR,
            "options": LIST_OR_DICT,
        }
    )
)
_RESOURCE = mapping(
    {
        "cpus": NUM_OR_STR,
        "memory": STR,
        "pids": INT_OR_STR,
        "devices": DEVICE_REQUESTS,
        "generic_resources": array(
            mapping({"discrete_resource_spec": mapping({"kind": STR, "value": NUMBER})})
        ),
    }
)
_UPDATE = mapping(
    {
        "parallelism": INT_OR_STR,
        "delay": STR,
        "failure_action": STR,
        "monitor": STR,
        "max_failure_ratio": NUM_OR_STR,
        "order": enum("start-first", "stop-first"),
    }
)
DEPLOY = one_of(
    types("null"),
    mapping(
        {
            "mode": STR,
            "endpoint_mode": STR,
            "replicas": INT_OR_STR,
            "labels": LIST_OR_DICT,
            "rollback_config": _UPDATE,
            "update_config": _UPDATE,
            "resources": mapping({"limits": _RESOURCE, "reservations": _RESOURCE}),
            "restart_policy": mapping(
                {"condition": STR, "delay": STR, "max_attempts": INT_OR_STR, "window": STR}
            ),
            "placement": mapping(
                {
                    "constraints": array(STR),
                    "preferences": array(mapping({"spread": STR})),
                    "max_replicas_per_node": INT_OR_STR,
                }
            ),
        }
    ),
    expected="a mapping",
)
BUILD = one_of(
    STR,
    mapping(
        {
            "context": STR,
            "dockerfile": STR,
            "dockerfile_inline": STR,
            "entitlements": array(STR),
            "args": LIST_OR_DICT,
            "ssh": LIST_OR_DICT,
            "labels": LIST_OR_DICT,
            "cache_from": array(STR),
            "cache_to": array(STR),
            "no_cache": BOOL_OR_STR,
            "additional_contexts": LIST_OR_DICT,
            "network": STR,
            "provenance": types("string", "boolean"),
            "sbom": types("string", "boolean"),
            "pull": BOOL_OR_STR,
            "target": STR,
            "shm_size": INT_OR_STR,
            "extra_hosts": EXTRA_HOSTS,
            "isolation": STR,
            "privileged": BOOL_OR_STR,
            "secrets": FILE_REFERENCES,
            "tags": array(STR),
            "ulimits": ULIMITS,
            "platforms": array(STR),
        }
    ),
    expected="a build context path or a mapping",
)
SERVICE_NETWORK = one_of(
    mapping(
        {
            "aliases": LIST_OF_STRINGS,
            "interface_name": STR,
            "ipv4_address": STR,
            "ipv6_address": STR,
            "link_local_ips": LIST_OF_STRINGS,
            "mac_address": STR,
            "driver_opts": DRIVER_OPTS,
            "priority": NUMBER,
            "gw_priority": NUMBER,
        }
    ),
    types("null"),
    expected="a mapping or null",
)
SERVICE_VOLUME = one_of(
    STR,
    mapping(
        {
            "type": enum("bind", "volume", "tmpfs", "cluster", "npipe", "image"),
            "source": STR,
            "target": STR,
            "read_only": BOOL_OR_STR,
            "consistency": STR,
            "bind": mapping(
                {
                    "propagation": STR,
                    "create_host_path": BOOL_OR_STR,
                    "recursive": enum("enabled", "disabled", "writable", "readonly"),
                    "selinux": enum("z", "Z"),
                }
            ),
            "volume": mapping({"labels": LIST_OR_DICT, "nocopy": BOOL_OR_STR, "subpath": STR}),
            "tmpfs": mapping({"size": INT_OR_STR, "mode": NUM_OR_STR}),
            "image": mapping({"subpath": STR}),
        },
        required=("type",),
    ),
    expected="a volume spec string or a mapping",
)
PORT = one_of(
    NUMBER,
    STR,
    mapping(
        {
            "name": STR,
            "mode": STR,
            "host_ip": STR,
            "target": INT_OR_STR,
            "published": types("string", "integer"),
            "protocol": STR,
            "app_protocol": STR,
        }
    ),
    expected="a port spec string, a number or a mapping",
)
ENV_FILE = one_of(
    STR,
    array(
        one_of(
            STR,
            mapping(
                {"path": STR, "format": STR, "required": BOOL_OR_STR}, required=("path",), extensions=False
            ),
            expected="a path or a mapping",
        )
    ),
    expected="a path or a list of paths",
)
SERVICE_HOOK = mapping(
    {
        "command": COMMAND,
        "user": STR,
        "privileged": BOOL_OR_STR,
        "working_dir": STR,
        "environment": LIST_OR_DICT,
    }
)

SERVICE_PROPS: dict[str, Check] = {
    "develop": types("object", "null"),
    "deploy": DEPLOY,
    "annotations": LIST_OR_DICT,
    "attach": BOOL_OR_STR,
    "build": BUILD,
    "blkio_config": mapping(
        {
            "device_read_bps": array(BLKIO_LIMIT),
            "device_read_iops": array(BLKIO_LIMIT),
            "device_write_bps": array(BLKIO_LIMIT),
            "device_write_iops": array(BLKIO_LIMIT),
            "weight": INT_OR_STR,
            "weight_device": array(mapping({"path": STR, "weight": INT_OR_STR}, extensions=False)),
        },
        extensions=False,
    ),
    "cap_add": array(STR),
    "cap_drop": array(STR),
    "cgroup": enum("host", "private"),
    "cgroup_parent": STR,
    "command": COMMAND,
    "configs": FILE_REFERENCES,
    "container_name": STR,
    "cpu_count": INT_OR_STR,
    "cpu_percent": INT_OR_STR,
    "cpu_shares": NUM_OR_STR,
    "cpu_quota": NUM_OR_STR,
    "cpu_period": NUM_OR_STR,
    "cpu_rt_period": NUM_OR_STR,
    "cpu_rt_runtime": NUM_OR_STR,
    "cpus": NUM_OR_STR,
    "cpuset": STR,
    "credential_spec": mapping({"config": STR, "file": STR, "registry": STR}),
    "depends_on": one_of(
        LIST_OF_STRINGS,
        mapping(
            values=mapping(
                {
                    "restart": BOOL_OR_STR,
                    "required": types("boolean"),
                    "condition": enum("service_started", "service_healthy", "service_completed_successfully"),
                },
                required=("condition",),
            ),
            key_pattern=_NAME,
            extensions=False,
            what="service",
        ),
        expected="a list of service names or a mapping",
    ),
    "device_cgroup_rules": LIST_OF_STRINGS,
    "devices": array(
        one_of(
            STR,
            mapping({"source": STR, "target": STR, "permissions": STR}, required=("source",)),
            expected="a device spec string or a mapping",
        )
    ),
    "dns": STRING_OR_LIST,
    "dns_opt": array(STR),
    "dns_search": STRING_OR_LIST,
    "domainname": STR,
    "entrypoint": COMMAND,
    "env_file": ENV_FILE,
    "label_file": one_of(STR, array(STR), expected="a path or a list of paths"),
    "environment": LIST_OR_DICT,
    "expose": array(types("string", "number")),
    "extends": one_of(
        STR,
        mapping({"service": STR, "file": STR}, required=("service",), extensions=False),
        expected="a service name or a mapping with service (and file)",
    ),
    "provider": mapping({"type": STR, "options": types("object")}),
    "external_links": array(STR),
    "extra_hosts": EXTRA_HOSTS,
    "gpus": one_of(enum("all"), DEVICE_REQUESTS, expected="'all' or a list of device requests"),
    "group_add": array(types("string", "number")),
    "healthcheck": HEALTHCHECK,
    "hostname": STR,
    "image": STR,
    "init": BOOL_OR_STR,
    "ipc": STR,
    "isolation": STR,
    "labels": LIST_OR_DICT,
    "links": array(STR),
    "logging": mapping(
        {"driver": STR, "options": mapping(values=types("string", "number", "null"), extensions=False)}
    ),
    "mac_address": STR,
    "mem_limit": NUM_OR_STR,
    "mem_reservation": types("string", "integer"),
    "mem_swappiness": INT_OR_STR,
    "memswap_limit": NUM_OR_STR,
    "network_mode": STR,
    "models": types("array", "object"),
    "networks": one_of(
        LIST_OF_STRINGS,
        mapping(values=SERVICE_NETWORK, key_pattern=_NAME, extensions=False, what="network"),
        expected="a list of network names or a mapping",
    ),
    "oom_kill_disable": BOOL_OR_STR,
    "oom_score_adj": INT_OR_STR,
    "pid": types("string", "null"),
    "pids_limit": NUM_OR_STR,
    "platform": STR,
    "ports": array(PORT),
    "post_start": array(SERVICE_HOOK),
    "pre_stop": array(SERVICE_HOOK),
    "privileged": BOOL_OR_STR,
    "profiles": LIST_OF_STRINGS,
    "pull_policy": STR,
    "pull_refresh_after": STR,
    "read_only": BOOL_OR_STR,
    "restart": STR,
    "runtime": STR,
    "scale": INT_OR_STR,
    "security_opt": array(STR),
    "shm_size": NUM_OR_STR,
    "secrets": FILE_REFERENCES,
    "sysctls": LIST_OR_DICT,
    "stdin_open": BOOL_OR_STR,
    "stop_grace_period": STR,
    "stop_signal": STR,
    "storage_opt": types("object"),
    "tmpfs": STRING_OR_LIST,
    "tty": BOOL_OR_STR,
    "ulimits": ULIMITS,
    "use_api_socket": types("boolean"),
    "user": STR,
    "uts": STR,
    "userns_mode": STR,
    "volumes": array(SERVICE_VOLUME),
    "volumes_from": array(STR),
    "working_dir": STR,
}
SERVICE = one_of(types("null"), mapping(SERVICE_PROPS), expected="a mapping")

NETWORK = one_of(
    types("null"),
    mapping(
        {
            "name": STR,
            "driver": STR,
            "driver_opts": DRIVER_OPTS,
            "ipam": mapping(
                {
                    "driver": STR,
                    "config": array(
                        mapping(
                            {
                                "subnet": STR,
                                "ip_range": STR,
                                "gateway": STR,
                                "aux_addresses": mapping(values=STR, extensions=False),
                            }
                        )
                    ),
                    "options": mapping(values=STR, extensions=False),
                }
            ),
            "external": EXTERNAL,
            "internal": BOOL_OR_STR,
            "enable_ipv4": BOOL_OR_STR,
            "enable_ipv6": BOOL_OR_STR,
            "attachable": BOOL_OR_STR,
            "labels": LIST_OR_DICT,
        }
    ),
    expected="a mapping",
)
VOLUME = one_of(
    types("null"),
    mapping(
        {
            "name": STR,
            "driver": STR,
            "driver_opts": DRIVER_OPTS,
            "external": EXTERNAL,
            "labels": LIST_OR_DICT,
        }
    ),
    expected="a mapping",
)
SECRET = mapping(
    {
        "name": STR,
        "environment": STR,
        "file": STR,
        "external": EXTERNAL,
        "labels": LIST_OR_DICT,
        "driver": STR,
        "driver_opts": DRIVER_OPTS,
        "template_driver": STR,
    }
)
CONFIG = mapping(
    {
        "name": STR,
        "content": STR,
        "environment": STR,
        "file": STR,
        "external": EXTERNAL,
        "labels": LIST_OR_DICT,
        "template_driver": STR,
    }
)
PROJECT = mapping(
    {
        "version": STR,
        "name": STR,
        "include": array(ANY),
        "services": mapping(values=SERVICE, key_pattern=_NAME, extensions=False, what="service"),
        "models": types("object"),
        "networks": mapping(values=NETWORK, key_pattern=_NAME, extensions=False, what="network"),
        "volumes": mapping(values=VOLUME, key_pattern=_NAME, extensions=False, what="volume"),
        "secrets": mapping(values=SECRET, key_pattern=_NAME, extensions=False, what="secret"),
        "configs": mapping(values=CONFIG, key_pattern=_NAME, extensions=False, what="config"),
    }
)


def validate_document(data: dict[str, Any]) -> None:
    """Raise SchemaError for the first violation in one (interpolated) compose document."""
    PROJECT(data, ())


# Lists the schema wants unique but that compose does not de-duplicate when merging.
_UNIQUE_LISTS = ("external_links", "group_add", "security_opt", "volumes_from", "device_cgroup_rules")


def validate_merged(model: dict[str, Any]) -> None:
    """Checks that only hold for the merged model (duplicates created by merging files)."""
    services = model.get("services")
    if not isinstance(services, dict):
        return
    for name, service in services.items():
        if service is None:
            # `app:` left empty is fine in an override, but compose's schema wants a mapping once merged
            raise SchemaError(("services", name), f"services.{name} must be a mapping")
        if not isinstance(service, dict):
            continue
        for key in _UNIQUE_LISTS:
            items = service.get(key)
            if not isinstance(items, list):
                continue
            seen: dict[str, int] = {}
            for i, item in enumerate(items):
                marker = repr(item)
                if marker in seen:
                    raise SchemaError(
                        ("services", name, key),
                        f"services.{name}.{key} items at {seen[marker]} and {i} are equal",
                    )
                seen[marker] = i
