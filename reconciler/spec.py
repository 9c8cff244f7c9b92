"""Normalize a rendered compose project into the networks, volumes and containers we create, and hash them.

Pure (no Docker, no clock): ``reconciler.plan`` compares these specs with live containers and
``reconciler.converge`` turns them into Engine API requests. Any service key we cannot converge
faithfully raises ``UnsupportedError``: a key is never silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from reconciler import labels as L
from reconciler.errors import Location, UnsupportedError
from reconciler.render import unescape_dollars

COMPOSE_VERSION = "2.40.3"  # stamped on every object so Compose v2 does not warn about a version mismatch
# Compact JSON {compose key: short hash} of the normalized spec, on every container we create. It lets
# `plan` name the fields that changed from the container list alone (no inspect, no values: nothing
# secret ends up in a label). TODO(lead): move next to the other keys in reconciler/labels.py.
FIELDS_LABEL = L.CONFIG_FIELDS

# Service keys that become part of the container we create, and so of the config hash.
CONTAINER_KEYS = frozenset(
    {
        "image", "command", "entrypoint", "environment", "ports", "expose", "volumes", "tmpfs", "networks",
        "network_mode", "healthcheck", "restart", "labels", "user", "working_dir", "hostname", "domainname",
        "extra_hosts", "cap_add", "cap_drop", "privileged", "init", "read_only", "tty", "stdin_open",
        "ulimits", "logging", "stop_grace_period", "stop_signal", "shm_size", "sysctls", "dns", "dns_search",
        "dns_opt", "mem_limit", "mem_reservation", "memswap_limit", "cpus", "cpu_shares", "cpuset",
        "pids_limit", "oom_score_adj", "security_opt", "group_add", "devices", "pid", "ipc", "mac_address",
        "secrets", "configs", "container_name", "depends_on", "deploy",
    }
)  # fmt: skip
# Keys that steer the converge but are not part of the container (not hashed: rebuilding or scaling
# must not recreate). ``deploy.replicas``/``scale`` scale; ``build``/``pull_policy`` make the image.
CONTROL_KEYS = frozenset({"build", "pull_policy", "scale"})
# Keys with no effect on what `up -d` creates, accepted on purpose: ``profiles`` was already applied by
# render, ``develop`` only drives `compose watch`, ``attach`` only the log output of a foreground `up`.
NO_EFFECT_KEYS = frozenset({"profiles", "develop", "attach"})
SUPPORTED_KEYS = CONTAINER_KEYS | CONTROL_KEYS | NO_EFFECT_KEYS

_BUILD_KEYS = frozenset(
    {"context", "dockerfile", "args", "target", "labels", "network", "extra_hosts", "shm_size",
     "cache_from", "no_cache", "pull"}
)  # fmt: skip
_NETWORK_KEYS = frozenset(
    {"name", "driver", "driver_opts", "external", "internal", "attachable", "enable_ipv6", "ipam", "labels"}
)
_VOLUME_KEYS = frozenset({"name", "driver", "driver_opts", "external", "labels"})
_TOP_KEYS = frozenset({"name", "services", "networks", "volumes", "secrets", "configs"})
_RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")

# fmt: off
_IPAM_POOL_KEYS = (("subnet", "Subnet"), ("gateway", "Gateway"), ("ip_range", "IPRange"),
                   ("aux_addresses", "AuxiliaryAddresses"))
_HEALTHCHECK_KEYS = (("test", "Test"), ("interval", "Interval"), ("timeout", "Timeout"),
                     ("retries", "Retries"), ("start_period", "StartPeriod"),
                     ("start_interval", "StartInterval"))
_HOST_SCALARS = (("shm_size", "ShmSize"), ("mem_limit", "Memory"), ("mem_reservation", "MemoryReservation"),
                 ("memswap_limit", "MemorySwap"), ("cpus", "NanoCpus"), ("cpu_shares", "CpuShares"),
                 ("cpuset", "CpusetCpus"), ("pids_limit", "PidsLimit"), ("oom_score_adj", "OomScoreAdj"))
_CONFIG_SCALARS = (("stop_signal", "StopSignal"), ("stop_grace_period", "StopTimeout"),
                   ("mac_address", "MacAddress"))
_DURATION_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                "h": 3600 * 10**9}
# fmt: on


class Condition(StrEnum):
    """A ``depends_on`` condition: what the dependency must reach before the dependent starts."""

    STARTED = "service_started"
    HEALTHY = "service_healthy"
    COMPLETED = "service_completed_successfully"


class PullPolicy(StrEnum):
    ALWAYS = "always"
    MISSING = "missing"
    NEVER = "never"
    BUILD = "build"


@dataclass(frozen=True)
class Dependency:
    service: str
    condition: Condition
    required: bool = True
    restart: bool = False  # restart the dependent when this dependency is recreated


@dataclass(frozen=True)
class BuildSpec:
    context: str
    dockerfile: str | None = None
    args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    network: str | None = None
    extra_hosts: tuple[str, ...] = ()
    shm_size: int | None = None
    cache_from: tuple[str, ...] = ()
    no_cache: bool = False
    pull: bool = False


@dataclass(frozen=True)
class ServiceSpec:
    """One service, normalized: ``config`` (compose keys, canonical values) is what the hash covers."""

    name: str
    image: str
    replicas: int
    pull_policy: PullPolicy
    build: BuildSpec | None
    depends_on: tuple[Dependency, ...]
    config: Mapping[str, Any]
    config_hash: str  # of ``hashed(config)``, algorithm HASH_VERSION
    field_hashes: Mapping[str, str]
    container_name: str | None = None
    stop_timeout: int | None = None  # seconds, from stop_grace_period
    has_healthcheck: bool = False
    restart: str = "no"
    # deploy.update_config.order: "start-first" starts the replacement next to the old container and
    # stops the old one once the new one is ready (only without a fixed host port or container_name).
    update_order: str = "stop-first"
    legacy_hash: str = ""  # the hash release 0 stamped (no io.reconciler.hash-version label)

    def hash_matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a container's config-hash label says it was made from this spec, by whichever hash
        version stamped it: an upgrade of the reconciler never recreates unchanged containers."""
        live = labels.get(L.CONFIG_HASH)
        version = labels.get(L.HASH_VERSION)
        if version is None:
            return live in (self.legacy_hash, self.config_hash)
        return version == str(HASH_VERSION) and live == self.config_hash

    def container(self, project: str, number: int) -> str:
        """The container name: Compose's ``{project}-{service}-{n}`` unless ``container_name`` is set."""
        return self.container_name or f"{project}-{self.name}-{number}"


