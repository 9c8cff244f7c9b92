"""Deploy hooks against real Docker and git: one-off containers of the new revision, before and after the
change, that can stop a deploy (the old stack untouched) or fail it into a rollback."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.status import Result
from tests.daemon.conftest import Repo, wait_for
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

pytestmark = pytest.mark.docker

ONEOFF = "com.docker.compose.oneoff"
LOG = "/var/lib/db/order.log"


def _append(word: str) -> str:
    """A hook command (a string, split as a shell would) that appends ``word`` to the shared log."""
    return f'sh -c "echo {word} >> {LOG}"'


def _migrate_writes(repo: Repo, word: str) -> str:
    """Commit a migrate service that appends ``word`` to the log: it runs when the stack changes."""
    return repo.edit_yaml(
        "master",
        "docker-compose.yml",
        lambda d: d["services"]["migrate"].update(command=["sh", "-c", f"echo {word} >> {LOG}"]),
    )


def _order(client: docker.DockerClient, project: str) -> list[str]:
    out = containers(client, project)["db"].exec_run(["cat", LOG]).output.decode()
    return out.split()


def _one_offs(client: docker.DockerClient, project: str) -> list[dict[str, Any]]:
    filters = {"label": [f"com.docker.compose.project={project}", f"{ONEOFF}=True"]}
    return list(client.api.containers(all=True, filters=filters))


def _daemon_for(tmp_path: Path, repo: Repo, prefix: str, hooks: dict[str, Any]) -> Any:
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"hooks": hooks, "timeout": "30s"}})
    return _daemon(load_config(cfg))


def test_pre_runs_before_any_change_and_post_after(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """On the first deploy and on a change, pre_deploy runs before the stack changes and post_deploy after,
    each in a one-off container that is gone afterwards."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    _migrate_writes(repo, "migrate-1")
    daemon = _daemon_for(
        tmp_path,
        repo,
        prefix,
        {
            "pre_deploy": [{"service": "db", "run": _append("pre")}],
            "post_deploy": [{"service": "db", "run": _append("post")}],
        },
    )
    sync_all(daemon)
    assert daemon.state.history(project)[0].result is Result.SUCCESS
    # First deploy: no predecessor, the pre_deploy hook ran from the new config, its volume made first.
    assert _order(docker_client, project) == ["pre", "migrate-1", "post"]

    _migrate_writes(repo, "migrate-2")
    sync_all(daemon)
    assert daemon.state.history(project)[0].result is Result.SUCCESS
    assert _order(docker_client, project) == ["pre", "migrate-1", "post", "pre", "migrate-2", "post"]
    assert _one_offs(docker_client, project) == []
    # History keeps each step with its deploy: phase, service, command and exit code.
    hooks = daemon.state.hook_runs(daemon.state.history(project)[0].id)
    assert [(h.phase, h.service, h.exit_code) for h in hooks] == [
        ("pre_deploy", "db", 0),
        ("post_deploy", "db", 0),
    ]
    assert "echo pre" in hooks[0].command
    daemon.queue.shutdown()


