"""Desired Swarm services vs live services and tasks: the changes `up` makes, the drifts the daemon reports,
and the stack's health judged from its tasks (pure: plain Engine API dicts in, a SwarmPlan out)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reconciler import labels as L
from reconciler.status import Drift, DriftReason, Health
from reconciler.swarm.model import ServiceDef, StackSpec

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Task states on the way to running (Swarm's TaskState order), and the ones a task never leaves.
_STARTING = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)
_FAILED = frozenset({"failed", "rejected", "orphaned"})
# UpdateStatus states that mean the last update did not go through.
UPDATE_FAILED = frozenset({"paused", "rollback_started", "rollback_paused", "rollback_completed"})


class SwarmAction(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REMOVE = "remove"


@dataclass(frozen=True)
class ServiceView:
    service_entry: Mapping[str, Any]

    @property
    def labels(self) -> Mapping[str, str]:
        return dict((self.service_entry.get("Spec") or {}).get("Labels") or {})


@dataclass(frozen=True)
class LiveStack:
    """A stack's services (``GET /services`` entries) and their tasks (``GET /tasks``)."""

    name: str
    services: tuple[Mapping[str, Any], ...] = ()
    tasks: tuple[Mapping[str, Any], ...] = ()

    @property
    def containers(self) -> tuple[ServiceView, ...]:
        """The services, where the daemon reads a live stack's containers: whether anything runs, and the
        checkout tree each one was deployed with (a service's tasks mount the tree of its last update, so
        the checkout sweep keeps every tree a service names)."""
        return tuple(ServiceView(s) for s in self.services)

    def service(self, name: str) -> Mapping[str, Any] | None:
        return next((s for s in self.services if (s.get("Spec") or {}).get("Name") == name), None)

    def tasks_of(self, service: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [t for t in self.tasks if t.get("ServiceID") == service.get("ID")]


@dataclass(frozen=True)
class SwarmChange:
    action: SwarmAction
    service: str  # the compose service (for drifts and the daemon's self-heal)
    container: str  # the Swarm service name, as `reconciler plan` prints it
    reasons: tuple[DriftReason, ...]
    details: str = ""
    service_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "service": self.service,
            "swarm_service": self.container,
            "reasons": [str(r) for r in self.reasons],
            "details": self.details,
        }


@dataclass(frozen=True)
class SwarmPlan:
    """Shaped like ``reconciler.plan.Plan`` where the daemon and `reconciler plan` read it."""

    project: str
    changes: tuple[SwarmChange, ...] = ()
    unhealthy: tuple[Drift, ...] = ()  # tasks not running, a paused or rolled-back update: reported only
    health: Health = Health.MISSING
    reported: tuple[Drift, ...] = ()  # services of the stack another deployment owns

    @property
    def is_noop(self) -> bool:
        return not self.changes

    def for_service(self, service: str) -> tuple[SwarmChange, ...]:
        return tuple(c for c in self.changes if c.service == service)

    def drifts(self) -> tuple[Drift, ...]:
        out = [Drift(c.service, r, c.details) for c in self.changes for r in c.reasons]
        return (*out, *self.unhealthy, *self.reported)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "backend": "swarm",
            "health": str(self.health),
            "changes": [c.to_dict() for c in self.changes],
            "drifts": [
                {"service": d.service, "reason": str(d.reason), "detail": d.detail} for d in self.drifts()
            ],
        }


def owner_of(obj: Mapping[str, Any]) -> str | None:
    labels = (obj.get("Spec") or obj).get("Labels") or {}
    return labels.get(L.OWNER)


def is_ours(obj: Mapping[str, Any], owner: str | None) -> bool:
    """Whether we may change or remove ``obj`` (a service, network, config, secret or volume): it carries
    our owner label, or, without an owner to compare (`reconciler up` by hand), our managed label."""
    labels = (obj.get("Spec") or obj).get("Labels") or {}
    if owner is None:
        return labels.get(L.MANAGED) == "true" or labels.get(L.OWNER) is not None
    return labels.get(L.OWNER) == owner


