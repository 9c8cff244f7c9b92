"""`up(subnet_pool=...)` on the real engine: project networks get free /24s from the pool, a full pool and
Docker's own used-up pools fail with a clear message, and a subnet taken meanwhile is skipped."""

from __future__ import annotations

import ipaddress
import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import labels as L
from reconciler import netpool
from reconciler.converge import Converger
from reconciler.engine import DockerEngine
from reconciler.errors import ConfigError, DeployError
from tests.converge.conftest import BUSYBOX, Stack, docker, inspect
from tests.dockerproxy import DockerProxy, Request

pytestmark = pytest.mark.docker

POOL = "10.231.0.0/16"
COMPOSE = f"""
services:
  app:
    image: {BUSYBOX}
    command: [sleep, "300"]
"""


def subnet_of(network: str) -> str:
    config = inspect(network)["IPAM"]["Config"]
    assert len(config) == 1, config
    return str(config[0]["Subnet"])


def host_subnets(but: str) -> list[str]:
    """Every network's subnets on this host, except those of network ``but``."""
    ids = docker("network", "ls", "-q").stdout.split()
    nets = json.loads(docker("network", "inspect", *ids).stdout)
    return netpool.subnets(n for n in nets if n["Name"] != but)


@pytest.fixture
def networks() -> Iterator[list[str]]:
    """Names of networks a test made by hand; removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        docker("network", "rm", name, check=False)


@pytest.fixture
def proxy() -> Iterator[DockerProxy]:
    p = DockerProxy().start()
    yield p
    p.stop()


@pytest.fixture
def other(tmp_path: Path, converger: Converger) -> Iterator[Stack]:
    """A second throw-away project next to ``stack``."""
    s = Stack(f"tcv-netpool-b-{secrets.token_hex(2)}", tmp_path / "other", converger)
    s.dir.mkdir()
    yield s
    converger.down(s.name, volumes=True, timeout=1)


def test_projects_get_distinct_subnets_from_pool(stack: Stack, other: Stack) -> None:
    """Two projects given a pool get different free /24s from it, and their containers use them."""
    subnets = []
    for s in (stack, other):
        s.write(COMPOSE)
        s.up(subnet_pool=POOL)
        network = f"{s.name}_default"
        subnet = ipaddress.IPv4Network(subnet_of(network))
        assert subnet.prefixlen == 24 and subnet.subnet_of(ipaddress.IPv4Network(POOL))
        assert not any(subnet.overlaps(ipaddress.ip_network(u)) for u in host_subnets(but=network))
        (container,) = s.containers().values()
        address = container["NetworkSettings"]["Networks"][network]["IPAddress"]
        assert ipaddress.IPv4Address(address) in subnet
        subnets.append(subnet)
    assert subnets[0] != subnets[1]


def test_network_with_own_ipam_keeps_it(stack: Stack) -> None:
    """A network whose compose file sets its subnet keeps that subnet, pool or not."""
    own = netpool.allocate("10.233.0.0/16", host_subnets(but=""))
    stack.write(COMPOSE + f"networks:\n  default:\n    ipam:\n      config:\n        - subnet: {own}\n")
    stack.up(subnet_pool=POOL)
    assert subnet_of(f"{stack.name}_default") == own


def test_full_pool_is_a_clear_error(stack: Stack, networks: list[str]) -> None:
    """A pool with every /24 taken fails with NetworkPoolExhausted naming the pool; nothing is made."""
    pool = netpool.allocate("10.232.0.0/16", host_subnets(but=""))  # a free /24, then taken by hand
    blocker = f"ttn-{uuid.uuid4().hex[:10]}"
    docker("network", "create", "--subnet", pool, blocker)
    networks.append(blocker)
    stack.write(COMPOSE)
    with pytest.raises(DeployError) as err:
        stack.up(subnet_pool=pool)
    assert err.value.reason == "NetworkPoolExhausted"
    message = str(err.value)
    assert f"{stack.name}_default" in message and pool in message and "networks_pool" in message
    assert docker("network", "ls", "-q", "--filter", f"label={L.PROJECT}={stack.name}").stdout == ""
    assert stack.containers() == {}


def test_subnet_taken_meanwhile_is_skipped(stack: Stack, proxy: DockerProxy, networks: list[str]) -> None:
    """When another network takes the chosen subnet just before the create, the next free one is used."""
    stolen: list[str] = []

    def steal(request: Request) -> None:
        # Another deploy wins the race: Docker itself then answers "Pool overlaps with other one".
        subnet = request.json()["IPAM"]["Config"][0]["Subnet"]
        thief = f"ttn-{uuid.uuid4().hex[:10]}"
        docker("network", "create", "--subnet", subnet, thief)
        networks.append(thief)
        stolen.append(subnet)

    rule = proxy.add("POST", r"/networks/create", action="forward", times=1, before=steal)
    stack.converger = Converger(DockerEngine(base_url=proxy.url))
    stack.write(COMPOSE)
    stack.up(subnet_pool=POOL)
    subnet = subnet_of(f"{stack.name}_default")
    assert proxy.errors == [] and rule.hits == 1 and len(proxy.requests("POST", r"/networks/create")) == 2
    assert subnet != stolen[0] and ipaddress.IPv4Network(subnet).subnet_of(ipaddress.IPv4Network(POOL))


def test_docker_default_pools_used_up_is_a_clear_error(stack: Stack, proxy: DockerProxy) -> None:
    """Docker out of default address pools fails with NetworkPoolExhausted, saying how to fix it."""
    # Docker 20.10 answers 404 with this message (libnetwork's NotFound); using its ~30 default bridge
    # networks up for real would starve every other test running on this engine.
    words = "could not find an available, non-overlapping IPv4 address pool among the defaults to assign"
    proxy.fail("POST", r"/networks/create", status=404, body={"message": f"{words} to the network"})
    stack.converger = Converger(DockerEngine(base_url=proxy.url))
    stack.write(COMPOSE)
    with pytest.raises(DeployError) as err:
        stack.up()
    assert err.value.reason == "NetworkPoolExhausted"
    message = str(err.value)
    assert f"{stack.name}_default" in message and "networks_pool:" in message
    assert "default-address-pools" in message and "/etc/docker/daemon.json" in message
    assert stack.containers() == {}


def test_bad_pool_fails_before_any_change(stack: Stack) -> None:
    """A malformed pool is a ConfigError raised before anything is created."""
    stack.write(COMPOSE)
    with pytest.raises(ConfigError) as err:
        stack.up(subnet_pool="10.231.0.1/16")
    assert "networks_pool" in str(err.value) and "10.231.0.0/16" in str(err.value)
    assert docker("network", "ls", "-q", "--filter", f"label={L.PROJECT}={stack.name}").stdout == ""
