"""Compose model -> Swarm service specs (pure): names and labels as `docker stack deploy` makes them,
deploy settings, configs named by content, and the keys refused with the service and key named."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler import labels as L
from reconciler.errors import UnsupportedError
from reconciler.spec.service import SUPPORTED_KEYS
from reconciler.swarm import keys
from reconciler.swarm.translate import check_stack, labelled, stack_spec


def model(**services: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "shop",
        "services": {k: {"networks": {"default": None}, **v} for k, v in services.items()},
        "networks": {"default": {"name": "shop_default"}},
    }


def test_names_labels_and_deploy_settings() -> None:
    m = model(
        web={
            "image": "nginx:1",
            "command": ["nginx", "-g", "daemon off;"],
            "environment": {"B": "2", "A": "1"},
            "ports": [{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}],
            "healthcheck": {"test": "curl -f localhost", "interval": "2s", "retries": 3},
            "deploy": {
                "mode": "replicated",
                "replicas": 3,
                "update_config": {"parallelism": 2, "delay": "1s", "order": "start-first", "monitor": "3s"},
                "restart_policy": {"condition": "on-failure", "max_attempts": 2},
                "placement": {
                    "constraints": ["node.role==worker"],
                    "preferences": [{"spread": "node.labels.az"}],
                },
                "resources": {"limits": {"cpus": 0.5, "memory": "64m"}, "reservations": {"memory": "32m"}},
            },
        }
    )
    stack = stack_spec("shop", m)
    web = stack.service("web")
    assert web is not None and web.name == "shop_web" and web.replicas == 3
    spec = web.spec
    assert spec["Labels"][L.STACK_NAMESPACE] == "shop"
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Args"] == ["nginx", "-g", "daemon off;"]
    assert container["Env"] == ["A=1", "B=2"]
    assert container["Healthcheck"] == {
        "Test": ["CMD-SHELL", "curl -f localhost"],
        "Interval": 2 * 10**9,
        "Retries": 3,
    }
    assert container["Labels"][L.STACK_NAMESPACE] == "shop"
    assert spec["Mode"] == {"Replicated": {"Replicas": 3}}
    assert spec["UpdateConfig"] == {
        "Parallelism": 2,
        "Delay": 10**9,
        "FailureAction": "rollback",  # not set in the file: a GitOps daemon never leaves a paused update
        "Monitor": 3 * 10**9,
        "MaxFailureRatio": 0.0,
        "Order": "start-first",
    }
    task = spec["TaskTemplate"]
    assert task["RestartPolicy"] == {"Condition": "on-failure", "MaxAttempts": 2}
    assert task["Placement"] == {
        "Constraints": ["node.role==worker"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.az"}}],
    }
    assert task["Resources"] == {
        "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 64 * 2**20},
        "Reservations": {"MemoryBytes": 32 * 2**20},
    }
    assert task["Networks"] == [{"Target": "shop_default", "Aliases": ["web"]}]
    assert spec["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 80, "PublishMode": "ingress", "PublishedPort": 8080}
    ]
    assert [n.name for n in stack.networks] == ["shop_default"]
    assert stack.networks[0].driver == "overlay"


def test_failure_action_set_in_the_file_is_honoured_and_global_mode() -> None:
    m = model(
        agent={"image": "a", "deploy": {"mode": "global", "update_config": {"failure_action": "pause"}}}
    )
    agent = stack_spec("shop", m).service("agent")
    assert agent is not None and agent.global_mode
    assert agent.spec["Mode"] == {"Global": {}}
    assert agent.spec["UpdateConfig"]["FailureAction"] == "pause"


def test_our_labels_are_in_no_hash_and_the_checkout_stays_off_the_tasks() -> None:
    m = model(web={"image": "a", "volumes": [{"type": "volume", "source": "data", "target": "/d"}]})
    m["volumes"] = {"data": {"name": "shop_data"}}
    plain = stack_spec("shop", m)
    ours = labelled(plain, {L.OWNER: "i/app/prod", L.CHECKOUT: "tree-9", L.MANAGED: "true"})
    web, plain_web = ours.services[0], plain.services[0]
    assert (web.spec_hash, web.task_hash) == (plain_web.spec_hash, plain_web.task_hash)
    assert web.spec["Labels"][L.CHECKOUT] == "tree-9"
    container = web.spec["TaskTemplate"]["ContainerSpec"]
    assert L.CHECKOUT not in container["Labels"] and container["Labels"][L.OWNER] == "i/app/prod"
    volume_labels = container["Mounts"][0]["VolumeOptions"]["Labels"]
    assert volume_labels[L.OWNER] == "i/app/prod" and volume_labels[L.STACK_NAMESPACE] == "shop"
    assert ours.networks[0].labels[L.OWNER] == "i/app/prod"


def test_configs_and_secrets_are_named_by_their_content() -> None:
    m = model(
        web={
            "image": "a",
            "configs": [{"source": "conf"}],
            "secrets": [{"source": "tok", "target": "/run/secrets/tok"}],
        }
    )
    m["configs"] = {"conf": {"name": "shop_conf", "file": "/repo/app.conf"}}
    m["secrets"] = {"tok": {"name": "shop_tok", "environment": "TOKEN"}}
    one = stack_spec("shop", m, files={"configs.conf": b"one"}, environment={"TOKEN": "s3cret"})
    two = stack_spec("shop", m, files={"configs.conf": b"two"}, environment={"TOKEN": "s3cret"})
    names_one = {d.key: d.name for d in one.data}
    names_two = {d.key: d.name for d in two.data}
    assert names_one["conf"].startswith("shop_conf-") and names_one["conf"] != names_two["conf"]
    assert names_one["tok"] == names_two["tok"]
    assert one.service("web").task_hash != two.service("web").task_hash  # type: ignore[union-attr]
    container = one.services[0].spec["TaskTemplate"]["ContainerSpec"]
    assert container["Configs"][0]["File"]["Name"] == "/conf"  # as docker stack deploy: /<source>
    assert container["Secrets"][0]["File"]["Name"] == "tok"
    assert container["Secrets"][0]["SecretName"] == names_one["tok"]
    assert "s3cret" not in repr(one)


@pytest.mark.parametrize(
    ("service", "key"),
    [
        ({"image": "a", "container_name": "x"}, "container_name"),
        ({"image": "a", "network_mode": "host"}, "network_mode"),
        ({"build": {"context": "."}}, "build"),
        ({"image": "a", "privileged": True}, "privileged"),
        ({"image": "a", "mem_limit": "1g"}, "mem_limit"),
        ({"image": "a", "depends_on": {"db": {"condition": "service_healthy"}}}, "depends_on"),
        ({"image": "a", "deploy": {"mode": "replicated-job"}}, "deploy.mode"),
        (
            {"image": "a", "deploy": {"update_config": {"failure_action": "explode"}}},
            "deploy.update_config.failure_action",
        ),
        ({"image": "a", "ports": [{"target": 80, "published": "80", "host_ip": "127.0.0.1"}]}, "ports"),
    ],
)
def test_keys_swarm_cannot_honour_are_refused_naming_service_and_key(
    service: dict[str, Any], key: str
) -> None:
    with pytest.raises(UnsupportedError) as caught:
        check_stack("shop", model(web=service), {})
    assert caught.value.location.service == "web"
    assert caught.value.location.key == key
    assert "backend: swarm" in str(caught.value)


def test_ignored_keys_are_listed_not_refused() -> None:
    m = model(
        web={
            "image": "a",
            "build": {"context": "."},
            "restart": "always",
            "depends_on": {"db": {"condition": "service_started"}},
        }
    )
    web = stack_spec("shop", m).service("web")
    assert web is not None and web.ignored == ("build", "depends_on", "restart")


def test_every_compose_key_is_honoured_ignored_or_refused() -> None:
    """No key falls through: the docs' three tables cover every service key the compose backend knows."""
    known = set(keys.HONOURED) | set(keys.IGNORED) | set(keys.REFUSED)
    assert set(SUPPORTED_KEYS) <= known
    assert not set(keys.HONOURED) & set(keys.REFUSED)
    assert not set(keys.IGNORED) & set(keys.REFUSED)
