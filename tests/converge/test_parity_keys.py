"""Differential test for the keys the kitchen sink leaves out: mount options, fixed addresses, network
priority, devices, namespaces, cgroup, deploy limits, reservations and restart policy, platform.

Ours and Compose's run one after the other under the same project name (a fixed subnet can exist once),
and every container is compared field by field, mount options included."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.converge.conftest import BUSYBOX, Stack, inspect
from tests.converge.helpers import compose
from tests.converge.test_compose_parity import comparable

pytestmark = pytest.mark.docker

KEYS = f"""
services:
  app:
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    platform: linux/amd64
    stop_grace_period: 1s
    volumes:
      - type: bind
        source: ./shared
        target: /shared
        read_only: true
        bind: {{propagation: private}}
      - type: volume
        source: data
        target: /data
        volume: {{nocopy: true}}
      - type: tmpfs
        target: /scratch
        tmpfs: {{size: 2000000, mode: 0o1777}}
      - ./conf:/conf:ro,z
      - cache:/cache:ro
    devices: ["/dev/null:/dev/xnull:rwm"]
    networks:
      front: {{ipv4_address: 10.253.250.10, priority: 10}}
      back: {{priority: 100, aliases: [app-back]}}
    pid: host
    ipc: shareable
    cgroup: private
    oom_score_adj: 100
    cpu_shares: 512
    cpuset: "0"
    memswap_limit: 512m
    deploy:
      mode: replicated
      replicas: 1
      resources:
        limits: {{memory: 256m, cpus: "0.5", pids: 64}}
        reservations: {{memory: 32m}}
      restart_policy: {{condition: on-failure, max_attempts: 3}}
  peer:
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    ipc: service:app
    networks: [back]
volumes:
  data:
  cache:
networks:
  front:
    ipam: {{config: [{{subnet: 10.253.250.0/24}}]}}
  back:
"""
FILES = {"shared/a.txt": "a\n", "conf/app.conf": "x=1\n"}


def details(name: str, project: str) -> dict[str, Any]:
    """``comparable`` plus what it leaves out: mount modes and propagation, addresses and the primary
    network, with the (random) container IDs the namespace modes point to replaced by service names."""
    info = inspect(name)
    out = comparable(name, project)
    if out["config"]["Hostname"] == info["Id"][:12]:  # Docker's default hostname: the container's ID
        out["config"]["Hostname"] = "ID"
    out["mounts"] = sorted(
        ({k: m.get(k) for k in ("Type", "Destination", "RW", "Mode", "Propagation")} for m in info["Mounts"]),
        key=lambda m: str(m["Destination"]),
    )
    out["addresses"] = {
        net.replace(project, "PROJECT"): (ep.get("IPAMConfig") or {}).get("IPv4Address", "")
        for net, ep in info["NetworkSettings"]["Networks"].items()
    }
    out["host"]["NetworkMode"] = out["host"]["NetworkMode"].replace(project, "PROJECT")
    for key in ("IpcMode", "PidMode"):
        mode = out["host"][key]
        if mode.startswith("container:"):
            out["host"][key] = (
                "container:"
                + inspect(mode.removeprefix("container:"))["Config"]["Labels"]["com.docker.compose.service"]
            )
    return json.loads(json.dumps(out))


def test_more_keys_match_compose(stack: Stack) -> None:
    """Every container we create equals Compose v2's for the same file, field by field; our plan is a no-op
    right after our `up`."""
    path = stack.write(KEYS, **FILES)
    stack.up(timeout=60)
    assert stack.plan().is_noop
    names = [f"{stack.name}-app-1", f"{stack.name}-peer-1"]
    ours = {n: details(n, stack.name) for n in names}
    stack.converger.down(stack.name, volumes=True, timeout=1)
    try:
        done = compose(stack.name, "-f", str(path), "up", "-d", cwd=stack.dir)
        assert done.returncode == 0, done.stderr
        theirs = {n: details(n, stack.name) for n in names}
    finally:
        compose(stack.name, "-f", str(path), "down", "-v", "-t", "1", cwd=stack.dir)
    for n in names:
        for section in ours[n]:
            assert ours[n][section] == theirs[n][section], (n, section)
    app = ours[names[0]]
    # And the values did reach the engine (not merely equal on both sides by omission).
    assert app["addresses"]["PROJECT_front"] == "10.253.250.10"
    assert app["host"]["NetworkMode"] == "PROJECT_back"  # the higher priority network is the primary one
    assert app["host"]["PidMode"] == "host" and app["host"]["CgroupnsMode"] == "private"
    assert app["host"]["Memory"] == 256 * 2**20 and app["host"]["PidsLimit"] == 64
    assert app["host"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert ours[names[1]]["host"]["IpcMode"] == "container:app"
    shared = {"Type": "bind", "Destination": "/shared", "RW": False, "Mode": "", "Propagation": "private"}
    assert shared in app["mounts"]
