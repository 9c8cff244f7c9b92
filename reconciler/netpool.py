"""Subnets for project networks from an environment's ``networks_pool`` (a CIDR); Docker's words about them.

Pure: ``Converger._ensure_networks`` lists the host's networks and passes their subnets in; nothing here
talks to Docker. IPv4 only: Docker's default pools, the ones that run out, are IPv4.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.errors import ConfigError, DeployError, Location

_WHERE = Location(file="environments.yaml", key="networks_pool")
# Docker 20.10 ("could not find an available, non-overlapping IPv4 address pool among the defaults to
# assign to the network"), older ("could not find an available predefined network") and 25+ ("all
# predefined address pools have been fully subnetted") when its default-address-pools are used up.
_DEFAULTS_EXHAUSTED = re.compile(
    r"non-overlapping IPv4 address pool among the defaults"
    r"|could not find an available predefined network"
    r"|predefined address pools have been fully subnetted",
    re.IGNORECASE,
)
# A subnet we asked for is taken: by another Docker network ("Pool overlaps with other one on this address
# space") or by another bridge ("conflicts with network ...: networks have overlapping IPv4").
_OVERLAP = re.compile(
    r"pool overlaps with other one|conflicts with network|networks have overlapping", re.IGNORECASE
)


def parse_pool(pool: str) -> ipaddress.IPv4Network:
    """``pool`` as an IPv4 network, or a ConfigError saying what is wrong with it."""
    try:
        net = ipaddress.ip_network(pool.strip(), strict=True)
    except ValueError as exc:
        hint = "write a private IPv4 range in CIDR form, e.g. 10.210.0.0/16"
        try:
            loose = ipaddress.ip_network(pool.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"{pool!r} is not a network in CIDR form ({exc})", _WHERE, hint=hint) from exc
        raise ConfigError(
            f"{pool!r} has host bits set: did you mean {loose}?", _WHERE, hint=f"write {loose}"
        ) from exc
    if not isinstance(net, ipaddress.IPv4Network):
        raise ConfigError(f"{pool!r} is an IPv6 network; the pool must be IPv4", _WHERE)
    return net


def allocate(pool: str, used: Iterable[str], prefix: int = 24) -> str:
    """The first /``prefix`` subnet inside ``pool`` that overlaps none of ``used`` (CIDRs; IPv6 and
    unparsable entries are ignored). Raises DeployError(reason="NetworkPoolExhausted") when none is free."""
    net = parse_pool(pool)
    if not net.prefixlen <= prefix <= 30:
        raise ConfigError(
            f"{pool!r} cannot hold a /{prefix} network",
            _WHERE,
            hint=f"use a pool of /{prefix} or larger, e.g. 10.210.0.0/16",
        )
    taken = sorted(
        (int(u.network_address), int(u.broadcast_address))
        for u in _ipv4(used)
        if u.overlaps(net)  # the rest cannot block anything: fewer to scan
    )
    size = 1 << (32 - prefix)
    start, end = int(net.network_address), int(net.broadcast_address)
    while start + size - 1 <= end:
        last = start + size - 1
        clash = next((hi for lo, hi in taken if lo <= last and hi >= start), None)
        if clash is None:
            return str(ipaddress.IPv4Network((start, prefix)))
        start = (clash // size + 1) * size  # the first aligned candidate past what is in the way
    raise DeployError(
        f"networks_pool {net} has no free /{prefix} left: every one overlaps an existing Docker network "
        f"(`docker network ls`, then `docker network inspect`). Enlarge networks_pool in environments.yaml "
        f"(a /16 such as 10.210.0.0/16 holds 256 /24s), or remove networks no stack uses "
        f"(`docker network prune`).",
        reason="NetworkPoolExhausted",
    )


def subnets(networks: Iterable[Mapping[str, Any]]) -> list[str]:
    """The subnets in the IPAM config of Engine API network objects (``GET /networks``)."""
    return [
        str(cfg["Subnet"])
        for n in networks
        for cfg in ((n.get("IPAM") or {}).get("Config") or ())
        if cfg and cfg.get("Subnet")
    ]


def overlaps(message: str) -> bool:
    """Whether Docker refused a network because the subnet asked for is already taken."""
    return _OVERLAP.search(message) is not None


def defaults_exhausted(message: str) -> bool:
    """Whether Docker refused a network because its own default address pools are used up."""
    return _DEFAULTS_EXHAUSTED.search(message) is not None


def defaults_exhausted_error(network: str, detail: str) -> DeployError:
    """The error for a network Docker could not give a subnet from its defaults: what to change, and where."""
    return DeployError(
        f"network {network!r}: Docker has no free subnet left in its default address pools ({detail}). "
        "Either give this environment its own pool: set `networks_pool: 10.210.0.0/16` in "
        "environments.yaml (split into /24s, one per network, enough for 256 previews); or enlarge "
        "Docker's pools in /etc/docker/daemon.json, e.g. "
        '"default-address-pools": [{"base": "10.200.0.0/14", "size": 24}], and restart dockerd.',
        reason="NetworkPoolExhausted",
    )


def _ipv4(cidrs: Iterable[str]) -> Iterable[ipaddress.IPv4Network]:
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(str(cidr).strip(), strict=False)
        except ValueError:
            continue  # not ours to judge: Docker accepted it
        if isinstance(net, ipaddress.IPv4Network):
            yield net
