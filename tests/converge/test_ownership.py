"""Ownership: a deploy stamps its owner, never changes or removes another owner's objects, adopts unowned
ones, refuses fixed-name volumes of another project, and an empty render never removes a running stack."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from reconciler import labels as L
from reconciler.errors import DeployError
from tests.converge.conftest import BUSYBOX, Stack, docker, inspect

pytestmark = pytest.mark.docker

OWNER = "inst-a/shop/prod"
OTHER = "inst-b/shop/prod"

STACK = f"""
services:
  web:
    image: {BUSYBOX}
    init: true
    command: ["sleep", "3600"]
    environment: {{MODE: one}}
    volumes: [data:/data]
volumes:
  data:
"""


@pytest.fixture
def volume_name() -> Iterator[str]:
    """A unique name for a volume a test creates by hand; removed afterwards."""
    name = f"tcv-vol-{secrets.token_hex(3)}"
    yield name
    # This teardown may run before the stack's: first remove the containers still mounting the volume.
    users = docker("ps", "-aq", "--filter", f"volume={name}").stdout.split()
    if users:
        docker("rm", "-f", *users, check=False)
    docker("volume", "rm", "-f", name, check=False)


def owner_of(kind: str, name: str) -> str | None:
    """The owner label of a container, network or volume."""
    labels: dict[str, str] = inspect_kind(kind, name).get("Labels") or {}
    return labels.get(L.OWNER)


def inspect_kind(kind: str, name: str) -> dict[str, Any]:
    """`docker inspect` of a network or volume, or a container's Config (where its labels are)."""
    if kind == "container":
        return dict(inspect(name)["Config"])
    out: dict[str, Any] = json.loads(docker(kind, "inspect", name).stdout)[0]
    return out


def exists(kind: str, name: str) -> bool:
    return docker(kind, "inspect", name, check=False).returncode == 0


def test_owner_is_stamped_on_every_object_and_not_hashed(stack: Stack) -> None:
    """up with an owner labels the container, network and volume with it, and a second up is a no-op."""
    stack.write(STACK)
    stack.up(owner=OWNER)
    web = f"{stack.name}-web-1"
    assert owner_of("container", web) == OWNER
    assert owner_of("network", f"{stack.name}_default") == OWNER
    assert owner_of("volume", f"{stack.name}_data") == OWNER
    assert stack.up(owner=OWNER).is_noop


def test_stack_of_another_owner_is_refused_and_left_unchanged(stack: Stack) -> None:
    """A changed project whose containers carry another owner fails NotOwner, naming project, container
    and owner, and its containers keep running untouched."""
    stack.write(STACK)
    stack.up(owner=OWNER)
    before = stack.ids()
    stack.write(STACK.replace("MODE: one", "MODE: two"))
    with pytest.raises(DeployError) as err:
        stack.up(owner=OTHER)
    assert err.value.reason == "NotOwner"
    message = str(err.value)
    assert stack.name in message and f"{stack.name}-web-1" in message and OWNER in message
    assert "rename" in message
    assert stack.ids() == before
    web = stack.containers()[f"{stack.name}-web-1"]
    assert web["State"]["Running"] and "MODE=one" in web["Config"]["Env"]


def test_network_and_volume_of_another_owner_are_refused(stack: Stack) -> None:
    """With no container left, the project's network and volume carrying another owner still refuse up."""
    stack.write(STACK)
    stack.up(owner=OWNER)
    docker("rm", "-f", f"{stack.name}-web-1")
    with pytest.raises(DeployError) as err:
        stack.up(owner=OTHER)
    assert err.value.reason == "NotOwner"
    assert f"network {stack.name}_default" in str(err.value) and OWNER in str(err.value)
    assert stack.containers() == {}
    # Without its network, the volume is what refuses.
    docker("network", "rm", f"{stack.name}_default")
    with pytest.raises(DeployError) as err:
        stack.up(owner=OTHER)
    assert err.value.reason == "NotOwner"
    assert f"volume {stack.name}_data" in str(err.value)
    assert stack.containers() == {} and not exists("network", f"{stack.name}_default")


