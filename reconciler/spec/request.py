"""The Engine API create request for one replica of a normalized service: ``container_request``, called by
``converge``, with our labels, ports, mounts and networks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler import labels as L
from reconciler.spec.contents import content_path
from reconciler.spec.hash import FIELDS_LABEL, HASH_VERSION, canonical_json
from reconciler.spec.model import ProjectSpec, ServiceSpec

COMPOSE_VERSION = "2.40.3"  # stamped on every object so Compose v2 does not warn about a version mismatch

# fmt: off
_HEALTHCHECK_KEYS = (("test", "Test"), ("interval", "Interval"), ("timeout", "Timeout"),
                     ("retries", "Retries"), ("start_period", "StartPeriod"),
                     ("start_interval", "StartInterval"))
_HOST_SCALARS = (("shm_size", "ShmSize"), ("mem_limit", "Memory"), ("mem_reservation", "MemoryReservation"),
                 ("memswap_limit", "MemorySwap"), ("cpus", "NanoCpus"), ("cpu_shares", "CpuShares"),
                 ("cpuset", "CpusetCpus"), ("pids_limit", "PidsLimit"), ("oom_score_adj", "OomScoreAdj"))
_CONFIG_SCALARS = (("stop_signal", "StopSignal"), ("stop_grace_period", "StopTimeout"),
                   ("mac_address", "MacAddress"))
# fmt: on


@dataclass(frozen=True)
class ContainerRequest:
    """POST /containers/create body for one replica, plus the extra networks to connect afterwards
    (API 1.41 accepts a single network at create time)."""

    name: str
    body: Mapping[str, Any]
    connect: tuple[tuple[str, Mapping[str, Any]], ...]
    platform: str | None = None  # the create's `platform` query parameter, not part of the body


def container_request(
    project: ProjectSpec,
    service: ServiceSpec,
    number: int,
    *,
    image_id: str,
    extra_labels: Mapping[str, str] = {},  # read only, so a shared default is safe
    keep_volumes: Mapping[str, str] = {},  # target -> anonymous volume to carry over
    joined: Mapping[str, str] = {},  # service -> ID of its replica 1, for `service:NAME` namespaces
    files_dir: str = "",  # where the adapter wrote this project's content-based secrets and configs
) -> ContainerRequest:
    """Translate a normalized service into the Engine API create request for replica ``number``.

    ``joined`` must hold every service of ``service.joins`` (the converger looks their IDs up)."""
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
    if service.joins:
        labels[L.JOINED] = ",".join(f"{s}={joined[s]}" for s in service.joins)
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
    binds, mounts = _mounts(c, keep_volumes, files_dir)
    host: dict[str, Any] = {
        "Binds": binds,
        "Mounts": mounts,
        "PortBindings": bindings,
        "RestartPolicy": _restart_policy(c.get("restart", "no")),
        "ExtraHosts": c.get("extra_hosts") or [],  # Compose sends [] (Docker keeps it as written)
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
        "PidMode": namespace(c.get("pid", ""), joined),
        "IpcMode": namespace(c.get("ipc", ""), joined),
    }
    if c.get("init"):
        host["Init"] = True
    if "cgroup" in c:
        host["CgroupnsMode"] = c["cgroup"]
    if "volumes_from" in c:
        host["VolumesFrom"] = [_volumes_from(project, v) for v in c["volumes_from"]]
    if "device_requests" in c:
        # As Compose's setReservations: one request per device entry, its capabilities as one AND-set.
        host["DeviceRequests"] = [
            {
                "Driver": d.get("driver", ""),
                "Count": d["count"],
                "DeviceIDs": d.get("device_ids"),
                "Capabilities": [d["capabilities"]],
                "Options": d.get("options"),
            }
            for d in c["device_requests"]
        ]
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
        host["NetworkMode"] = namespace(c["network_mode"], joined)
    else:
        for i, (net, ep) in enumerate(c["networks"].items()):
            endpoint: dict[str, Any] = {"Aliases": [service.name, name, *ep.get("aliases", ())]}
            if "links" in c:
                endpoint["Links"] = _links(project, c["links"], number)
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
    return ContainerRequest(name=name, body=body, connect=tuple(connect), platform=c.get("platform"))


def namespace(mode: str, joined: Mapping[str, str]) -> str:
    """``service:NAME`` as Compose passes it to Docker: ``container:<ID of NAME's container>``. By ID, not
    name, so a replaced container is told apart from its predecessor (see labels.JOINED)."""
    kind, _, ref = mode.partition(":")
    return f"container:{joined[ref]}" if kind == "service" else mode


def _volumes_from(project: ProjectSpec, value: str) -> str:
    """A service's volumes come from its replica 1 (Compose passes that container's ID; we pass its name,
    which Docker resolves at create). The ro/rw mode is kept: Compose drops it, Docker honours it."""
    kind, _, rest = value.partition(":")
    ref, _, mode = rest.partition(":")
    if kind == "service":
        source = project.service(ref)
        ref = source.container(project.name, 1) if source else f"{project.name}-{ref}-1"
    return f"{ref}:{mode}" if mode else ref


def _links(project: ProjectSpec, links: list[str], number: int) -> list[str]:
    """Compose's getLinks: for every container of the linked service, the alias, then ``{service}-{n}``
    and ``{project}-{service}-{n}``, where n is the *linking* replica's number. (Compose lists them in
    Docker's list order, which varies; their order has no effect.)"""
    out: list[str] = []
    for link in links:
        target, _, alias = link.partition(":")
        linked = project.service(target)
        if linked is None:
            continue
        for n in range(1, linked.replicas + 1):
            other = linked.container(project.name, n)
            out += [
                f"{other}:{alias}",
                f"{other}:{target}-{number}",
                f"{other}:{project.name}-{target}-{number}",
            ]
    return out


def _restart_policy(restart: str) -> dict[str, Any]:
    name, _, count = restart.partition(":")
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": int(count or 0)}


def _mounts(
    c: Mapping[str, Any], keep: Mapping[str, str], files_dir: str
) -> tuple[list[str], list[dict[str, Any]]]:
    """Binds that may create their host path go through the legacy ``Binds`` (the Mounts API refuses a
    missing source, Compose relies on this too); everything else is a Mount."""
    binds: list[str] = []
    mounts: list[dict[str, Any]] = []
    for v in c.get("volumes", ()):
        target = v["target"]
        if v["type"] == "volume" and v.get("source") and not v.get("nocopy"):
            # Compose v2 passes a named volume without volume options as a Binds string (`name:/t:rw`),
            # so Docker reports its mode as rw/ro (the Mounts API's is `z`); only that string carries :z/:Z.
            opts = ["ro" if v.get("read_only") else "rw"] + ([v["selinux"]] if v.get("selinux") else [])
            binds.append(f"{v['source']}:{target}:{','.join(opts)}")
            continue
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
            # Content-based: the file the converger wrote under the state directory (a digest names it).
            source = f["source"] if "source" in f else f"{files_dir}/{content_path(key, f)}"
            mounts.append({"Type": "bind", "Source": source, "Target": f["target"], "ReadOnly": True})
    return binds, mounts
