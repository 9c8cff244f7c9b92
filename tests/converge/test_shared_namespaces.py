"""`network_mode`/`pid`/`ipc: service:NAME`: the sidecar joins NAME's replica 1 by ID, NAME is started
first, and replacing NAME's container replaces the sidecar too (as Compose v2 does)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reconciler import labels as L
from reconciler.errors import UnsupportedError
from reconciler.plan import Action, LiveContainer, LiveProject, make_plan
from reconciler.spec import container_request, project_spec
from reconciler.status import DriftReason
from tests.converge.conftest import BUSYBOX, Stack, docker, inspect
from tests.converge.helpers import Rendered, compose

pytestmark = pytest.mark.docker

SIDECAR = f"""
services:
  web:
    image: {BUSYBOX}
    command: ["sh", "-c", "mkdir /www && echo $$GREETING >/www/index.html && exec httpd -f -p 8080 -h /www"]
    environment: {{GREETING: "{{greeting}}"}}
    ipc: shareable
    stop_grace_period: 1s
  side:
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    network_mode: service:web
    pid: service:web
    ipc: service:web
    stop_grace_period: 1s
"""


def fetch(container: str, deadline: float = 20.0) -> str:
    """GET localhost:8080 from inside ``container``, polling until httpd answers."""
    end = time.monotonic() + deadline
    while True:
        out = docker("exec", container, "wget", "-qO-", "http://localhost:8080/", check=False)
        if out.returncode == 0 or time.monotonic() > end:
            return out.stdout.strip()
        time.sleep(0.2)


def test_sidecar_joins_network_pid_and_ipc_by_id(stack: Stack) -> None:
    """The sidecar reaches web's httpd on localhost, sees its process, and names it by container ID."""
    stack.write(SIDECAR.replace("{greeting}", "hello"))
    stack.up()
    web, side = inspect(f"{stack.name}-web-1"), inspect(f"{stack.name}-side-1")
    for key in ("NetworkMode", "PidMode", "IpcMode"):
        assert side["HostConfig"][key] == f"container:{web['Id']}"
    assert side["Config"]["Labels"][L.JOINED] == f"web={web['Id']}"
    assert fetch(f"{stack.name}-side-1") == "hello"
    ps = docker("exec", f"{stack.name}-side-1", "ps", "-o", "comm").stdout.split()
    assert "httpd" in ps
    assert stack.plan().is_noop


def test_replacing_the_target_replaces_the_sidecar(stack: Stack) -> None:
    """A new web container (new ID) makes plan recreate the sidecar, which then works in the new one."""
    stack.write(SIDECAR.replace("{greeting}", "hello"))
    stack.up()
    old_side = inspect(f"{stack.name}-side-1")["Id"]
    stack.write(SIDECAR.replace("{greeting}", "again"))
    plan = stack.plan()
    side = [c for c in plan.changes if c.service == "side"]
    assert [c.action for c in side] == [Action.RECREATE]
    assert "'web'" in side[0].details and "network_mode" in side[0].fields
    stack.up()
    web, new_side = inspect(f"{stack.name}-web-1"), inspect(f"{stack.name}-side-1")
    assert new_side["Id"] != old_side
    assert new_side["HostConfig"]["NetworkMode"] == f"container:{web['Id']}"
    assert new_side["State"]["Running"]
    assert fetch(f"{stack.name}-side-1") == "again"
    assert stack.plan().is_noop


def test_target_removed_by_hand_recreates_the_sidecar(stack: Stack) -> None:
    """The target gone (not only changed) is enough: the sidecar is recreated with the new container."""
    stack.write(SIDECAR.replace("{greeting}", "hello"))
    stack.up()
    docker("rm", "-f", f"{stack.name}-web-1")
    plan = stack.plan()
    changes = {(c.service, c.action) for c in plan.changes}
    assert changes == {("web", Action.CREATE), ("side", Action.RECREATE)}
    stack.up()
    assert fetch(f"{stack.name}-side-1") == "hello"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ports", '["8081:80"]'),
        ("expose", '["80"]'),
        ("hostname", "h"),
        ("dns", "[1.1.1.1]"),
        ("extra_hosts", '["a:1.2.3.4"]'),
        ("mac_address", "02:42:ac:11:00:99"),
    ],
)
def test_own_network_keys_are_refused_with_a_joined_network(stack: Stack, key: str, value: str) -> None:
    """Docker refuses these with a container network mode; we say so before any Docker call."""
    stack.write(SIDECAR.replace("{greeting}", "x").replace("    pid: service:web\n", f"    {key}: {value}\n"))
    with pytest.raises(UnsupportedError) as err:
        project_spec(stack.render())
    assert err.value.location.service == "side" and err.value.location.key == key
    assert "network_mode" in str(err.value)


