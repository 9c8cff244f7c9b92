"""A single-node Swarm on test engine 3 (scripts/dockerd2.sh start 3), never on the main engine or engine 2;
image variants built there from the base image; a stack per test, removed afterwards."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler.render import RenderedProject, RenderOptions, render
from reconciler.swarm.converge import SwarmConverger
from reconciler.swarm.engine import SwarmEngine
from tests.engines import engine_url, start_engine

SWARM_ENGINE = 3
BASE = "reconciler-test/busybox:latest"
APP = "reconciler-test/swarm-app"
OWNER = "test-instance/app/production"
# Image variants: v1 and v2 differ (so an update rolls tasks); bad's healthcheck always fails.
_IMAGES = {
    f"{APP}:v1": f'FROM {BASE}\nLABEL variant=v1\nCMD ["sleep", "100000"]\n',
    f"{APP}:v2": f'FROM {BASE}\nLABEL variant=v2\nCMD ["sleep", "100001"]\n',
    f"{APP}:bad": (
        f"FROM {BASE}\nLABEL variant=bad\n"
        "HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD false\n"
        'CMD ["sleep", "100002"]\n'
    ),
}


@pytest.fixture(scope="session")
def swarm_url() -> Iterator[str]:
    url = start_engine(SWARM_ENGINE)
    assert url == engine_url(SWARM_ENGINE) and url != "unix:///var/run/docker.sock"
    client = docker.DockerClient(base_url=url, timeout=60)
    try:
        swarm = client.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active":
            client.swarm.init(advertise_addr="127.0.0.1")
        for tag, dockerfile in _IMAGES.items():
            client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, pull=False)
        yield url
    finally:
        client.close()


@pytest.fixture(scope="session")
def swarm_client(swarm_url: str) -> Iterator[docker.APIClient]:
    client = docker.APIClient(base_url=swarm_url, version="auto", timeout=60)
    yield client
    client.close()


@pytest.fixture
def converger(swarm_url: str) -> SwarmConverger:
    return SwarmConverger(SwarmEngine(swarm_url))


class Stack:
    """A compose project in a temporary directory, rendered under a unique project name."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name

    def write(self, compose: dict[str, Any], files: dict[str, str] | None = None) -> RenderedProject:
        for rel, text in (files or {}).items():
            (self.root / rel).write_text(text)
        (self.root / "compose.yaml").write_text(yaml.safe_dump(compose))
        options = RenderOptions(
            files=(str(self.root / "compose.yaml"),),
            project_directory=str(self.root),
            project_name=self.name,
            environ={"PATH": os.environ.get("PATH", "")},
        )
        return render(options)


@pytest.fixture
def stack(tmp_path: Path, converger: SwarmConverger) -> Iterator[Stack]:
    made = Stack(tmp_path, f"swt{uuid.uuid4().hex[:8]}")
    yield made
    converger.down(made.name, volumes=True, owner=None)
    # A test may have labelled objects with another owner on purpose: clean those up too.
    engine = converger.engine
    for svc in engine.list_services({"com.docker.stack.namespace": made.name}):
        engine.remove_service(svc["ID"])


def app(image: str = f"{APP}:v1", **extra: Any) -> dict[str, Any]:
    """A service with fast health and update settings, so a rolling update takes seconds."""
    deploy = {
        "replicas": 2,
        "update_config": {"parallelism": 1, "delay": "0s", "order": "start-first", "monitor": "2s"},
        "rollback_config": {"parallelism": 0, "monitor": "1s"},
        "restart_policy": {"condition": "any", "delay": "1s"},
    }
    deploy.update(extra.pop("deploy", {}))
    return {"image": image, "stop_grace_period": "1s", "deploy": deploy, **extra}


def poll(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
