"""What drift sees beyond the config hash (pure): resource limits, restart policy and networks of a container,
options of the project's networks and volumes, and containers `docker compose up` replaced by hand.

Called by ``reconciler.plan.make_plan`` on the facts ``reconciler.observe`` gathered; data in, drifts out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler import labels as L
from reconciler.spec import NetworkSpec, ProjectSpec, ServiceSpec, VolumeSpec, container_request
from reconciler.status import Drift, DriftReason

# HostConfig fields `docker update` changes (memory, reservation, swap, --cpus, shares, cpuset, pids, blkio).
LIMIT_KEYS = (
    "Memory",
    "MemoryReservation",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "CpusetCpus",
    "PidsLimit",
    "BlkioWeight",
)
# What observe keeps of a container's inspect: the limits and the restart policy (nothing else is needed).
HOST_KEYS = (*LIMIT_KEYS, "RestartPolicy")


_DESIRED_HOST: dict[tuple[str, str, str], dict[str, Any]] = {}
_DESIRED_HOST_MAX = 4096


def desired_host(project: ProjectSpec, svc: ServiceSpec) -> dict[str, Any]:
    """The HostConfig values of ``HOST_KEYS`` a container of ``svc`` is created with.

    Memoized by config hash (which covers every input of these values): the drift check asks for
    every container on every cycle, and building a create request costs ~0.1 ms."""
    key = (project.name, svc.name, svc.config_hash)
    cached = _DESIRED_HOST.get(key)
    if cached is None:
        # The joined containers' IDs only shape the namespace modes, which are not compared here.
        joined = {s: "" for s in svc.joins}
        host = container_request(project, svc, 1, image_id="", joined=joined).body["HostConfig"]
        cached = {k: host[k] for k in HOST_KEYS if k in host}
        if len(_DESIRED_HOST) >= _DESIRED_HOST_MAX:
            _DESIRED_HOST.clear()
        _DESIRED_HOST[key] = cached
    return cached


def limits_diff(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """The limits that differ, as ``Key want -> live``; keys absent from ``desired`` mean Docker's default.
    A limit set in the config but unset on the container is not compared (see below)."""
    out = []
    for key in LIMIT_KEYS:
        want, have = _limit(key, desired.get(key)), _limit(key, live.get(key))
        if key == "MemorySwap" and desired.get(key) is None:
            # Unset, Docker derives it: twice the memory limit at create, -1 (unlimited) without swap
            # accounting; `docker update --memory` keeps the old value. Only a set swap limit is compared.
            derived = {0, -1, 2 * _memory(desired), 2 * _limit("Memory", live.get("Memory"))}
            if have in derived:
                continue
        if have in ("", 0, -1) and want not in ("", 0, -1):
            # Docker drops at create a limit the kernel cannot enforce ("Your kernel does not support
            # ...; discarded"): an unset live value is no proof of a hand change, and recreating would loop.
            continue
        if want != have:
            out.append(f"{key} {want!r} -> {have!r}")
    return out


def _memory(desired: Mapping[str, Any]) -> int:
    return int(_limit("Memory", desired.get("Memory")))


def _limit(key: str, value: Any) -> Any:
    if key == "CpusetCpus":
        return str(value or "")
    if key == "PidsLimit":  # None, 0 and -1 all mean "no limit"
        return 0 if value is None or int(value) <= 0 else int(value)
    return int(value or 0)


def restart_diff(desired: Mapping[str, Any] | None, live: Mapping[str, Any] | None) -> str | None:
    """``want -> live`` when the restart policies differ (Docker reports "no" for the empty policy)."""
    want, have = _restart(desired), _restart(live)
    return None if want == have else f"{want} -> {have}"


def _restart(policy: Mapping[str, Any] | None) -> str:
    name = str((policy or {}).get("Name") or "no")
    count = int((policy or {}).get("MaximumRetryCount") or 0)
    return f"{name}:{count}" if name == "on-failure" and count else name


def desired_networks(svc: ServiceSpec) -> set[str] | None:
    """The networks a container of ``svc`` is on: its `networks`, or the one of its `network_mode`;
    None when it joins another container's namespace (`service:`/`container:`), which lists none."""
    mode = svc.config.get("network_mode")
    if mode and str(mode).startswith(("service:", "container:")):
        return None
    return {str(mode)} if mode else set(svc.config.get("networks") or {})


def networks_diff(desired: Iterable[str], live: Iterable[str]) -> list[str]:
    """What differs between the networks a container should be on and those it is on."""
    want, have = set(desired), set(live)
    out = [f"disconnected from {n}" for n in sorted(want - have)]
    return out + [f"connected by hand to {n}" for n in sorted(have - want)]


def network_diff(spec: NetworkSpec, live: Mapping[str, Any]) -> list[str]:
    """The options of a network we created that differ from its config (``live``: a network list entry)."""
    out = []
    if (spec.driver or "bridge") != (live.get("Driver") or "bridge"):
        out.append(f"driver {spec.driver or 'bridge'} -> {live.get('Driver')}")
    if dict(spec.options) != dict(live.get("Options") or {}):
        out.append("driver_opts")
    for key, attr in (("internal", "Internal"), ("attachable", "Attachable"), ("enable_ipv6", "EnableIPv6")):
        if bool(getattr(spec, key)) != bool(live.get(attr)):
            out.append(f"{key} {bool(getattr(spec, key))} -> {bool(live.get(attr))}".lower())
    if not _ipam_matches(spec.ipam, live.get("IPAM") or {}):
        out.append("ipam")
    out += _labels_diff(spec.labels, live.get("Labels") or {})
    return out