@dataclass(frozen=True)
class NetworkSpec:
    key: str
    name: str
    external: bool = False
    driver: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    ipam: Mapping[str, Any] | None = None  # Engine API IPAM object
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeSpec:
    key: str
    name: str
    external: bool = False
    driver: str | None = None
    driver_opts: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectSpec:
    name: str
    working_dir: str
    config_files: tuple[str, ...]
    services: tuple[ServiceSpec, ...]  # in dependency order: every dependency before its dependents
    networks: tuple[NetworkSpec, ...]
    volumes: tuple[VolumeSpec, ...]

    def service(self, name: str) -> ServiceSpec | None:
        return next((s for s in self.services if s.name == name), None)

    @property
    def one_shots(self) -> frozenset[str]:
        """Services another service waits on to complete successfully (migrations, seeders...)."""
        return frozenset(
            d.service for s in self.services for d in s.depends_on if d.condition is Condition.COMPLETED
        )


class RenderedLike(Protocol):
    """What we need of ``reconciler.render.RenderedProject`` (kept structural: spec never imports render).

    An object may also carry ``bind_digests`` (source path -> content digest, resolved at deploy time)."""

    @property
    def name(self) -> str: ...
    @property
    def working_dir(self) -> str: ...
    @property
    def config_files(self) -> tuple[str, ...]: ...
    @property
    def model(self) -> Mapping[str, Any]: ...


def project_spec(project: RenderedLike) -> ProjectSpec:
    """Normalize a rendered project; raises UnsupportedError naming the service and key we cannot converge."""
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
    ctx = _Context(
        project=name,
        networks={n.key: n.name for n in networks},
        volumes={v.key: v.name for v in volumes},
        secrets=_files(model, "secrets"),
        configs=_files(model, "configs"),
        digests=dict(getattr(project, "bind_digests", None) or {}),
    )
    raw = model.get("services") or {}
    services = {s: _service(ctx, s, raw[s] or {}) for s in sorted(raw)}
    return ProjectSpec(
        name=name,
        working_dir=project.working_dir,
        config_files=tuple(project.config_files),
        services=tuple(services[s] for s in _dependency_order(services)),
        networks=networks,
        volumes=volumes,
    )


# Version of the config-hash algorithm, stamped as io.reconciler.hash-version. Bump it whenever `hashed`
# changes, and keep the old algorithm next to `_legacy` so existing containers are still recognized;
# tests/converge/test_hash_golden.py pins the values.
HASH_VERSION = 1


