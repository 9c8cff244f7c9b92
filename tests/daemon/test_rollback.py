"""Failed deploys of persistent environments roll back to the last good revision; no retry loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.status import Result
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

pytestmark = pytest.mark.docker


def test_broken_commit_rolls_back_and_is_not_retried(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A commit whose web service exits is rolled back to the last good commit and recorded as such."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"timeout": "20s"}})
    daemon = _daemon(load_config(cfg))
    sync_all(daemon)
    good = daemon.state.last_applied(project)
    assert good is not None
    good_web = containers(docker_client, project)["web"]

    bad = repo.edit_yaml(
        "master",
        "docker-compose.persist.yml",
        lambda d: d["services"]["web"].update(
            command=["sh", "-c", "echo boom: missing settings >&2; exit 3"]
        ),
    )
    sync_all(daemon)
    history = daemon.state.history(project)
    assert history[0].trigger == "rollback" and history[0].result is Result.SUCCESS
    assert history[0].commit == good and history[0].rollback_of == bad
    assert history[1].commit == bad and history[1].result is Result.FAILURE
    assert "web" in history[1].error and "3" in history[1].error
    assert daemon.state.last_applied(project) == good
    web = containers(docker_client, project)["web"]
    assert web.status == "running"
    assert web.attrs["Config"]["Cmd"] == good_web.attrs["Config"]["Cmd"]

    status = {s.project: s for s in daemon.environments()}[project]
    assert status.sync == "OutOfSync"
    assert status.last_deploy is not None and status.last_deploy.trigger == "rollback"

    # The same failed commit is not retried by the next poll...
    sync_all(daemon)
    assert len(daemon.state.history(project)) == len(history)
    # ...but a manual sync of that environment tries it again.
    daemon.poll("demo", only={project}, trigger="sync", manual=True)
    assert daemon.queue.wait_idle(120)
    assert len(daemon.state.history(project)) > len(history)
    daemon.queue.shutdown()
