"""A two-node Swarm on this machine: test engines 5 (manager) and 6 (worker), each in its own network
namespace (scripts/dockerd2.sh), joined by a veth pair. A 2-replica service with `max_replicas_per_node:
1` gets a task on each node, and the tasks reach each other over the overlay network (VXLAN between the
namespaces). Never touches the main engine or engines 2 and 3."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from reconciler.swarm.converge import SwarmConverger
from reconciler.swarm.engine import SwarmEngine
from tests.engines import engine_url, start_engine
from tests.swarm.conftest import BASE, OWNER, Stack, poll

MANAGER, WORKER = 5, 6
_ADDR = {MANAGER: "10.250.0.5", WORKER: "10.250.0.6"}


def _netns(index: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", f"reconciler-test-{index}", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def _link() -> None:
    """A veth pair between the two engines' namespaces (once; it lives as long as the namespaces)."""
    if "10.250.0.5/24" in _netns(MANAGER, "ip", "-4", "addr").stdout:
        return
    subprocess.run(
        ["ip", "link", "add", "swt5", "netns", f"reconciler-test-{MANAGER}", "type", "veth", "peer", "name",
         "swt6", "netns", f"reconciler-test-{WORKER}"],
        check=True,
    )  # fmt: skip
    for index, dev in ((MANAGER, "swt5"), (WORKER, "swt6")):
        assert _netns(index, "ip", "addr", "add", f"{_ADDR[index]}/24", "dev", dev).returncode == 0
        assert _netns(index, "ip", "link", "set", dev, "up").returncode == 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    for index in (MANAGER, WORKER):
        start_engine(index)
    _link()
    manager = docker.DockerClient(base_url=engine_url(MANAGER), timeout=60)
    worker = docker.DockerClient(base_url=engine_url(WORKER), timeout=60)
    try:
        if (manager.info().get("Swarm") or {}).get("LocalNodeState") != "active":
            manager.swarm.init(advertise_addr=_ADDR[MANAGER])
        if (worker.info().get("Swarm") or {}).get("LocalNodeState") != "active":
            token = manager.swarm.attrs["JoinTokens"]["Worker"]
            worker.swarm.join(remote_addrs=[f"{_ADDR[MANAGER]}:2377"], join_token=token)
        poll(lambda: sum(n.attrs["Status"]["State"] == "ready" for n in manager.nodes.list()) == 2)
        yield engine_url(MANAGER)
    finally:
        manager.close()
        worker.close()


def test_replicas_spread_over_two_nodes_and_talk_over_the_overlay(cluster: str, tmp_path: Path) -> None:
    converger = SwarmConverger(SwarmEngine(cluster))
    stack = Stack(tmp_path, "swtmulti")
    web = {
        "image": BASE,
        "command": ["sh", "-c", "mkdir -p /w && hostname > /w/index.html && httpd -f -p 8080 -h /w"],
        "stop_grace_period": "1s",
        "deploy": {"replicas": 2, "placement": {"max_replicas_per_node": 1}},
    }
    try:
        converger.up(stack.write({"services": {"web": web}}), timeout=120, owner=OWNER)
        tasks = [t for t in converger.engine.list_tasks(["swtmulti_web"]) if t["DesiredState"] == "running"]
        assert len({t["NodeID"] for t in tasks}) == 2
        # From the task on the worker, each task's address answers with that task's container hostname.
        worker = docker.APIClient(base_url=engine_url(WORKER), version="auto")
        (local,) = worker.containers(filters={"label": "com.docker.swarm.service.name=swtmulti_web"})
        script = (
            "for ip in $(nslookup tasks.web | sed -n 's/^Address: *//p'); do "
            'printf "GET / HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc $ip 8080 | tail -1; done'
        )
        exec_id = worker.exec_create(local["Id"], ["sh", "-c", script])
        answers = set(worker.exec_start(exec_id).decode().split())
        worker.close()
        assert len(answers) == 2  # both containers, one of them on the other node
    finally:
        converger.down("swtmulti", volumes=True)
