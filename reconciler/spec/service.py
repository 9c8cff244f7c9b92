"""Normalize one compose service into a ServiceSpec (``_service``, called by ``project_spec``): the keys we
accept, their canonical values, the replica count, the build and the dependencies."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from reconciler.spec.context import _Context, _put, _str_list, _unsupported
from reconciler.spec.hash import _legacy, canonical_json, config_hash, field_hashes, hashed
from reconciler.spec.model import BuildSpec, Condition, Dependency, PullPolicy, ServiceSpec
from reconciler.spec.mounts import _by_target, _file_mount, _mount
from reconciler.spec.networks import _networks, _shared
from reconciler.spec.units import _bytes, _duration_ns

# Service keys that become part of the container we create, and so of the config hash.
CONTAINER_KEYS = frozenset(
    {
        "image", "command", "entrypoint", "environment", "ports", "expose", "volumes", "tmpfs", "networks",
        "network_mode", "healthcheck", "restart", "labels", "user", "working_dir", "hostname", "domainname",
        "extra_hosts", "cap_add", "cap_drop", "privileged", "init", "read_only", "tty", "stdin_open",
        "ulimits", "logging", "stop_grace_period", "stop_signal", "shm_size", "sysctls", "dns", "dns_search",
        "dns_opt", "mem_limit", "mem_reservation", "memswap_limit", "cpus", "cpu_shares", "cpuset",
        "pids_limit", "oom_score_adj", "security_opt", "group_add", "devices", "pid", "ipc", "mac_address",
        "secrets", "configs", "container_name", "depends_on", "deploy", "cgroup", "platform",
        "links", "volumes_from",
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
_RESTART_RE = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")


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
    _put(c, "links", [_link(name, link, c) for link in _str_list(svc.get("links"))])
    _put(c, "volumes_from", [_volumes_from(name, v) for v in _str_list(svc.get("volumes_from"))])
    _put(c, "healthcheck", _healthcheck(name, svc.get("healthcheck")))
    restart = str(svc.get("restart") or "no")
    if not _RESTART_RE.match(restart):
        raise _unsupported(name, "restart", f"restart policy {restart!r} is not valid")
    restart = _restart_policy(name, (svc.get("deploy") or {}).get("restart_policy")) or restart
    if restart != "no":
        c["restart"] = restart
    _put(c, "labels", {k: str(v) for k, v in sorted((svc.get("labels") or {}).items())})
    for key in ("user", "working_dir", "hostname", "domainname", "stop_signal", "mac_address", "cpuset"):
        if svc.get(key):
            c[key] = str(svc[key])
    if svc.get("cgroup"):
        if svc["cgroup"] not in ("host", "private"):
            raise _unsupported(name, "cgroup", f"cgroup {svc['cgroup']!r} is not valid (host, private)")
        c["cgroup"] = str(svc["cgroup"])
    if svc.get("platform"):
        c["platform"] = str(svc["platform"])
    for key in ("pid", "ipc"):
        if svc.get(key):
            value = str(svc[key])
            if value.startswith(("service:", "container:")) and not _shared(value):
                raise _unsupported(name, key, f"{key} {value!r} names no service or container")
            c[key] = value  # `service:NAME` becomes `container:<ID>` at create (request.namespace)
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
    ignored: list[str] = ["develop"] if svc.get("develop") else []
    replicas = _deploy(name, svc, c, ignored)
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
        legacy_hash=config_hash(_legacy(c, ctx.real_paths)),
        container_name=c.get("container_name"),
        stop_timeout=stop_timeout,
        has_healthcheck="healthcheck" in c and c["healthcheck"].get("test") != ["NONE"],
        restart=restart,
        update_order=_update_order(name, svc),
        platform=c.get("platform"),
        ignored=tuple(ignored),
    )


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


def _link(service: str, link: str, c: Mapping[str, Any]) -> str:
    """``service[:alias]``, as written. Compose puts the links on every network's endpoint; we create
    with one network and connect the others without links, so a linking service has one network."""
    if "network_mode" in c or len(c.get("networks") or {}) != 1:
        raise _unsupported(service, "links", "links need exactly one network (and no network_mode)")
    target, _, alias = link.partition(":")
    return f"{target}:{alias or target}"


def _volumes_from(service: str, value: str) -> str:
    """``service:NAME[:ro|rw]`` or ``container:NAME[:ro|rw]``, with the service form made explicit."""
    parts = value.split(":")
    kind = "container" if parts[0] == "container" else "service"
    rest = parts[1:] if kind == "container" else parts
    if not rest or len(rest) > 2 or (len(rest) == 2 and rest[1] not in ("ro", "rw")):
        raise _unsupported(service, "volumes_from", f"volumes_from {value!r} is not valid")
    return ":".join([kind, *rest])


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


def _deploy(service: str, svc: Mapping[str, Any], c: dict[str, Any], ignored: list[str]) -> int:
    """Fold deploy.resources into mem_limit/cpus/pids_limit/mem_reservation/device_requests, note the
    Swarm-only keys Compose ignores outside Swarm in ``ignored``; return the replica count."""
    deploy = svc.get("deploy") or {}
    for key, value in deploy.items():
        if key == "mode" and value not in (None, "", "replicated"):
            raise _unsupported(
                service, "deploy.mode", f"deploy.mode {value!r} is not supported outside swarm"
            )
        if key in ("labels", "placement", "rollback_config") and value:
            ignored.append(f"deploy.{key}")  # Swarm's service labels and scheduling: Compose drops them
        elif key not in ("replicas", "resources", "update_config", "restart_policy", "mode") and value:
            raise _unsupported(service, f"deploy.{key}", f"deploy.{key} is not supported outside swarm")
    # Swarm's rolling-update and restart pacing: Docker has no such settings for a plain container.
    ignored += [
        f"deploy.update_config.{k}" for k in sorted(deploy.get("update_config") or {}) if k != "order"
    ]
    policy = deploy.get("restart_policy") or {}
    ignored += [f"deploy.restart_policy.{k}" for k in ("delay", "window") if policy.get(k)]
    resources = deploy.get("resources") or {}
    for key, value in resources.items():
        if key not in ("limits", "reservations") and value:
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
    _reservations(service, resources.get("reservations") or {}, c, ignored)
    scale = svc.get("scale")
    replicas = scale if scale is not None else deploy.get("replicas")
    return 1 if replicas is None else int(replicas)


def _reservations(service: str, res: Mapping[str, Any], c: dict[str, Any], ignored: list[str]) -> None:
    """As Compose's setReservations: memory wins over mem_reservation, devices become DeviceRequests and
    a cpu reservation only steers Swarm's scheduler (Compose drops it)."""
    key = "deploy.resources.reservations"
    extra = {k for k, v in res.items() if v and k not in ("memory", "cpus", "devices")}
    if extra:
        raise _unsupported(service, key, f"reservation(s) {sorted(extra)} are not supported")
    if res.get("cpus"):
        ignored.append(f"{key}.cpus")
    if res.get("memory"):
        c["mem_reservation"] = _bytes(service, f"{key}.memory", res["memory"])
    requests = []
    for d in res.get("devices") or ():
        if set(d) - {"capabilities", "count", "device_ids", "driver", "options"}:
            raise _unsupported(service, f"{key}.devices", f"device option(s) {sorted(d)} are not supported")
        count = d.get("count")
        if count is None and not d.get("device_ids"):
            count = -1  # compose-go's default: neither count nor device_ids means every device
        request: dict[str, Any] = {
            "capabilities": [str(x) for x in d.get("capabilities") or ()],
            "count": -1 if count == "all" else int(count or 0),
        }
        if d.get("device_ids"):
            request["device_ids"] = [str(x) for x in d["device_ids"]]
        if d.get("driver"):
            request["driver"] = str(d["driver"])
        if d.get("options"):
            request["options"] = {str(k): str(v) for k, v in sorted(d["options"].items())}
        requests.append(request)
    _put(c, "device_requests", requests)  # in order: it is the order the runtime hands devices out


def _restart_policy(service: str, policy: Any) -> str | None:
    """deploy.restart_policy as the restart policy Compose gives the container (it wins over
    ``restart``): none -> no, on-failure -> on-failure[:max_attempts], any -> always."""
    if not policy:
        return None
    extra = set(policy) - {"condition", "max_attempts", "delay", "window"}
    if extra:
        raise _unsupported(service, "deploy.restart_policy", f"option(s) {sorted(extra)} are not supported")
    # Compose's mapRestartPolicyCondition, which also takes the `restart:` spellings.
    names = {
        "none": "no",
        "any": "always",
        **{n: n for n in ("no", "on-failure", "always", "unless-stopped")},
    }
    condition = policy.get("condition")
    if condition not in names:
        raise _unsupported(
            service,
            "deploy.restart_policy",
            f"condition {condition!r} is not supported (none, on-failure, any)",
        )
    restart = names[condition]
    if policy.get("max_attempts"):
        if restart != "on-failure":  # Docker refuses a retry count with any other policy
            raise _unsupported(service, "deploy.restart_policy", "max_attempts needs condition on-failure")
        restart += f":{int(policy['max_attempts'])}"
    return restart


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