def make_swarm_plan(stack: StackSpec, live: LiveStack | None, owner: str | None = None) -> SwarmPlan:
    """Compare the desired stack with the live one. Services another deployment owns are reported
    (``foreign``), never changed."""
    live = live or LiveStack(stack.name)
    wanted = {s.name for s in stack.services}
    changes: list[SwarmChange] = []
    unhealthy: list[Drift] = []
    reported: list[Drift] = []
    healths: list[Health] = []
    for svc in live.services:
        name = str((svc.get("Spec") or {}).get("Name") or "")
        if name in wanted:
            continue
        key = name.removeprefix(f"{stack.name}_")
        if not is_ours(svc, owner):
            reported.append(Drift(key, DriftReason.FOREIGN, f"{name} is not ours (owner {owner_of(svc)!r})"))
            continue
        detail = f"service {key!r} is not in the config"
        changes.append(
            SwarmChange(SwarmAction.REMOVE, key, name, (DriftReason.ORPHAN,), detail, str(svc.get("ID")))
        )
    for want in stack.services:
        found = live.service(want.name)
        if found is None:
            changes.append(
                SwarmChange(SwarmAction.CREATE, want.key, want.name, (DriftReason.MISSING,), "missing")
            )
            healths.append(Health.MISSING)
            continue
        svc = found
        if not is_ours(svc, owner):
            reported.append(
                Drift(want.key, DriftReason.FOREIGN, f"{want.name} is not ours (owner {owner_of(svc)!r})")
            )
            continue
        differences = compare(want, svc)
        if differences:
            reasons = tuple(dict.fromkeys(r for r, _ in differences))
            details = "; ".join(d for _, d in differences)
            changes.append(
                SwarmChange(SwarmAction.UPDATE, want.key, want.name, reasons, details, str(svc.get("ID")))
            )
        health, problem = task_health(svc, live.tasks_of(svc))
        healths.append(health)
        if problem:
            unhealthy.append(Drift(want.key, DriftReason.UNHEALTHY, problem))
    if not stack.services:
        health = Health.MISSING if not live.services else Health.PROGRESSING
    elif healths and all(h is Health.MISSING for h in healths):
        health = Health.MISSING
    else:
        health = max(healths or [Health.MISSING], key=list(Health).index)
    return SwarmPlan(stack.name, tuple(changes), tuple(unhealthy), health, tuple(reported))


def compare(want: ServiceDef, svc: Mapping[str, Any]) -> list[tuple[DriftReason, str]]:
    """What differs between the service we want and the live one: our hash labels (what we sent last),
    then the fields people change by hand (`docker service scale/update`), which leave the labels alone."""
    spec = svc.get("Spec") or {}
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    want_container = want.spec["TaskTemplate"]["ContainerSpec"]
    out: list[tuple[DriftReason, str]] = []
    image = _DIGEST.sub("", str(container.get("Image") or ""))
    if image != want.image:
        out.append((DriftReason.IMAGE, f"image {image!r}, want {want.image!r}"))
    live_id = (container.get("Labels") or {}).get(L.IMAGE_ID)
    want_id = want_container["Labels"].get(L.IMAGE_ID)
    if want_id and live_id and live_id != want_id and image == want.image:
        out.append(
            (DriftReason.IMAGE, f"{want.image} now resolves to {want_id[:19]}, tasks run {live_id[:19]}")
        )
    live_replicas = ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas")
    if want.replicas is None:
        if "Global" not in (spec.get("Mode") or {}):
            out.append((DriftReason.CONFIG, "mode replicated, want global"))
    elif live_replicas != want.replicas:
        out.append((DriftReason.CONFIG, f"replicas {live_replicas}, want {want.replicas}"))
    if sorted(container.get("Env") or []) != list(want_container.get("Env") or []):
        out.append((DriftReason.CONFIG, "environment differs"))
    for kind, ref in (("Configs", "ConfigName"), ("Secrets", "SecretName")):
        live_names = sorted(str(r.get(ref)) for r in container.get(kind) or ())
        want_names = sorted(str(r.get(ref)) for r in want_container.get(kind) or ())
        if live_names != want_names:
            out.append(
                (DriftReason.CONFIG, f"{kind.lower()} {', '.join(want_names) or 'none'} (new content)")
            )
    for part in ("UpdateConfig", "RollbackConfig"):
        live_part = spec.get(part) or {}
        for k, v in want.spec[part].items():
            if live_part.get(k, _ZERO.get(k)) != v:
                out.append((DriftReason.CONFIG, f"{part}.{k} {live_part.get(k)!r}, want {v!r}"))
    live_task = (container.get("Labels") or {}).get(L.TASK_HASH)
    live_spec = (spec.get("Labels") or {}).get(L.SPEC_HASH)
    if not out and (live_task != want.task_hash or live_spec != want.spec_hash):
        out.append(
            (DriftReason.CONFIG, "spec changed" if live_spec != want.spec_hash else "task spec changed")
        )
    return out


