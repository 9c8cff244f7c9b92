"""Pair desired services with live containers and classify every difference into a Plan (pure).

The Plan is at once the dry run (`reconciler plan`), the input to `reconciler.converge.Converger.up`
and the drift report the daemon turns into metrics. Pairing is by (service, replica number).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler import drift
from reconciler import labels as L
from reconciler.spec import FIELDS_LABEL, NAMESPACE_KEYS, ProjectSpec, ServiceSpec, project_spec
from reconciler.status import Drift, DriftReason, Health

_EXIT_RE = re.compile(r"^(?:Exited|Restarting) \((-?\d+)\)")
_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")


class Action(StrEnum):
    CREATE = "create"
    RECREATE = "recreate"
    START = "start"
    REMOVE = "remove"


@dataclass(frozen=True)
class LiveContainer:
    """One container as the container list reports it (no inspect needed)."""

    id: str
    name: str
    project: str
    service: str
    number: int | None
    state: str  # created | running | paused | restarting | removing | exited | dead
    health: str | None = None  # starting | healthy | unhealthy, when the container has a healthcheck
    exit_code: int | None = None
    image_id: str = ""
    created: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    networks: tuple[str, ...] | None = None  # names, from the list's NetworkSettings (None: not listed)
    host: Mapping[str, Any] | None = None  # drift.HOST_KEYS of its inspect, cached by observe (None: unknown)

    @property
    def config_hash(self) -> str | None:
        return self.labels.get(L.CONFIG_HASH)


@dataclass(frozen=True)
class LiveProject:
    name: str
    containers: tuple[LiveContainer, ...] = ()
    # The project's network and volume list entries (observe lists them; plan compares their options).
    networks: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()

    def service(self, name: str) -> tuple[LiveContainer, ...]:
        return tuple(c for c in self.containers if c.service == name)


def parse_containers(summaries: Iterable[Mapping[str, Any]]) -> dict[str, LiveProject]:
    """Group ``GET /containers/json`` entries by project; one-off containers (`compose run`) are left out."""
    grouped: dict[str, list[LiveContainer]] = {}
    for s in summaries:
        labels = s.get("Labels") or {}
        project = labels.get(L.PROJECT)
        if not project or labels.get(L.ONEOFF, "False") == "True":
            continue
        status = str(s.get("Status") or "")
        exit_match = _EXIT_RE.match(status)
        health = _HEALTH_RE.search(status)
        number = labels.get(L.CONTAINER_NUMBER, "")
        names = s.get("Names") or [""]
        settings = s.get("NetworkSettings")
        networks = tuple(sorted(settings.get("Networks") or {})) if isinstance(settings, dict) else None
        grouped.setdefault(project, []).append(
            LiveContainer(
                id=str(s["Id"]),
                name=str(names[0]).lstrip("/"),
                project=project,
                service=labels.get(L.SERVICE, ""),
                number=int(number) if number.isascii() and number.isdigit() else None,
                state=str(s.get("State") or ""),
                health=health.group(1).removeprefix("health: ") if health else None,
                exit_code=int(exit_match.group(1)) if exit_match else None,
                image_id=str(s.get("ImageID") or ""),
                created=int(s.get("Created") or 0),
                labels=dict(labels),
                networks=networks,
            )
        )
    return {
        p: LiveProject(p, tuple(sorted(cs, key=lambda c: (c.service, c.number or 0, c.name))))
        for p, cs in grouped.items()
    }


@dataclass(frozen=True)
class Change:
    """One thing `up` would do to one container, and why."""

    action: Action
    service: str
    number: int
    container: str  # the container's name (the live one for start/remove, the one to create otherwise)
    reasons: tuple[DriftReason, ...]
    details: str = ""  # for people: which fields differ, exit code, ...
    fields: tuple[str, ...] = ()  # compose keys that differ, when known
    container_id: str | None = None  # the live container, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": str(self.action),
            "service": self.service,
            "number": self.number,
            "container": self.container,
            "reasons": [str(r) for r in self.reasons],
            "details": self.details,
            "fields": list(self.fields),
        }


@dataclass(frozen=True)
class Plan:
    project: str
    changes: tuple[Change, ...] = ()
    unhealthy: tuple[Drift, ...] = ()  # reported, not acted on: recreating would not fix it
    health: Health = Health.MISSING
    reported: tuple[Drift, ...] = ()  # network_options/volume_options: reported, never acted on

    @property
    def is_noop(self) -> bool:
        return not self.changes

    def for_service(self, service: str) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.service == service)

    def drifts(self) -> tuple[Drift, ...]:
        """Every difference as a drift (one per change and reason), then the unhealthy containers, then
        the network and volume options (reported only)."""
        out = [Drift(c.service, r, c.details) for c in self.changes for r in c.reasons]
        return (*out, *self.unhealthy, *self.reported)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "health": str(self.health),
            "changes": [c.to_dict() for c in self.changes],
            "drifts": [
                {"service": d.service, "reason": str(d.reason), "detail": d.detail} for d in self.drifts()
            ],
        }


def make_plan(
    project: ProjectSpec, live: LiveProject | None, image_ids: Mapping[str, str | None] | None = None
) -> Plan:
    """Compare the desired project with its live containers.

    ``image_ids`` maps each service's image reference to the ID it resolves to now (None or absent:
    unknown, e.g. not pulled yet), so a tag rebuilt or re-pulled under the same name recreates.
    """
    live = live or LiveProject(project.name)
    image_ids = image_ids or {}
    changes: list[Change] = []
    unhealthy: list[Drift] = []
    objects = [*(c.labels for c in live.containers), *(o.get("Labels") or {} for o in live.networks)]
    proven = drift.proven_ours(project.name, [*objects, *(v.get("Labels") or {} for v in live.volumes)])
    for c in live.containers:
        if project.service(c.service) is None:
            detail = f"service {c.service!r} is not in the config"
            changes.append(_change(Action.REMOVE, c, DriftReason.ORPHAN, detail))
    for svc in project.services:
        kept: dict[int, LiveContainer] = {}
        # The container with the expected name wins a replica number; newer before older among the rest.
        for c in sorted(live.service(svc.name), key=lambda c: (c.name != _name(project, svc, c), -c.created)):
            if c.number is not None and 1 <= c.number <= svc.replicas and c.number not in kept:
                kept[c.number] = c
            else:
                why = f"replica {c.number} is beyond scale {svc.replicas}"
                if c.number in kept:
                    why = f"duplicate of replica {c.number}"
                changes.append(_change(Action.REMOVE, c, DriftReason.ORPHAN, why))
        for number in range(1, svc.replicas + 1):
            paired = kept.get(number)
            if paired is None:
                name = svc.container(project.name, number)
                changes.append(
                    Change(Action.CREATE, svc.name, number, name, (DriftReason.MISSING,), "missing")
                )
                continue
            c = paired
            change = _classify(project, svc, c, image_ids.get(svc.image), proven)
            if svc.joins and (change is None or change.action is Action.START):
                change = _rejoin(svc, c, live, changes) or change
            if change is not None:
                changes.append(change)
            elif c.state == "running" and c.health == "unhealthy":
                unhealthy.append(Drift(svc.name, DriftReason.UNHEALTHY, f"{c.name}: healthcheck failing"))
            elif c.state == "restarting":
                unhealthy.append(
                    Drift(svc.name, DriftReason.UNHEALTHY, f"{c.name}: {_exited(c, 'restarting')}")
                )
    order = {s.name: i for i, s in enumerate(project.services)}
    changes.sort(key=lambda c: (c.action is not Action.REMOVE, order.get(c.service, -1), c.number))
    reported = drift.object_drifts(project, live.networks, live.volumes)
    return Plan(project.name, tuple(changes), tuple(unhealthy), health(live, project), reported)


def _name(project: ProjectSpec, svc: ServiceSpec, c: LiveContainer) -> str:
    return svc.container(project.name, c.number or 0)


def _change(action: Action, c: LiveContainer, reason: DriftReason, details: str, **kw: Any) -> Change:
    return Change(action, c.service, c.number or 0, c.name, (reason,), details, container_id=c.id, **kw)


def _classify(
    project: ProjectSpec, svc: ServiceSpec, c: LiveContainer, image_id: str | None, proven: bool = False
) -> Change | None:
    reasons: list[DriftReason] = []
    details: list[str] = []
    fields: tuple[str, ...] = ()
    if drift.is_foreign(c.labels, proven):
        reasons.append(DriftReason.FOREIGN)
        details.append("the stack was changed by `docker compose` by hand (Compose's labels, not ours)")
    elif not svc.hash_matches(c.labels):
        reasons.append(DriftReason.CONFIG)
        fields = _changed_fields(c, svc)
        if c.config_hash is None:
            details.append("no config-hash label (created or edited by hand)")
        elif fields:
            details.append(f"config changed: {', '.join(fields)}")
        else:
            details.append("config changed")
    elif c.name != _name(project, svc, c):
        reasons.append(DriftReason.CONFIG)
        details.append(f"named {c.name!r} instead of {_name(project, svc, c)!r}")
    else:  # made from this config: what `docker update` and `docker network` change behind its back
        for reason, detail in drift.container_drifts(project, svc, c.host, c.networks):
            reasons.append(reason)
            details.append(detail)
    if image_id and c.image_id and c.image_id != image_id:
        reasons.append(DriftReason.IMAGE)
        details.append(f"image {svc.image} changed: {_short(c.image_id)} -> {_short(image_id)}")
    if c.state == "dead":  # a dead container cannot be started again
        reasons.append(DriftReason.STOPPED)
        details.append("dead")
    if reasons:
        number = c.number or 0
        return Change(
            Action.RECREATE, svc.name, number, c.name, tuple(reasons), "; ".join(details), fields, c.id
        )
    if c.state in ("created", "exited", "paused") and not completed(project, svc, c):
        state = "paused" if c.state == "paused" else _exited(c, "stopped")
        return _change(Action.START, c, DriftReason.STOPPED, state)
    return None


def _rejoin(svc: ServiceSpec, c: LiveContainer, live: LiveProject, changes: list[Change]) -> Change | None:
    """A container that joined another service's namespace (``network_mode``/``pid``/``ipc``
    ``service:NAME``) is stuck in the namespace of the container it joined at create (labels.JOINED):
    recreate it when that container is gone, replaced, or about to be (as Compose does)."""
    recorded = dict(p.partition("=")[::2] for p in c.labels.get(L.JOINED, "").split(",") if p)
    for name in svc.joins:
        live_id = next((t.id for t in live.service(name) if t.number == 1), None)
        replacing = any(ch.service == name and ch.number == 1 and ch.action in _NEW for ch in changes)
        if replacing or live_id is None or recorded.get(name) != live_id:
            keys = tuple(k for k in NAMESPACE_KEYS if svc.config.get(k) == f"service:{name}")
            why = "is being replaced" if replacing or live_id is None else "was replaced"
            detail = f"joins the namespace of service {name!r} ({', '.join(keys)}), whose container {why}"
            return Change(
                Action.RECREATE, svc.name, c.number or 0, c.name, (DriftReason.CONFIG,), detail, keys, c.id
            )
    return None


_NEW = (Action.CREATE, Action.RECREATE)


def completed(project: ProjectSpec, svc: ServiceSpec, c: LiveContainer) -> bool:
    """A one-shot that finished its job: exited 0, and awaited by a dependent or never restarted by
    Docker after a clean exit (`restart: "no"` or `on-failure`)."""
    one_shot = svc.name in project.one_shots or finishes(svc)
    return one_shot and c.state == "exited" and c.exit_code == 0


def finishes(svc: ServiceSpec) -> bool:
    """Docker leaves this service's containers stopped after exit code 0."""
    return svc.restart == "no" or svc.restart.startswith("on-failure")


