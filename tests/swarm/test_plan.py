"""Desired stack vs live services and tasks (pure, with Engine API dicts): changes, drifts and health."""

from __future__ import annotations

import copy
from typing import Any

from reconciler import labels as L
from reconciler.status import DriftReason, Health
from reconciler.swarm.plan import LiveStack, make_swarm_plan
from reconciler.swarm.translate import labelled, stack_spec

OWNER = "i/app/prod"


def desired(replicas: int = 2, image: str = "app:v1") -> Any:
    m = {
        "services": {"web": {"image": image, "deploy": {"replicas": replicas}}},
        "networks": {"default": {"name": "shop_default"}},
    }
    return labelled(stack_spec("shop", m), {L.OWNER: OWNER, L.MANAGED: "true"})


def live_service(stack: Any, sid: str = "s1", **state: Any) -> dict[str, Any]:
    """The service as Swarm reports it after we created it from ``stack``."""
    spec = copy.deepcopy(dict(stack.services[0].spec))
    return {"ID": sid, "Version": {"Index": 10}, "Spec": spec, **state}


def task(
    stack: Any, state: str = "running", desired_state: str = "running", err: str = "", ts: str = "1"
) -> dict:
    container = copy.deepcopy(stack.services[0].spec["TaskTemplate"]["ContainerSpec"])
    status = {"State": state, "Timestamp": ts, **({"Err": err} if err else {})}
    return {
        "ServiceID": "s1",
        "DesiredState": desired_state,
        "Status": status,
        "Spec": {"ContainerSpec": container},
    }


def test_missing_service_is_created() -> None:
    plan = make_swarm_plan(desired(), LiveStack("shop"), OWNER)
    assert [(c.action, c.container, c.reasons) for c in plan.changes] == [
        ("create", "shop_web", (DriftReason.MISSING,))
    ]
    assert plan.health is Health.MISSING and not plan.is_noop


def test_converged_stack_is_a_noop_and_healthy() -> None:
    stack = desired()
    live = LiveStack("shop", (live_service(stack),), (task(stack), task(stack)))
    plan = make_swarm_plan(stack, live, OWNER)
    assert plan.is_noop and plan.drifts() == () and plan.health is Health.HEALTHY


def test_scaled_by_hand_is_a_config_drift_with_the_counts() -> None:
    stack = desired()
    svc = live_service(stack)
    svc["Spec"]["Mode"] = {"Replicated": {"Replicas": 3}}
    live = LiveStack("shop", (svc,), (task(stack), task(stack), task(stack)))
    plan = make_swarm_plan(stack, live, OWNER)
    assert [(d.service, d.reason, d.detail) for d in plan.drifts()] == [
        ("web", DriftReason.CONFIG, "replicas 3, want 2")
    ]
    assert plan.changes[0].action == "update"


def test_image_changed_by_hand_or_by_a_push_is_an_image_drift() -> None:
    live = LiveStack("shop", (live_service(desired()),), ())
    plan = make_swarm_plan(desired(image="app:v2"), live, OWNER)
    assert plan.drifts()[0].reason is DriftReason.IMAGE
    assert "want 'app:v2'" in plan.drifts()[0].detail


def test_tasks_not_running_are_reported_with_the_count_and_error() -> None:
    stack = desired()
    tasks = (task(stack), task(stack, "failed", "shutdown", "task: non-zero exit (1)", ts="2"))
    plan = make_swarm_plan(stack, LiveStack("shop", (live_service(stack),), tasks), OWNER)
    assert plan.is_noop  # Swarm restarts tasks itself: nothing for up to change
    (drift,) = plan.drifts()
    assert drift.reason is DriftReason.UNHEALTHY and drift.reason.reported_only
    assert drift.detail == "1/2 tasks running; last task error: task: non-zero exit (1)"
    assert plan.health is Health.DEGRADED


def test_update_in_progress_is_progressing_and_a_paused_one_degraded() -> None:
    stack = desired()
    updating = live_service(stack, UpdateStatus={"State": "updating"})
    plan = make_swarm_plan(
        stack, LiveStack("shop", (updating,), (task(stack), task(stack, "starting"))), OWNER
    )
    assert plan.health is Health.PROGRESSING
    paused = live_service(stack, UpdateStatus={"State": "paused", "Message": "update paused due to failure"})
    plan = make_swarm_plan(stack, LiveStack("shop", (paused,), (task(stack), task(stack))), OWNER)
    assert plan.health is Health.DEGRADED
    assert plan.drifts()[0].detail == "update paused: update paused due to failure"


def test_orphans_are_removed_only_when_ours_and_foreign_services_reported() -> None:
    stack = desired()
    orphan = live_service(stack, sid="s2")
    orphan["Spec"]["Name"] = "shop_old"
    foreign = live_service(stack, sid="s3")
    foreign["Spec"]["Name"] = "shop_theirs"
    foreign["Spec"]["Labels"][L.OWNER] = "someone/else/prod"
    live = LiveStack("shop", (live_service(stack), orphan, foreign), (task(stack), task(stack)))
    plan = make_swarm_plan(stack, live, OWNER)
    assert [(c.action, c.container) for c in plan.changes] == [("remove", "shop_old")]
    assert [(d.service, d.reason) for d in plan.reported] == [("theirs", DriftReason.FOREIGN)]


def test_a_rolled_back_service_still_differs_from_the_failed_revision() -> None:
    """After a rollback by Swarm the live spec is the previous one: the failed revision is still a change."""
    old, new = desired(image="app:v1"), desired(image="app:bad")
    live = LiveStack(
        "shop", (live_service(old, UpdateStatus={"State": "rollback_completed"}),), (task(old), task(old))
    )
    plan = make_swarm_plan(new, live, OWNER)
    assert [c.action for c in plan.changes] == ["update"]
    assert make_swarm_plan(old, live, OWNER).is_noop
