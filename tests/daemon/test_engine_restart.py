"""`reconciler run` while its Docker Engine restarts (a second engine, scripts/dockerd2.sh, stands in for the
host's): the daemon stays up, reports Docker down and back, hears Docker events again, recreates nothing."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import docker
import pytest

from tests.daemon.conftest import Repo, wait_for
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_run_process import Daemon, free_port
from tests.engines import (
    restart_second_engine,
    second_engine,
    second_engine_answers,
    second_engine_lock,
    stop_second_engine,
)

pytestmark = pytest.mark.docker
DOCKER_UP = ("reconciler_docker_up", (("host", "local"),))


class RemoteDaemon(Daemon):
    """`reconciler run` with DOCKER_HOST pointing at another engine than the tests' own."""

    def __init__(self, config: Path, port: int, log: Path, docker_host: str) -> None:
        super().__init__(config, port, log)
        self.docker_host = docker_host

    def start(self) -> None:
        with mock.patch.dict(os.environ, {"DOCKER_HOST": self.docker_host}):
            super().start()

    def running(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        return True

    def docker_up(self) -> float | None:
        return self.metrics().get(DOCKER_UP)

    def converged(self, project: str) -> bool:
        env = self.api().get(project, {})
        return env.get("health") == "Healthy" and env.get("sync") == "Synced"

    def drifts(self, project: str) -> set[tuple[str, str]]:
        return {(d["service"], d["reason"]) for d in self.api().get(project, {}).get("drifts", [])}


@pytest.fixture(scope="module")
def engine2() -> Iterator[docker.DockerClient]:
    """The second engine, held by this module and stopped again at the end only if this module started it."""
    with second_engine_lock():
        started_here = not second_engine_answers()
        client = docker.DockerClient(base_url=second_engine())
        yield client
        client.close()
        if started_here:
            stop_second_engine()


@pytest.fixture
def remote_daemon(
    tmp_path: Path, repo: Repo, engine2: docker.DockerClient
) -> Iterator[Callable[[bool], tuple[RemoteDaemon, str]]]:
    """A factory: a daemon on the second engine deploying only production (self-healing or not)."""
    prefix = unique_prefix()
    daemons: list[RemoteDaemon] = []

    def make(self_heal: bool) -> tuple[RemoteDaemon, str]:
        port = free_port()
        cfg = write_config(
            tmp_path,
            repo.bare,
            prefix,
            listen=f"127.0.0.1:{port}",
            # The timer never fires during a test: only Docker events make the daemon look at containers.
            drift_interval="1h",
            # Production only: no branch matches staging or previews.
            envs={
                "production": {"self_heal": self_heal},
                "staging": {"branch": "nope"},
                "preview": {"branches": ["nope-*"]},
            },
        )
        d = RemoteDaemon(cfg, port, tmp_path / "daemon.log", second_engine())
        daemons.append(d)
        return d, f"{prefix}-production"

    yield make
    for d in daemons:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    second_engine()  # a failed test may have left it stopped
    _remove_projects(engine2, prefix)


def _remove_projects(client: docker.DockerClient, prefix: str) -> None:
    def ours(labels: dict[str, str] | None) -> bool:
        return (labels or {}).get("com.docker.compose.project", "").startswith(prefix)

    for c in client.containers.list(all=True, filters={"label": "com.docker.compose.project"}):
        if ours(c.labels):
            c.remove(force=True, v=True)
    for n in client.networks.list(filters={"label": "com.docker.compose.project"}):
        if ours(n.attrs["Labels"]):
            n.remove()
    for v in client.volumes.list(filters={"label": "com.docker.compose.project"}):
        if ours(v.attrs.get("Labels")):
            v.remove(force=True)


def container_ids(client: docker.DockerClient, project: str) -> dict[str, str]:
    listed = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    return {str(c.name): str(c.id) for c in listed}


def deployed(
    make: Callable[[bool], tuple[RemoteDaemon, str]], client: docker.DockerClient, *, self_heal: bool
) -> tuple[RemoteDaemon, str, dict[str, str]]:
    """A daemon that has converged production on the second engine, and the IDs of its containers."""
    d, prod = make(self_heal)
    d.start()
    wait_for(lambda: d.converged(prod), 180)
    ids = container_ids(client, prod)
    assert sorted(ids) == sorted(f"{prod}-{s}-1" for s in ("db", "migrate", "web"))
    assert d.docker_up() == 1
    return d, prod, ids


def test_docker_up_follows_the_engine_stopping_and_starting(
    remote_daemon: Callable[[bool], tuple[RemoteDaemon, str]], engine2: docker.DockerClient
) -> None:
    """While its engine is stopped the daemon stays up with reconciler_docker_up 0, and goes back to 1 with
    every container kept once the engine is started again."""
    d, prod, ids = deployed(remote_daemon, engine2, self_heal=False)

    stop_second_engine()
    wait_for(lambda: d.running() and d.docker_up() == 0, 60)

    second_engine()
    wait_for(lambda: d.running() and d.docker_up() == 1, 60)
    wait_for(lambda: d.converged(prod), 60)
    assert container_ids(engine2, prod) == ids
    assert d.stop() == 0


def test_events_after_an_engine_restart_report_drift(
    remote_daemon: Callable[[bool], tuple[RemoteDaemon, str]], engine2: docker.DockerClient
) -> None:
    """After its engine restarts, the daemon's event listener is back: a container stopped by hand shows as
    drift although the drift timer never fires, and no container was recreated."""
    d, prod, ids = deployed(remote_daemon, engine2, self_heal=False)

    restart_second_engine()
    assert d.running()
    assert container_ids(engine2, prod) == ids
    # drift_interval is 1 h: only Docker events can tell the daemon about this stop.
    engine2.containers.get(f"{prod}-web-1").stop(timeout=1)
    wait_for(lambda: d.running() and ("web", "stopped") in d.drifts(prod), 60)
    assert container_ids(engine2, prod) == ids
    assert d.stop() == 0


def test_self_heal_after_an_engine_restart_starts_the_same_container(
    remote_daemon: Callable[[bool], tuple[RemoteDaemon, str]], engine2: docker.DockerClient
) -> None:
    """After its engine restarts, a self-healing daemon starts a container stopped by hand again, and every
    container keeps its ID."""
    d, prod, ids = deployed(remote_daemon, engine2, self_heal=True)

    restart_second_engine()
    assert d.running()
    web = engine2.containers.get(f"{prod}-web-1")
    web.stop(timeout=1)

    def healed() -> bool:
        m: dict[Any, float] = d.metrics()
        heals = sum(v for (name, _labels), v in m.items() if name == "reconciler_self_heals_total")
        web.reload()
        return d.running() and heals >= 1 and web.status == "running"

    wait_for(healed, 60)
    wait_for(lambda: d.converged(prod), 60)
    assert container_ids(engine2, prod) == ids
    assert d.stop() == 0
