"""Make a Docker Swarm match a rendered compose project, as `docker stack deploy --prune` would, through the
Engine API: the ``backend: swarm`` counterpart of ``reconciler.converge.Converger``, with the same public
methods, so the daemon picks one per environment.

``up`` reads as the steps of a stack deploy: networks, configs and secrets, plan, orphans, services; then
it waits for Swarm's rolling update of every service it changed. A rollback, a paused update or tasks that
never run make it raise DeployError: a failed rolling update is never reported as a success.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from reconciler import labels as L
from reconciler import logs, secrets
from reconciler.engine import DockerEngine
from reconciler.errors import ComposeError, ConfigError, DeployError, DockerError, Location
from reconciler.names import validate_project_name
from reconciler.swarm.engine import SwarmEngine
from reconciler.swarm.model import DataDef, ServiceDef, StackSpec
from reconciler.swarm.plan import (
    LiveStack,
    SwarmAction,
    SwarmPlan,
    failed_current,
    is_ours,
    last_error,
    make_swarm_plan,
    owner_of,
)
from reconciler.swarm.translate import file_sources, labelled, stack_spec

if TYPE_CHECKING:
    from reconciler.observe import Listing
    from reconciler.spec import RenderedLike

_POLL = 0.25  # seconds between looks at a rolling update (one inspect and one task list each)
_POLL_MAX = 1.0


class _Stop:
    def __init__(self, cancel: threading.Event | None) -> None:
        self._cancel = cancel

    def check(self, service: str | None = None) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise DeployError("cancelled while waiting", service=service, reason="Cancelled")

    def sleep(self, seconds: float, service: str) -> None:
        (self._cancel or threading.Event()).wait(seconds)
        self.check(service)


class SwarmConverger:
    """Observe, plan and converge compose projects as stacks on one Swarm (through a manager). Safe to
    share between threads."""

    def __init__(self, engine: DockerEngine, *, state_dir: str | os.PathLike[str] | None = None) -> None:
        """``engine``: a manager's; a plain DockerEngine (the daemon's per-host one) is used through a
        SwarmEngine sharing its connection."""
        self._engine = engine if isinstance(engine, SwarmEngine) else SwarmEngine.sharing(engine)
        self._state_dir = state_dir  # unused: configs and secrets live in the Swarm's raft store
        self._images: dict[str, str | None] = {}
        self._lock = threading.Lock()

    @property
    def engine(self) -> SwarmEngine:
        return self._engine

    # --- observe and plan (change nothing) ---

    def observe(self, projects: Collection[str] | None = None) -> dict[str, LiveStack]:
        """The services and tasks of ``projects`` (every stack if None): one service list, one task list."""
        services = self._engine.list_services({L.STACK_NAMESPACE: None})
        if projects is not None:
            wanted = set(projects)
            services = [s for s in services if _namespace(s) in wanted]
        tasks = self._engine.list_tasks([str(s["ID"]) for s in services])
        with self._lock:
            self._images.clear()  # tags are resolved again after each observation
        out: dict[str, LiveStack] = {p: LiveStack(p) for p in projects or ()}
        by_service = {s["ID"]: _namespace(s) for s in services}
        for project in {_namespace(s) for s in services}:
            out[project] = LiveStack(
                project,
                tuple(s for s in services if _namespace(s) == project),
                tuple(t for t in tasks if by_service.get(t.get("ServiceID")) == project),
            )
        return out

    def last_observation(self, *, since: float) -> Listing | None:
        """Never a listing: the daemon then asks ``project_labels`` with its own list calls."""
        return None

    def project_labels(
        self, labels: Mapping[str, str], *, live: Listing | None = None
    ) -> dict[str, dict[str, str]]:
        """Stacks with a service, network or volume carrying all of ``labels`` -> that object's labels."""
        wanted: dict[str, str | None] = {**labels, L.STACK_NAMESPACE: None}
        found: dict[str, dict[str, str]] = {}
        objects = [
            *((s.get("Spec") or {}).get("Labels") or {} for s in self._engine.list_services(wanted)),
            *(n.get("Labels") or {} for n in self._engine.list_networks(wanted)),
            *(v.get("Labels") or {} for v in self._engine.list_volumes(wanted)),
        ]
        for obj_labels in objects:
            project = obj_labels.get(L.STACK_NAMESPACE)
            if project:
                found.setdefault(project, {**obj_labels, L.PROJECT: project})
        return found

    def events(
        self, stop: threading.Event, *, window: float = 2.0, since: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Service events (create, update, remove: a hand-run `docker service scale` is one) and the events
        of our task containers, until ``stop`` is set; raises DockerError when the stream ends early."""
        filters = {"type": ["service", "container"]}
        since = time.time() if since is None else since
        while not stop.is_set():
            until = time.time() + window
            for event in self._engine.events(since, until, filters):
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                if event.get("Type") == "container" and attributes.get(L.MANAGED) != "true":
                    continue
                yield event
                if stop.is_set():
                    return
            if not stop.is_set() and time.time() < until - 0.25:
                raise DockerError("the Docker event stream ended early (engine stopped or restarted?)")
            since = until

    def plan(
        self, project: RenderedLike, live: LiveStack | None = None, *, owner: str | None = None
    ) -> SwarmPlan:
        """What `up` would do now. A key Swarm can't honour raises UnsupportedError before any Docker call."""
        validate_project_name(project.name)
        stack = self._stack(project)
        if live is None:
            live = self.observe([project.name])[project.name]
        return make_swarm_plan(stack, live, owner)

    def _stack(self, project: RenderedLike) -> StackSpec:
        """The pure translation, given the bytes of file-based configs and secrets and the image IDs."""
        model = project.model
        files: dict[str, bytes] = {}
        for where, path in file_sources(model).items():
            try:
                with open(path, "rb") as f:
                    files[where] = f.read()
            except OSError as exc:
                raise ComposeError(
                    f"cannot read {path}: {exc.strerror}", Location(key=f"{where}.file")
                ) from exc
        images = {str(s["image"]) for s in (model.get("services") or {}).values() if (s or {}).get("image")}
        return stack_spec(
            project.name,
            model,
            files=files,
            environment=getattr(project, "environment", None) or {},
            image_ids=self._image_ids(images),
        )

    def _image_ids(self, images: Collection[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for image in images:
            with self._lock:
                known = image in self._images
                out[image] = self._images.get(image)
            if not known:
                out[image] = self._engine.image_id(image)
                with self._lock:
                    self._images[image] = out[image]
        return out

    # --- up ---

    def up(
        self,
        project: RenderedLike,
        *,
        timeout: float = 120.0,
        labels: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
        build: bool = True,
        owner: str | None = None,
        allow_empty: bool = False,
        subnet_pool: str | None = None,
    ) -> SwarmPlan:
        """Deploy ``project`` as a stack (`docker stack deploy --prune`) and wait for its rolling updates.

        ``owner`` is stamped as ``io.reconciler.owner`` on everything created; a service of the stack
        carrying another owner makes the deploy fail before anything changes (reason "NotOwner"), as does
        an empty project unless ``allow_empty`` ("EmptyProject"). Raises DeployError(reason="RolledBack")
        when Swarm rolled an update back, "UpdatePaused", "TasksFailed" or "Timeout" when tasks do not run
        within ``timeout`` seconds. ``build`` and ``subnet_pool`` are not used by Swarm."""
        validate_project_name(project.name)
        name = project.name
        log = logs.get(project=name)
        self._require_manager()
        with self._lock:
            self._images.clear()  # a deploy resolves its tags afresh
        stack = self._stack(project)  # refuses keys Swarm can't honour before any change
        for svc in stack.services:
            if svc.ignored:
                log.info("up.keys_ignored", service=svc.key, keys=list(svc.ignored), backend="swarm")
        compose = self._engine.list_containers(name)
        if compose:
            raise _compose_running(name, compose)
        live = self.observe([name])[name]
        if not stack.services and not allow_empty:
            raise _empty_project(name, live)
        for found in live.services:
            if not is_ours(found, owner):
                raise _not_owner(name, f"service {found['Spec']['Name']}", owner_of(found), owner)
        ours = {**(labels or {}), **({L.OWNER: owner} if owner is not None else {}), L.MANAGED: "true"}
        stack = labelled(stack, ours)
        stop = _Stop(cancel)
        self._ensure_networks(stack, owner)
        ids = self._ensure_data(stack)
        plan = make_swarm_plan(stack, live, owner)
        for change in plan.changes:
            if change.action is SwarmAction.REMOVE and change.service_id:
                log.info("swarm.remove_service", service=change.container)
                self._engine.remove_service(change.service_id)
        waits: list[tuple[ServiceDef, str, str | None]] = []
        for change in plan.changes:
            want = stack.service(change.service)
            if want is None or change.action is SwarmAction.REMOVE:
                continue
            spec = _with_ids(want.spec, ids)
            if change.action is SwarmAction.CREATE:
                log.info("swarm.create_service", service=want.name)
                waits.append((want, self._engine.create_service(spec), None))
            else:
                current = live.service(want.name) or {}
                before = str((current.get("UpdateStatus") or {}).get("StartedAt") or "")
                log.info("swarm.update_service", service=want.name, why=change.details)
                self._engine.update_service(str(current["ID"]), int(current["Version"]["Index"]), spec)
                waits.append((want, str(current["ID"]), before))
        deadline = time.monotonic() + timeout
        if waits:
            with ThreadPoolExecutor(max_workers=min(4, len(waits))) as pool:
                futures = [
                    pool.submit(self._await, w, sid, before, deadline, stop) for w, sid, before in waits
                ]
                errors = [e for f in futures if (e := f.exception()) is not None]
            if errors:
                raise errors[0]
        self._prune_data(name, stack, owner)
        return plan

    def prepare(
        self,
        project: RenderedLike,
        *,
        labels: Mapping[str, str] | None = None,
        cancel: threading.Event | None = None,
        owner: str | None = None,
        subnet_pool: str | None = None,
    ) -> dict[str, str | None]:
        """Hooks run one-off containers next to the old stack, which a Swarm does not offer."""
        raise ConfigError(
            f"project {project.name!r}: pre_deploy/post_deploy hooks need backend: compose; this environment "
            "uses backend: swarm",
            hint="remove `hooks:` from the environment, or run the step as a service of the stack",
        )

    def _require_manager(self) -> None:
        state, manager = self._engine.swarm_state()
        if state != "active" or not manager:
            raise DeployError(
                "backend: swarm needs a Swarm manager, and this Docker Engine is not one (swarm state "
                f"{state!r}{', a worker' if state == 'active' else ''}): run `docker swarm init` there, "
                "or point the environment's host at a manager",
                reason="NotSwarmManager",
            )

    def _ensure_networks(self, stack: StackSpec, owner: str | None) -> None:
        for net in stack.networks:
            found = self._engine.inspect_network(net.name)
            if net.external:
                if found is None:
                    raise DeployError(
                        f"network {net.name!r} is declared external but does not exist: create it with "
                        f"`docker network create -d overlay {net.name}`",
                        reason="NetworkMissing",
                    )
                continue
            if found is None:
                self._engine.create_overlay(net)
                continue
            found_labels = found.get("Labels") or {}
            other = found_labels.get(L.STACK_NAMESPACE)
            if other not in (None, stack.name) or not _owned_by(found_labels, owner):
                raise DeployError(
                    f"network {net.name!r} exists and is not this stack's (owner "
                    f"{found_labels.get(L.OWNER)!r}, stack {other!r}): rename the network or the project, "
                    "or declare it `external: true` to share it on purpose",
                    reason="NetworkConflict",
                )
            if found.get("Driver") != "overlay" or found.get("Scope") != "swarm":
                raise DeployError(
                    f"network {net.name!r} exists as a {found.get('Scope')} {found.get('Driver')} network "
                    "(left by a compose deploy?): a stack needs an overlay network; remove it once nothing "
                    "uses it (docs/swarm.md, moving a stack from compose to swarm)",
                    reason="NetworkConflict",
                )

    def _ensure_data(self, stack: StackSpec) -> dict[str, str]:
        """Create the configs and secrets that are missing (their names carry their content's digest, so
        one that exists holds the same bytes); the ID of each by name."""
        ids: dict[str, str] = {}
        for obj in stack.data:
            found = self._engine.find_data(obj.kind, obj.name)
            if found is not None:
                ids[obj.name] = str(found["ID"])
            elif obj.external:
                raise DeployError(
                    f"{obj.kind} {obj.name!r} is declared external but does not exist: create it with "
                    f"`docker {obj.kind} create {obj.name} FILE`",
                    reason=f"{obj.kind.capitalize()}Missing",
                )
            else:
                ids[obj.name] = self._engine.create_data(obj)
        return ids

    def _prune_data(self, project: str, stack: StackSpec, owner: str | None) -> None:
        """Configs and secrets of this stack that no service's spec names any more (an older content).
        Called once every update completed: the previous specs' objects are no longer needed for Swarm's
        automatic rollback, which only happens during an update (`docker service rollback` by hand then
        fails, see docs/swarm.md). Swarm refuses to remove one in use; a failure is left for next time."""
        keep = {d.name for d in stack.data}
        for svc in self._engine.list_services({L.STACK_NAMESPACE: project}):
            for spec in (svc.get("Spec") or {},):
                container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
                keep |= {str(r.get("ConfigName")) for r in container.get("Configs") or ()}
                keep |= {str(r.get("SecretName")) for r in container.get("Secrets") or ()}
        for kind in ("config", "secret"):
            for obj in self._engine.list_data(kind, {L.STACK_NAMESPACE: project}):
                spec = obj.get("Spec") or {}
                if spec.get("Name") in keep or not _owned_by(spec.get("Labels") or {}, owner):
                    continue
                try:
                    self._engine.remove_data(kind, str(obj["ID"]))
                except DeployError as exc:
                    logs.get(project=project).warning(
                        "swarm.prune_failed", kind=kind, name=spec.get("Name"), error=str(exc)
                    )

    def _await(
        self, want: ServiceDef, service_id: str, before: str | None, deadline: float, stop: _Stop
    ) -> None:
        """Wait until every task of ``want`` runs from the spec we sent. Swarm's rollback or a paused update
        is a failure, reported with Swarm's message and the newest task error."""
        delay = _POLL
        while True:
            stop.check(want.key)
            svc = self._engine.inspect_service(service_id)
            if svc is None:
                raise DeployError(
                    f"service {want.key!r}: {want.name} disappeared", service=want.key, reason="Missing"
                )
            update = svc.get("UpdateStatus") or {}
            state = str(update.get("State") or "")
            fresh = bool(update) and str(update.get("StartedAt") or "") != (before or "")
            tasks = self._engine.list_tasks([service_id])
            # A rollback in progress is waited for: the deploy that reports it (and the daemon's own
            # rollback to the last good commit after it) must find the service settled.
            if fresh and state in ("rollback_completed", "rollback_paused"):
                raise self._failure(want, "RolledBack", "Swarm rolled the update back", update, tasks)
            if fresh and state == "paused":
                raise self._failure(want, "UpdatePaused", "Swarm paused the update", update, tasks)
            rollback_running = fresh and state == "rollback_started"
            # Swarm keeps watching new tasks for the update's monitor period and may still roll back: an
            # update is done when Swarm says completed, not when the tasks first run.
            if (not fresh or state == "completed") and _converged(want, svc, tasks):
                return
            rejected = [
                t for t in failed_current(want, tasks) if (t.get("Status") or {}).get("State") == "rejected"
            ]
            if not rollback_running and len(rejected) >= 2:
                raise self._failure(want, "TasksFailed", "Swarm cannot start its tasks", update, tasks)
            if time.monotonic() >= deadline:
                if rollback_running:
                    what = "Swarm is rolling the update back (not finished within the deploy timeout)"
                    raise self._failure(want, "RolledBack", what, update, tasks)
                raise self._failure(
                    want, "Timeout", "tasks did not all run within the deploy timeout", update, tasks
                )
            stop.sleep(delay, want.key)
            delay = min(delay * 1.5, _POLL_MAX)

    @staticmethod
    def _failure(
        want: ServiceDef, reason: str, what: str, update: Mapping[str, Any], tasks: list[dict[str, Any]]
    ) -> DeployError:
        parts = [f"service {want.key!r} ({want.name}): {what}"]
        if update.get("Message"):
            parts.append(f"Swarm says: {update['Message']}")
        active = [t for t in tasks if t.get("DesiredState") == "running"]
        states = Counter(str((t.get("Status") or {}).get("State")) for t in tasks)
        running = sum(1 for t in active if (t.get("Status") or {}).get("State") == "running")
        wanted = "global" if want.replicas is None else str(want.replicas)
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        parts.append(f"{running}/{wanted} tasks running (tasks: {summary or 'none'})")
        error = last_error(failed_current(want, tasks)) or last_error(tasks)
        if error:
            parts.append(f"last task error: {error}")
        return DeployError(secrets.scrub("; ".join(parts)), service=want.key, reason=reason)

    # --- down ---

    def down(
        self,
        project_name: str,
        *,
        volumes: bool = False,
        images: bool = False,
        timeout: float = 30.0,
        owner: str | None = None,
    ) -> None:
        """Remove the stack's services, then its networks, configs and secrets (`docker stack rm`); its
        volumes only with ``volumes``. Only objects carrying our owner label (``owner``; without one, our
        managed label) are removed: anything else is left alone and logged. ``images`` is not used: a
        Swarm backend builds no images."""
        validate_project_name(project_name)
        log = logs.get(project=project_name)
        namespace = {L.STACK_NAMESPACE: project_name}
        removed: list[str] = []
        for svc in self._engine.list_services(namespace):
            if not is_ours(svc, owner):
                log.warning(
                    "down.skipped_foreign", kind="service", name=svc["Spec"]["Name"], owner=owner_of(svc)
                )
                continue
            self._engine.remove_service(str(svc["ID"]))
            removed.append(str(svc["ID"]))
        # Networks and volumes are in use until the tasks' containers are gone.
        deadline = time.monotonic() + timeout
        while removed and self._engine.list_tasks(removed) and time.monotonic() < deadline:
            time.sleep(0.25)
        problems: list[str] = []
        for net in self._engine.list_networks(namespace):
            if not _owned_by(net.get("Labels") or {}, owner):
                log.warning("down.skipped_foreign", kind="network", name=net["Name"])
                continue
            problems += self._retry_removal(lambda n=net: self._engine.remove_network(n["Name"]), deadline)
        for kind in ("config", "secret"):
            for obj in self._engine.list_data(kind, namespace):
                if _owned_by((obj.get("Spec") or {}).get("Labels") or {}, owner):
                    problems += self._retry_removal(
                        lambda k=kind, o=obj: self._engine.remove_data(k, o["ID"]), deadline
                    )
        if volumes:
            for vol in self._engine.list_volumes(namespace):
                if not _owned_by(vol.get("Labels") or {}, owner):
                    log.warning("down.skipped_foreign", kind="volume", name=vol["Name"])
                    continue
                problems += self._retry_removal(lambda v=vol: self._engine.remove_volume(v["Name"]), deadline)
        if problems:
            raise DeployError(
                f"down of {project_name!r} left things behind: " + "; ".join(problems), reason="DownFailed"
            )

    @staticmethod
    def _retry_removal(fn: Any, deadline: float) -> list[str]:
        """A task's container may take a moment to let go of a network or volume after its service went."""
        while True:
            try:
                fn()
                return []
            except DeployError as exc:
                if time.monotonic() >= deadline:
                    return [str(exc)]
            time.sleep(0.25)

    def volume_names(self, project_name: str) -> list[str]:
        validate_project_name(project_name)
        return sorted(v["Name"] for v in self._engine.list_volumes({L.STACK_NAMESPACE: project_name}))


def _namespace(svc: Mapping[str, Any]) -> str:
    return str(((svc.get("Spec") or {}).get("Labels") or {}).get(L.STACK_NAMESPACE) or "")


def _owned_by(labels: Mapping[str, str], owner: str | None) -> bool:
    if owner is None:
        return labels.get(L.MANAGED) == "true" or labels.get(L.OWNER) is not None
    return labels.get(L.OWNER) == owner


def _converged(want: ServiceDef, svc: Mapping[str, Any], tasks: list[dict[str, Any]]) -> bool:
    """Every task Swarm wants running runs from our task template, and there are as many as wanted."""
    active = [t for t in tasks if t.get("DesiredState") == "running"]
    if not active:
        return want.replicas == 0
    want_id = want.spec["TaskTemplate"]["ContainerSpec"]["Labels"].get(L.IMAGE_ID)
    for t in active:
        if (t.get("Status") or {}).get("State") != "running":
            return False
        labels = ((t.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        if labels.get(L.TASK_HASH) != want.task_hash or (want_id and labels.get(L.IMAGE_ID) != want_id):
            return False
    return want.replicas is None or len(active) == want.replicas


def _with_ids(spec: Mapping[str, Any], ids: Mapping[str, str]) -> dict[str, Any]:
    """The spec with each config and secret reference given the object's ID (Swarm needs both)."""
    out = dict(spec)
    task = dict(out["TaskTemplate"])
    container = dict(task["ContainerSpec"])
    for kind, name_key, id_key in (
        ("Configs", "ConfigName", "ConfigID"),
        ("Secrets", "SecretName", "SecretID"),
    ):
        if container.get(kind):
            container[kind] = [{**r, id_key: ids[r[name_key]]} for r in container[kind]]
    task["ContainerSpec"] = container
    out["TaskTemplate"] = task
    return out


def _empty_project(project: str, live: LiveStack) -> DeployError:
    return DeployError(
        f"project {project!r}: the rendered project has no services; nothing was changed and the "
        f"{len(live.services)} service(s) of the stack are kept. Set `allow_empty: true` on the environment "
        "to let an empty project remove them",
        reason="EmptyProject",
    )


def _compose_running(project: str, containers: list[dict[str, Any]]) -> DeployError:
    # Switching an environment from backend: compose to swarm moves nothing by itself: two copies would
    # run (and fight over host ports). The operator takes the compose stack down first, keeping volumes.
    names = sorted(str((c.get("Names") or ["?"])[0]).lstrip("/") for c in containers)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return DeployError(
        f"project {project!r} still has containers of a compose deploy on this engine ({shown}); nothing "
        "was changed. Take the compose stack down first, keeping its volumes (`docker compose -p "
        f"{project} down`, without -v), then deploy again (docs/swarm.md: moving from compose to swarm)",
        reason="ComposeStackRunning",
    )


def _not_owner(project: str, what: str, other: str | None, owner: str | None) -> DeployError:
    return DeployError(
        f"project {project!r}: {what} belongs to {other!r}, not to {owner!r}, so nothing was changed. Two "
        "deployments (or a hand-run `docker stack deploy`) share this stack name: rename the project or "
        "remove the other stack first",
        reason="NotOwner",
    )


__all__ = ["DataDef", "SwarmConverger"]
