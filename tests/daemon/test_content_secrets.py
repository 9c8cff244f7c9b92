"""The daemon's deploys: a secret with `environment: VAR` takes VAR from the environment's `env`, reaches the
container through a file under state_dir/files, and a drift check afterwards finds nothing to change."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.config import load_config
from reconciler.converge import Converger
from reconciler.daemon.core import Daemon
from reconciler.engine import DockerEngine
from reconciler.state import State
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

pytestmark = pytest.mark.docker


def test_secret_from_the_environments_env(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """`env: {TOKEN: ...}` on the environment, `secrets.token.environment: TOKEN` in its override: the web
    container reads the value at /run/secrets/token, from a 0400 file in the daemon's state_dir."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    token = f"daemon-{secrets.token_hex(8)}"
    override = {
        "services": {"web": {"environment": {"TIER": "production"}, "secrets": ["token"]}},
        "secrets": {"token": {"environment": "TOKEN"}},
    }
    envs = {
        "production": {"env": {"HOST": "prod.example.org", "TOKEN": token}, "override": override},
        "staging": {"branch": "nope"},
        "preview": {"branches": ["nope-*"]},
    }
    config = load_config(write_config(tmp_path, repo.bare, prefix, envs=envs))
    converger = Converger(DockerEngine(), state_dir=config.state_dir)
    daemon = Daemon(config, state=State.open(config.state_dir), converger=converger)
    try:
        sync_all(daemon)
        assert daemon.state.last_applied(project) is not None
        web = containers(docker_client, project)["web"]
        assert web.exec_run(["cat", "/run/secrets/token"]).output.decode() == token
        [path] = (Path(config.state_dir) / "files" / project / "secrets").iterdir()
        assert stat.S_IMODE(path.stat().st_mode) == 0o400 and path.read_text() == token
        # A restarted daemon resolves the checkout again: the value must come back from `env` too.
        daemon.deployer.forget(project)
        resolved = daemon.deployer.rendered(daemon.find_target(project))
        assert resolved is not None and converger.plan(resolved).is_noop
    finally:
        daemon.queue.shutdown()
