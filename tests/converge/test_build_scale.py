"""Images built from `build:`, replicas scaled up and down, and the up/plan/down CLI, on a real engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import labels as L
from reconciler.plan import Action
from tests.converge.conftest import BUSYBOX, Stack, docker, inspect

pytestmark = pytest.mark.docker

DOCKERFILE = f"""
FROM {BUSYBOX} AS base
ARG FLAVOUR=plain
RUN echo "flavour=$FLAVOUR" > /built
FROM base AS final
RUN echo final >> /built
FROM base AS debug
RUN echo debug >> /built
"""
BUILT = """
services:
  api:
    build:
      context: ./api
      args: {FLAVOUR: spicy}
      target: final
      labels: {org.example.team: api}
    init: true
    command: ["sh", "-c", "cat /built && exec sleep 3600"]
"""


def test_build_uses_args_target_and_labels(stack: Stack) -> None:
    """A `build:` service is built with its args, target and labels, tagged {project}-{service};
    an unchanged rebuild recreates nothing, and down(images=True) removes only the project's images."""
    stack.write(BUILT, **{"api/Dockerfile": DOCKERFILE})
    stack.up()
    image = inspect(f"{stack.name}-api")  # Compose v2's default tag for a build-only service
    assert image["Config"]["Labels"]["org.example.team"] == "api"
    assert image["Config"]["Labels"][L.PROJECT] == stack.name
    out = docker("exec", f"{stack.name}-api-1", "cat", "/built").stdout.split()
    assert out == ["flavour=spicy", "final"]
    # An unchanged rebuild hits the layer cache, keeps the image ID, and so recreates nothing.
    before = stack.ids()
    assert stack.up().is_noop
    assert stack.ids() == before
    # down(images=True) removes the images built for the project, and only those.
    stack.converger.down(stack.name, images=True, timeout=1)
    assert docker("image", "inspect", f"{stack.name}-api", check=False).returncode != 0
    assert docker("image", "inspect", BUSYBOX, check=False).returncode == 0


def test_changed_source_rebuilds_and_recreates(stack: Stack) -> None:
    """A change in the build context gives a new image, and up recreates the service on it."""
    simple = f"FROM {BUSYBOX}\nARG FLAVOUR\nRUN echo flavour=$FLAVOUR > /built\n"
    compose = BUILT.replace("      target: final\n", "")
    stack.write(compose, **{"api/Dockerfile": simple})
    stack.up()
    stack.write(compose.replace("spicy", "mild"), **{"api/Dockerfile": simple})
    plan = stack.up()
    assert [(c.action, c.service) for c in plan.changes] == [(Action.RECREATE, "api")]
    assert docker("exec", f"{stack.name}-api-1", "cat", "/built").stdout.split()[0] == "flavour=mild"


def test_scale_up_and_down(stack: Stack) -> None:
    """deploy.replicas/scale adds numbered replicas and removes the highest numbers first."""
    three = (
        f"services:\n  w:\n    image: {BUSYBOX}\n    init: true\n    command: [sleep, '3600']\n    scale: 3\n"
    )
    stack.write(three)
    stack.up()
    before = stack.ids()
    assert sorted(before) == [f"{stack.name}-w-{n}" for n in (1, 2, 3)]
    stack.write(three.replace("    scale: 3\n", "    deploy: {replicas: 1}\n"))
    plan = stack.up()
    assert [(c.action, c.container) for c in plan.changes] == [
        (Action.REMOVE, f"{stack.name}-w-2"),
        (Action.REMOVE, f"{stack.name}-w-3"),
    ]
    assert stack.ids() == {f"{stack.name}-w-1": before[f"{stack.name}-w-1"]}  # scaling never recreates


def reconciler(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=dict(os.environ),
    )


def test_cli_plan_exit_codes_and_json(stack: Stack) -> None:
    """`reconciler plan` exits 2 with pending changes and 0 after `reconciler up`; `down` cleans up."""
    stack.write(f"services:\n  app:\n    image: {BUSYBOX}\n    init: true\n    command: [sleep, '3600']\n")
    args = ["-f", "compose.yaml", "-p", stack.name]
    pending = reconciler("plan", *args, cwd=stack.dir)
    assert pending.returncode == 2, pending.stderr
    assert f"+ create   {stack.name}-app-1" in pending.stdout
    as_json = json.loads(reconciler("plan", *args, "--format", "json", cwd=stack.dir).stdout)
    assert [c["action"] for c in as_json["changes"]] == ["create"]
    up = reconciler("up", *args, "--timeout", "30", cwd=stack.dir)
    assert up.returncode == 0, up.stderr
    done = reconciler("plan", *args, cwd=stack.dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to do" in done.stdout
    down = reconciler("down", "-p", stack.name, cwd=stack.dir)
    assert down.returncode == 0, down.stderr
    assert stack.containers() == {}


def test_cli_unsupported_key_fails_without_docker(stack: Stack) -> None:
    """An unsupported key makes plan exit 1 with a located message, even with no Docker Engine reachable."""
    stack.write(
        f"services:\n  app:\n    image: {BUSYBOX}\n    external_links: [d]\n  d:\n    image: {BUSYBOX}\n"
    )
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "plan", "-p", stack.name],
        capture_output=True,
        text=True,
        cwd=stack.dir,
        env=env,
    )
    assert out.returncode == 1
    assert "service 'app', key 'external_links'" in out.stderr and "Traceback" not in out.stderr