def test_down_with_owner_leaves_another_owners_objects(stack: Stack) -> None:
    """down for another owner removes nothing and logs each skipped object; down for the owner removes all."""
    stack.write(STACK)
    stack.up(owner=OWNER)
    before = stack.ids()
    with capture_logs() as logs:
        stack.converger.down(stack.name, volumes=True, images=True, timeout=1, owner=OTHER)
    assert stack.ids() == before
    assert exists("network", f"{stack.name}_default") and exists("volume", f"{stack.name}_data")
    skipped = {(e["kind"], e["name"]) for e in logs if e["event"] == "down.skipped_foreign"}
    assert {
        ("container", f"{stack.name}-web-1"),
        ("network", f"{stack.name}_default"),
        ("volume", f"{stack.name}_data"),
    } <= skipped
    stack.converger.down(stack.name, volumes=True, timeout=1, owner=OWNER)
    assert stack.containers() == {}
    assert not exists("network", f"{stack.name}_default") and not exists("volume", f"{stack.name}_data")


def test_unowned_stack_is_adopted_without_recreate(stack: Stack) -> None:
    """A stack an older release made (no owner label) is converged by an owner as it is: nothing recreated,
    and down for that owner removes it."""
    stack.write(STACK)
    stack.up()
    before = stack.ids()
    assert owner_of("container", f"{stack.name}-web-1") is None
    assert stack.up(owner=OWNER).is_noop
    assert stack.ids() == before
    stack.converger.down(stack.name, volumes=True, timeout=1, owner=OWNER)
    assert stack.containers() == {} and not exists("volume", f"{stack.name}_data")


def test_fixed_name_volume_of_another_project_is_refused(stack: Stack, volume_name: str) -> None:
    """A `name:`d volume labelled with another project fails VolumeConflict before anything is created."""
    docker("volume", "create", "--label", f"{L.PROJECT}=someone-else", volume_name)
    stack.write(STACK + f"    name: {volume_name}\n")
    with pytest.raises(DeployError) as err:
        stack.up(owner=OWNER)
    assert err.value.reason == "VolumeConflict"
    assert volume_name in str(err.value) and "someone-else" in str(err.value)
    assert stack.containers() == {} and not exists("network", f"{stack.name}_default")
    labels = inspect_kind("volume", volume_name).get("Labels") or {}
    assert labels == {L.PROJECT: "someone-else"}


def test_fixed_name_volume_without_labels_is_used(stack: Stack, volume_name: str) -> None:
    """A `name:`d volume made by `docker volume create` (no labels) is used as it is, as Compose does."""
    docker("volume", "create", volume_name)
    stack.write(STACK + f"    name: {volume_name}\n")
    stack.up(owner=OWNER)
    mounts = stack.containers()[f"{stack.name}-web-1"]["Mounts"]
    assert [m["Name"] for m in mounts if m["Destination"] == "/data"] == [volume_name]
    assert not inspect_kind("volume", volume_name).get("Labels")


def test_empty_project_is_refused_and_the_stack_kept(stack: Stack) -> None:
    """`services: {}` fails EmptyProject, saying how many containers are kept and how to allow it."""
    stack.write(STACK)
    stack.up(owner=OWNER)
    before = stack.ids()
    stack.write("services: {}\n")
    with pytest.raises(DeployError) as err:
        stack.up(owner=OWNER)
    assert err.value.reason == "EmptyProject"
    message = str(err.value)
    assert "no services" in message and "1 running container" in message and "allow_empty: true" in message
    assert stack.ids() == before
    assert stack.containers()[f"{stack.name}-web-1"]["State"]["Running"]


def test_empty_project_with_allow_empty_removes_the_stack(stack: Stack) -> None:
    """With allow_empty, `services: {}` removes the running containers as orphans."""
    stack.write(STACK)
    stack.up(owner=OWNER)
    stack.write("services: {}\n")
    stack.up(owner=OWNER, allow_empty=True)
    assert stack.containers() == {}