def _ipam_matches(want: Mapping[str, Any] | None, live: Mapping[str, Any]) -> bool:
    # No ipam in the config: Docker (or our networks_pool) picked the subnet, so any pool is right.
    if not want:
        return (live.get("Driver") or "default") == "default"
    if (want.get("Driver") or "default") != (live.get("Driver") or "default"):
        return False
    if dict(want.get("Options") or {}) != dict(live.get("Options") or {}):
        return False
    pools = list(want.get("Config") or ())
    if not pools:
        return True
    have = list(live.get("Config") or ())
    # Docker fills in a gateway it picked: only the keys the config sets are compared.
    return len(pools) == len(have) and all(
        all(h.get(k) == v for k, v in p.items()) for p, h in zip(pools, have, strict=True)
    )


def volume_diff(spec: VolumeSpec, live: Mapping[str, Any]) -> list[str]:
    """The options of a volume we created that differ from its config (``live``: a volume list entry)."""
    out = []
    if (spec.driver or "local") != (live.get("Driver") or "local"):
        out.append(f"driver {spec.driver or 'local'} -> {live.get('Driver')}")
    if dict(spec.driver_opts) != dict(live.get("Options") or {}):
        out.append("driver_opts")
    return out + _labels_diff(spec.labels, live.get("Labels") or {})


def _labels_diff(want: Mapping[str, str], live: Mapping[str, str]) -> list[str]:
    changed = sorted(k for k, v in want.items() if live.get(k) != v)
    return [f"label {k}" for k in changed]


def object_drifts(
    project: ProjectSpec, networks: Iterable[Mapping[str, Any]], volumes: Iterable[Mapping[str, Any]]
) -> tuple[Drift, ...]:
    """network_options/volume_options drifts of the project's networks and volumes that we created.

    Reported only: recreating a volume loses its data, and a network cannot be removed while containers
    are on it, so the detail says what to do. Their ``service`` is ``network:NAME`` / ``volume:NAME``."""
    ours = {n["Name"]: n for n in networks if _created_by_us(project, n)}
    used = {n for s in project.services for n in s.config.get("networks") or {}}
    out: list[Drift] = []
    for net in project.networks:
        live = ours.get(net.name)
        if net.external or net.name not in used or live is None:
            continue
        diff = network_diff(net, live)
        if diff:
            how = (
                f"network {net.name} differs from the config ({', '.join(diff)}); a network with containers "
                f"on it is never recreated: run `reconciler down` (keeps volumes), or stop the project and "
                f"`docker network rm {net.name}`, then `reconciler up`"
            )
            out.append(Drift(f"network:{net.name}", DriftReason.NETWORK_OPTIONS, how))
    vols = {v["Name"]: v for v in volumes if _created_by_us(project, v)}
    for vol in project.volumes:
        live = vols.get(vol.name)
        if vol.external or live is None:
            continue
        diff = volume_diff(vol, live)
        if diff:
            how = (
                f"volume {vol.name} differs from the config ({', '.join(diff)}); a volume is never "
                f"recreated (its data would be lost): back it up, run `reconciler down` (without "
                f"volumes), `docker volume rm {vol.name}`, then `reconciler up` and restore the data"
            )
            out.append(Drift(f"volume:{vol.name}", DriftReason.VOLUME_OPTIONS, how))
    return tuple(out)


def _created_by_us(project: ProjectSpec, obj: Mapping[str, Any]) -> bool:
    labels = obj.get("Labels") or {}
    return labels.get(L.PROJECT) == project.name and labels.get(L.MANAGED) == "true"


def proven_ours(project: str, objects: Iterable[Mapping[str, str]]) -> bool:
    """Whether one of the project's objects (labels of its containers, networks, volumes) was made by a
    reconciler: only then is a container without our labels a hand-run `docker compose up`."""
    return any(o.get(L.PROJECT) == project and o.get(L.MANAGED) == "true" for o in objects)


def is_foreign(labels: Mapping[str, str], proven: bool) -> bool:
    """A container `docker compose up` made by hand in a project we own: Compose's config hash, none of our
    labels. An older release's container (managed, no owner label) is ours, and adopted as before."""
    return proven and L.CONFIG_HASH in labels and L.MANAGED not in labels and L.OWNER not in labels


def container_drifts(
    project: ProjectSpec,
    svc: ServiceSpec,
    host: Mapping[str, Any] | None,
    networks: Iterable[str] | None,
) -> list[tuple[DriftReason, str]]:
    """limits, restart_policy and networks drift of a container made from ``svc``'s current config.
    ``host`` (the inspected HOST_KEYS) or ``networks`` None: not known, so no verdict on them."""
    out: list[tuple[DriftReason, str]] = []
    want = desired_host(project, svc)
    if host is not None:
        limits = limits_diff(want, host)
        if limits:
            out.append((DriftReason.LIMITS, f"limits changed by hand: {', '.join(limits)}"))
        restart = restart_diff(want.get("RestartPolicy"), host.get("RestartPolicy"))
        if restart:
            out.append((DriftReason.RESTART_POLICY, f"restart policy changed by hand: {restart}"))
    wanted = desired_networks(svc)
    if networks is not None and wanted is not None:
        nets = networks_diff(wanted, networks)
        if nets:
            out.append((DriftReason.NETWORKS, "; ".join(nets)))
    return out