def test_one_off_container_is_labelled_while_it_runs_and_removed(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """The hook container is named and labelled as `compose run` names one-offs, carries our owner label,
    gets no published ports or restart policy, and is removed once the hook is done."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    wait = "until [ -f /release ]; do sleep 0.1; done; echo released"
    daemon = _daemon_for(
        tmp_path, repo, prefix, {"post_deploy": [{"service": "web", "run": ["sh", "-c", wait]}]}
    )
    daemon.poll("demo")
    running = wait_for(lambda: _one_offs(docker_client, project), timeout=180)
    assert isinstance(running, list) and len(running) == 1
    summary = running[0]
    name = summary["Names"][0].lstrip("/")
    assert name.startswith(f"{project}-web-run-") and len(name) == len(f"{project}-web-run-") + 12
    labels = summary["Labels"]
    assert labels["com.docker.compose.service"] == "web"
    assert labels["com.docker.compose.slug"].startswith(name[-12:])
    assert labels["io.reconciler.owner"].endswith("/demo/production")
    assert "com.docker.compose.container-number" not in labels
    info = docker_client.api.inspect_container(summary["Id"])
    assert info["HostConfig"]["RestartPolicy"]["Name"] == ""
    assert not info["HostConfig"]["PortBindings"]
    assert info["Config"]["Cmd"] == ["sh", "-c", wait]
    # The service's own config came along: its bind mount of the checkout and its environment.
    assert any(m["Destination"] == "/www" for m in info["Mounts"])
    assert "HOST=prod.example.org" in info["Config"]["Env"]
    docker_client.api.exec_start(docker_client.api.exec_create(summary["Id"], ["touch", "/release"]))
    assert daemon.queue.wait_idle(240)
    assert daemon.state.history(project)[0].result is Result.SUCCESS
    assert _one_offs(docker_client, project) == []
    daemon.queue.shutdown()


def test_failing_pre_deploy_keeps_the_old_stack_untouched(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A pre_deploy hook that exits non-zero aborts the deploy before any container changes: the same
    containers keep running, no rollback is needed, and history names the hook and its output."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    check = 'sh -c "cat /www/marker; test ! -f /www/fail-pre"'
    daemon = _daemon_for(tmp_path, repo, prefix, {"pre_deploy": [{"service": "web", "run": check}]})
    sync_all(daemon)
    good = daemon.state.last_applied(project)
    before = {s: c.id for s, c in containers(docker_client, project).items()}

    bad = repo.commit("master", {"site/fail-pre": "x", "site/marker": "new-revision-marker"})
    bad = repo.edit_yaml(
        "master", "docker-compose.yml", lambda d: d["services"]["web"]["environment"].update(NEW="1")
    )
    sync_all(daemon)
    history = daemon.state.history(project)
    assert history[0].commit == bad and history[0].result is Result.FAILURE
    assert "pre_deploy hook" in history[0].error and "'web'" in history[0].error
    assert "exited with code 1" in history[0].error
    assert "new-revision-marker" in history[0].error  # the hook ran from the new revision's tree
    [hook] = daemon.state.hook_runs(history[0].id)
    assert (hook.phase, hook.service, hook.exit_code) == ("pre_deploy", "web", 1)
    assert "new-revision-marker" in hook.output
    assert all(h.trigger != "rollback" for h in history)
    assert daemon.state.last_applied(project) == good
    after = containers(docker_client, project)
    assert {s: c.id for s, c in after.items()} == before
    assert all(after[s].status == "running" for s in ("db", "web"))
    assert _one_offs(docker_client, project) == []
    daemon.queue.shutdown()


def test_failing_post_deploy_rolls_back(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A post_deploy hook that fails makes the deploy fail, and the persistent environment rolls back."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    check = 'sh -c "test ! -f /www/fail-post || { echo migration refused >&2; exit 4; }"'
    daemon = _daemon_for(tmp_path, repo, prefix, {"post_deploy": [{"service": "web", "run": check}]})
    sync_all(daemon)
    good = daemon.state.last_applied(project)
    repo.commit("master", {"site/fail-post": "x"})
    bad = repo.edit_yaml(
        "master", "docker-compose.yml", lambda d: d["services"]["web"]["environment"].update(NEW="1")
    )
    sync_all(daemon)
    history = daemon.state.history(project)
    assert history[0].trigger == "rollback" and history[0].result is Result.SUCCESS
    assert history[0].commit == good and history[0].rollback_of == bad
    assert history[1].commit == bad and history[1].result is Result.FAILURE
    assert "post_deploy hook" in history[1].error and "exited with code 4" in history[1].error
    assert "migration refused" in history[1].error
    web = containers(docker_client, project)["web"]
    assert web.status == "running" and "NEW=1" not in web.attrs["Config"]["Env"]
    assert _one_offs(docker_client, project) == []
    daemon.queue.shutdown()


def test_string_command_is_split_and_never_run_by_a_host_shell(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """Quotes group words; `$`, `;` and `>` reach the program as plain arguments. A first deploy whose
    pre_deploy hook fails creates no container of the stack."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    host_file = tmp_path / f"pwned-{uuid.uuid4().hex[:6]}"
    run = f"ls 'no such  file' $HOME; touch > {host_file}"
    daemon = _daemon_for(tmp_path, repo, prefix, {"pre_deploy": [{"service": "db", "run": run}]})
    sync_all(daemon)
    history = daemon.state.history(project)
    assert history[0].result is Result.FAILURE and "pre_deploy hook" in history[0].error
    # busybox ls names each argument it cannot find: exactly the words shlex made, unexpanded.
    for word in ("no such  file", "$HOME;", "touch", ">", str(host_file)):
        assert f"ls: {word}: No such file or directory" in history[0].error
    assert not host_file.exists()
    assert [c for c in containers(docker_client, project)] == []
    daemon.queue.shutdown()


def test_hook_naming_a_missing_service_fails_before_anything_runs(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A post_deploy hook naming a service the revision lacks refuses the revision up front: no stack is
    created that would then have to be rolled back."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    daemon = _daemon_for(tmp_path, repo, prefix, {"post_deploy": [{"service": "wbe", "run": "true"}]})
    sync_all(daemon)
    history = daemon.state.history(project)
    assert history[0].result is Result.FAILURE
    assert (
        "post_deploy hook `true` (service 'wbe')" in history[0].error
        and "db, migrate, web" in history[0].error
    )
    assert containers(docker_client, project) == {}
    daemon.queue.shutdown()


def test_hook_timeout_kills_and_removes_its_container(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A step still running at its timeout is killed and removed, and the deploy fails naming it."""
    prefix = unique_prefix()
    cleanup(prefix)
    project = f"{prefix}-production"
    run = 'sh -c "echo started; exec sleep 300"'
    daemon = _daemon_for(
        tmp_path, repo, prefix, {"pre_deploy": [{"service": "db", "run": run, "timeout": "2s"}]}
    )
    sync_all(daemon)
    error = daemon.state.history(project)[0].error
    assert "pre_deploy hook" in error and "did not finish within 2s" in error and "started" in error
    assert _one_offs(docker_client, project) == []
    assert containers(docker_client, project) == {}
    daemon.queue.shutdown()