# The Engine leaves zero values out of a service's spec.
_ZERO: dict[str, Any] = {
    "Parallelism": 0,
    "Delay": 0,
    "Monitor": 0,
    "MaxFailureRatio": 0,
    "Order": "stop-first",
}


def task_health(svc: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]]) -> tuple[Health, str]:
    """The service's health from its tasks, and what is wrong ("" when nothing): running tasks vs desired
    (with the count), a paused or rolled-back update, the newest task error."""
    spec = svc.get("Spec") or {}
    replicated = (spec.get("Mode") or {}).get("Replicated")
    active = [t for t in tasks if t.get("DesiredState") == "running"]
    running = [t for t in active if (t.get("Status") or {}).get("State") == "running"]
    desired = int(replicated.get("Replicas") or 0) if replicated is not None else len(active)
    update = str((svc.get("UpdateStatus") or {}).get("State") or "")
    message = str((svc.get("UpdateStatus") or {}).get("Message") or "")
    if update in ("paused", "rollback_paused"):
        return Health.DEGRADED, f"update {update.replace('_', ' ')}: {message}".rstrip(": ")
    if len(running) >= desired and desired > 0:
        return (Health.PROGRESSING if update in ("updating", "rollback_started") else Health.HEALTHY), ""
    if desired == 0:
        return Health.HEALTHY, ""
    problem = f"{len(running)}/{desired} tasks running"
    error = last_error(tasks)
    if error:
        problem += f"; last task error: {error}"
    starting = any((t.get("Status") or {}).get("State") in _STARTING for t in active)
    if update in ("updating", "rollback_started") or (starting and not error):
        return Health.PROGRESSING, problem
    return Health.DEGRADED, problem


def last_error(tasks: Sequence[Mapping[str, Any]]) -> str:
    """The error of the newest failed task ("" if none)."""
    failed = [t for t in tasks if (t.get("Status") or {}).get("State") in _FAILED]
    if not failed:
        return ""
    newest = max(failed, key=lambda t: str((t.get("Status") or {}).get("Timestamp") or ""))
    status = newest.get("Status") or {}
    return str(status.get("Err") or status.get("Message") or status.get("State"))


def running_current(want: ServiceDef, tasks: Sequence[Mapping[str, Any]]) -> int:
    """Tasks running from the task template we sent (their container labels carry its hash)."""
    count = 0
    for t in tasks:
        if t.get("DesiredState") != "running" or (t.get("Status") or {}).get("State") != "running":
            continue
        labels = (((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels")) or {}
        count += labels.get(L.TASK_HASH) == want.task_hash
    return count


def failed_current(want: ServiceDef, tasks: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Tasks of the task template we sent that failed or were rejected."""
    out = []
    for t in tasks:
        labels = (((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels")) or {}
        if labels.get(L.TASK_HASH) == want.task_hash and (t.get("Status") or {}).get("State") in _FAILED:
            out.append(t)
    return out


__all__ = [
    "UPDATE_FAILED",
    "LiveStack",
    "SwarmAction",
    "SwarmChange",
    "SwarmPlan",
    "compare",
    "failed_current",
    "is_ours",
    "last_error",
    "make_swarm_plan",
    "running_current",
    "task_health",
]