def health(live: LiveProject | None, project: ProjectSpec | Mapping[str, Any]) -> Health:
    """Missing: no containers; Degraded: a service missing, exited badly, unhealthy or restarting;
    Progressing: created or health still starting; Healthy otherwise. Orphans don't count.

    ``project`` is a ProjectSpec or a rendered model (the dict `docker compose config` prints)."""
    if not isinstance(project, ProjectSpec):
        project = project_spec(_Model(str(project.get("name") or (live.name if live else "")), project))
    containers = live.containers if live else ()
    if not containers:
        return Health.MISSING
    worst = Health.HEALTHY
    for svc in project.services:
        mine = [c for c in containers if c.service == svc.name]
        states = [_container_health(project, svc, c) for c in mine]
        if len(mine) < svc.replicas:
            states.append(Health.DEGRADED)
        for state in states:
            if state.is_worse(worst):
                worst = state
    return worst


@dataclass(frozen=True)
class _Model:
    """A bare rendered model seen as a project (health needs neither its directory nor its files)."""

    name: str
    model: Mapping[str, Any]
    working_dir: str = ""
    config_files: tuple[str, ...] = ()


def _container_health(project: ProjectSpec, svc: ServiceSpec, c: LiveContainer) -> Health:
    if c.state == "running":
        return {"starting": Health.PROGRESSING, "unhealthy": Health.DEGRADED}.get(
            c.health or "", Health.HEALTHY
        )
    if c.state in ("created", "removing"):
        return Health.PROGRESSING
    if completed(project, svc, c):
        return Health.HEALTHY
    return Health.DEGRADED  # exited (badly, or stopped by hand), restarting, paused, dead


def _changed_fields(c: LiveContainer, svc: ServiceSpec) -> tuple[str, ...]:
    try:
        live = json.loads(c.labels.get(FIELDS_LABEL, ""))
    except ValueError:
        return ()
    if not isinstance(live, dict):
        return ()
    keys = set(live) | set(svc.field_hashes)
    return tuple(sorted(k for k in keys if live.get(k) != svc.field_hashes.get(k)))


def _exited(c: LiveContainer, word: str) -> str:
    return f"{word} (exit code {c.exit_code})" if c.exit_code is not None else f"{word} ({c.state})"


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]
