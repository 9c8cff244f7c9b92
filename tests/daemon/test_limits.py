"""`max` and `ttl` keep previews bounded: extra branches are refused and reported, stale ones get no stack."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from tests.daemon.conftest import Repo, git
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

pytestmark = pytest.mark.docker


def old_branch(repo: Repo, name: str) -> None:
    """Push ``name`` with a head commit dated 30 days ago."""
    repo.branch(name)
    (repo.work / "site" / "old.html").write_text("old")
    git("add", "-A", cwd=repo.work)
    stamp = str(int(time.time()) - 30 * 86400)
    env = {**os.environ, "GIT_COMMITTER_DATE": f"{stamp} +0000", "GIT_AUTHOR_DATE": f"{stamp} +0000"}
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "old work"],
        cwd=repo.work,
        env=env,
        check=True,
        capture_output=True,
    )
    git("push", "-q", "origin", name, cwd=repo.work)


def test_max_and_ttl_refuse_and_report(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """With max 1, the second new branch is refused; a branch older than ttl gets no preview at all."""
    prefix = unique_prefix()
    cleanup(prefix)
    repo.branch("feature/a", change="<p>a</p>")
    repo.branch("feature/b", change="<p>b</p>")
    old_branch(repo, "feature/old")
    cfg = write_config(
        tmp_path,
        repo.bare,
        prefix,
        envs={"production": {"branch": "none"}, "preview": {"max": 1, "exclude": ["master"]}},
    )
    daemon = _daemon(load_config(cfg))
    sync_all(daemon)

    assert containers(docker_client, f"{prefix}-test-feature-a")["web"].status == "running"
    assert containers(docker_client, f"{prefix}-test-feature-b") == {}
    assert containers(docker_client, f"{prefix}-test-feature-old") == {}
    refused = {s.branch: s.error for s in daemon.environments() if not s.project}
    assert set(refused) == {"feature/b", "feature/old"}, refused
    assert "max" in refused["feature/b"] and "ttl" in refused["feature/old"].lower()

    # Deleting the live preview frees the slot for the refused branch.
    repo.delete("feature/a")
    sync_all(daemon)
    sync_all(daemon)
    assert containers(docker_client, f"{prefix}-test-feature-a") == {}
    assert containers(docker_client, f"{prefix}-test-feature-b")["web"].status == "running"
    daemon.queue.shutdown()
