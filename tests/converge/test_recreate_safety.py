"""A recreate creates the replacement first: a config Docker refuses never costs the running container,
a replacement that fails to start gives the old one back, and a crash's leftovers are cleaned up."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import labels as L
from reconciler.converge import Converger
from reconciler.engine import DockerEngine, EngineUnavailable
from reconciler.errors import DeployError
from reconciler.plan import Action, LiveProject, make_plan, parse_containers
from reconciler.spec import project_spec
from tests.converge.conftest import BUSYBOX, Stack, docker
from tests.converge.helpers import Rendered

pytestmark = pytest.mark.docker

STACK = f"""
services:
  web:
    image: {BUSYBOX}
    init: true
    command: ["sh", "-c", "touch /data/mark; exec sleep 3600"]
    stop_grace_period: 1s
    environment: {{MODE: one}}
    volumes: [/data]
"""


def running(stack: Stack) -> dict[str, tuple[str, bool]]:
    """Name -> (ID, running) of every container of the project."""
    return {n: (i["Id"], i["State"]["Running"]) for n, i in stack.containers().items()}


def test_create_rejected_keeps_old_container_running(stack: Stack) -> None:
    """A logging driver Docker refuses at create fails StartFailed with Docker's words; the old container
    was never stopped and no replacement is left behind."""
    stack.write(STACK)
    stack.up()
    web = f"{stack.name}-web-1"
    old = stack.containers()[web]
    stack.write(STACK + "    logging: {driver: nosuchdriver}\n")
    with pytest.raises(DeployError) as err:
        stack.up()
    assert (err.value.reason, err.value.service) == ("StartFailed", "web")
    assert "nosuchdriver" in str(err.value)
    assert list(stack.containers()) == [web]
    now = stack.containers()[web]
    assert now["Id"] == old["Id"] and now["State"]["Running"]
    assert now["State"]["StartedAt"] == old["State"]["StartedAt"]  # never stopped


def test_start_failure_starts_the_old_container_again(stack: Stack) -> None:
    """A device that does not exist (Docker answers 500 at start) fails StartFailed, permanent, with
    Docker's words; the replacement is removed and the old container runs again with its data."""
    stack.write(STACK)
    stack.up()
    before = running(stack)
    stack.write(STACK + '    devices: ["/dev/does-not-exist:/dev/x"]\n')
    with pytest.raises(DeployError) as err:
        stack.up()
    assert (err.value.reason, err.value.service) == ("StartFailed", "web")
    assert "/dev/does-not-exist" in str(err.value) and "started again" in str(err.value)
    assert running(stack) == before
    # The plan still wants the change: the next deploy tries again.
    assert [c.action for c in stack.plan().changes] == [Action.RECREATE]


class _LostOnStart(DockerEngine):
    """The real engine, except that starting a replacement (a temporary name) loses the connection or
    gets a 503: how a flaky engine looks to converge."""

    def __init__(self, status: int | None) -> None:
        super().__init__()
        self.status = status

    def start_container(self, ref: str) -> None:
        if "_" in ref:
            raise EngineUnavailable(f"start container {ref}: boom", reason="connection", status=self.status)
        super().start_container(ref)


def test_start_without_answer_stays_transient_and_old_runs_again(stack: Stack) -> None:
    """A lost connection while starting the replacement is a transient DockerError, not a verdict on the
    config; the old container runs again either way."""
    stack.write(STACK)
    stack.up()
    before = running(stack)
    stack.write(STACK.replace("MODE: one", "MODE: two"))
    with pytest.raises(EngineUnavailable):
        Converger(_LostOnStart(None)).up(stack.render(), timeout=30)
    assert running(stack) == before
    with pytest.raises(DeployError) as err:
        Converger(_LostOnStart(503)).up(stack.render(), timeout=30)
    assert err.value.reason == "StartFailed" and "boom" in str(err.value)
    assert running(stack) == before


