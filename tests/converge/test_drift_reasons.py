"""Drift beyond the config hash, made with the real docker CLI and Compose: limits, restart policy, networks,
network and volume options, a stack replaced by a hand-run `docker compose up`; and what observe costs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from reconciler import labels as L
from reconciler.converge import Converger
from reconciler.engine import DockerEngine
from reconciler.status import DriftReason
from tests.converge.conftest import BUSYBOX, Stack, docker, inspect
from tests.converge.helpers import compose

pytestmark = pytest.mark.docker

APP = f"""
services:
  app:
    image: {BUSYBOX}
    init: true
    command: ["sleep", "3600"]
    mem_limit: 64m
    pids_limit: 100
    volumes: [data:/data]
volumes:
  data: {{}}
"""
OWNER = "tcv-instance/demo/production"


class CountingEngine(DockerEngine):
    """The real engine, counting the calls observe makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def list_containers(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        self._count("containers")
        return super().list_containers(*args, **kwargs)

    def list_networks(self, labels: Any) -> list[dict[str, Any]]:
        self._count("networks")
        return super().list_networks(labels)

    def list_volumes(self, labels: Any) -> list[dict[str, Any]]:
        self._count("volumes")
        return super().list_volumes(labels)

    def inspect_container(self, ref: str) -> dict[str, Any] | None:
        self._count("inspect")
        return super().inspect_container(ref)


def up(stack: Stack, **kwargs: Any) -> Any:
    """`reconciler up` in a new process: a fresh converger, whose inspect cache is empty."""
    return Converger(DockerEngine()).up(stack.render(), timeout=60, **kwargs)


def drifts(stack: Stack) -> set[tuple[str, DriftReason]]:
    # A new process each time, as `reconciler plan`: inspect caches never hide a change here.
    plan = Converger(DockerEngine()).plan(stack.render())
    return {(d.service, d.reason) for d in plan.drifts()}


def detail(stack: Stack, reason: DriftReason) -> str:
    plan = Converger(DockerEngine()).plan(stack.render())
    return next(d.detail for d in plan.drifts() if d.reason is reason)


def test_limits_changed_by_docker_update_are_drift_until_up(stack: Stack) -> None:
    """`docker update --memory/--cpus/--pids-limit` is limits drift; up recreates with the config's limits."""
    stack.write(APP)
    up(stack)
    assert drifts(stack) == set()
    name = f"{stack.name}-app-1"
    docker("update", "--memory", "48m", "--cpus", "0.5", "--pids-limit", "50", name)
    assert drifts(stack) == {("app", DriftReason.LIMITS)}
    text = detail(stack, DriftReason.LIMITS)
    assert "Memory" in text and "NanoCpus" in text and "PidsLimit" in text
    up(stack)
    host = inspect(name)["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 0, 100)
    assert drifts(stack) == set()


def test_restart_policy_changed_by_docker_update_is_drift_until_up(stack: Stack) -> None:
    """`docker update --restart always` is restart_policy drift; up puts the config's policy back."""
    stack.write(APP)
    up(stack)
    name = f"{stack.name}-app-1"
    docker("update", "--restart", "always", name)
    assert drifts(stack) == {("app", DriftReason.RESTART_POLICY)}
    assert "no -> always" in detail(stack, DriftReason.RESTART_POLICY)
    up(stack)
    assert inspect(name)["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
    assert drifts(stack) == set()


def test_network_disconnected_or_connected_by_hand_is_drift_until_up(stack: Stack) -> None:
    """Taken off its network, or put on another by hand: networks drift; up recreates it on its networks."""
    stack.write(APP)
    up(stack)
    name, default = f"{stack.name}-app-1", f"{stack.name}_default"
    docker("network", "disconnect", default, name)
    assert drifts(stack) == {("app", DriftReason.NETWORKS)}
    assert f"disconnected from {default}" in detail(stack, DriftReason.NETWORKS)
    up(stack)
    assert set(inspect(name)["NetworkSettings"]["Networks"]) == {default}
    assert drifts(stack) == set()

    extra = f"{stack.name}-byhand"
    docker("network", "create", extra)
    try:
        docker("network", "connect", extra, name)
        assert drifts(stack) == {("app", DriftReason.NETWORKS)}
        assert f"connected by hand to {extra}" in detail(stack, DriftReason.NETWORKS)
        up(stack)
        assert set(inspect(name)["NetworkSettings"]["Networks"]) == {default}
        assert drifts(stack) == set()
    finally:
        docker("network", "rm", extra, check=False)


def test_network_with_other_options_is_reported_not_recreated(stack: Stack) -> None:
    """A project network made with other options is network_options drift: up leaves it (containers are on
    it) and says what to do; after `down` (volumes kept) and up it is gone."""
    net = f"{stack.name}_default"
    labels = {L.PROJECT: stack.name, L.NETWORK: "default", L.MANAGED: "true"}
    docker("network", "create", "--internal", *(f"--label={k}={v}" for k, v in labels.items()), net)
    stack.write(APP)
    up(stack)
    assert drifts(stack) == {(f"network:{net}", DriftReason.NETWORK_OPTIONS)}
    text = detail(stack, DriftReason.NETWORK_OPTIONS)
    assert "internal false -> true" in text and f"docker network rm {net}" in text
    before = stack.ids()
    assert up(stack).is_noop and stack.ids() == before  # reported only
    stack.converger.down(stack.name, timeout=1)
    up(stack)
    assert inspect(net)["Internal"] is False
    assert drifts(stack) == set()


def test_volume_with_other_options_is_reported_never_recreated(stack: Stack) -> None:
    """A volume whose driver_opts changed in the config is volume_options drift; up never recreates it."""
    stack.write(APP)
    up(stack)
    docker("exec", f"{stack.name}-app-1", "touch", "/data/kept")
    stack.write(APP.replace("data: {}", "data: {driver_opts: {type: tmpfs, device: tmpfs}}"))
    vol = f"{stack.name}_data"
    assert drifts(stack) == {(f"volume:{vol}", DriftReason.VOLUME_OPTIONS)}
    assert "never recreated" in detail(stack, DriftReason.VOLUME_OPTIONS)
    up(stack)
    docker("exec", f"{stack.name}-app-1", "test", "-f", "/data/kept")  # same volume, data kept
    stack.converger.down(stack.name, timeout=1)
    docker("volume", "rm", vol)
    up(stack)
    assert inspect(vol)["Options"] == {"type": "tmpfs", "device": "tmpfs"}
    assert drifts(stack) == set()


def test_compose_up_by_hand_is_foreign_and_healed_once(stack: Stack) -> None:
    """`docker compose up` on our stack replaces its container with Compose's: foreign; one up makes it ours
    again, and the next plan is clean (no fight)."""
    stack.write(APP)
    up(stack, owner=OWNER)
    done = compose(stack.name, "up", "-d", cwd=stack.dir)
    assert done.returncode == 0, done.stderr
    name = f"{stack.name}-app-1"
    assert L.MANAGED not in inspect(name)["Config"]["Labels"]
    assert drifts(stack) == {("app", DriftReason.FOREIGN)}
    assert "changed by `docker compose` by hand" in detail(stack, DriftReason.FOREIGN)
    up(stack, owner=OWNER)
    assert inspect(name)["Config"]["Labels"][L.OWNER] == OWNER
    assert drifts(stack) == set()
    assert up(stack, owner=OWNER).is_noop


def test_observe_lists_once_per_kind_and_inspects_only_new_or_updated(stack: Stack) -> None:
    """Each observe is one list call per kind; a container is inspected once, and again only after Docker
    reports an `update` of it (the events stream drops it from the cache)."""
    stack.write(APP.replace("    init: true\n", "    init: true\n    scale: 2\n"))
    up(stack)
    conv = Converger(CountingEngine())
    engine = conv._engine
    assert isinstance(engine, CountingEngine)
    conv.observe([stack.name])
    assert engine.calls == {"containers": 1, "networks": 1, "volumes": 1, "inspect": 2}
    conv.observe([stack.name])
    assert engine.calls == {"containers": 2, "networks": 2, "volumes": 2, "inspect": 2}

    stop = threading.Event()
    seen: list[dict[str, Any]] = []
    since = time.time()
    reader = threading.Thread(target=lambda: seen.extend(conv.events(stop, window=0.5, since=since)))
    reader.start()
    try:
        docker("update", "--pids-limit", "50", f"{stack.name}-app-1")
        deadline = time.monotonic() + 15
        while not any(e.get("Action") == "update" for e in list(seen)):
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(timeout=10)
    plan = conv.plan(stack.render())
    assert engine.calls["inspect"] == 3  # only the updated one again
    changes = {(c.container, c.reasons) for c in plan.changes}
    assert changes == {(f"{stack.name}-app-1", (DriftReason.LIMITS,))}
    # The recreated container is a new ID: inspected once, and the old ID leaves the cache.
    old = stack.ids()[f"{stack.name}-app-1"]
    assert conv.observer.knows(old)
    conv.up(stack.render(), timeout=60)
    conv.observe([stack.name])
    assert not conv.observer.knows(old) and conv.observer.knows(stack.ids()[f"{stack.name}-app-1"])
    assert conv.plan(stack.render()).drifts() == ()
