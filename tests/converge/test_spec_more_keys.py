"""Normalizing deploy.mode/restart_policy/reservations, cgroup and platform, and noting Swarm-only keys."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler.spec import container_request, project_spec
from tests.converge.test_spec import MODEL, rendered, with_web


def _web(**changes: Any) -> Any:
    spec = project_spec(with_web(**changes))
    web = spec.service("web")
    assert web is not None
    return spec, web


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"condition": "none"}, {"Name": "", "MaximumRetryCount": 0}),
        ({"condition": "on-failure", "max_attempts": 5}, {"Name": "on-failure", "MaximumRetryCount": 5}),
        ({"condition": "on-failure"}, {"Name": "on-failure", "MaximumRetryCount": 0}),
        ({"condition": "any", "delay": "5s"}, {"Name": "always", "MaximumRetryCount": 0}),
    ],
)
def test_restart_policy_wins_over_restart(policy: dict[str, Any], expected: dict[str, Any]) -> None:
    """deploy.restart_policy becomes the container's restart policy, over `restart` as in Compose."""
    spec, web = _web(deploy={"restart_policy": policy})  # the model's web has restart: on-failure:3
    body = container_request(spec, web, 1, image_id="sha256:x").body
    assert body["HostConfig"]["RestartPolicy"] == expected
    assert web.restart == (expected["Name"] or "no") + (
        f":{policy['max_attempts']}" if "max_attempts" in policy else ""
    )


def test_swarm_only_keys_are_noted_and_not_hashed() -> None:
    """deploy.mode: replicated, labels, placement, rollback and update pacing change neither the hash nor
    the container; all but the mode are listed as ignored."""
    _, plain = _web()
    deploy = {
        "mode": "replicated",
        "labels": {"a": "b"},
        "placement": {"constraints": ["node.role==manager"]},
        "update_config": {"parallelism": 2, "order": "stop-first"},
        "rollback_config": {"parallelism": 1},
        "resources": {"reservations": {"cpus": 0.5}},
    }
    _, web = _web(deploy=deploy)
    assert web.config_hash == plain.config_hash
    assert set(web.ignored) == {
        "deploy.labels",
        "deploy.placement",
        "deploy.update_config.parallelism",
        "deploy.rollback_config",
        "deploy.resources.reservations.cpus",
    }
    assert plain.ignored == ()


def test_cgroup_platform_and_reservations_reach_the_request() -> None:
    """cgroup, platform and reserved memory/devices are hashed and land in the create request."""
    _, plain = _web()
    devices = [{"capabilities": ["gpu"]}, {"capabilities": ["gpu"], "device_ids": ["1"], "driver": "nvidia"}]
    spec, web = _web(
        cgroup="host",
        platform="linux/arm64",
        mem_reservation="1000",
        deploy={"resources": {"reservations": {"memory": "2048", "devices": devices}}},
    )
    assert web.config_hash != plain.config_hash
    req = container_request(spec, web, 1, image_id="sha256:x")
    host = req.body["HostConfig"]
    assert (req.platform, web.platform) == ("linux/arm64", "linux/arm64")
    assert (host["CgroupnsMode"], host["MemoryReservation"]) == ("host", 2048)  # deploy wins, as in Compose
    assert host["DeviceRequests"] == [
        {"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": None},
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["1"], "Capabilities": [["gpu"]], "Options": None},
    ]


def test_links_volumes_from_and_selinux_in_the_request() -> None:
    """links go on the endpoint per linked replica, volumes_from names replica 1 (or the container), and
    `:z` on a named volume becomes a Binds entry."""
    model = copy.deepcopy(MODEL)
    model["services"]["db"]["deploy"] = {"replicas": 2}
    model["services"]["cache"] = {"image": "x", "container_name": "the-cache", "networks": {"default": None}}
    web_model = model["services"]["web"]
    web_model.update(
        networks={"default": None},
        links=["db", "cache:kv"],
        volumes_from=["db:ro", "container:other:rw", "cache"],
        volumes=[{"type": "volume", "source": "data", "target": "/data", "bind": {"selinux": "z"}}],
    )
    spec = project_spec(rendered(model))
    web = spec.service("web")
    assert web is not None
    req = container_request(spec, web, 2, image_id="sha256:x")
    host = req.body["HostConfig"]
    assert host["VolumesFrom"] == ["shop-db-1:ro", "other:rw", "the-cache"]
    assert host["Binds"] == ["shop_data:/data:rw,z"]
    assert req.body["NetworkingConfig"]["EndpointsConfig"]["shop_default"]["Links"] == [
        "shop-db-1:db", "shop-db-1:db-2", "shop-db-1:shop-db-2",
        "shop-db-2:db", "shop-db-2:db-2", "shop-db-2:shop-db-2",
        "the-cache:kv", "the-cache:cache-2", "the-cache:shop-cache-2",
    ]  # fmt: skip
