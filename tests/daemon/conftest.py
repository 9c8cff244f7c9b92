"""Fixtures for daemon behaviour tests: real bare git repositories and the real Docker Engine."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_APP = ROOT / "examples" / "app"
BASE_IMAGE = "reconciler-test/busybox:latest"


def git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


class Repo:
    """A bare repository plus a working clone we push from, as a developer would."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "app.git"
        self.work = root / "work"
        git("init", "-q", "--bare", "-b", "master", str(self.bare))
        git("init", "-q", "-b", "master", str(self.work))
        shutil.copytree(EXAMPLE_APP, self.work, dirs_exist_ok=True)
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", "app", cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        git("push", "-q", "origin", "master", cwd=self.work)

    def branch(self, name: str, *, change: str | None = None, base: str = "master") -> str:
        git("checkout", "-q", "-B", name, base, cwd=self.work)
        if change is not None:
            return self.commit(name, {"site/index.html": change})
        git("push", "-q", "-f", "origin", name, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def commit(self, branch: str, files: dict[str, str], *, force: bool = False) -> str:
        git("checkout", "-q", branch, cwd=self.work)
        for rel, text in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", f"change {branch}", cwd=self.work)
        git("push", "-q", *(["-f"] if force else []), "origin", branch, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def edit_yaml(self, branch: str, rel: str, edit: Callable[[dict[str, Any]], None]) -> str:
        """Load ``rel`` on ``branch``, let ``edit`` change the document, commit and push it."""
        git("checkout", "-q", branch, cwd=self.work)
        doc = yaml.safe_load((self.work / rel).read_text())
        edit(doc)
        return self.commit(branch, {rel: yaml.safe_dump(doc, sort_keys=False)})

    def delete(self, branch: str) -> None:
        git("push", "-q", "origin", "--delete", branch, cwd=self.work)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()
    # The example app names busybox:1.36; with no registry, the local base image stands in for it.
    try:
        client.images.get("busybox:1.36")
    except docker.errors.ImageNotFound:
        client.images.get(BASE_IMAGE).tag("busybox", "1.36")
    yield client
    client.close()


@pytest.fixture
def cleanup(docker_client: docker.DockerClient) -> Iterator[Callable[[str], None]]:
    """Register a project prefix; everything labelled with a project of that prefix is removed after."""
    prefixes: list[str] = []
    yield prefixes.append
    # The low-level list: no inspect per container, so one vanishing meanwhile is no error.
    for c in docker_client.api.containers(all=True, filters={"label": "com.docker.compose.project"}):
        if any((c.get("Labels") or {}).get("com.docker.compose.project", "").startswith(p) for p in prefixes):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_container(c["Id"], force=True, v=True)
    for n in docker_client.networks.list(filters={"label": "com.docker.compose.project"}):
        if any(n.attrs["Labels"].get("com.docker.compose.project", "").startswith(p) for p in prefixes):
            n.remove()
    for v in docker_client.volumes.list(filters={"label": "com.docker.compose.project"}):
        if any(
            (v.attrs.get("Labels") or {}).get("com.docker.compose.project", "").startswith(p)
            for p in prefixes
        ):
            v.remove(force=True)


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.2) -> object:
    """Poll until ``predicate`` returns something truthy; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)