def hashed(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a normalized service the config hash covers (version 1). ``depends_on`` only orders
    the start, as in Compose; bind sources count by their path as written and their content digest."""
    return {k: v for k, v in config.items() if k != "depends_on"}


def _legacy(config: Mapping[str, Any]) -> dict[str, Any]:
    """The hashed view of release 0: depends_on in, bind/secret/config sources with symlinks resolved,
    no content digests, no network priority."""
    out = dict(config)
    for key in ("volumes", "secrets", "configs"):
        if key in out:
            mounts = []
            for m in out[key]:
                m = {k: v for k, v in m.items() if k != "digest"}
                if key != "volumes" or m.get("type") == "bind":
                    m["source"] = os.path.realpath(m["source"])
                mounts.append(m)
            out[key] = mounts
    if "networks" in out:
        out["networks"] = {
            n: {k: v for k, v in ep.items() if k != "priority"} for n, ep in out["networks"].items()
        }
    return out


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def field_hashes(config: Mapping[str, Any]) -> dict[str, str]:
    """A short hash per compose key: enough to name what changed, too short to reveal a value."""
    return {k: hashlib.sha256(canonical_json(v).encode()).hexdigest()[:8] for k, v in config.items()}


# --- services ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    project: str
    networks: Mapping[str, str]  # compose key -> Docker name
    volumes: Mapping[str, str]
    secrets: Mapping[str, str]  # compose key -> absolute file path
    configs: Mapping[str, str]
    # bind/secret/config source path (as written) -> content digest, resolved by the deployer at deploy
    # time (git object ids of the checkout): a push that leaves a mounted file alone recreates nothing.
    digests: Mapping[str, str] = field(default_factory=dict)


def _unsupported(service: str, key: str, why: str, hint: str | None = None) -> UnsupportedError:
    return UnsupportedError(
        why, Location(service=service, key=key), hint=hint or "remove it, or deploy with docker compose"
    )


def _service(ctx: _Context, name: str, svc: Mapping[str, Any]) -> ServiceSpec:
    for key in svc:
        if key not in SUPPORTED_KEYS and not key.startswith("x-"):
            raise _unsupported(name, key, f"key {key!r} is not supported by the converge engine")
    c: dict[str, Any] = {}
    build = _build(name, svc["build"]) if svc.get("build") else None
    image = svc.get("image") or (f"{ctx.project}-{name}" if build else None)
    if not image:
        raise _unsupported(name, "image", "the service has neither `image` nor `build`", "add one of them")
    c["image"] = image
    for key in ("command", "entrypoint"):
        if svc.get(key) is not None:
            value = svc[key]
            c[key] = shlex.split(value) if isinstance(value, str) else [str(v) for v in value]
    # A variable left unresolved (null) is passed as a bare name, as Compose does: the process gets
    # no such variable, but `docker inspect` shows the same Env either way.
    env = {k: None if v is None else str(v) for k, v in (svc.get("environment") or {}).items()}
    _put(c, "environment", dict(sorted(env.items())))
    _put(c, "ports", sorted((_port(name, p) for p in svc.get("ports") or ()), key=canonical_json))
    _put(c, "expose", sorted({_expose(e) for e in svc.get("expose") or ()}))
    _put(c, "volumes", sorted((_mount(ctx, name, v) for v in svc.get("volumes") or ()), key=_by_target))
    _put(c, "tmpfs", sorted(_str_list(svc.get("tmpfs"))))
    mounts = [_file_mount(ctx, name, "secrets", s) for s in svc.get("secrets") or ()]
    _put(c, "secrets", sorted(mounts, key=_by_target))
    mounts = [_file_mount(ctx, name, "configs", s) for s in svc.get("configs") or ()]
    _put(c, "configs", sorted(mounts, key=_by_target))
    _networks(ctx, name, svc, c)
    _put(c, "healthcheck", _healthcheck(name, svc.get("healthcheck")))
    restart = str(svc.get("restart") or "no")
    if not _RESTART_RE.match(restart):
        raise _unsupported(name, "restart", f"restart policy {restart!r} is not valid")
    if restart != "no":
        c["restart"] = restart
    _put(c, "labels", {k: str(v) for k, v in sorted((svc.get("labels") or {}).items())})
    for key in ("user", "working_dir", "hostname", "domainname", "stop_signal", "mac_address", "cpuset"):
        if svc.get(key):
            c[key] = str(svc[key])
    for key in ("pid", "ipc"):
        if svc.get(key):
            if str(svc[key]).startswith(("service:", "container:")):
                raise _unsupported(name, key, f"{key} {svc[key]!r} (sharing with another container)")
            c[key] = str(svc[key])
    for key in ("privileged", "init", "read_only", "tty", "stdin_open"):
        if svc.get(key):
            c[key] = True
    hosts = svc.get("extra_hosts") or ()
    if isinstance(hosts, Mapping):
        hosts = [f"{h}={ip}" for h, ips in hosts.items() for ip in _str_list(ips)]
    _put(c, "extra_hosts", sorted({str(h).replace("=", ":", 1) for h in hosts}))
    for key in ("cap_add", "cap_drop", "security_opt", "group_add"):
        _put(c, key, sorted(set(_str_list(svc.get(key)))))
    for key in ("dns", "dns_search", "dns_opt"):
        _put(c, key, _str_list(svc.get(key)))  # resolver order matters: kept as written
    _put(c, "ulimits", {k: _ulimit(name, k, v) for k, v in sorted((svc.get("ulimits") or {}).items())})
    logging = svc.get("logging") or {}
    if logging.get("driver") or logging.get("options"):
        options = {k: str(v) for k, v in sorted((logging.get("options") or {}).items())}
        c["logging"] = {"driver": logging.get("driver") or "", "options": options}
    stop_timeout = None
    if svc.get("stop_grace_period") is not None:
        # Compose truncates to whole seconds (ServiceConfig.StopGracePeriod -> container StopTimeout).
        stop_timeout = _duration_ns(name, "stop_grace_period", svc["stop_grace_period"]) // 10**9
        c["stop_grace_period"] = stop_timeout
    _put(c, "sysctls", {str(k): str(v) for k, v in sorted((svc.get("sysctls") or {}).items())})
    for key in ("shm_size", "mem_reservation", "memswap_limit"):
        if svc.get(key) is not None:
            c[key] = _bytes(name, key, svc[key])
    for key in ("cpu_shares", "pids_limit", "oom_score_adj"):
        if svc.get(key) is not None:
            c[key] = int(svc[key])
    _put(c, "devices", sorted((_device(name, d) for d in svc.get("devices") or ()), key=canonical_json))
    replicas = _deploy(name, svc, c)
    if svc.get("container_name"):
        if replicas > 1:
            raise _unsupported(
                name, "container_name", "container_name cannot be used with more than 1 replica"
            )
        c["container_name"] = str(svc["container_name"])
    depends = _depends_on(name, svc.get("depends_on") or {})
    _put(c, "depends_on", {d.service: f"{d.condition}:{str(d.required).lower()}" for d in depends})
    return ServiceSpec(
        name=name,
        image=image,
        replicas=replicas,
        pull_policy=_pull_policy(name, svc.get("pull_policy")),
        build=build,
        depends_on=depends,
        config=c,
        config_hash=config_hash(hashed(c)),
        field_hashes=field_hashes(hashed(c)),
        legacy_hash=config_hash(_legacy(c)),
        container_name=c.get("container_name"),
        stop_timeout=stop_timeout,
        has_healthcheck="healthcheck" in c and c["healthcheck"].get("test") != ["NONE"],
        restart=restart,
        update_order=_update_order(name, svc),
    )


def _put(c: dict[str, Any], key: str, value: Any) -> None:
    """Defaults (empty) stay out of the normalized spec, so `[]` and a missing key hash the same."""
    if value:
        c[key] = value


def _str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _by_target(mount: Mapping[str, Any]) -> str:
    return str(mount["target"])


def _port(service: str, p: Any) -> dict[str, Any]:
    if not isinstance(p, Mapping):
        raise _unsupported(service, "ports", f"port {p!r} is not in long syntax (render normalizes it)")
    port: dict[str, Any] = {"target": int(p["target"]), "protocol": str(p.get("protocol") or "tcp")}
    if p.get("published") not in (None, ""):
        port["published"] = str(p["published"])
    if p.get("host_ip"):
        port["host_ip"] = str(p["host_ip"])
    if p.get("mode") not in (None, "ingress", "host"):
        raise _unsupported(service, "ports", f"port mode {p['mode']!r} is not supported")
    return port


def _expose(value: Any) -> str:
    text = str(value)
    return text if "/" in text else f"{text}/tcp"


def _mount(ctx: _Context, service: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise _unsupported(service, "volumes", f"volume {v!r} is not in long syntax (render normalizes it)")
    kind = v.get("type")
    m: dict[str, Any] = {"type": kind, "target": str(v["target"])}
    if v.get("read_only"):
        m["read_only"] = True
    # `consistency` (cached/delegated) only ever tuned Docker Desktop for Mac's file sharing; Docker
    # Engine ignores it, and so may we.
    unknown = set(v) - {"type", "source", "target", "read_only", "bind", "volume", "tmpfs", "consistency"}
    if unknown:
        raise _unsupported(service, "volumes", f"volume option(s) {sorted(unknown)} are not supported")
    if kind == "volume":
        source = v.get("source")
        if source:
            if source not in ctx.volumes:
                raise _unsupported(service, "volumes", f"volume {source!r} is not declared at the top level")
            m["source"] = ctx.volumes[source]
        opts = v.get("volume") or {}
        if set(opts) - {"nocopy"}:
            raise _unsupported(service, "volumes", f"volume option(s) {sorted(set(opts) - {'nocopy'})}")
        if opts.get("nocopy"):
            m["nocopy"] = True
    elif kind == "bind":
        # As written, as Compose passes it: Docker resolves symlinks itself when the container starts.
        m["source"] = str(v["source"])
        if m["source"] in ctx.digests:
            m["digest"] = ctx.digests[m["source"]]
        opts = v.get("bind") or {}
        if set(opts) - {"create_host_path", "propagation", "selinux"}:
            raise _unsupported(service, "volumes", f"bind option(s) {sorted(opts)} are not supported")
        for key in ("create_host_path", "propagation", "selinux"):
            if opts.get(key):
                m[key] = opts[key]
    elif kind == "tmpfs":
        opts = v.get("tmpfs") or {}
        if set(opts) - {"size", "mode"}:
            raise _unsupported(service, "volumes", f"tmpfs option(s) {sorted(opts)} are not supported")
        if opts.get("size") is not None:
            m["size"] = _bytes(service, "volumes", opts["size"])
        if opts.get("mode") is not None:
            m["mode"] = int(str(opts["mode"]), 8) if isinstance(opts["mode"], str) else int(opts["mode"])
    else:
        raise _unsupported(service, "volumes", f"volume type {kind!r} is not supported (volume, bind, tmpfs)")
    return m


def _files(model: Mapping[str, Any], kind: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (model.get(kind) or {}).items():
        value = value or {}
        if not value.get("file") or set(value) - {"file", "name"}:
            raise UnsupportedError(
                f"only file-based {kind} are supported (found {sorted(set(value) - {'name'})})",
                Location(key=f"{kind}.{key}"),
                hint=f"use `file:` for {kind}, or deploy with docker compose",
            )
        out[key] = str(value["file"])
    return out


def _file_mount(ctx: _Context, service: str, kind: str, ref: Any) -> dict[str, Any]:
    """File-based secrets and configs are read-only bind mounts, as Compose does outside swarm."""
    ref = {"source": ref} if isinstance(ref, str) else dict(ref)
    source = str(ref.get("source"))
    files = ctx.secrets if kind == "secrets" else ctx.configs
    if source not in files:
        raise _unsupported(service, kind, f"{kind[:-1]} {source!r} is not declared at the top level")
    if set(ref) - {"source", "target"}:
        raise _unsupported(service, kind, f"{kind} option(s) {sorted(set(ref) - {'source', 'target'})}")
    target = str(ref.get("target") or source)
    if kind == "secrets" and not target.startswith("/"):
        target = f"/run/secrets/{target}"
    elif not target.startswith("/"):
        target = f"/{target}"
    out = {"source": files[source], "target": target}
    if files[source] in ctx.digests:
        out["digest"] = ctx.digests[files[source]]
    return out


def _networks(ctx: _Context, service: str, svc: Mapping[str, Any], c: dict[str, Any]) -> None:
    mode = svc.get("network_mode")
    if mode:
        if mode not in ("host", "none", "bridge"):
            raise _unsupported(service, "network_mode", f"network_mode {mode!r} is not supported")
        c["network_mode"] = mode
        return
    nets: dict[str, Any] = {}
    order: list[tuple[int, str]] = []
    for key, opts in (svc.get("networks") or {"default": None}).items():
        opts = opts or {}
        extra = set(opts) - {"aliases", "ipv4_address", "ipv6_address", "priority"}
        if extra:
            raise _unsupported(service, "networks", f"network option(s) {sorted(extra)} are not supported")
        if key not in ctx.networks:
            raise _unsupported(service, "networks", f"network {key!r} is not declared at the top level")
        name = ctx.networks[key]
        ep: dict[str, Any] = {}
        _put(ep, "aliases", sorted(set(_str_list(opts.get("aliases")))))
        for k in ("ipv4_address", "ipv6_address"):
            if opts.get(k):
                ep[k] = str(opts[k])
        nets[name] = ep
        if opts.get("priority"):
            ep["priority"] = int(opts["priority"])
        # Compose connects by priority (highest first), then by name; the first becomes NetworkMode.
        order.append((-int(opts.get("priority") or 0), name))
    c["networks"] = {name: nets[name] for _, name in sorted(order)}


def _healthcheck(service: str, hc: Any) -> dict[str, Any] | None:
    if not hc:
        return None
    if hc.get("disable"):
        return {"test": ["NONE"]}
    extra = set(hc) - {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}
    if extra:
        raise _unsupported(service, "healthcheck", f"healthcheck option(s) {sorted(extra)}")
    out: dict[str, Any] = {}
    test = hc.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if test:
        out["test"] = [str(t) for t in test]
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if hc.get(key) is not None:
            out[key] = _duration_ns(service, f"healthcheck.{key}", hc[key])
    if hc.get("retries") is not None:
        out["retries"] = int(hc["retries"])
    return out or None


def _ulimit(service: str, name: str, value: Any) -> list[int]:
    if isinstance(value, Mapping):
        return [int(value["soft"]), int(value["hard"])]
    return [int(value), int(value)]


def _device(service: str, d: Any) -> dict[str, str]:
    if isinstance(d, str):
        parts = d.split(":")
        d = {"source": parts[0], "target": parts[1] if len(parts) > 1 else parts[0]}
        if len(parts) > 2:
            d["permissions"] = parts[2]
    return {
        "source": str(d["source"]),
        "target": str(d.get("target") or d["source"]),
        "permissions": str(d.get("permissions") or "rwm"),
    }


def _deploy(service: str, svc: Mapping[str, Any], c: dict[str, Any]) -> int:
    """Fold deploy.resources.limits into mem_limit/cpus/pids_limit; return the replica count."""
    deploy = svc.get("deploy") or {}
    for key, value in deploy.items():
        if key not in ("replicas", "resources", "update_config") and value:
            raise _unsupported(service, f"deploy.{key}", f"deploy.{key} is not supported outside swarm")
    resources = deploy.get("resources") or {}
    for key, value in resources.items():
        if key != "limits" and value:
            raise _unsupported(service, f"deploy.resources.{key}", f"deploy.resources.{key} is not supported")
    limits = resources.get("limits") or {}
    extra = set(limits) - {"cpus", "memory", "pids"}
    if extra:
        raise _unsupported(service, "deploy.resources.limits", f"limit(s) {sorted(extra)} are not supported")
    memory = svc.get("mem_limit") if svc.get("mem_limit") is not None else limits.get("memory")
    if memory is not None:
        c["mem_limit"] = _bytes(service, "mem_limit", memory)
    cpus = svc.get("cpus") if svc.get("cpus") is not None else limits.get("cpus")
    if cpus is not None and float(cpus) > 0:
        c["cpus"] = round(float(cpus) * 1e9)  # NanoCpus, so 0.5 and "0.50" hash the same
    if limits.get("pids") is not None and "pids_limit" not in c:
        c["pids_limit"] = int(limits["pids"])
    scale = svc.get("scale")
    replicas = scale if scale is not None else deploy.get("replicas")
    return 1 if replicas is None else int(replicas)


def _update_order(service: str, svc: Mapping[str, Any]) -> str:
    """``deploy.update_config.order``; the rest of update_config only steers Swarm's rolling updates,
    which Compose ignores outside Swarm too. start-first needs two containers side by side, so a fixed
    host port or a container_name keeps stop-first (they could not coexist)."""
    update = (svc.get("deploy") or {}).get("update_config") or {}
    order = str(update.get("order") or "stop-first")
    if order not in ("stop-first", "start-first"):
        raise _unsupported(service, "deploy.update_config.order", f"order {order!r} is not valid")
    if order == "start-first":
        fixed_port = any(
            isinstance(p, Mapping) and p.get("published") not in (None, "") for p in svc.get("ports") or ()
        )
        # Two containers can't share a container_name, a host port, the host's network or a fixed
        # address: those keep stop-first.
        fixed_address = svc.get("mac_address") or any(
            isinstance(ep, Mapping) and (ep.get("ipv4_address") or ep.get("ipv6_address"))
            for ep in (svc.get("networks") or {}).values()
        )
        if fixed_port or fixed_address or svc.get("container_name") or svc.get("network_mode"):
            return "stop-first"
    return order


def _depends_on(service: str, raw: Any) -> tuple[Dependency, ...]:
    if isinstance(raw, list):
        raw = {name: None for name in raw}
    deps = []
    for name, opts in sorted(raw.items()):
        opts = opts or {}
        try:
            condition = Condition(opts.get("condition") or Condition.STARTED)
        except ValueError:
            raise _unsupported(service, "depends_on", f"condition {opts.get('condition')!r}") from None
        deps.append(
            Dependency(
                service=name,
                condition=condition,
                required=bool(opts.get("required", True)),
                restart=bool(opts.get("restart", False)),
            )
        )
    return tuple(deps)


def _pull_policy(service: str, value: Any) -> PullPolicy:
    # `if_not_present` is Compose's alias of `missing`; `daily`/`weekly`/`every_<d>` need a record of the
    # last pull we don't keep, so they are refused rather than quietly treated as `missing`.
    text = "missing" if value in (None, "", "if_not_present") else str(value)
    try:
        return PullPolicy(text)
    except ValueError:
        raise _unsupported(service, "pull_policy", f"pull_policy {value!r} is not supported") from None


def _build(service: str, raw: Any) -> BuildSpec:
    if isinstance(raw, str):
        raw = {"context": raw}
    extra = {k for k, v in raw.items() if k not in _BUILD_KEYS and v}
    if extra:
        raise _unsupported(service, f"build.{sorted(extra)[0]}", f"build option(s) {sorted(extra)}")
    hosts = raw.get("extra_hosts") or ()
    if isinstance(hosts, Mapping):
        hosts = [f"{h}={ip}" for h, ip in hosts.items()]
    return BuildSpec(
        context=str(raw.get("context") or "."),
        dockerfile=raw.get("dockerfile"),
        args={k: str(v) for k, v in (raw.get("args") or {}).items() if v is not None},
        target=raw.get("target"),
        labels={k: str(v) for k, v in (raw.get("labels") or {}).items()},
        network=raw.get("network"),
        extra_hosts=tuple(str(h).replace("=", ":", 1) for h in hosts),
        shm_size=_bytes(service, "build.shm_size", raw["shm_size"]) if raw.get("shm_size") else None,
        cache_from=tuple(_str_list(raw.get("cache_from"))),
        no_cache=bool(raw.get("no_cache")),
        pull=bool(raw.get("pull")),
    )


def _network(project: str, key: str, raw: Mapping[str, Any]) -> NetworkSpec:
    extra = {k for k, v in raw.items() if k not in _NETWORK_KEYS and v}
    if extra:
        raise UnsupportedError(
            f"network option(s) {sorted(extra)} are not supported", Location(key=f"networks.{key}")
        )
    ipam = raw.get("ipam") or {}
    engine_ipam = None
    if ipam.get("driver") or ipam.get("config") or ipam.get("options"):
        pools = [
            {k2: v for k1, k2 in _IPAM_POOL_KEYS if (v := pool.get(k1))} for pool in ipam.get("config") or ()
        ]
        engine_ipam = {
            "Driver": ipam.get("driver") or "default",
            "Config": pools,
            "Options": ipam.get("options") or {},
        }
    return NetworkSpec(
        key=key,
        name=str(raw.get("name") or f"{project}_{key}"),
        external=bool(raw.get("external")),
        driver=raw.get("driver"),
        options={k: str(v) for k, v in (raw.get("driver_opts") or {}).items()},
        internal=bool(raw.get("internal")),
        attachable=bool(raw.get("attachable")),
        enable_ipv6=bool(raw.get("enable_ipv6")),
        ipam=engine_ipam,
        labels={k: str(v) for k, v in (raw.get("labels") or {}).items()},
    )


def _volume(project: str, key: str, raw: Mapping[str, Any]) -> VolumeSpec:
    extra = {k for k, v in raw.items() if k not in _VOLUME_KEYS and v}
    if extra:
        raise UnsupportedError(
            f"volume option(s) {sorted(extra)} are not supported", Location(key=f"volumes.{key}")
        )
    return VolumeSpec(
        key=key,
        name=str(raw.get("name") or f"{project}_{key}"),
        external=bool(raw.get("external")),
        driver=raw.get("driver"),
        driver_opts={k: str(v) for k, v in (raw.get("driver_opts") or {}).items()},
        labels={k: str(v) for k, v in (raw.get("labels") or {}).items()},
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


# --- units ------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_BYTES_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)


def _duration_ns(service: str, key: str, value: Any) -> int:
    """A Go duration as Compose prints it ("1m30s", "500ms"), or a number of seconds, in nanoseconds."""
    if isinstance(value, bool):
        raise _unsupported(service, key, f"{value!r} is not a duration")
    if isinstance(value, int | float):
        return round(value * 10**9)
    text = str(value).strip()
    if text == "0":
        return 0
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise _unsupported(service, key, f"{value!r} is not a duration (e.g. 1m30s, 500ms)")
    return round(total)


def _bytes(service: str, key: str, value: Any) -> int:
    """Bytes from an integer or a size with a unit ("512m", "1g"), as Docker's RAMInBytes parses it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    m = _BYTES_RE.match(str(value).strip())
    if not m:
        raise _unsupported(service, key, f"{value!r} is not a size (e.g. 512m, 1g)")
    factor = 1024 ** " kmgt".index((m.group(2) or " ").lower())
    return int(float(m.group(1)) * factor)


# --- the Engine API request -------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerRequest:
    """POST /containers/create body for one replica, plus the extra networks to connect afterwards
    (API 1.41 accepts a single network at create time)."""

    name: str
    body: Mapping[str, Any]
    connect: tuple[tuple[str, Mapping[str, Any]], ...]


def container_request(
    project: ProjectSpec,
    service: ServiceSpec,
    number: int,
    *,
    image_id: str,
    extra_labels: Mapping[str, str] = {},  # read only, so a shared default is safe
    keep_volumes: Mapping[str, str] = {},  # target -> anonymous volume to carry over
) -> ContainerRequest:
    """Translate a normalized service into the Engine API create request for replica ``number``."""
    c = service.config
    name = service.container(project.name, number)
    labels = {
        **c.get("labels", {}),
        L.PROJECT: project.name,
        L.SERVICE: service.name,
        L.CONTAINER_NUMBER: str(number),
        L.ONEOFF: "False",
        L.CONFIG_HASH: service.config_hash,
        L.HASH_VERSION: str(HASH_VERSION),
        L.WORKING_DIR: project.working_dir,
        L.CONFIG_FILES: ",".join(project.config_files),
        L.DEPENDS_ON: ",".join(
            f"{d.service}:{d.condition}:{str(d.restart).lower()}" for d in service.depends_on
        ),
        L.IMAGE: image_id,
        L.VERSION: COMPOSE_VERSION,
        FIELDS_LABEL: canonical_json(service.field_hashes),
        **extra_labels,
        L.MANAGED: "true",
    }
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in c.get("ports", ()):
        key = f"{p['target']}/{p['protocol']}"
        exposed[key] = {}
        bindings.setdefault(key, []).append(
            {"HostIp": p.get("host_ip", ""), "HostPort": p.get("published", "")}
        )
    for e in c.get("expose", ()):
        port, proto = e.split("/", 1)
        first, _, last = port.partition("-")
        for n in range(int(first), int(last or first) + 1):
            exposed[f"{n}/{proto}"] = {}
    binds, mounts = _mounts(c, keep_volumes)
    host: dict[str, Any] = {
        "Binds": binds,
        "Mounts": mounts,
        "PortBindings": bindings,
        "RestartPolicy": _restart_policy(c.get("restart", "no")),
        "ExtraHosts": c.get("extra_hosts"),
        "CapAdd": c.get("cap_add"),
        "CapDrop": c.get("cap_drop"),
        "Privileged": c.get("privileged", False),
        "ReadonlyRootfs": c.get("read_only", False),
        "Tmpfs": {t.partition(":")[0]: t.partition(":")[2] for t in c.get("tmpfs", ())},
        "Ulimits": [{"Name": k, "Soft": s, "Hard": h} for k, (s, h) in c.get("ulimits", {}).items()],
        "Sysctls": c.get("sysctls"),
        "Dns": c.get("dns"),
        "DnsSearch": c.get("dns_search"),
        "DnsOptions": c.get("dns_opt"),
        "SecurityOpt": c.get("security_opt"),
        "GroupAdd": c.get("group_add"),
        "Devices": [
            {"PathOnHost": d["source"], "PathInContainer": d["target"], "CgroupPermissions": d["permissions"]}
            for d in c.get("devices", ())
        ],
        "PidMode": c.get("pid", ""),
        "IpcMode": c.get("ipc", ""),
    }
    if c.get("init"):
        host["Init"] = True
    for key, api in _HOST_SCALARS:
        if key in c:
            host[api] = c[key]
    if "logging" in c:
        host["LogConfig"] = {"Type": c["logging"]["driver"], "Config": c["logging"]["options"]}
    body: dict[str, Any] = {
        "Image": c["image"],
        "Cmd": c.get("command"),
        "Entrypoint": c.get("entrypoint"),
        "Env": [k if v is None else f"{k}={v}" for k, v in c.get("environment", {}).items()],
        "Labels": labels,
        "ExposedPorts": exposed,
        "User": c.get("user", ""),
        "WorkingDir": c.get("working_dir", ""),
        "Hostname": c.get("hostname", ""),
        "Domainname": c.get("domainname", ""),
        "Tty": c.get("tty", False),
        "OpenStdin": c.get("stdin_open", False),
        "HostConfig": host,
    }
    for key, api in _CONFIG_SCALARS:
        if key in c:
            body[api] = c[key]
    if "healthcheck" in c:
        hc = c["healthcheck"]
        body["Healthcheck"] = {api: hc[key] for key, api in _HEALTHCHECK_KEYS if key in hc}
    connect: list[tuple[str, Mapping[str, Any]]] = []
    if "network_mode" in c:
        host["NetworkMode"] = c["network_mode"]
    else:
        for i, (net, ep) in enumerate(c["networks"].items()):
            endpoint: dict[str, Any] = {"Aliases": [service.name, name, *ep.get("aliases", ())]}
            if ep.get("ipv4_address") or ep.get("ipv6_address"):
                endpoint["IPAMConfig"] = {
                    "IPv4Address": ep.get("ipv4_address", ""),
                    "IPv6Address": ep.get("ipv6_address", ""),
                }
            if i == 0:
                host["NetworkMode"] = net
                body["NetworkingConfig"] = {"EndpointsConfig": {net: endpoint}}
            else:
                connect.append((net, endpoint))
    return ContainerRequest(name=name, body=body, connect=tuple(connect))


def _restart_policy(restart: str) -> dict[str, Any]:
    name, _, count = restart.partition(":")
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": int(count or 0)}


def _mounts(c: Mapping[str, Any], keep: Mapping[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Binds that may create their host path go through the legacy ``Binds`` (the Mounts API refuses a
    missing source, Compose relies on this too); everything else is a Mount."""
    binds: list[str] = []
    mounts: list[dict[str, Any]] = []
    for v in c.get("volumes", ()):
        target = v["target"]
        if v["type"] == "bind" and v.get("create_host_path"):
            opts = ["ro" if v.get("read_only") else "rw"]
            opts += [o for o in (v.get("propagation"), v.get("selinux")) if o]
            binds.append(f"{v['source']}:{target}:{','.join(opts)}")
            continue
        m: dict[str, Any] = {"Type": v["type"], "Target": target, "ReadOnly": v.get("read_only", False)}
        if v["type"] == "bind":
            m["Source"] = v["source"]
            if v.get("propagation"):
                m["BindOptions"] = {"Propagation": v["propagation"]}
        elif v["type"] == "volume":
            source = v.get("source") or keep.get(target)  # anonymous: reuse the old container's data
            if source:
                m["Source"] = source
            if v.get("nocopy"):
                m["VolumeOptions"] = {"NoCopy": True}
        else:
            tmpfs = {k: v[key] for key, k in (("size", "SizeBytes"), ("mode", "Mode")) if key in v}
            if tmpfs:
                m["TmpfsOptions"] = tmpfs
        mounts.append(m)
    declared = {v["target"] for v in c.get("volumes", ())}
    for target, volume in sorted(keep.items()):
        if target not in declared:  # an image VOLUME: keep its data across the recreate, as Compose does
            mounts.append({"Type": "volume", "Source": volume, "Target": target, "ReadOnly": False})
    for key in ("secrets", "configs"):
        for f in c.get(key, ()):
            mounts.append({"Type": "bind", "Source": f["source"], "Target": f["target"], "ReadOnly": True})
    return binds, mounts
