"""The daemon turns branches into environments on a real Docker Engine from a real git repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config

pytestmark = pytest.mark.docker


def containers(client: docker.DockerClient, project: str) -> dict[str, Any]:
    """Service -> container of a project; lists again if one vanishes mid-list (the daemon recreated it)."""
    for _attempt in range(5):
        try:
            listed = client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={project}"}
            )
        except docker.errors.NotFound:
            continue
        return {c.labels["com.docker.compose.service"]: c for c in listed}
    raise AssertionError(f"containers of {project} kept changing while listed")


def sync_all(daemon: Any) -> None:
    for app in daemon.config.apps:
        daemon.poll(app.name)
    assert daemon.queue.wait_idle(240)


def test_branches_become_stacks_and_follow_pushes_and_deletes(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """master, develop and two feature branches give four stacks; a push updates one; a delete removes one."""
    prefix = unique_prefix()
    cleanup(prefix)
    repo.branch("develop", change="<p>staging</p>")
    repo.branch("feature/login", change="<p>login</p>")
    repo.branch("fix/Bug_42", change="<p>bug</p>")
    daemon = _daemon(load_config(write_config(tmp_path, repo.bare, prefix)))
    sync_all(daemon)

    projects = {
        f"{prefix}-production",
        f"{prefix}-staging",
        f"{prefix}-test-feature-login",
        f"{prefix}-test-fix-bug-42",
    }
    statuses = {s.project: s for s in daemon.environments()}
    for project in projects:
        assert statuses[project].health == "Healthy", (project, statuses[project].error)
        assert statuses[project].last_deploy is not None
        assert statuses[project].last_deploy.result == "success", statuses[project].last_deploy.error
    for project in projects:
        svc = containers(docker_client, project)
        assert svc["web"].status == "running", project
        assert svc["migrate"].attrs["State"]["ExitCode"] == 0
    assert "maildev" in containers(docker_client, f"{prefix}-staging")
    assert "maildev" not in containers(docker_client, f"{prefix}-production")
    prod_web = containers(docker_client, f"{prefix}-production")["web"]
    assert prod_web.labels["traefik.enable"] == "true"
    assert "HOST=prod.example.org" in prod_web.attrs["Config"]["Env"]
    # `env:` templates give each preview its own host name.
    preview_web = containers(docker_client, f"{prefix}-test-feature-login")["web"]
    assert "HOST=feature-login.preview.localhost" in preview_web.attrs["Config"]["Env"]

    # Production data written into its volume survives every redeploy.
    prod_db = containers(docker_client, f"{prefix}-production")["db"]
    prod_db.exec_run(["sh", "-c", "echo precious > /var/lib/db/rows"])
    before = {p: {s: c.id for s, c in containers(docker_client, p).items()} for p in projects}

    # A push to develop updates only staging.
    repo.edit_yaml(
        "develop",
        "docker-compose.maildev.yml",
        lambda d: d["services"].setdefault("db", {}).update(environment={"STAGING_ONLY": "1"}),
    )
    sync_all(daemon)
    after = {p: {s: c.id for s, c in containers(docker_client, p).items()} for p in projects}
    assert after[f"{prefix}-staging"]["db"] != before[f"{prefix}-staging"]["db"]
    for p in projects - {f"{prefix}-staging"}:
        assert after[p] == before[p], p

    # A new master commit redeploys production; the database volume keeps its data.
    repo.edit_yaml(
        "master",
        "docker-compose.persist.yml",
        lambda d: d["services"]["db"].update(environment={"REDEPLOYED": "1"}),
    )
    sync_all(daemon)
    new_db = containers(docker_client, f"{prefix}-production")["db"]
    assert new_db.id != prod_db.id
    assert new_db.exec_run(["cat", "/var/lib/db/rows"]).output.strip() == b"precious"

    # Deleting a branch removes its stack and its volumes, and nothing else.
    preview = f"{prefix}-test-feature-login"
    assert docker_client.volumes.list(filters={"label": f"com.docker.compose.project={preview}"})
    repo.delete("feature/login")
    sync_all(daemon)
    assert containers(docker_client, preview) == {}
    assert docker_client.volumes.list(filters={"label": f"com.docker.compose.project={preview}"}) == []
    assert docker_client.networks.list(filters={"label": f"com.docker.compose.project={preview}"}) == []
    assert containers(docker_client, f"{prefix}-test-fix-bug-42")["web"].status == "running"
    assert docker_client.volumes.get(f"{prefix}-production-dbdata")

    statuses = {s.project: s for s in daemon.environments()}
    assert preview not in statuses
    assert statuses[f"{prefix}-production"].sync == "Synced"
    assert statuses[f"{prefix}-production"].health == "Healthy"
    assert statuses[f"{prefix}-test-fix-bug-42"].url == "http://fix-bug-42.preview.localhost"
    daemon.queue.shutdown()


def test_git_outage_never_deletes_previews(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A remote that disappears while previews exist leaves every stack in place and reports the error."""
    prefix = unique_prefix()
    cleanup(prefix)
    repo.branch("feature/a", change="<p>a</p>")
    daemon = _daemon(
        load_config(write_config(tmp_path, repo.bare, prefix, envs={"production": {"branch": "nope"}}))
    )
    sync_all(daemon)
    preview = f"{prefix}-test-feature-a"
    assert containers(docker_client, preview)["web"].status == "running"

    import shutil

    shutil.rmtree(repo.bare)
    sync_all(daemon)
    assert containers(docker_client, preview)["web"].status == "running"
    assert docker_client.volumes.list(filters={"label": f"com.docker.compose.project={preview}"})
    statuses = {s.project: s for s in daemon.environments()}
    assert "git" in statuses[preview].error.lower() or statuses[preview].error
    daemon.queue.shutdown()
