"""The daemon's state decisions on a real Docker Engine and real git: whose stack it is, what never removes
a running stack, and that a decision taken while a deploy waited in the queue is not undone by it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler import labels as L
from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.status import Result
from tests.daemon.conftest import ROOT, Repo, wait_for
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all
from tests.daemon.test_run_process import Daemon, free_port

pytestmark = pytest.mark.docker


def ids(client: docker.DockerClient, project: str) -> dict[str, str]:
    return {s: c.id for s, c in containers(client, project).items()}


def _synced(tmp_path: Path, repo: Repo, cleanup: Any, **overrides: Any) -> tuple[Any, str]:
    """A daemon on the example config under a fresh prefix after one pass, and its production project."""
    prefix = unique_prefix()
    cleanup(prefix)
    daemon = _daemon(load_config(write_config(tmp_path, repo.bare, prefix, **overrides)))
    sync_all(daemon)
    return daemon, f"{prefix}-production"


def _env(project: str, **extra: Any) -> dict[str, Any]:
    return {
        "project": project,
        "compose": ["docker-compose.yml"],
        "env": {"HOST": "{branch}.example.org"},
        "timeout": "60s",
        **extra,
    }


@pytest.mark.parametrize("order", ["fixed-first", "template-first"])
def test_apps_whose_project_names_meet_never_share_a_stack(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any, order: str
) -> None:
    """A fixed project name of one app and another app's template giving the same name: both deploy,
    the template's stack gets the hash suffix, and neither touches the other's containers."""
    prefix = unique_prefix()
    cleanup(prefix)
    repo.branch("main", change="<p>main</p>")
    preview = _env(f"{prefix}-{{branch}}", branches=["main"], ephemeral=True)
    fixed = {"repo": str(repo.bare), "environments": {"production": _env(f"{prefix}-main", branch="master")}}
    template = {"repo": str(repo.bare), "environments": {"preview": preview}}
    apps = {"alpha": fixed, "beta": template}
    if order == "template-first":
        apps = {"beta": template, "alpha": fixed}
    cfg = tmp_path / "environments.yaml"
    cfg.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "apps": apps}, sort_keys=False))
    daemon = _daemon(load_config(cfg))
    sync_all(daemon)
    sync_all(daemon)  # a second pass changes nothing and raises nothing

    statuses = {s.project: s for s in daemon.environments() if s.project}
    suffixed = [p for p in statuses if p.startswith(f"{prefix}-main-")]
    assert len(suffixed) == 1, statuses
    main = containers(docker_client, f"{prefix}-main")
    other = containers(docker_client, suffixed[0])
    assert main["web"].status == "running" and other["web"].status == "running"
    assert {c.labels[L.OWNER].split("/")[1] for c in main.values()} == {"alpha"}
    assert {c.labels[L.OWNER].split("/")[1] for c in other.values()} == {"beta"}
    # The suffixed preview's {branch} is its own slug, not the other stack's.
    slug = suffixed[0].removeprefix(f"{prefix}-")
    assert f"HOST={slug}.example.org" in other["web"].attrs["Config"]["Env"]
    for s in statuses.values():
        assert s.last_deploy is not None and s.last_deploy.result is Result.SUCCESS, s.error
    daemon.queue.shutdown()


def test_a_push_with_no_services_leaves_production_running(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """Every service behind a profile renders zero services: production keeps running and says why."""
    daemon, project = _synced(tmp_path, repo, cleanup)
    before = ids(docker_client, project)
    assert before

    def hide_all(doc: dict[str, Any]) -> None:
        for svc in doc["services"].values():
            svc["profiles"] = ["never"]

    repo.edit_yaml("master", "docker-compose.yml", hide_all)
    bad = repo.edit_yaml("master", "docker-compose.persist.yml", hide_all)
    sync_all(daemon)
    assert ids(docker_client, project) == before
    assert all(c.status in ("running", "exited") for c in containers(docker_client, project).values())
    status = {s.project: s for s in daemon.environments()}[project]
    assert status.failed_commit == bad
    assert "no services" in status.error and "allow_empty" in status.error
    daemon.queue.shutdown()


def test_a_readme_push_recreates_nothing_and_a_site_push_only_the_web(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """Bind-mounted repository files are hashed by content: only a change to them recreates."""
    daemon, project = _synced(tmp_path, repo, cleanup)
    before = ids(docker_client, project)

    readme = repo.commit("master", {"README.md": "just words\n"})
    sync_all(daemon)
    assert daemon.state.last_applied(project) == readme
    assert ids(docker_client, project) == before

    repo.commit("master", {"site/index.html": "<p>new page</p>"})
    sync_all(daemon)
    after = ids(docker_client, project)
    assert after["web"] != before["web"]
    assert after["db"] == before["db"]
    web = containers(docker_client, project)["web"]
    assert b"new page" in web.exec_run(["cat", "/www/index.html"]).output
    # Old checkout trees nothing mounts any more are gone; the one the web mounts stays.
    checkouts = Path(daemon.config.state_dir) / "checkouts"
    trees = [p for p in checkouts.iterdir() if p.name.startswith(f".{project}@") and p.is_dir()]
    assert web.labels[L.CHECKOUT] in {t.name for t in trees}
    assert len(trees) <= 2
    daemon.queue.shutdown()


def test_a_commit_that_fails_to_render_never_reaches_the_checkout(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """The checkout keeps showing the running commit; drift and self-heal see no change from the bad one."""
    daemon, project = _synced(tmp_path, repo, cleanup, envs={"production": {"self_heal": True}})
    link = Path(daemon.config.state_dir) / "checkouts" / project
    shown = os.readlink(link)
    before = ids(docker_client, project)

    bad = repo.commit("master", {"site/index.html": "<p>bad</p>", "docker-compose.yml": "services: [oops\n"})
    sync_all(daemon)
    assert os.readlink(link) == shown
    daemon.deployer.forget(project)  # as after a restart: resolved again from the checkout
    daemon.check_drift()
    assert daemon.queue.wait_idle(60)
    status = {s.project: s for s in daemon.environments()}[project]
    assert status.drifts == ()
    assert status.failed_commit == bad
    assert ids(docker_client, project) == before
    daemon.queue.shutdown()


def test_rollback_keeps_the_failure_visible_and_restores_the_checkout(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """After an automatic rollback the status still names the commit that failed and Docker's reason."""
    daemon, project = _synced(tmp_path, repo, cleanup, envs={"production": {"timeout": "20s"}})
    good = daemon.state.last_applied(project)
    bad = repo.edit_yaml(
        "master",
        "docker-compose.persist.yml",
        lambda d: d["services"]["web"].update(logging={"driver": "no-such-log-driver"}),
    )
    sync_all(daemon)
    status = {s.project: s for s in daemon.environments()}[project]
    assert status.deployed_commit == good
    assert status.failed_commit == bad
    assert bad[:12] in status.error and "no-such-log-driver" in status.error
    assert "rolled back" in status.error
    assert containers(docker_client, project)["web"].status == "running"
    link = Path(daemon.config.state_dir) / "checkouts" / project
    assert daemon.deployer.source_for("demo").tree_commit(link.parent / os.readlink(link)) == good
    daemon.queue.shutdown()


