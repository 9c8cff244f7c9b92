"""Containers changed behind our back (restarted, stopped, removed, re-run, image rebuilt)."""

from __future__ import annotations

import time

import pytest

from reconciler import labels as L
from reconciler.errors import DeployError
from reconciler.plan import Action
from reconciler.status import DriftReason
from tests.converge.conftest import BUSYBOX, Stack, docker, inspect

pytestmark = pytest.mark.docker

ONE = f"""
services:
  app:
    image: {BUSYBOX}
    init: true
    command: ["sleep", "3600"]
    environment: {{VERSION: "1"}}
"""


def test_restarted_by_hand_is_not_drift(stack: Stack) -> None:
    """`docker restart` leaves the container as we made it: no drift, nothing to do."""
    stack.write(ONE)
    stack.up()
    docker("restart", "-t", "1", f"{stack.name}-app-1")
    assert stack.plan().is_noop


def test_stopped_by_hand_is_started_again(stack: Stack) -> None:
    """A stopped container is reported as stopped and started (not recreated) by up."""
    stack.write(ONE)
    stack.up()
    before = stack.ids()
    docker("stop", "-t", "1", f"{stack.name}-app-1")
    plan = stack.plan()
    assert [(c.action, c.reasons) for c in plan.changes] == [(Action.START, (DriftReason.STOPPED,))]
    stack.up()
    assert stack.ids() == before
    assert stack.containers()[f"{stack.name}-app-1"]["State"]["Running"]


def test_removed_by_hand_is_created_again(stack: Stack) -> None:
    """A container removed by hand is missing and comes back with the next up."""
    stack.write(ONE)
    stack.up()
    docker("rm", "-f", f"{stack.name}-app-1")
    plan = stack.plan()
    assert [(c.action, c.reasons) for c in plan.changes] == [(Action.CREATE, (DriftReason.MISSING,))]
    stack.up()
    assert stack.plan().is_noop


def test_rerun_by_hand_with_other_config_is_recreated(stack: Stack) -> None:
    """`docker rm -f` then `docker run` under the same name and project labels, but edited: config drift."""
    stack.write(ONE)
    stack.up()
    name = f"{stack.name}-app-1"
    docker("rm", "-f", name)
    labels = {L.PROJECT: stack.name, L.SERVICE: "app", L.CONTAINER_NUMBER: "1", L.ONEOFF: "False"}
    flags = [f"--label={k}={v}" for k, v in labels.items()]
    docker("run", "-d", "--init", "--name", name, *flags, "-e", "VERSION=hacked", BUSYBOX, "sleep", "3600")
    plan = stack.plan()
    assert [(c.action, c.reasons) for c in plan.changes] == [(Action.RECREATE, (DriftReason.CONFIG,))]
    stack.up()
    info = inspect(name)
    assert "VERSION=1" in info["Config"]["Env"]
    assert info["Config"]["Labels"][L.CONFIG_HASH]
    assert stack.plan().is_noop


def test_unlabelled_container_with_our_name_is_left_alone(stack: Stack) -> None:
    """A container that is not the project's is never removed: up fails and says what is in the way."""
    stack.write(ONE)
    name = f"{stack.name}-app-1"
    docker("run", "-d", "--init", "--name", name, BUSYBOX, "sleep", "3600")
    foreign = inspect(name)["Id"]
    with pytest.raises(DeployError) as err:
        stack.up()
    assert err.value.service == "app"
    assert "outside the project" in str(err.value)
    assert inspect(name)["Id"] == foreign


