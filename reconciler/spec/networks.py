"""Networks and volumes: a service's ``networks``/``network_mode``, and the top-level ``networks`` and
``volumes`` as the NetworkSpec/VolumeSpec we create. Called by ``service`` and ``project``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.errors import Location, UnsupportedError
from reconciler.spec.context import _Context, _put, _str_list, _unsupported
from reconciler.spec.model import NetworkSpec, VolumeSpec

_NETWORK_KEYS = frozenset(
    {"name", "driver", "driver_opts", "external", "internal", "attachable", "enable_ipv6", "ipam", "labels"}
)
_VOLUME_KEYS = frozenset({"name", "driver", "driver_opts", "external", "labels"})
# fmt: off
_IPAM_POOL_KEYS = (("subnet", "Subnet"), ("gateway", "Gateway"), ("ip_range", "IPRange"),
                   ("aux_addresses", "AuxiliaryAddresses"))
# fmt: on


def _networks(ctx: _Context, service: str, svc: Mapping[str, Any], c: dict[str, Any]) -> None:
    mode = svc.get("network_mode")
    if mode:
        mode = str(mode)
        if mode not in ("host", "none", "bridge") and not _shared(mode):
            raise _unsupported(service, "network_mode", f"network_mode {mode!r} is not supported")
        if _shared(mode):
            _refuse_own_network(service, svc, mode)
        c["network_mode"] = mode
        return
    nets: dict[str, Any] = {}
    order: list[tuple[int, str, str]] = []
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
        # Compose connects by priority (highest first), then by the service's key for the network (not the
        # network's `name:`); the first becomes NetworkMode. The hash sorts keys, so the order is not hashed.
        order.append((-int(opts.get("priority") or 0), key, name))
    c["networks"] = {name: nets[name] for _, _, name in sorted(order)}


def _shared(mode: str) -> bool:
    """``service:NAME`` or ``container:NAME``: the namespace of another container (pid, ipc, network)."""
    kind, _, ref = mode.partition(":")
    return kind in ("service", "container") and bool(ref)


# Keys that configure a network stack of the container's own. Docker refuses each of them with a
# container network mode ("conflicting options: ... and the network mode", runconfig's
# validateNetContainerMode); Compose passes them on and fails at create. We name the key up front.
_OWN_NETWORK_KEYS = ("ports", "expose", "hostname", "dns", "extra_hosts", "mac_address", "links")


def _refuse_own_network(service: str, svc: Mapping[str, Any], mode: str) -> None:
    for key in _OWN_NETWORK_KEYS:
        if svc.get(key):
            raise _unsupported(
                service,
                key,
                f"`{key}` cannot be combined with network_mode {mode!r}: the container uses the network "
                "stack of another container, and Docker refuses its own ports, hostname, DNS servers, "
                "hosts entries, MAC address and links there",
                hint=f"remove `{key}` from service {service!r} (set it where the network is owned)",
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
