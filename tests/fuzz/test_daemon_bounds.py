"""A resource bomb in one environment's compose files fails that environment alone; others deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all
from tests.fuzz.test_compose_fuzz import laughs

pytestmark = pytest.mark.docker


def test_billion_laughs_fails_only_its_environment(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """staging's commit adds a "billion laughs" compose file and an `extends` of /dev/zero: its deploy fails
    at once with the file named, while production deploys and runs."""
    prefix = unique_prefix()
    cleanup(prefix)
    repo.branch("develop")
    repo.commit(
        "develop",
        {
            "docker-compose.maildev.yml": laughs(),
            "docker-compose.persist.yml": "services:\n  web:\n    extends: {file: /dev/zero, service: web}\n",
        },
    )
    daemon = _daemon(
        load_config(write_config(tmp_path, repo.bare, prefix, envs={"preview": {"branches": ["x"]}}))
    )
    sync_all(daemon)

    statuses = {s.project: s for s in daemon.environments()}
    production, staging = statuses[f"{prefix}-production"], statuses[f"{prefix}-staging"]
    assert production.last_deploy is not None and production.last_deploy.result == "success", production.error
    assert containers(docker_client, f"{prefix}-production")["web"].status == "running"
    assert containers(docker_client, f"{prefix}-staging") == {}
    message = staging.error or (staging.last_deploy.error if staging.last_deploy else "")
    assert "docker-compose." in message, message
    assert "excessive aliasing" in message or "not a regular file" in message, message