def test_image_rebuilt_under_same_tag_recreates(stack: Stack) -> None:
    """Rebuilding the tag a service uses shows image drift, and up moves the container to the new image."""
    tag = f"{stack.name}-img:latest"
    stack.images.append(tag)
    (stack.dir / "img").mkdir()
    (stack.dir / "img" / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN echo one > /version\n")
    docker("build", "-q", "-t", tag, str(stack.dir / "img"))
    stack.write(ONE.replace(BUSYBOX, tag) + "    pull_policy: never\n")
    stack.up()
    old_image = stack.containers()[f"{stack.name}-app-1"]["Image"]
    stack.images.append(old_image)  # untagged by the rebuild: remove it too
    (stack.dir / "img" / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN echo two > /version\n")
    docker("build", "-q", "-t", tag, str(stack.dir / "img"))
    plan = stack.plan()
    assert [(c.action, c.reasons) for c in plan.changes] == [(Action.RECREATE, (DriftReason.IMAGE,))]
    stack.up()
    app = stack.containers()[f"{stack.name}-app-1"]
    assert app["Image"] != old_image and app["Config"]["Labels"][L.IMAGE] == app["Image"]
    assert docker("exec", f"{stack.name}-app-1", "cat", "/version").stdout.strip() == "two"
    assert stack.plan().is_noop


def test_anonymous_volume_survives_recreate(stack: Stack) -> None:
    """Data in an anonymous volume is carried over to the recreated container, as Compose does."""
    stack.write(ONE + '    volumes: ["/state"]\n')
    stack.up()
    docker("exec", f"{stack.name}-app-1", "sh", "-c", "echo kept > /state/file")
    stack.write(ONE.replace('VERSION: "1"', 'VERSION: "2"') + '    volumes: ["/state"]\n')
    stack.up()
    assert docker("exec", f"{stack.name}-app-1", "cat", "/state/file").stdout.strip() == "kept"


def test_observe_groups_many_projects_from_one_list(stack: Stack) -> None:
    """observe() returns every requested project, including ones with no containers."""
    stack.write(ONE)
    stack.up()
    live = stack.converger.observe([stack.name, "tcv-absent-project"])
    assert [c.name for c in live[stack.name].containers] == [f"{stack.name}-app-1"]
    assert live["tcv-absent-project"].containers == ()
    assert stack.name in stack.converger.observe()


def test_every_drift_reason_is_reported(stack: Stack) -> None:
    """missing, stopped, config, image, orphan and unhealthy each show up as that drift reason, by service."""
    tag = f"{stack.name}-img:latest"
    docker("tag", BUSYBOX, tag)
    stack.images.append(tag)
    compose = f"""
        services:
          gone: {{image: {BUSYBOX}, command: ["sleep", "3600"]}}
          halted: {{image: {BUSYBOX}, command: ["sleep", "3600"]}}
          edited: {{image: {BUSYBOX}, command: ["sleep", "3600"], environment: {{V: "1"}}}}
          retagged: {{image: {tag}, command: ["sleep", "3600"]}}
          leftover: {{image: {BUSYBOX}, command: ["sleep", "3600"]}}
          sick:
            image: {BUSYBOX}
            command: ["sh", "-c", "touch /ok && exec sleep 3600"]
            healthcheck: {{test: ["CMD", "test", "-f", "/ok"], interval: 1s, timeout: 1s, retries: 1}}
        """
    stack.write(compose)
    stack.up()
    assert stack.plan().drifts() == ()

    docker("rm", "-f", f"{stack.name}-gone-1")
    docker("stop", "-t", "0", f"{stack.name}-halted-1")
    (stack.dir / "img").mkdir()
    (stack.dir / "img" / "Dockerfile").write_text(f"FROM {BUSYBOX}\nLABEL rebuilt={stack.name}\n")
    docker("build", "-q", "-t", tag, str(stack.dir / "img"))
    docker("exec", f"{stack.name}-sick-1", "rm", "/ok")
    without_leftover = "\n".join(line for line in compose.splitlines() if "leftover:" not in line)
    stack.write(without_leftover.replace('V: "1"', 'V: "2"'))

    def reasons() -> set[tuple[str, str]]:
        return {(d.service, str(d.reason)) for d in stack.plan().drifts()}

    expected = {
        ("gone", "missing"),
        ("halted", "stopped"),
        ("edited", "config"),
        ("retagged", "image"),
        ("leftover", "orphan"),
        ("sick", "unhealthy"),
    }
    deadline = time.monotonic() + 30
    while reasons() != expected and time.monotonic() < deadline:
        time.sleep(0.5)  # the healthcheck needs a probe or two to turn unhealthy
    assert reasons() == expected
