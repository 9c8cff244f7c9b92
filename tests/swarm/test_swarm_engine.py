"""backend: swarm against a real single-node Swarm (test engine 3): deploy, rolling updates, Swarm's own
rollback reported as a failed deploy, configs rotated by content, drift from a hand-run scale, and down's
safety rules."""

from __future__ import annotations

import pytest

from reconciler import labels as L
from reconciler.errors import DeployError
from reconciler.status import DriftReason, Health
from reconciler.swarm.converge import SwarmConverger
from tests.swarm.conftest import APP, OWNER, Stack, app, poll

LABELS = {L.MANAGED: "true", L.APP: "app", L.ENVIRONMENT: "production", L.CHECKOUT: "tree-1"}


def _services(converger: SwarmConverger, project: str) -> dict[str, dict]:
    found = converger.engine.list_services({L.STACK_NAMESPACE: project})
    return {s["Spec"]["Name"]: s for s in found}


def _running(converger: SwarmConverger, service_id: str) -> list[dict]:
    return [
        t
        for t in converger.engine.list_tasks([service_id])
        if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
    ]


def _image(svc: dict) -> str:
    return str(svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]).split("@")[0]


def test_two_replicas_deployed_with_stack_labels(converger: SwarmConverger, stack: Stack) -> None:
    project = stack.write({"services": {"web": app()}})
    plan = converger.up(project, timeout=90, labels=LABELS, owner=OWNER)
    assert [(c.action, c.container) for c in plan.changes] == [("create", f"{stack.name}_web")]
    svc = _services(converger, stack.name)[f"{stack.name}_web"]
    labels = svc["Spec"]["Labels"]
    assert labels[L.STACK_NAMESPACE] == stack.name and labels[L.OWNER] == OWNER
    assert labels[L.CHECKOUT] == "tree-1"
    assert len(_running(converger, svc["ID"])) == 2
    net = converger.engine.inspect_network(f"{stack.name}_default")
    assert net is not None and net["Driver"] == "overlay" and net["Labels"][L.STACK_NAMESPACE] == stack.name
    again = converger.plan(project, owner=OWNER)
    assert again.is_noop and not again.drifts() and again.health is Health.HEALTHY
    # A new checkout alone (another commit, same services) changes no task.
    same = converger.up(project, timeout=30, labels={**LABELS, L.CHECKOUT: "tree-2"}, owner=OWNER)
    assert same.is_noop


def test_start_first_rolling_update(converger: SwarmConverger, stack: Stack) -> None:
    converger.up(stack.write({"services": {"web": app()}}), timeout=90, labels=LABELS, owner=OWNER)
    before = _services(converger, stack.name)[f"{stack.name}_web"]
    plan = converger.up(
        stack.write({"services": {"web": app(f"{APP}:v2")}}), timeout=90, labels=LABELS, owner=OWNER
    )
    assert [(c.action, c.reasons) for c in plan.changes] == [("update", (DriftReason.IMAGE,))]
    after = _services(converger, stack.name)[f"{stack.name}_web"]
    assert after["ID"] == before["ID"]
    assert _image(after) == f"{APP}:v2"
    assert after["Spec"]["UpdateConfig"]["Order"] == "start-first"
    assert after["UpdateStatus"]["State"] == "completed"
    running = _running(converger, after["ID"])
    assert len(running) == 2
    assert {t["Spec"]["ContainerSpec"]["Image"].split("@")[0] for t in running} == {f"{APP}:v2"}


def test_failed_update_is_rolled_back_by_swarm_and_reported(converger: SwarmConverger, stack: Stack) -> None:
    converger.up(stack.write({"services": {"web": app()}}), timeout=90, labels=LABELS, owner=OWNER)
    bad = stack.write({"services": {"web": app(f"{APP}:bad")}})
    with pytest.raises(DeployError) as caught:
        converger.up(bad, timeout=120, labels=LABELS, owner=OWNER)
    assert caught.value.reason == "RolledBack", str(caught.value)
    assert caught.value.service == "web"
    assert "rolled the update back" in str(caught.value)
    svc = _services(converger, stack.name)[f"{stack.name}_web"]
    assert _image(svc) == f"{APP}:v1"
    assert svc["UpdateStatus"]["State"] == "rollback_completed"
    poll(lambda: len(_running(converger, svc["ID"])) == 2)
    # The failed revision is still what the config asks for: the plan says so.
    plan = converger.plan(bad, owner=OWNER)
    assert [d.reason for d in plan.drifts() if d.service == "web"][:1] == [DriftReason.IMAGE]


