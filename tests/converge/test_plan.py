"""Pairing desired services with live containers: every action, drift reason and health state."""

from __future__ import annotations

import copy
from typing import Any

from reconciler import labels as L
from reconciler.plan import Action, LiveProject, health, make_plan, parse_containers
from reconciler.spec import ProjectSpec, container_request, project_spec
from reconciler.status import DriftReason, Health
from tests.converge.helpers import Rendered

IMAGE = "sha256:" + "1" * 64
MODEL: dict[str, Any] = {
    "name": "app",
    "services": {
        "db": {
            "image": "db:1",
            "healthcheck": {"test": ["CMD", "true"], "interval": "1s"},
            "restart": "always",
            "networks": {"default": None},
        },
        "migrate": {
            "image": "db:1",
            "command": ["migrate"],
            "depends_on": {"db": {"condition": "service_healthy", "required": True}},
            "networks": {"default": None},
        },
        "web": {
            "image": "web:1",
            "environment": {"A": "1"},
            "restart": "always",
            "scale": 2,
            "depends_on": {"migrate": {"condition": "service_completed_successfully", "required": True}},
            "networks": {"default": None},
        },
        "cron": {"image": "web:1", "command": ["once"], "networks": {"default": None}},
    },
    "networks": {"default": {"name": "app_default"}},
}


def spec_of(model: dict[str, Any] | None = None) -> ProjectSpec:
    return project_spec(Rendered("app", "/src", ("/src/compose.yaml",), copy.deepcopy(model or MODEL)))


def summary(spec: ProjectSpec, service: str, number: int = 1, **over: Any) -> dict[str, Any]:
    """A `GET /containers/json` entry for the container `up` would create, with ``over`` applied."""
    svc = spec.service(service)
    assert svc is not None
    req = container_request(spec, svc, number, image_id=IMAGE)
    entry = {
        "Id": f"{service}{number}".ljust(64, "0"),
        "Names": [f"/{req.name}"],
        "Labels": dict(req.body["Labels"]),
        "State": "running",
        "Status": "Up 3 minutes (healthy)" if service == "db" else "Up 3 minutes",
        "ImageID": IMAGE,
        "Created": 1000,
    }
    if service in ("migrate", "cron"):
        entry.update(State="exited", Status="Exited (0) 2 minutes ago")
    entry.update(over)
    return entry


def converged(spec: ProjectSpec) -> list[dict[str, Any]]:
    return [
        summary(spec, "db"),
        summary(spec, "migrate"),
        summary(spec, "web", 1),
        summary(spec, "web", 2),
        summary(spec, "cron"),
    ]


def live(entries: list[dict[str, Any]]) -> LiveProject:
    return parse_containers(entries).get("app", LiveProject("app"))


def ids(spec: ProjectSpec) -> dict[str, str | None]:
    return {"db:1": IMAGE, "web:1": IMAGE}


def test_nothing_running_creates_everything_in_dependency_order() -> None:
    """With no containers, every replica is created, dependencies first, and health is Missing."""
    spec = spec_of()
    plan = make_plan(spec, None, {})
    assert [(c.action, c.container) for c in plan.changes] == [
        (Action.CREATE, "app-cron-1"),
        (Action.CREATE, "app-db-1"),
        (Action.CREATE, "app-migrate-1"),
        (Action.CREATE, "app-web-1"),
        (Action.CREATE, "app-web-2"),
    ]
    assert plan.health is Health.MISSING
    assert {d.reason for d in plan.drifts()} == {DriftReason.MISSING}


def test_converged_project_is_a_noop_and_healthy() -> None:
    """Containers created from the spec, one-shots exited 0, pair up with nothing to do."""
    spec = spec_of()
    plan = make_plan(spec, live(converged(spec)), ids(spec))
    assert plan.is_noop and plan.drifts() == ()
    assert plan.health is Health.HEALTHY


