"""Self-heal repairs drift of `self_heal: true` environments, at most N times per service per window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.daemon.ratelimit import RateLimit
from reconciler.report.metrics import Metrics
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

pytestmark = pytest.mark.docker


def test_self_heal_repairs_then_reports_once_rate_limited(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A stopped container is started again twice; the third time it is only reported, never looped."""
    prefix = unique_prefix()
    cleanup(prefix)
    prod = f"{prefix}-production"
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"self_heal": True}})
    daemon = _daemon(load_config(cfg))
    metrics = Metrics(daemon)
    daemon.attach_metrics(metrics)
    daemon.heal_limit = RateLimit(limit=2, window=600)
    sync_all(daemon)

    for _ in range(2):
        containers(docker_client, prod)["web"].stop(timeout=1)
        daemon.check_drift()
        assert daemon.queue.wait_idle(120)
        assert containers(docker_client, prod)["web"].status == "running"

    containers(docker_client, prod)["web"].stop(timeout=1)
    daemon.check_drift()
    assert daemon.queue.wait_idle(120)
    assert containers(docker_client, prod)["web"].status == "exited"
    status = {s.project: s for s in daemon.environments()}[prod]
    assert [(d.service, str(d.reason)) for d in status.drifts] == [("web", "stopped")]
    text = metrics.exposition()[0].decode()
    assert 'reconciler_self_heals_total{app="demo",environment="production",service="web"} 2.0' in text
    daemon.queue.shutdown()