def test_config_rotated_by_content(converger: SwarmConverger, stack: Stack) -> None:
    compose = {
        "services": {"web": app(configs=[{"source": "conf", "target": "/etc/app.conf"}])},
        "configs": {"conf": {"file": "./app.conf"}},
    }
    converger.up(stack.write(compose, {"app.conf": "one\n"}), timeout=90, labels=LABELS, owner=OWNER)

    def config_names() -> set[str]:
        found = converger.engine.list_data("config", {L.STACK_NAMESPACE: stack.name})
        return {c["Spec"]["Name"] for c in found}

    first = config_names()
    assert len(first) == 1 and next(iter(first)).startswith(f"{stack.name}_conf-")
    plan = converger.up(stack.write(compose, {"app.conf": "two\n"}), timeout=90, labels=LABELS, owner=OWNER)
    assert [c.action for c in plan.changes] == ["update"]
    second = config_names()
    assert len(second) == 1 and second != first  # the old one is removed once no service uses it
    svc = _services(converger, stack.name)[f"{stack.name}_web"]
    refs = svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    assert [r["ConfigName"] for r in refs] == list(second)
    assert refs[0]["File"]["Name"] == "/etc/app.conf"


def test_scaled_by_hand_is_drift_and_up_restores(
    converger: SwarmConverger, stack: Stack, swarm_client
) -> None:
    project = stack.write({"services": {"web": app()}})
    converger.up(project, timeout=90, labels=LABELS, owner=OWNER)
    svc = _services(converger, stack.name)[f"{stack.name}_web"]
    spec = svc["Spec"]
    spec["Mode"] = {"Replicated": {"Replicas": 3}}  # what `docker service scale web=3` sends
    swarm_client.update_service(svc["ID"], svc["Version"]["Index"], **_update_kwargs(spec))
    poll(lambda: len(_running(converger, svc["ID"])) == 3)
    plan = converger.plan(project, owner=OWNER)
    drifts = plan.drifts()
    assert drifts and drifts[0].reason is DriftReason.CONFIG and "replicas 3, want 2" in drifts[0].detail
    converger.up(project, timeout=90, labels=LABELS, owner=OWNER)
    poll(lambda: len(_running(converger, svc["ID"])) == 2)
    assert converger.plan(project, owner=OWNER).is_noop


def _update_kwargs(spec: dict) -> dict:
    return {
        "task_template": spec["TaskTemplate"],
        "name": spec["Name"],
        "labels": spec["Labels"],
        "mode": spec["Mode"],
        "update_config": spec.get("UpdateConfig"),
        "rollback_config": spec.get("RollbackConfig"),
        "endpoint_spec": spec.get("EndpointSpec"),
    }


def test_down_keeps_volumes_and_foreign_services(
    converger: SwarmConverger, stack: Stack, swarm_client
) -> None:
    compose = {
        "services": {"db": app(volumes=["data:/data"], deploy={"replicas": 1})},
        "volumes": {"data": {}},
    }
    converger.up(stack.write(compose), timeout=90, labels=LABELS, owner=OWNER)
    poll(lambda: converger.volume_names(stack.name))
    volume = f"{stack.name}_data"
    assert converger.volume_names(stack.name) == [volume]
    vol = converger.engine.inspect_volume(volume)
    assert vol is not None and vol["Labels"][L.OWNER] == OWNER
    # Someone else's service in the same stack namespace (another instance, or a hand-run stack deploy).
    foreign = swarm_client.create_service(
        {"ContainerSpec": {"Image": f"{APP}:v1"}},
        name=f"{stack.name}_other",
        labels={L.STACK_NAMESPACE: stack.name, L.OWNER: "someone-else/app/production"},
    )
    # Our deploy refuses to touch a stack with another owner's service in it.
    with pytest.raises(DeployError) as caught:
        converger.up(stack.write(compose), timeout=30, labels=LABELS, owner=OWNER)
    assert caught.value.reason == "NotOwner"
    converger.down(stack.name, volumes=False, owner=OWNER)
    left = _services(converger, stack.name)
    assert list(left) == [f"{stack.name}_other"] and left[f"{stack.name}_other"]["ID"] == foreign["ID"]
    assert converger.volume_names(stack.name) == [volume]  # a persistent environment keeps its data
    swarm_client.remove_service(foreign["ID"])


def test_empty_project_never_removes_a_stack(converger: SwarmConverger, stack: Stack) -> None:
    converger.up(
        stack.write({"services": {"web": app(deploy={"replicas": 1})}}),
        timeout=90,
        labels=LABELS,
        owner=OWNER,
    )
    with pytest.raises(DeployError) as caught:
        converger.up(stack.write({"services": {}}), timeout=30, labels=LABELS, owner=OWNER)
    assert caught.value.reason == "EmptyProject"
    assert list(_services(converger, stack.name)) == [f"{stack.name}_web"]


def test_a_compose_stack_of_the_same_project_stops_the_deploy(
    converger: SwarmConverger, stack: Stack, swarm_client
) -> None:
    """Switching backend: compose -> swarm moves nothing by itself: a running compose stack is reported."""
    container = swarm_client.create_container(
        f"{APP}:v1", name=f"{stack.name}-web-1", labels={L.PROJECT: stack.name, L.SERVICE: "web"}
    )
    try:
        with pytest.raises(DeployError) as caught:
            converger.up(stack.write({"services": {"web": app()}}), timeout=30, labels=LABELS, owner=OWNER)
        assert caught.value.reason == "ComposeStackRunning"
        assert f"{stack.name}-web-1" in str(caught.value)
        assert _services(converger, stack.name) == {}
    finally:
        swarm_client.remove_container(container["Id"], force=True)