def test_recreate_keeps_the_name_and_the_anonymous_volume(stack: Stack) -> None:
    """After a recreate the replacement has the usual name, the old container is gone, and the anonymous
    volume moved over."""
    stack.write(STACK)
    stack.up()
    old = stack.containers()[f"{stack.name}-web-1"]
    volume = next(m["Name"] for m in old["Mounts"] if m["Destination"] == "/data")
    stack.write(STACK.replace("MODE: one", "MODE: two"))
    stack.up()
    after = stack.containers()
    assert list(after) == [f"{stack.name}-web-1"]
    new = after[f"{stack.name}-web-1"]
    assert new["Id"] != old["Id"] and "MODE=two" in new["Config"]["Env"]
    assert next(m["Name"] for m in new["Mounts"] if m["Destination"] == "/data") == volume
    assert stack.plan().is_noop


def _copy_as(stack: Stack, source: str, name: str) -> str:
    """A container with ``source``'s labels under ``name``: what a crash mid-recreate leaves behind."""
    labels = stack.containers()[source]["Config"]["Labels"]
    args = [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
    return docker("create", "--name", name, *args, BUSYBOX, "sleep", "3600").stdout.strip()


def test_leftover_temporary_container_is_removed_as_duplicate(stack: Stack) -> None:
    """A temporary replacement left by a crash next to the real container is planned as a duplicate and
    removed; the correctly named container is kept as it is."""
    stack.write(STACK)
    stack.up()
    web = f"{stack.name}-web-1"
    before = running(stack)
    temp = f"{before[web][0][:12]}_{web}"
    leftover = _copy_as(stack, web, temp)
    plan = stack.plan()
    assert [(c.action, c.container, c.details) for c in plan.changes] == [
        (Action.REMOVE, temp, "duplicate of replica 1")
    ]
    stack.up()
    assert running(stack) == before
    assert docker("inspect", leftover, check=False).returncode != 0


def test_lone_temporary_container_takes_the_usual_name(stack: Stack) -> None:
    """A crash after the old container was removed but before the rename leaves only the temporary name:
    the next up replaces it under the usual name and leaves nothing else."""
    stack.write(STACK)
    stack.up()
    web = f"{stack.name}-web-1"
    docker("rename", web, f"0123456789ab_{web}")
    stack.up()
    assert list(running(stack)) == [web]
    assert stack.plan().is_noop


def _summary(name: str, number: int, created: int, config_hash: str) -> dict[str, Any]:
    labels = {L.PROJECT: "p", L.SERVICE: "web", L.CONTAINER_NUMBER: str(number), L.CONFIG_HASH: config_hash}
    return {
        "Id": name,
        "Names": [f"/{name}"],
        "State": "running",
        "Status": "Up 1 second",
        "Created": created,
        "Labels": labels,
    }


def test_pairing_prefers_the_usual_name_over_a_newer_temporary_one() -> None:
    """Pure: with a newer temporary container of the same replica, plan keeps the usual name and removes
    the temporary one."""
    model = {
        "name": "p",
        "services": {"web": {"image": BUSYBOX}},
        "networks": {"default": {"name": "p_default"}},
    }
    rendered = Rendered("p", "/tmp", (), model)
    spec = project_spec(rendered)
    good = spec.services[0].config_hash
    live = parse_containers(
        [_summary("p-web-1", 1, created=100, config_hash=good), _summary("aaaa_p-web-1", 1, 200, good)]
    )["p"]
    plan = make_plan(spec, live)
    assert [(c.action, c.container) for c in plan.changes] == [(Action.REMOVE, "aaaa_p-web-1")]
    temp = next(c for c in live.containers if c.name == "aaaa_p-web-1")
    lone = make_plan(spec, LiveProject("p", (temp,)))
    assert [(c.action, c.details) for c in lone.changes] == [
        (Action.RECREATE, "named 'aaaa_p-web-1' instead of 'p-web-1'")
    ]
