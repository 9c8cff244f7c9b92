"""reconciler.netpool: the first free /24 of an environment's networks_pool; Docker's words about pools."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import netpool
from reconciler.errors import ConfigError, DeployError

BASE = int(ipaddress.IPv4Address("10.0.0.0"))


@st.composite
def pools(draw: st.DrawFn) -> ipaddress.IPv4Network:
    prefix = draw(st.integers(min_value=18, max_value=24))
    block = draw(st.integers(min_value=0, max_value=(1 << (prefix - 8)) - 1))
    return ipaddress.IPv4Network((BASE + (block << (32 - prefix)), prefix))


@st.composite
def used_near(draw: st.DrawFn, pool: ipaddress.IPv4Network) -> str:
    """A network in, around or across ``pool``, as `docker network inspect` could report it."""
    low, high = int(pool.network_address) - 4096, int(pool.broadcast_address) + 4096
    address = draw(st.integers(min_value=max(low, 0), max_value=min(high, 2**32 - 1)))
    prefix = draw(st.integers(min_value=14, max_value=30))
    return str(ipaddress.IPv4Network((address, prefix), strict=False))


def candidates(pool: ipaddress.IPv4Network, prefix: int = 24) -> list[ipaddress.IPv4Network]:
    return list(pool.subnets(new_prefix=prefix))


def clashes(net: ipaddress.IPv4Network, used: list[str]) -> bool:
    return any(net.overlaps(ipaddress.IPv4Network(u)) for u in used)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_allocate_returns_the_first_free_subnet(data: st.DataObject) -> None:
    """The answer is the pool's first /24 that overlaps nothing used; none free is NetworkPoolExhausted."""
    pool = data.draw(pools())
    used = data.draw(st.lists(used_near(pool), max_size=12))
    free = [c for c in candidates(pool) if not clashes(c, used)]
    if not free:
        with pytest.raises(DeployError) as err:
            netpool.allocate(str(pool), used)
        assert err.value.reason == "NetworkPoolExhausted"
        return
    assert netpool.allocate(str(pool), used) == str(free[0])


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_allocate_other_prefixes(data: st.DataObject) -> None:
    """Any prefix from the pool's own to /30 works the same way."""
    pool = data.draw(pools())
    prefix = data.draw(st.integers(min_value=pool.prefixlen, max_value=min(pool.prefixlen + 6, 30)))
    used = data.draw(st.lists(used_near(pool), max_size=6))
    free = [c for c in candidates(pool, prefix) if not clashes(c, used)]
    if free:
        assert netpool.allocate(str(pool), used, prefix=prefix) == str(free[0])
    else:
        with pytest.raises(DeployError):
            netpool.allocate(str(pool), used, prefix=prefix)


def test_allocate_skips_used_and_ignores_ipv6_and_junk() -> None:
    """Used IPv4 subnets are skipped; IPv6 and unparsable entries are ignored."""
    used = ["10.231.0.0/24", "fd00::/64", "", "not-a-net", "10.231.1.128/25", "172.17.0.0/16"]
    assert netpool.allocate("10.231.0.0/16", used) == "10.231.2.0/24"


def test_allocate_whole_pool_covered() -> None:
    """A used network that covers the whole pool leaves nothing; the message says how to enlarge the pool."""
    with pytest.raises(DeployError) as err:
        netpool.allocate("10.231.0.0/16", ["10.0.0.0/8"])
    assert err.value.reason == "NetworkPoolExhausted"
    assert "10.231.0.0/16" in str(err.value) and "Enlarge networks_pool" in str(err.value)


@pytest.mark.parametrize(
    ("pool", "words"),
    [
        ("10.231.0.1/16", "did you mean 10.231.0.0/16"),
        ("10.231.0.0/33", "not a network in CIDR form"),
        ("nonsense", "not a network in CIDR form"),
        ("fd00::/48", "IPv6"),
        ("10.231.0.0/26", "cannot hold a /24"),
    ],
)
def test_bad_pools_are_config_errors(pool: str, words: str) -> None:
    """A malformed, IPv6 or too small pool is a ConfigError naming networks_pool and what is wrong."""
    with pytest.raises(ConfigError) as err:
        netpool.allocate(pool, [])
    assert words in str(err.value) and "networks_pool" in str(err.value)


def test_subnets_of_engine_networks() -> None:
    """Subnets come from each network's IPAM config; networks without one add nothing."""
    networks = [
        {"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}},
        {"Name": "host", "IPAM": {"Driver": "default", "Config": []}},
        {"Name": "none", "IPAM": {"Config": None}},
        {"Name": "dual", "IPAM": {"Config": [{"Subnet": "10.9.0.0/24"}, {"Subnet": "fd00::/64"}]}},
        {"Name": "odd"},
    ]
    assert netpool.subnets(networks) == ["172.17.0.0/16", "10.9.0.0/24", "fd00::/64"]


@pytest.mark.parametrize(
    ("message", "overlap", "exhausted"),
    [
        ("Pool overlaps with other one on this address space", True, False),
        ("invalid pool request: Pool overlaps with other one on this address space", True, False),
        (
            "could not find an available, non-overlapping IPv4 address pool among the defaults to assign "
            "to the network",
            False,
            True,
        ),
        (
            'failed to parse pool request for address space "LocalDefault" pool "" subpool "": could not '
            "find an available predefined network",
            False,
            True,
        ),
        ("all predefined address pools have been fully subnetted", False, True),
        (
            "cannot create network x (br-1): conflicts with network y (br-2): networks have overlapping IPv4",
            True,
            False,
        ),
        ("network with name x already exists", False, False),
    ],
)
def test_docker_messages(message: str, overlap: bool, exhausted: bool) -> None:
    """Docker's answers about taken subnets and used-up default pools are recognised, others are not."""
    assert (netpool.overlaps(message), netpool.defaults_exhausted(message)) == (overlap, exhausted)


def test_defaults_exhausted_error_says_how_to_fix() -> None:
    """The error for used-up default pools names the network and both fixes: networks_pool or daemon.json."""
    err = netpool.defaults_exhausted_error("shop-pr-12_default", "could not find an available ...")
    text = str(err)
    assert err.reason == "NetworkPoolExhausted"
    assert "'shop-pr-12_default'" in text and "networks_pool: 10.210.0.0/16" in text
    assert (
        "/etc/docker/daemon.json" in text and '"default-address-pools"' in text and "restart dockerd" in text
    )