def test_suspend_and_pin_taken_while_a_deploy_waits_win(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A queued deploy reads suspension and pins again under the project lock and does nothing."""
    daemon, project = _synced(tmp_path, repo, cleanup)
    good = daemon.state.last_applied(project)
    assert good is not None
    before = ids(docker_client, project)
    newer = repo.commit("master", {"site/index.html": "<p>newer</p>"})
    target = daemon.find_target(project)

    daemon.state.suspend(project, "maintenance")
    outcome = daemon.deployer.deploy(target, newer, trigger="poll")
    assert outcome.skipped == "suspended"
    daemon.state.resume(project)
    daemon.state.pin(project, good)
    outcome = daemon.deployer.deploy(target, newer, trigger="poll")
    assert outcome.skipped.startswith("pinned")
    assert ids(docker_client, project) == before
    assert daemon.state.last_applied(project) == good
    daemon.queue.shutdown()


def test_a_restart_keeps_each_previews_own_slug(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """Two branches with the same slug: after a restart the suffixed one still expands {branch} to its own."""
    prefix = unique_prefix()
    cleanup(prefix)
    repo.branch("feature/a", change="<p>1</p>")
    repo.branch("feature-a", change="<p>2</p>")
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"branch": "nope"}})
    first = _daemon(load_config(cfg))
    sync_all(first)
    projects = {s.project: s for s in first.environments() if s.project}
    suffixed = [p for p in projects if p.startswith(f"{prefix}-test-feature-a-")]
    assert len(suffixed) == 1 and f"{prefix}-test-feature-a" in projects
    first.queue.shutdown()

    second = _daemon(load_config(cfg))
    target = second.find_target(suffixed[0])
    assert target.slug == suffixed[0].removeprefix(f"{prefix}-test-")
    assert target.expand("{branch}.preview.localhost") != "feature-a.preview.localhost"
    assert second.find_target(f"{prefix}-test-feature-a").slug == "feature-a"
    second.queue.shutdown()


def test_a_deleted_preview_leaves_nothing_in_state_dir(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """Teardown removes the checkout link, every tree and every leftover of the preview."""
    prefix = unique_prefix()
    cleanup(prefix)
    repo.branch("feature/gone", change="<p>x</p>")
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"branch": "nope"}})
    daemon = _daemon(load_config(cfg))
    sync_all(daemon)
    project = f"{prefix}-test-feature-gone"
    checkouts = Path(daemon.config.state_dir) / "checkouts"
    assert any(p.name.startswith((project, f".{project}@")) for p in checkouts.iterdir())
    repo.delete("feature/gone")
    sync_all(daemon)
    assert containers(docker_client, project) == {}
    assert not [p.name for p in checkouts.iterdir() if p.name.startswith((project, f".{project}@"))]
    daemon.queue.shutdown()


def test_another_configuration_never_sweeps_our_previews(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """Two state_dirs, one app name: the second instance's sweep leaves the first one's preview alone."""
    prefix, other_prefix = unique_prefix(), unique_prefix()
    cleanup(prefix)
    cleanup(other_prefix)
    repo.branch("feature/mine", change="<p>mine</p>")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _daemon(
        load_config(write_config(tmp_path / "a", repo.bare, prefix, envs={"production": {"branch": "nope"}}))
    )
    sync_all(first)
    preview = f"{prefix}-test-feature-mine"
    assert containers(docker_client, preview)["web"].status == "running"
    repo.delete("feature/mine")  # the second instance sees no such branch at all
    second_cfg = write_config(
        tmp_path / "b", repo.bare, other_prefix, envs={"production": {"branch": "nope"}}
    )
    second = _daemon(load_config(second_cfg))
    sync_all(second)
    assert containers(docker_client, preview)["web"].status == "running"
    assert docker_client.volumes.list(filters={"label": f"com.docker.compose.project={preview}"})
    second.queue.shutdown()
    first.queue.shutdown()


def test_a_second_daemon_on_the_same_state_refuses_to_start(tmp_path: Path, repo: Repo, cleanup: Any) -> None:
    """Whatever its port, a second `reconciler run` on the same state_dir exits non-zero naming the first."""
    prefix = unique_prefix()
    cleanup(prefix)
    port = free_port()
    cfg = write_config(
        tmp_path, repo.bare, prefix, listen=f"127.0.0.1:{port}", envs={"production": {"branch": "nope"}}
    )
    first = Daemon(cfg, port, tmp_path / "first.log")
    first.start()
    try:
        other = tmp_path / "other.yaml"
        doc = yaml.safe_load(cfg.read_text())
        doc["listen"] = f"127.0.0.1:{free_port()}"
        other.write_text(yaml.safe_dump(doc))
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", "run", "-c", str(other)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert proc.returncode != 0
        assert "already running" in proc.stderr
        assert first.proc is not None and f"pid {first.proc.pid}" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        assert first.stop() == 0
    # Once the first has stopped, the lock is free again (also after a SIGKILL: the kernel drops it).
    again = Daemon(cfg, port, tmp_path / "again.log")
    again.start()
    again.stop(9)
    wait_for(lambda: again.proc is not None and again.proc.poll() is not None, 30)
    third = Daemon(cfg, port, tmp_path / "third.log")
    third.start()
    assert third.stop() == 0


def test_pwd_is_the_checkout_as_for_docker_compose_run_in_it(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """`${PWD}/site` names the same stable checkout path as `./site`: the switch recreates nothing."""
    daemon, project = _synced(tmp_path, repo, cleanup)
    before = ids(docker_client, project)

    def use_pwd(doc: dict[str, Any]) -> None:
        doc["services"]["web"]["volumes"] = ["${PWD}/site:/www:ro"]

    new = repo.edit_yaml("master", "docker-compose.yml", use_pwd)
    sync_all(daemon)
    assert daemon.state.last_applied(project) == new
    assert ids(docker_client, project) == before
    web = containers(docker_client, project)["web"]
    stable = Path(daemon.config.state_dir) / "checkouts" / project
    assert [m["Source"] for m in web.attrs["Mounts"] if m["Destination"] == "/www"] == [f"{stable}/site"]
    daemon.queue.shutdown()
