"""End to end: a `backend: swarm` production with 2 replicas, deployed by `reconciler sync` from git pushes
to a single-node Swarm (test engine 3): a start-first update, then a push whose image fails its healthcheck
is rolled back by Swarm itself and shows as a failed deploy in status and metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.status import Health, Result
from reconciler.swarm.converge import SwarmConverger
from tests.daemon.conftest import Repo
from tests.engines import engine_url
from tests.report.promtext import samples
from tests.swarm.conftest import APP, SWARM_ENGINE, poll

pytestmark = pytest.mark.docker


def _compose(image: str) -> str:
    service = {
        "image": image,
        "stop_grace_period": "1s",
        "deploy": {
            "replicas": 2,
            "update_config": {"parallelism": 1, "delay": "0s", "order": "start-first", "monitor": "2s"},
            "rollback_config": {"parallelism": 0, "monitor": "1s"},
            "restart_policy": {"condition": "any", "delay": "1s"},
        },
    }
    return yaml.safe_dump({"services": {"web": service}})


def _config(tmp_path: Path, repo: Repo, project: str) -> Path:
    doc = {
        "state_dir": str(tmp_path / "state"),
        "listen": "127.0.0.1:0",
        "hosts": {"swarm": {"docker": engine_url(SWARM_ENGINE)}},
        "apps": {
            "demo": {
                "repo": str(repo.bare),
                "poll_interval": "1h",
                "environments": {
                    "production": {
                        "branch": "master",
                        "project": project,
                        "compose": ["swarm.yml"],
                        "host": "swarm",
                        "backend": "swarm",
                        "timeout": "90s",
                    }
                },
            }
        },
    }
    path = tmp_path / "environments.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _sync(daemon: Any) -> None:
    """What `reconciler sync` does, in this process (so the metrics can be read afterwards)."""
    for app in daemon.config.apps:
        daemon.poll(app.name, trigger="sync", manual=True)
    assert daemon.queue.wait_idle(240)


def _web(converger: SwarmConverger, project: str) -> dict[str, Any]:
    return next(s for s in converger.engine.list_services({}) if s["Spec"]["Name"] == f"{project}_web")


def _running_images(converger: SwarmConverger, service_id: str) -> list[str]:
    return sorted(
        t["Spec"]["ContainerSpec"]["Image"].split("@")[0]
        for t in converger.engine.list_tasks([service_id])
        if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
    )


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def test_swarm_production_follows_pushes_and_a_failed_update_is_rolled_back(
    tmp_path: Path, repo: Repo, converger: SwarmConverger, swarm_url: str
) -> None:
    project = f"tsw{tmp_path.name[-6:].lower().replace('_', '')}"
    cfg = _config(tmp_path, repo, project)
    try:
        repo.commit("master", {"swarm.yml": _compose(f"{APP}:v1")})
        out = subprocess.run(
            [sys.executable, "-m", "reconciler", "sync", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{project}: success" in out.stdout
        web = _web(converger, project)
        assert _running_images(converger, web["ID"]) == [f"{APP}:v1"] * 2
        assert web["Spec"]["Labels"]["com.docker.stack.namespace"] == project

        # A push: a start-first rolling update to v2.
        good = repo.commit("master", {"swarm.yml": _compose(f"{APP}:v2")})
        daemon = _daemon(load_config(cfg), metrics=True)
        _sync(daemon)
        assert daemon.outcome(project).result is Result.SUCCESS, daemon.outcome(project).error
        web = _web(converger, project)
        assert web["Spec"]["UpdateConfig"]["Order"] == "start-first"
        assert web["UpdateStatus"]["State"] == "completed"
        poll(lambda: _running_images(converger, web["ID"]) == [f"{APP}:v2"] * 2)

        # Scaled by hand (`docker service scale`): a drift, with the counts.
        spec = web["Spec"]
        spec["Mode"] = {"Replicated": {"Replicas": 3}}
        converger.engine.update_service(web["ID"], web["Version"]["Index"], spec)
        daemon.check_drift()
        status = next(s for s in daemon.environments() if s.project == project)
        assert ("web", "config", "replicas 3, want 2") in {
            (d.service, d.reason, d.detail) for d in status.drifts
        }
        # Back to 2 by hand (a manual sync does the same update, but once in CI Swarm left the third task
        # running for 90 s after it: see the closing note of issue 12; not asserted here).
        web = _web(converger, project)
        spec = web["Spec"]
        spec["Mode"] = {"Replicated": {"Replicas": 2}}
        converger.engine.update_service(web["ID"], web["Version"]["Index"], spec)
        poll(lambda: len(_running_images(converger, web["ID"])) == 2)

        # A push whose image fails its healthcheck: Swarm rolls back; the deploy failed.
        bad = repo.commit("master", {"swarm.yml": _compose(f"{APP}:bad")})
        _sync(daemon)
        outcome = daemon.outcome(project)
        assert outcome.result in (Result.ROLLED_BACK, Result.FAILURE)
        assert "rolled the update back" in outcome.error
        web = _web(converger, project)
        assert web["UpdateStatus"]["State"] == "rollback_completed"
        poll(lambda: _running_images(converger, web["ID"]) == [f"{APP}:v2"] * 2)

        daemon.check_drift()
        status = next(s for s in daemon.environments() if s.project == project)
        assert status.failed_commit == bad
        assert status.deployed_commit == good
        assert status.health is Health.HEALTHY
        assert "rolled the update back" in status.error
        assert daemon.metrics is not None
        text = daemon.metrics.exposition()[0].decode()
        results = {
            ls["result"]: v
            for ls, v in samples(text)["reconciler_reconcile_total"]
            if ls["project"] == project
        }
        assert results.get("failure", 0) >= 1
    finally:
        converger.down(project, volumes=True)


def test_switching_back_to_compose_waits_for_the_swarm_stack_to_go(
    tmp_path: Path, repo: Repo, converger: SwarmConverger, swarm_url: str
) -> None:
    """`backend: swarm` → `compose` while the stack runs: the compose deploy stops before any change
    (no container beside the services), names the services, and is not rolled back; once the stack is
    removed by hand, the next sync deploys the compose stack."""
    project = f"tsb{tmp_path.name[-6:].lower().replace('_', '')}"
    cfg = _config(tmp_path, repo, project)
    try:
        repo.commit("master", {"swarm.yml": _compose(f"{APP}:v1")})
        _sync(_daemon(load_config(cfg)))
        web = _web(converger, project)
        doc = yaml.safe_load(cfg.read_text())
        doc["apps"]["demo"]["environments"]["production"]["backend"] = "compose"
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))

        daemon = _daemon(load_config(cfg))
        _sync(daemon)
        status = next(s for s in daemon.environments() if s.project == project)
        assert status.last_deploy is not None and status.last_deploy.result is Result.FAILURE
        assert "still runs as a Swarm stack" in status.last_deploy.error
        assert f"{project}_web" in status.last_deploy.error
        engine = converger.engine
        assert engine.list_containers(project) == []  # no compose container beside the services
        assert _web(converger, project)["ID"] == web["ID"]
        rollbacks = [r for r in daemon.state.history(project) if r.trigger == "rollback"]
        assert rollbacks == []

        converger.down(project)  # what `docker stack rm` does: services, networks, configs; volumes stay
        poll(
            lambda: (
                not [
                    c
                    for c in engine.list_containers(None, {"com.docker.swarm.service.name": f"{project}_web"})
                ]
            ),
            60,
        )
        daemon = _daemon(load_config(cfg))
        _sync(daemon)
        status = next(s for s in daemon.environments() if s.project == project)
        assert status.health is Health.HEALTHY, status.error
        # deploy.replicas: 2 is two containers under compose too
        assert [c["Labels"]["com.docker.compose.service"] for c in engine.list_containers(project)] == [
            "web"
        ] * 2
    finally:
        converger.down(project, volumes=True)
        from reconciler.converge import Converger

        Converger(converger.engine).down(project, volumes=True)