def test_changed_service_is_recreated_naming_the_fields() -> None:
    """A config change recreates only that service's containers and says which keys changed."""
    spec = spec_of()
    model = copy.deepcopy(MODEL)
    model["services"]["web"]["environment"] = {"A": "2"}
    model["services"]["web"]["command"] = ["serve"]
    plan = make_plan(spec_of(model), live(converged(spec)), ids(spec))
    assert [(c.action, c.container) for c in plan.changes] == [
        (Action.RECREATE, "app-web-1"),
        (Action.RECREATE, "app-web-2"),
    ]
    change = plan.changes[0]
    assert change.reasons == (DriftReason.CONFIG,)
    assert change.fields == ("command", "environment")
    assert "command, environment" in change.details


def test_container_without_our_hash_label_is_recreated() -> None:
    """A container re-run by hand without the config-hash label counts as config drift."""
    spec = spec_of()
    entries = converged(spec)
    del entries[2]["Labels"][L.CONFIG_HASH]
    plan = make_plan(spec, live(entries), ids(spec))
    assert [(c.action, c.reasons) for c in plan.changes] == [(Action.RECREATE, (DriftReason.CONFIG,))]
    assert "by hand" in plan.changes[0].details


def test_image_moved_under_same_tag_is_recreated() -> None:
    """A tag that now resolves to another image ID recreates the containers using it."""
    spec = spec_of()
    newer = "sha256:" + "2" * 64
    plan = make_plan(spec, live(converged(spec)), {"db:1": IMAGE, "web:1": newer})
    assert {(c.action, c.service) for c in plan.changes} == {
        (Action.RECREATE, "web"),
        (Action.RECREATE, "cron"),
    }
    assert all(c.reasons == (DriftReason.IMAGE,) for c in plan.changes)
    assert "111111111111 -> 222222222222" in plan.changes[0].details


def test_unknown_image_id_is_not_drift() -> None:
    """When the tag cannot be resolved (not pulled yet), the image is not reported as drift."""
    spec = spec_of()
    assert make_plan(spec, live(converged(spec)), {}).is_noop


def test_stopped_containers_are_started_except_completed_one_shots() -> None:
    """Exited services are started; a one-shot that exited 0 is done, one that failed runs again."""
    spec = spec_of()
    entries = converged(spec)
    entries[2].update(State="exited", Status="Exited (137) 5 seconds ago")  # web-1, stopped by hand
    entries[1].update(State="exited", Status="Exited (0) 5 seconds ago")  # migrate: completed
    entries[4].update(State="exited", Status="Exited (1) 5 seconds ago")  # cron, restart no: failed
    plan = make_plan(spec, live(entries), ids(spec))
    assert [(c.action, c.container, c.details) for c in plan.changes] == [
        (Action.START, "app-cron-1", "stopped (exit code 1)"),
        (Action.START, "app-web-1", "stopped (exit code 137)"),
    ]
    assert plan.health is Health.DEGRADED


def test_service_with_restart_policy_that_exited_zero_is_stopped() -> None:
    """Exit 0 of a service that should keep running (restart: always) is a stop, not a completion."""
    spec = spec_of()
    entries = converged(spec)
    entries[0].update(State="exited", Status="Exited (0) 1 second ago")  # db
    plan = make_plan(spec, live(entries), ids(spec))
    assert [(c.action, c.service) for c in plan.changes] == [(Action.START, "db")]


def test_orphans_surplus_replicas_and_duplicates_are_removed_first() -> None:
    """Containers of removed services, beyond the scale, or duplicating a replica are removed, first."""
    spec = spec_of()
    old = copy.deepcopy(MODEL)
    old["services"]["legacy"] = {"image": "web:1", "networks": {"default": None}}
    old_spec = spec_of(old)
    dup = summary(spec, "db", Id="d" * 64, Names=["/abc_app-db-1"], Created=900)
    entries = [*converged(spec), summary(spec, "web", 3), summary(old_spec, "legacy"), dup]
    plan = make_plan(spec, live(entries), ids(spec))
    assert [(c.action, c.container, c.details) for c in plan.changes] == [
        (Action.REMOVE, "app-legacy-1", "service 'legacy' is not in the config"),
        (Action.REMOVE, "abc_app-db-1", "duplicate of replica 1"),
        (Action.REMOVE, "app-web-3", "replica 3 is beyond scale 2"),
    ]
    assert {d.reason for d in plan.drifts()} == {DriftReason.ORPHAN}


