"""A preview's compose files can't make the daemon read the host: `env_file: /etc/...`, a committed symlink
to `/proc/self/environ` or `extends.file` outside the checkout is refused before the read, naming the file;
production, whose policy allows it, reads the same file; the daemon's own environment never leaks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.report.api import environments_json
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

pytestmark = pytest.mark.docker

MARKER = "daemon-environment-marker-7f3a9c"


def test_previews_read_nothing_outside_the_checkout(
    tmp_path: Path,
    repo: Repo,
    docker_client: docker.DockerClient,
    cleanup: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each reading branch is refused with the file named and creates nothing; production reads its file."""
    prefix = unique_prefix()
    cleanup(prefix)
    monkeypatch.setenv("RECONCILER_TEST_MARKER", MARKER)  # in /proc/self/environ of this (daemon) process
    outside = tmp_path / "host-only.env"
    outside.write_text("HOST_ONLY=from-the-host\n")
    extended = tmp_path / "base.yml"
    extended.write_text("services:\n  base:\n    image: reconciler-test/busybox:latest\n")

    def env_file(path: str) -> Any:
        return lambda doc: doc["services"]["web"].update(env_file=[path])

    repo.branch("env-file")
    repo.edit_yaml("env-file", "docker-compose.yml", env_file(str(outside)))
    repo.branch("leak")
    os.symlink("/proc/self/environ", repo.work / "leak.env")
    repo.edit_yaml("leak", "docker-compose.yml", env_file("leak.env"))
    repo.branch("extends")
    extends = {"file": str(extended), "service": "base"}
    repo.edit_yaml("extends", "docker-compose.yml", lambda d: d["services"]["web"].update(extends=extends))
    repo.edit_yaml("master", "docker-compose.yml", env_file(str(outside)))
    cfg = write_config(tmp_path, repo.bare, prefix)
    daemon = _daemon(load_config(cfg), metrics=True)
    try:
        sync_all(daemon)
        errors = {s.branch: s.error for s in daemon.environments()}
        for branch, named in (("env-file", str(outside)), ("leak", "leak.env"), ("extends", str(extended))):
            assert "outside the checkout" in errors[branch], (branch, errors[branch])
            assert named in errors[branch], (branch, errors[branch])
            assert containers(docker_client, f"{prefix}-test-{branch}") == {}, branch
        # Production's policy is permissive: it reads the operator's file outside its checkout.
        web = containers(docker_client, f"{prefix}-production")["web"]
        assert "HOST_ONLY=from-the-host" in web.attrs["Config"]["Env"]
        # The daemon's own environment went nowhere: not into an error, the API or a container.
        api = str(environments_json(daemon.environments()))
        assert MARKER not in api and MARKER not in str(errors)
        for c in docker_client.containers.list(all=True, filters={"label": "io.reconciler.managed=true"}):
            if c.name.startswith(prefix):
                assert not any(MARKER in e for e in c.attrs["Config"]["Env"] or ()), c.name
    finally:
        daemon.queue.shutdown()
