"""A rendered compose project as the Swarm stack `docker stack deploy` would make of it (pure).

Names follow `docker stack deploy`: services ``{project}_{service}``, networks and volumes by their
rendered names (``{project}_{key}``), every object labelled ``com.docker.stack.namespace={project}``.
Configs and secrets are immutable in Swarm, so their names carry their content's digest. A key Swarm cannot
honour is refused (``UnsupportedError`` naming service and key) or, where `docker stack deploy` ignores it
too, noted in ``ServiceDef.ignored`` (see ``reconciler.swarm.keys`` and docs/swarm.md).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from reconciler import labels as L
from reconciler.errors import Location, UnsupportedError
from reconciler.render import unescape_dollars
from reconciler.spec.contents import content_values
from reconciler.spec.units import _bytes, _duration_ns
from reconciler.swarm import keys
from reconciler.swarm.model import DataDef, NetworkDef, ServiceDef, StackSpec, VolumeDef

# Labels that change with every deploy: on the service (for `status` and the sweep), never in the hashes
# or the task template, so a push that changes nothing of a service leaves its tasks alone.
VOLATILE = frozenset({L.CHECKOUT, L.COMMIT})
_DIGEST_IN_NAME = 12
_SECRETS_DIR = "/run/secrets/"


def _refuse(service: str, key: str, why: str, hint: str | None = None) -> UnsupportedError:
    return UnsupportedError(
        f"{why} (backend: swarm)",
        Location(service=service, key=key),
        hint=hint or "remove it, or deploy this environment with backend: compose",
    )


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sources(model: Mapping[str, Any]) -> dict[str, str]:
    """``"configs.KEY"``/``"secrets.KEY"`` -> the path of every file-based config and secret (not external):
    the caller reads them and passes their bytes to ``stack_spec``."""
    out: dict[str, str] = {}
    for kind in ("configs", "secrets"):
        for key, raw in (model.get(kind) or {}).items():
            if isinstance(raw, Mapping) and raw.get("file") and not raw.get("external"):
                out[f"{kind}.{key}"] = str(raw["file"])
    return out


def stack_spec(
    project: str,
    model: Mapping[str, Any],
    *,
    files: Mapping[str, bytes] | None = None,
    environment: Mapping[str, str] | None = None,
    image_ids: Mapping[str, str | None] | None = None,
) -> StackSpec:
    """The stack for ``model`` (a rendered project), labelled with the stack namespace only: our labels are
    added by ``labelled`` and are in no hash, so the daemon's drift check (which has none) plans the same.
    ``files`` holds the bytes of each ``file_sources`` entry; ``environment`` the variables `environment:`
    secrets and configs read; ``image_ids`` the image ID each tag resolves to now (absent: unknown)."""
    model = unescape_dollars(model)
    stable = {L.STACK_NAMESPACE: project}
    networks = _networks(project, model, stable)
    volumes = tuple(
        VolumeDef(key, str((raw or {}).get("name") or f"{project}_{key}"), bool((raw or {}).get("external")))
        for key, raw in sorted((model.get("volumes") or {}).items())
    )
    data = _data(project, model, stable, files, environment)
    services = tuple(
        _service(project, key, svc or {}, model, stable, data, image_ids or {})
        for key, svc in sorted((model.get("services") or {}).items())
    )
    return StackSpec(project, services, networks, tuple(data.values()), volumes)


# -- networks, configs and secrets ------------------------------------------------------------------


def _networks(project: str, model: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[NetworkDef, ...]:
    out: list[NetworkDef] = []
    for key, raw in sorted((model.get("networks") or {}).items()):
        raw = raw or {}
        name = str(raw.get("name") or f"{project}_{key}")
        if raw.get("external"):
            out.append(NetworkDef(key, name, external=True))
            continue
        driver = str(raw.get("driver") or "overlay")
        if driver != "overlay":
            raise UnsupportedError(
                f"network driver {driver!r}: a Swarm stack's networks are overlay networks (backend: swarm)",
                Location(key=f"networks.{key}.driver"),
                hint="remove `driver:`, or declare the network `external: true`",
            )
        ipam = raw.get("ipam") or {}
        api_ipam = None
        if ipam.get("config") or ipam.get("driver"):
            api_ipam = {
                "Driver": ipam.get("driver") or "default",
                "Config": [
                    {
                        k2: str(c[k1])
                        for k1, k2 in (("subnet", "Subnet"), ("gateway", "Gateway"), ("ip_range", "IPRange"))
                        if c.get(k1)
                    }
                    for c in ipam.get("config") or ()
                ],
            }
        out.append(
            NetworkDef(
                key,
                name,
                options={str(k): str(v) for k, v in (raw.get("driver_opts") or {}).items()},
                internal=bool(raw.get("internal")),
                attachable=bool(raw.get("attachable")),
                ipam=api_ipam,
                labels={**_str_map(raw.get("labels")), **labels},
            )
        )
    return tuple(out)


def _data(
    project: str,
    model: Mapping[str, Any],
    labels: Mapping[str, str],
    files: Mapping[str, bytes] | None,
    environment: Mapping[str, str] | None,
) -> dict[str, DataDef]:
    """``"configs.KEY"``/``"secrets.KEY"`` -> the object, named ``{name}-{sha256[:12]}`` of its content."""
    out: dict[str, DataDef] = {}
    for kind in ("configs", "secrets"):
        values = content_values(model, kind, environment)
        for key, raw in sorted((model.get(kind) or {}).items()):
            raw = raw or {}
            base = str(raw.get("name") or f"{project}_{key}")
            where = f"{kind}.{key}"
            if raw.get("external"):
                out[where] = DataDef(kind[:-1], key, base, b"", external=True)
                continue
            for option in ("template_driver", "driver", "driver_opts"):
                if raw.get(option):
                    raise UnsupportedError(
                        f"{kind[:-1]} option {option!r} is not supported (backend: swarm)",
                        Location(key=f"{where}.{option}"),
                    )
            if key in values:
                value = values[key]
            elif files is None and raw.get("file"):
                value = b""  # a check only (``check_stack``): the file is read by the converger
            elif files is not None and where in files:
                value = files[where]
            else:
                raise UnsupportedError(
                    f"{kind[:-1]} {key!r} has no `file`, `content` or `environment` (backend: swarm)",
                    Location(key=where),
                )
            name = f"{base}-{hashlib.sha256(value).hexdigest()[:_DIGEST_IN_NAME]}"
            if len(name) > 64:  # Swarm's limit on config and secret names
                name = f"{base[: 63 - _DIGEST_IN_NAME]}-{hashlib.sha256(value).hexdigest()[:_DIGEST_IN_NAME]}"
            out[where] = DataDef(
                kind[:-1], key, name, value, labels={**_str_map(raw.get("labels")), **labels}
            )
    return out


# -- services ---------------------------------------------------------------------------------------


def _service(
    project: str,
    key: str,
    svc: Mapping[str, Any],
    model: Mapping[str, Any],
    stable: Mapping[str, str],
    data: Mapping[str, DataDef],
    image_ids: Mapping[str, str | None],
) -> ServiceDef:
    ignored: list[str] = []
    for k, value in svc.items():
        if k.startswith("x-") or value in (None, [], {}, ""):
            continue
        if k in keys.REFUSED:
            raise _refuse(key, k, f"{k!r} is not supported: {keys.REFUSED[k]}")
        if k in keys.IGNORED:
            ignored.append(k)
        elif k not in keys.HONOURED:
            raise _refuse(key, k, f"key {k!r} is not supported")
    image = svc.get("image")
    if not image:
        why = "the service has no `image`" + (
            ": Swarm runs images, it builds none" if svc.get("build") else ""
        )
        raise _refuse(key, "build" if svc.get("build") else "image", why, "build and tag the image first")
    _check_depends_on(key, svc.get("depends_on"))
    image = str(image)
    container: dict[str, Any] = {"Image": image}
    if svc.get("entrypoint") is not None:
        container["Command"] = _words(svc["entrypoint"])
    if svc.get("command") is not None:
        container["Args"] = _words(svc["command"])
    env = svc.get("environment") or {}
    if env:
        container["Env"] = sorted(f"{k}={v}" for k, v in env.items() if v is not None)
    for compose_key, api_key in (("user", "User"), ("working_dir", "Dir"), ("hostname", "Hostname")):
        if svc.get(compose_key):
            container[api_key] = str(svc[compose_key])
    for compose_key, api_key in (
        ("init", "Init"),
        ("read_only", "ReadOnly"),
        ("tty", "TTY"),
        ("stdin_open", "OpenStdin"),
    ):
        if svc.get(compose_key):
            container[api_key] = True
    if svc.get("stop_grace_period") is not None:
        container["StopGracePeriod"] = _duration_ns(key, "stop_grace_period", svc["stop_grace_period"])
    if svc.get("stop_signal"):
        container["StopSignal"] = str(svc["stop_signal"])
    if svc.get("cap_add"):
        container["CapabilityAdd"] = [str(c) for c in svc["cap_add"]]
    if svc.get("cap_drop"):
        container["CapabilityDrop"] = [str(c) for c in svc["cap_drop"]]
    if svc.get("group_add"):
        container["Groups"] = [str(g) for g in svc["group_add"]]
    if svc.get("sysctls"):
        container["Sysctls"] = _str_map(svc["sysctls"])
    if svc.get("ulimits"):
        container["Ulimits"] = [_ulimit(name, v) for name, v in sorted(svc["ulimits"].items())]
    if svc.get("extra_hosts"):
        container["Hosts"] = [_host(key, h) for h in svc["extra_hosts"]]
    dns = {
        api: [str(v) for v in ([svc[k]] if isinstance(svc[k], str) else svc[k])]
        for k, api in (("dns", "Nameservers"), ("dns_search", "Search"), ("dns_opt", "Options"))
        if svc.get(k)
    }
    if dns:
        container["DNSConfig"] = dns
    health = _healthcheck(key, svc.get("healthcheck"))
    if health is not None:
        container["Healthcheck"] = health
    mounts = [_mount(project, key, m, model, stable) for m in svc.get("volumes") or ()]
    mounts += [{"Type": "tmpfs", "Target": str(t)} for t in svc.get("tmpfs") or ()]
    if mounts:
        container["Mounts"] = mounts
    for kind in ("configs", "secrets"):
        refs = [_data_ref(key, kind, ref, data) for ref in svc.get(kind) or ()]
        if refs:
            container[kind.capitalize()] = refs
    task_labels = {**_str_map(svc.get("labels")), **stable}
    container["Labels"] = task_labels

    deploy = svc.get("deploy") or {}
    for k in deploy:
        if k not in keys.DEPLOY_KEYS:
            raise _refuse(key, f"deploy.{k}", f"deploy.{k} is not supported")
    task: dict[str, Any] = {"ContainerSpec": container}
    resources = _resources(key, deploy.get("resources") or {})
    if resources:
        task["Resources"] = resources
    restart = _restart_policy(key, deploy.get("restart_policy"))
    if restart:
        task["RestartPolicy"] = restart
    placement = _placement(key, deploy.get("placement") or {})
    if placement:
        task["Placement"] = placement
    task["Networks"] = _service_networks(key, svc.get("networks") or {}, model, project)
    if svc.get("logging"):
        log = svc["logging"]
        task["LogDriver"] = {
            "Name": str(log.get("driver") or "json-file"),
            "Options": _str_map(log.get("options")),
        }
    task_hash = digest(task)
    container["Labels"] = {**task_labels, L.TASK_HASH: task_hash}
    # Not hashed: an image not on the manager (yet) is no change. plan compares it when both are known.
    image_id = image_ids.get(image)
    if image_id:
        container["Labels"][L.IMAGE_ID] = image_id

    mode_name = str(deploy.get("mode") or "replicated")
    replicas: int | None
    if mode_name == "global":
        if deploy.get("replicas") is not None:
            raise _refuse(key, "deploy.replicas", "deploy.replicas is meaningless with deploy.mode global")
        mode: dict[str, Any] = {"Global": {}}
        replicas = None
    elif mode_name == "replicated":
        replicas = int(deploy["replicas"]) if deploy.get("replicas") is not None else 1
        mode = {"Replicated": {"Replicas": replicas}}
    else:
        raise _refuse(
            key, "deploy.mode", f"deploy.mode {mode_name!r} is not supported (replicated or global)"
        )
    spec: dict[str, Any] = {
        "Name": f"{project}_{key}",
        "Labels": {**_str_map(deploy.get("labels")), **stable, "com.docker.stack.image": image},
        "TaskTemplate": task,
        "Mode": mode,
        "UpdateConfig": _update_config(key, "update_config", deploy.get("update_config") or {}, "rollback"),
        "RollbackConfig": _update_config(
            key, "rollback_config", deploy.get("rollback_config") or {}, "pause"
        ),
        "EndpointSpec": _endpoint(key, deploy.get("endpoint_mode"), svc.get("ports") or ()),
    }
    spec_hash = digest(spec)
    spec["Labels"] = {**spec["Labels"], L.SPEC_HASH: spec_hash}
    return ServiceDef(
        key, spec["Name"], spec, spec_hash, task_hash, image, replicas, ignored=tuple(sorted(ignored))
    )


def _check_depends_on(service: str, raw: Any) -> None:
    """Swarm starts services in no order: a condition other than service_started would be a promise
    nothing keeps, so it is refused; a plain dependency is ignored, as `docker stack deploy` does."""
    if not isinstance(raw, Mapping):
        return
    for dep, opts in raw.items():
        condition = (opts or {}).get("condition") or "service_started"
        if condition != "service_started":
            raise _refuse(
                service,
                "depends_on",
                f"depends_on {dep!r} with condition {condition!r}: Swarm starts services in no order and "
                "waits on none",
                "make the service retry until its dependency answers, or use backend: compose",
            )


def _words(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _str_map(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return dict(str(item).partition("=")[::2] for item in value)


def _ulimit(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {"Name": name, "Soft": int(value["soft"]), "Hard": int(value["hard"])}
    return {"Name": name, "Soft": int(value), "Hard": int(value)}


def _host(service: str, entry: Any) -> str:
    """compose's ``host=ip`` (or ``host:ip``) as Swarm's /etc/hosts line ``ip host``."""
    text = str(entry)
    host, sep, ip = text.partition("=")
    if not sep:
        host, sep, ip = text.partition(":")
    if not sep:
        raise _refuse(service, "extra_hosts", f"extra_hosts entry {text!r} is not HOST=IP")
    return f"{ip} {host}"


def _healthcheck(service: str, hc: Any) -> dict[str, Any] | None:
    if not hc:
        return None
    if hc.get("disable"):
        return {"Test": ["NONE"]}
    out: dict[str, Any] = {}
    test = hc.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if test:
        out["Test"] = [str(t) for t in test]
    for k, api in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
        if hc.get(k) is not None:
            out[api] = _duration_ns(service, f"healthcheck.{k}", hc[k])
    if hc.get("retries") is not None:
        out["Retries"] = int(hc["retries"])
    if hc.get("start_interval") is not None:
        raise _refuse(service, "healthcheck.start_interval", "healthcheck.start_interval is not supported")
    return out or None


def _mount(
    project: str, service: str, m: Mapping[str, Any], model: Mapping[str, Any], labels: Mapping[str, str]
) -> dict[str, Any]:
    kind = str(m.get("type") or "volume")
    out: dict[str, Any] = {"Type": kind, "Target": str(m["target"])}
    if m.get("read_only"):
        out["ReadOnly"] = True
    if kind == "volume":
        source = m.get("source")
        if source:
            top = (model.get("volumes") or {}).get(source) or {}
            out["Source"] = str(top.get("name") or f"{project}_{source}")
            options: dict[str, Any] = {}
            if not top.get("external"):
                # Swarm creates the volume on the node that runs the task, with these labels: ours, so down
                # knows it, and the namespace, so `docker stack rm` sees it as the stack's.
                options["Labels"] = {**_str_map(top.get("labels")), **labels}
                if top.get("driver") or top.get("driver_opts"):
                    options["DriverConfig"] = {
                        "Name": str(top.get("driver") or "local"),
                        "Options": _str_map(top.get("driver_opts")),
                    }
            if (m.get("volume") or {}).get("nocopy"):
                options["NoCopy"] = True
            if options:
                out["VolumeOptions"] = options
        return out
    if kind == "bind":
        out["Source"] = str(m["source"])
        propagation = (m.get("bind") or {}).get("propagation")
        if propagation:
            out["BindOptions"] = {"Propagation": str(propagation)}
        return out
    if kind == "tmpfs":
        tmpfs = m.get("tmpfs") or {}
        opts = {}
        if tmpfs.get("size"):
            opts["SizeBytes"] = _bytes(service, "volumes.tmpfs.size", tmpfs["size"])
        if tmpfs.get("mode"):
            opts["Mode"] = (
                int(str(tmpfs["mode"]), 8) if isinstance(tmpfs["mode"], str) else int(tmpfs["mode"])
            )
        if opts:
            out["TmpfsOptions"] = opts
        return out
    raise _refuse(service, "volumes", f"mount type {kind!r} is not supported")


def _data_ref(service: str, kind: str, ref: Any, data: Mapping[str, DataDef]) -> dict[str, Any]:
    ref = {"source": ref} if isinstance(ref, str) else dict(ref)
    source = str(ref["source"])
    obj = data.get(f"{kind}.{source}")
    if obj is None:
        raise _refuse(service, kind, f"{kind[:-1]} {source!r} is not defined at the top level")
    target = str(ref.get("target") or "")
    # As `docker stack deploy`: a config goes to /<name>, a secret under /run/secrets/.
    target = (target or f"/{source}") if kind == "configs" else (target.removeprefix(_SECRETS_DIR) or source)
    mode = ref.get("mode")
    file = {
        "Name": target,
        "UID": str(ref.get("uid") if ref.get("uid") is not None else "0"),
        "GID": str(ref.get("gid") if ref.get("gid") is not None else "0"),
        "Mode": (int(mode, 8) if isinstance(mode, str) else int(mode)) if mode is not None else 0o444,
    }
    name_key = "ConfigName" if kind == "configs" else "SecretName"
    return {"File": file, name_key: obj.name}


def _resources(service: str, res: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part, api in (("limits", "Limits"), ("reservations", "Reservations")):
        values = res.get(part) or {}
        allowed = {"cpus", "memory", "pids"} if part == "limits" else {"cpus", "memory"}
        extra = set(values) - allowed
        if extra:
            raise _refuse(service, f"deploy.resources.{part}", f"{sorted(extra)} are not supported")
        entry: dict[str, Any] = {}
        if values.get("cpus") is not None:
            entry["NanoCPUs"] = round(float(values["cpus"]) * 1e9)
        if values.get("memory") is not None:
            entry["MemoryBytes"] = _bytes(service, f"deploy.resources.{part}.memory", values["memory"])
        if values.get("pids") is not None:
            entry["Pids"] = int(values["pids"])
        if entry:
            out[api] = entry
    return out


_CONDITIONS = {"none": "none", "on-failure": "on-failure", "any": "any"}


def _restart_policy(service: str, policy: Any) -> dict[str, Any]:
    if not policy:
        return {}
    out: dict[str, Any] = {}
    condition = policy.get("condition")
    if condition is not None:
        if str(condition) not in _CONDITIONS:
            raise _refuse(service, "deploy.restart_policy.condition", f"condition {condition!r} is not valid")
        out["Condition"] = _CONDITIONS[str(condition)]
    for k, api in (("delay", "Delay"), ("window", "Window")):
        if policy.get(k) is not None:
            out[api] = _duration_ns(service, f"deploy.restart_policy.{k}", policy[k])
    if policy.get("max_attempts") is not None:
        out["MaxAttempts"] = int(policy["max_attempts"])
    return out


def _placement(service: str, placement: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if placement.get("constraints"):
        out["Constraints"] = [str(c) for c in placement["constraints"]]
    prefs = []
    for pref in placement.get("preferences") or ():
        if not isinstance(pref, Mapping) or set(pref) != {"spread"}:
            raise _refuse(
                service, "deploy.placement.preferences", f"preference {pref!r} is not `spread: ...`"
            )
        prefs.append({"Spread": {"SpreadDescriptor": str(pref["spread"])}})
    if prefs:
        out["Preferences"] = prefs
    if placement.get("max_replicas_per_node"):
        out["MaxReplicas"] = int(placement["max_replicas_per_node"])
    return out


def _service_networks(
    service: str, networks: Mapping[str, Any], model: Mapping[str, Any], project: str
) -> list[dict[str, Any]]:
    out = []
    for key, opts in sorted(networks.items()):
        opts = opts or {}
        for fixed in ("ipv4_address", "ipv6_address", "link_local_ips", "mac_address", "priority"):
            if opts.get(fixed):
                raise _refuse(service, f"networks.{key}.{fixed}", f"networks.{key}.{fixed} is not supported")
        top = (model.get("networks") or {}).get(key) or {}
        name = str(top.get("name") or f"{project}_{key}")
        aliases = [service, *(str(a) for a in opts.get("aliases") or ())]
        out.append({"Target": name, "Aliases": sorted(set(aliases))})
    return out


def _update_config(service: str, key: str, raw: Mapping[str, Any], failure_action: str) -> dict[str, Any]:
    """deploy.update_config / rollback_config with `docker service create`'s defaults filled in (the API's
    zero values differ: parallelism 0 is "all at once"). An update's failure_action defaults to rollback:
    a GitOps daemon must not leave a paused half-update behind (docs/swarm.md)."""
    extra = set(raw) - keys.UPDATE_KEYS
    if extra:
        raise _refuse(service, f"deploy.{key}", f"option(s) {sorted(extra)} are not supported")
    action = str(raw.get("failure_action") or failure_action)
    allowed = ("pause", "continue", "rollback") if key == "update_config" else ("pause", "continue")
    if action not in allowed:
        raise _refuse(service, f"deploy.{key}.failure_action", f"failure_action {action!r} is not valid")
    order = str(raw.get("order") or "stop-first")
    if order not in ("stop-first", "start-first"):
        raise _refuse(service, f"deploy.{key}.order", f"order {order!r} is not valid")
    return {
        "Parallelism": int(raw["parallelism"]) if raw.get("parallelism") is not None else 1,
        "Delay": _duration_ns(service, f"deploy.{key}.delay", raw.get("delay") or 0),
        "FailureAction": action,
        "Monitor": _duration_ns(service, f"deploy.{key}.monitor", raw.get("monitor") or "5s"),
        "MaxFailureRatio": float(raw.get("max_failure_ratio") or 0),
        "Order": order,
    }


def _endpoint(service: str, mode: Any, ports: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Mode": str(mode or "vip")}
    if out["Mode"] not in ("vip", "dnsrr"):
        raise _refuse(service, "deploy.endpoint_mode", f"endpoint_mode {mode!r} is not vip or dnsrr")
    published = []
    for p in ports:
        if p.get("host_ip"):
            raise _refuse(service, "ports", f"port {p.get('target')}: a host IP cannot be published by Swarm")
        entry: dict[str, Any] = {
            "Protocol": str(p.get("protocol") or "tcp"),
            "TargetPort": int(p["target"]),
            "PublishMode": str(p.get("mode") or "ingress"),
        }
        if p.get("published") not in (None, ""):
            text = str(p["published"])
            if not text.isdigit():
                raise _refuse(service, "ports", f"published port {text!r} is not a single port number")
            entry["PublishedPort"] = int(text)
        published.append(entry)
    if published:
        out["Ports"] = published
    return out


def check_stack(
    project: str, model: Mapping[str, Any], environment: Mapping[str, str] | None
) -> tuple[str, ...]:
    """Refuse what Swarm can't honour without reading a file or asking Docker (the deployer's checks before
    anything changes); the names of the services."""
    return tuple(s.key for s in stack_spec(project, model, files=None, environment=environment).services)


def labelled(stack: StackSpec, labels: Mapping[str, str]) -> StackSpec:
    """``stack`` with our ``labels`` (managed, app, environment, owner...) on every service, task, volume,
    network, config and secret. The labels that change with each deploy (the checkout) go on the services
    only: in a task template they would restart every task on every push. Hashes are left as they were."""
    stable = {k: v for k, v in labels.items() if k not in VOLATILE}
    services = []
    for svc in stack.services:
        spec = copy.deepcopy(dict(svc.spec))
        spec["Labels"] = {**spec["Labels"], **labels}
        container = spec["TaskTemplate"]["ContainerSpec"]
        container["Labels"] = {**container["Labels"], **stable}
        for m in container.get("Mounts") or ():
            if "Labels" in (m.get("VolumeOptions") or {}):
                m["VolumeOptions"]["Labels"] = {**m["VolumeOptions"]["Labels"], **stable}
        services.append(replace(svc, spec=spec))
    networks = tuple(n if n.external else replace(n, labels={**n.labels, **stable}) for n in stack.networks)
    data = tuple(d if d.external else replace(d, labels={**d.labels, **stable}) for d in stack.data)
    return replace(stack, services=tuple(services), networks=networks, data=data)