def test_scale_to_zero_removes_all_replicas() -> None:
    """deploy.replicas: 0 removes every container of the service."""
    spec = spec_of()
    model = copy.deepcopy(MODEL)
    model["services"]["web"]["scale"] = 0
    plan = make_plan(spec_of(model), live(converged(spec)), ids(spec))
    assert [(c.action, c.container) for c in plan.changes] == [
        (Action.REMOVE, "app-web-1"),
        (Action.REMOVE, "app-web-2"),
    ]


def test_unhealthy_and_restarting_are_drift_without_changes() -> None:
    """An unhealthy or crash-looping container is reported as drift, but recreating would not fix it."""
    spec = spec_of()
    entries = converged(spec)
    entries[0].update(Status="Up 2 minutes (unhealthy)")
    entries[2].update(State="restarting", Status="Restarting (3) 1 second ago")
    plan = make_plan(spec, live(entries), ids(spec))
    assert plan.is_noop
    assert [(d.service, d.reason) for d in plan.drifts()] == [
        ("db", DriftReason.UNHEALTHY),
        ("web", DriftReason.UNHEALTHY),
    ]
    assert "exit code 3" in plan.drifts()[1].detail
    assert plan.health is Health.DEGRADED


def test_health_progressing_while_starting() -> None:
    """A healthcheck still starting, or a container only created, makes the project Progressing."""
    spec = spec_of()
    entries = converged(spec)
    entries[0].update(Status="Up 1 second (health: starting)")
    assert health(live(entries), spec) is Health.PROGRESSING
    entries[0].update(Status="Up 1 second (healthy)")
    entries[3].update(State="created", Status="Created")
    assert health(live(entries), spec) is Health.PROGRESSING


def test_partly_missing_project_is_degraded() -> None:
    """A project with some services missing is Degraded, not Missing (that means no containers at all)."""
    spec = spec_of()
    assert health(live(converged(spec)[:2]), spec) is Health.DEGRADED


def test_parse_containers_groups_by_project_and_skips_one_offs() -> None:
    """The container list is grouped by project; `compose run` containers are not part of a project."""
    spec = spec_of()
    other = summary(spec, "db", Id="o" * 64)
    other["Labels"] = {**other["Labels"], L.PROJECT: "other"}
    oneoff = summary(spec, "web", 9)
    oneoff["Labels"] = {**oneoff["Labels"], L.ONEOFF: "True"}
    projects = parse_containers([*converged(spec), other, oneoff, {"Id": "x", "Labels": {}}])
    assert sorted(projects) == ["app", "other"]
    assert len(projects["app"].containers) == 5
    db = projects["app"].service("db")[0]
    assert (db.state, db.health, db.number, db.name) == ("running", "healthy", 1, "app-db-1")
    migrate = projects["app"].service("migrate")[0]
    assert (migrate.state, migrate.exit_code) == ("exited", 0)


def test_plan_serializes_to_json_shape() -> None:
    """The JSON form lists changes with their reasons and the drifts."""
    spec = spec_of()
    data = make_plan(spec, live(converged(spec)[:4]), ids(spec)).to_dict()
    assert data["changes"] == [
        {
            "action": "create",
            "service": "cron",
            "number": 1,
            "container": "app-cron-1",
            "reasons": ["missing"],
            "details": "missing",
            "fields": [],
        }
    ]
    assert data["drifts"] == [{"service": "cron", "reason": "missing", "detail": "missing"}]


def test_on_failure_service_that_exited_zero_is_complete() -> None:
    """Docker does not restart an on-failure container after exit 0, so it is done, not stopped."""
    model = copy.deepcopy(MODEL)
    model["services"]["cron"]["restart"] = "on-failure:3"
    spec = spec_of(model)
    assert make_plan(spec, live(converged(spec)), ids(spec)).is_noop