def test_namespace_modes_have_compose_shape(stack: Stack, tmp_path: Path) -> None:
    """Compose v2 creates the same HostConfig modes: `container:<ID of the target's replica 1>`."""
    stack.write(SIDECAR.replace("{greeting}", "hello"))
    stack.up()
    theirs = f"{stack.name}-compose"
    try:
        done = compose(theirs, "-f", str(stack.dir / "compose.yaml"), "up", "-d", cwd=stack.dir)
        assert done.returncode == 0, done.stderr
        for project in (stack.name, theirs):
            web, side = inspect(f"{project}-web-1"), inspect(f"{project}-side-1")
            modes = {k: side["HostConfig"][k] for k in ("NetworkMode", "PidMode", "IpcMode")}
            assert modes == dict.fromkeys(modes, f"container:{web['Id']}"), project
            assert web["HostConfig"]["IpcMode"] == "shareable"
    finally:
        compose(theirs, "down", "-t", "1")


def test_container_form_is_passed_as_written(stack: Stack) -> None:
    """`container:NAME` (a container outside the project) reaches Docker as written (Docker stores the ID)."""
    outside = f"{stack.name}-outside"  # the fixture removes containers with the stack's prefix
    docker("run", "-d", "--name", outside, "--ipc", "shareable", BUSYBOX, "sleep", "3600")
    stack.write(
        f"""
        services:
          side:
            image: {BUSYBOX}
            command: ["sleep", "3600"]
            network_mode: container:{outside}
            pid: container:{outside}
            ipc: container:{outside}
        """
    )
    stack.up()
    side = inspect(f"{stack.name}-side-1")
    modes = {side["HostConfig"][k] for k in ("NetworkMode", "PidMode", "IpcMode")}
    assert modes == {f"container:{inspect(outside)['Id']}"}
    assert L.JOINED not in side["Config"]["Labels"]
    assert "sleep" in docker("exec", f"{stack.name}-side-1", "ps", "-o", "comm").stdout
    assert stack.plan().is_noop


def test_plan_follows_the_recorded_id_of_the_joined_container() -> None:
    """Pure plan: the joiner is unchanged while web keeps its ID, recreated (reason config, naming web)
    when web has another ID, none, or is about to be recreated itself."""
    model = {
        "services": {
            "web": {"image": "x", "network_mode": "none"},
            "side": {"image": "x", "network_mode": "service:web", "pid": "service:web",
                     "depends_on": {"web": {"condition": "service_started", "required": True}}},
        }
    }  # fmt: skip
    spec = project_spec(Rendered("p", "/src", (), model))

    def live(web_id: str | None, joined: str, web_labels: dict[str, str] | None = None) -> LiveProject:
        out = []
        for name, cid in (("web", web_id), ("side", "s" * 64)):
            svc = spec.service(name)
            assert svc is not None
            if cid is None:
                continue
            req = container_request(spec, svc, 1, image_id="i", joined={"web": joined})
            labels = dict(req.body["Labels"])
            if name == "web" and web_labels:
                labels.update(web_labels)
            out.append(LiveContainer(cid, f"p-{name}-1", "p", name, 1, "running", labels=labels))
        return LiveProject("p", tuple(out))

    w = "w" * 64
    assert make_plan(spec, live(w, w)).is_noop
    for plan in (
        make_plan(spec, live("v" * 64, w)),  # web replaced by hand
        make_plan(spec, live(None, w)),  # web removed
        make_plan(spec, live(w, w, {L.CONFIG_HASH: "old"})),  # web about to be recreated
    ):
        [side] = [c for c in plan.changes if c.service == "side"]
        assert side.action is Action.RECREATE and side.reasons == (DriftReason.CONFIG,)
        assert "'web'" in side.details and side.fields == ("network_mode", "pid")
