"""An outage during a deploy is no verdict: Docker 500s are retried, never rolled back, never a failed commit.

The daemon talks to the real engine through the tests' own proxy (tests/dockerproxy.py), which answers 500
to container creation for as long as a test says.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.config import load_config
from reconciler.converge import Converger
from reconciler.daemon.core import Daemon
from reconciler.engine import DockerEngine
from reconciler.report.metrics import Metrics
from reconciler.state import State
from reconciler.status import Result
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all
from tests.dockerproxy import DockerProxy

pytestmark = pytest.mark.docker


@pytest.fixture
def proxy() -> Iterator[DockerProxy]:
    p = DockerProxy().start()
    yield p
    p.stop()


def _daemon_through(proxy: DockerProxy, cfg: Path) -> Daemon:
    config = load_config(cfg)
    daemon = Daemon(
        config,
        state=State.open(config.state_dir),
        converger=Converger(DockerEngine(base_url=proxy.url)),
    )
    daemon.attach_metrics(Metrics(daemon))
    daemon.deployer.retry_first = 0.5  # the schedule's shape, faster: 0.5, 1, 2, 4, 8 s...
    return daemon


def _retries(daemon: Daemon) -> float:
    assert daemon.metrics is not None
    total = 0.0
    for family in daemon.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "reconciler_retries_total" and sample.labels.get("reason") == "docker_5xx":
                total += sample.value
    return total


def test_ten_seconds_of_docker_500s_end_in_success_without_rollback(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any, proxy: DockerProxy
) -> None:
    """Container creation answered 500 for ten seconds: the production deploy retries and succeeds."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    envs = {"staging": {"branch": "nope"}, "preview": {"branches": ["nope-*"]}}
    daemon = _daemon_through(proxy, write_config(tmp_path, repo.bare, prefix, envs=envs))
    sync_all(daemon)
    good = daemon.state.last_applied(project)
    assert good is not None

    new = repo.commit("master", {"site/index.html": "<p>during the outage</p>"})
    healed = threading.Event()
    rule = proxy.fail("POST", r"/containers/create", status=500, until=healed)
    timer = threading.Timer(10.0, healed.set)
    timer.start()
    try:
        sync_all(daemon)
    finally:
        timer.cancel()
        healed.set()
    assert rule.hits >= 2
    assert daemon.state.last_applied(project) == new
    history = daemon.state.history(project)
    assert history[0].commit == new and history[0].result is Result.SUCCESS
    assert all(r.trigger != "rollback" for r in history)
    assert not daemon.state.is_failed(project, new)
    assert _retries(daemon) >= 1
    web = containers(docker_client, project)["web"]
    assert b"during the outage" in web.exec_run(["cat", "/www/index.html"]).output
    daemon.queue.shutdown()


def test_an_outage_longer_than_the_budget_leaves_the_stack_and_the_commit_alone(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any, proxy: DockerProxy
) -> None:
    """When Docker answers 500 past the retry budget the deploy stops: no rollback, not marked failed, and
    the next poll deploys the same commit once Docker answers."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    envs = {
        "production": {"timeout": "3s"},
        "staging": {"branch": "nope"},
        "preview": {"branches": ["nope-*"]},
    }
    daemon = _daemon_through(proxy, write_config(tmp_path, repo.bare, prefix, envs=envs))
    daemon.deployer.retry_budget = 3.0
    sync_all(daemon)
    before = {s: c.id for s, c in containers(docker_client, project).items()}

    new = repo.commit("master", {"site/index.html": "<p>later</p>"})
    rule = proxy.fail("POST", r"/containers/create", status=500)
    sync_all(daemon)
    assert rule.hits >= 2
    assert {s: c.id for s, c in containers(docker_client, project).items()} == before
    assert not daemon.state.is_failed(project, new)
    assert all(r.trigger != "rollback" for r in daemon.state.history(project))
    status = {s.project: s for s in daemon.environments()}[project]
    assert "500" in status.error or "transient" in status.error

    proxy.remove(rule)
    sync_all(daemon)
    assert daemon.state.last_applied(project) == new
    daemon.queue.shutdown()
