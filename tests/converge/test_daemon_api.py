"""What the daemon uses besides up/plan/down: events, the ephemeral sweep's label lookup, health, restarts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from reconciler import labels as L
from reconciler.plan import health
from reconciler.status import Health
from tests.converge.conftest import BUSYBOX, Stack, docker

pytestmark = pytest.mark.docker

APP = f"""
services:
  app:
    image: {BUSYBOX}
    init: true
    command: ["sleep", "3600"]
    volumes: [data:/data]
volumes:
  data:
"""


def test_events_report_a_container_dying_and_stop_when_asked(stack: Stack) -> None:
    """events() yields the `die` of a project container, and returns once `stop` is set."""
    stack.write(APP)
    stack.up()
    stop = threading.Event()
    seen: list[dict[str, Any]] = []
    since = time.time()  # events from here on are replayed, however late the reader subscribes
    reader = threading.Thread(
        target=lambda: seen.extend(stack.converger.events(stop, window=0.5, since=since))
    )
    reader.start()
    try:
        docker("stop", "-t", "1", f"{stack.name}-app-1")
        deadline = time.monotonic() + 15
        while not any(e.get("Action") == "die" and stack.name in str(e.get("Actor")) for e in list(seen)):
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(timeout=10)
    assert not reader.is_alive()


def test_events_ignore_compose_projects_we_did_not_make(stack: Stack) -> None:
    """A compose container started and stopped by someone else never reaches the drift trigger."""
    stack.write(APP)
    stack.up()
    foreign = f"{stack.name}-foreign"
    docker(
        "run", "-d", "--name", foreign, "--label", f"com.docker.compose.project={foreign}",
        BUSYBOX, "sleep", "3600",
    )  # fmt: skip
    stop = threading.Event()
    seen: list[dict[str, Any]] = []
    since = time.time() - 5
    reader = threading.Thread(
        target=lambda: seen.extend(stack.converger.events(stop, window=0.5, since=since))
    )
    reader.start()
    try:
        docker("stop", "-t", "1", foreign)
        docker("stop", "-t", "1", f"{stack.name}-app-1")  # ours: its die ends the wait below
        deadline = time.monotonic() + 15
        while not any(e.get("Action") == "die" and stack.name in str(e.get("Actor")) for e in list(seen)):
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(timeout=10)
        docker("rm", "-f", foreign)
    names = {str((e.get("Actor") or {}).get("Attributes", {}).get("name")) for e in seen}
    assert foreign not in names
    assert f"{stack.name}-app-1" in names


def test_project_labels_finds_stacks_by_label_even_without_containers(stack: Stack) -> None:
    """The sweep finds a labelled stack from its containers, and from its volume once they are gone."""
    stack.write(APP)
    labels = {L.APP: f"{stack.name}-app", L.EPHEMERAL: "true", L.BRANCH: "feature/x"}
    stack.up(labels=labels)
    found = stack.converger.project_labels({L.APP: labels[L.APP], L.EPHEMERAL: "true"})
    assert list(found) == [stack.name] and found[stack.name][L.BRANCH] == "feature/x"
    stack.converger.down(stack.name, timeout=1)  # the volume stays
    found = stack.converger.project_labels({L.APP: labels[L.APP], L.EPHEMERAL: "true"})
    assert list(found) == [stack.name]
    assert stack.converger.project_labels({L.APP: "no-such-app"}) == {}


def test_health_accepts_the_rendered_model(stack: Stack) -> None:
    """health() takes the rendered model dict as well as a spec, and agrees with plan.health."""
    stack.write(APP)
    rendered = stack.render()
    assert health(stack.converger.observe([stack.name])[stack.name], rendered.model) is Health.MISSING
    stack.up()
    live = stack.converger.observe([stack.name])[stack.name]
    assert health(live, rendered.model) is Health.HEALTHY == stack.converger.plan(rendered, live).health
    docker("stop", "-t", "1", f"{stack.name}-app-1")
    live = stack.converger.observe([stack.name])[stack.name]
    assert health(live, rendered.model) is Health.DEGRADED


def test_dependent_restarts_when_its_dependency_is_recreated(stack: Stack) -> None:
    """depends_on with `restart: true` restarts the dependent when the dependency is recreated."""
    compose = f"""
        services:
          db:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
            environment: {{V: "1"}}
          api:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
            depends_on:
              db: {{condition: service_started, restart: true}}
        """
    stack.write(compose)
    stack.up()
    api = f"{stack.name}-api-1"
    started = stack.containers()[api]["State"]["StartedAt"]
    stack.write(compose.replace('V: "1"', 'V: "2"'))
    plan = stack.up()
    assert [c.service for c in plan.changes] == ["db"]  # api is restarted, not recreated
    assert stack.containers()[api]["State"]["StartedAt"] != started


def test_dollar_signs_reach_the_container_unescaped(stack: Stack) -> None:
    """`$$` in a compose file is a literal `$` in the container, as with docker compose."""
    stack.write(
        f"services:\n  app:\n    image: {BUSYBOX}\n    init: true\n    command: [sleep, '3600']\n"
        "    environment: {PRICE: '$$5'}\n"
    )
    stack.up()
    assert "PRICE=$5" in stack.containers()[f"{stack.name}-app-1"]["Config"]["Env"]
    assert stack.plan().is_noop


def test_render_and_help_never_import_docker() -> None:
    """The CLI and the render path import docker-py only when a command needs Docker."""
    code = (
        "import sys, reconciler.cli, reconciler.commands.converge, reconciler.render, reconciler.plan;"
        "assert 'docker' not in sys.modules and 'requests' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
