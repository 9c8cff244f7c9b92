"""Make one Docker host match a rendered compose project: `reconciler up/plan/down`, and the daemon's deploys.

``Converger.up`` reads as the steps of `docker compose up -d --remove-orphans`: networks, volumes, images,
plan, orphans, then containers in depends_on order (each waiting on its dependencies' conditions), then
every touched container is checked to be running or healthy. Docker is reached only through ``Engine``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler import labels as L
from reconciler.engine import Engine, EngineError
from reconciler.errors import DeployError
from reconciler.names import validate_project_name
from reconciler.plan import Action, Change, LiveProject, Plan, finishes, make_plan, parse_containers
from reconciler.spec import (
    COMPOSE_VERSION,
    Condition,
    ProjectSpec,
    PullPolicy,
    ServiceSpec,
    container_request,
    project_spec,
)

if TYPE_CHECKING:
    from reconciler.spec import RenderedLike

LOG_LINES = 20
_ANONYMOUS = re.compile(r"^[0-9a-f]{64}$")  # Docker names anonymous volumes with 64 hex digits
_WORKERS = 4  # services converged at once; containers of one service go one after another


class _Stop:
    """Why waiting must end early: the caller's ``cancel`` (a newer commit) or another service failing."""

    def __init__(self, cancel: threading.Event | None) -> None:
        self._cancel = cancel
        self._abort = threading.Event()

    def abort(self) -> None:
        self._abort.set()

    def check(self, service: str | None = None) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise DeployError("cancelled while waiting", service=service, reason="Cancelled")
        if self._abort.is_set():
            raise DeployError("stopped because another service failed", service=service, reason="Aborted")

    def sleep(self, seconds: float, service: str) -> None:
        (self._cancel or self._abort).wait(seconds)
        self.check(service)


@dataclass(frozen=True)
class _Ready:
    """A container a step created, recreated or started, to be checked once every service is up."""

    service: ServiceSpec
    container: str


class Converger:
    """Observe, plan and converge compose projects on one Docker host. Safe to share between threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._images: dict[str, str | None] = {}  # image ref -> ID, as of the last observe()
        self._lock = threading.Lock()

    # --- observe and plan (change nothing) ---

    def observe(self, projects: Collection[str] | None = None) -> dict[str, LiveProject]:
        """The live containers of ``projects`` (all compose projects if None) in one container-list call."""
        names = None if projects is None else list(projects)
        summaries = self._engine.list_containers(names[0] if names and len(names) == 1 else None)
        with self._lock:
            self._images.clear()  # an observation is a snapshot: tags are resolved again after it
        live = parse_containers(summaries)
        if names is None:
            return live
        return {n: live.get(n, LiveProject(n)) for n in names}

    def project_labels(self, labels: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """Projects with a container, volume or network carrying all of ``labels`` -> that object's labels.

        How the daemon finds ephemeral stacks to sweep even after their containers are gone."""
        found: dict[str, dict[str, str]] = {}
        wanted: dict[str, str | None] = {**labels, L.PROJECT: None}
        listings = (
            self._engine.list_containers(labels=dict(labels)),
            self._engine.list_volumes(wanted),
            self._engine.list_networks(wanted),
        )
        for listing in listings:
            for obj in listing:
                obj_labels = obj.get("Labels") or {}
                if obj_labels.get(L.PROJECT):
                    found.setdefault(obj_labels[L.PROJECT], dict(obj_labels))
        return found

    def events(
        self, stop: threading.Event, *, window: float = 2.0, since: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Container events of compose projects (start, die, stop, health_status, destroy, oom) until
        ``stop`` is set. Reads in windows of ``window`` seconds so stopping never waits on a quiet stream;
        raises DockerError when the engine goes away (the caller reconnects, passing the ``time`` of the
        last event seen as ``since`` to miss nothing)."""
        filters = {
            "type": ["container"],
            "event": ["start", "die", "stop", "health_status", "destroy", "oom"],
            "label": [L.PROJECT],
        }
        since = time.time() if since is None else since
        while not stop.is_set():
            until = time.time() + window
            for event in self._engine.events(since, until, filters):
                yield event
                if stop.is_set():
                    return
            since = until

    def plan(self, project: RenderedLike, live: LiveProject | None = None) -> Plan:
        """What `up` would do now. Raises UnsupportedError/InvalidNameError before any Docker call."""
        spec = _spec(project)
        if live is None:
            live = self.observe([spec.name])[spec.name]
        return make_plan(spec, live, self._image_ids(spec))

    def _image_ids(self, spec: ProjectSpec) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for svc in spec.services:
            with self._lock:
                known = svc.image in self._images
                out[svc.image] = self._images.get(svc.image)
            if not known:
                out[svc.image] = self._engine.image_id(svc.image)
                with self._lock:
                    self._images[svc.image] = out[svc.image]
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
    ) -> Plan:
        """Converge ``project`` (`docker compose up -d --remove-orphans`) and return the plan applied.

        ``labels`` go on every container, network and volume created (not into the config hash).
        ``build=False`` builds only missing images; by default services with `build:` are rebuilt
        every time, because the checked-out source is the truth and Docker's layer cache makes an
        unchanged rebuild cheap and keeps its image ID (so nothing is recreated).
        Raises DeployError(service=..., reason=...) when a service fails to start or become healthy
        within ``timeout`` seconds, or reason="Cancelled" as soon as ``cancel`` is set while waiting.
        """
        spec = _spec(project)  # refuses unsupported keys and bad names before any Docker call
        extra = dict(labels or {})
        stop = _Stop(cancel)
        # Networks and volumes first: containers refer to them by name.
        self._ensure_networks(spec, extra)
        self._ensure_volumes(spec, extra)
        # Images: pull or build per pull_policy, so a tag that moved is seen by the plan.
        image_ids = self._ensure_images(spec, build=build, stop=stop)
        # Plan against what runs now.
        plan = make_plan(spec, self.observe([spec.name])[spec.name], image_ids)
        # Orphans and surplus replicas go first: they may hold ports or names the new ones need.
        self._remove([c.container_id for c in plan.changes if c.action is Action.REMOVE and c.container_id])
        # Containers, in depends_on order, each service once its dependencies meet their condition.
        touched = self._converge_services(spec, plan, image_ids, extra, timeout, stop)
        # Finally every touched container must be running, healthy, or a one-shot that succeeded.
        self._await_ready(touched, timeout, stop)
        return plan

    def _remove(self, ids: list[str], timeout: float | None = None, *, volumes: bool = False) -> None:
        """Stop (in parallel: each may take its stop timeout) and remove containers."""

        def remove(cid: str) -> None:
            self._engine.stop_container(cid, timeout)
            self._engine.remove_container(cid, volumes=volumes, force=True)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(remove, ids))

    def _ensure_networks(self, spec: ProjectSpec, extra: Mapping[str, str]) -> None:
        used = {n for s in spec.services for n in s.config.get("networks", {})}
        for net in spec.networks:
            if net.name not in used:
                continue  # as Compose: a declared network no service joins is not created
            info = self._engine.inspect_network(net.name)
            if net.external:
                if info is None:
                    raise DeployError(
                        f"network {net.name!r} is declared external but does not exist "
                        f"(create it with `docker network create {net.name}`)",
                        reason="NetworkMissing",
                    )
                continue
            owner = ((info or {}).get("Labels") or {}).get(L.PROJECT)
            if info is not None and owner not in (None, spec.name):
                raise DeployError(
                    f"network {net.name!r} belongs to project {owner!r}; rename the network or the project",
                    reason="NetworkConflict",
                )
            if info is None:
                own = {L.PROJECT: spec.name, L.NETWORK: net.key, L.VERSION: COMPOSE_VERSION}
                try:
                    self._engine.create_network(net, {**net.labels, **extra, **own, L.MANAGED: "true"})
                except EngineError as exc:
                    if exc.status != 409:  # 409: a concurrent deploy created it first
                        raise DeployError(str(exc), reason="NetworkFailed") from exc

    def _ensure_volumes(self, spec: ProjectSpec, extra: Mapping[str, str]) -> None:
        for vol in spec.volumes:
            info = self._engine.inspect_volume(vol.name)
            if vol.external and info is None:
                raise DeployError(
                    f"volume {vol.name!r} is declared external but does not exist "
                    f"(create it with `docker volume create {vol.name}`)",
                    reason="VolumeMissing",
                )
            if info is None:
                own = {L.PROJECT: spec.name, L.VOLUME: vol.key, L.VERSION: COMPOSE_VERSION}
                self._engine.create_volume(vol, {**vol.labels, **extra, **own, L.MANAGED: "true"})

    def _ensure_images(self, spec: ProjectSpec, *, build: bool, stop: _Stop) -> dict[str, str | None]:
        ids: dict[str, str | None] = {}
        for svc in spec.services:
            if svc.image in ids:
                continue  # services sharing an image pull or build it once
            stop.check(svc.name)
            current = self._engine.image_id(svc.image)
            policy = svc.pull_policy
            try:
                if (
                    svc.build
                    and policy is not PullPolicy.ALWAYS
                    and (build or current is None or policy is PullPolicy.BUILD)
                ):
                    owner = {L.PROJECT: spec.name, L.MANAGED: "true"}  # so `down --images` finds it
                    current = self._engine.build_image(svc.image, svc.build, owner)
                elif policy is PullPolicy.ALWAYS or (current is None and policy is PullPolicy.MISSING):
                    current = self._engine.pull_image(svc.image)
                elif current is None:
                    raise DeployError(
                        f"image {svc.image!r} is not on this host and pull_policy is {policy}",
                        service=svc.name,
                        reason="ImageMissing",
                    )
            except EngineError as exc:
                reason = "BuildFailed" if svc.build and policy is not PullPolicy.ALWAYS else "PullFailed"
                raise DeployError(f"service {svc.name!r}: {exc}", service=svc.name, reason=reason) from exc
            ids[svc.image] = current
        with self._lock:
            self._images.update(ids)
        return ids

    def _converge_services(
        self,
        spec: ProjectSpec,
        plan: Plan,
        image_ids: Mapping[str, str | None],
        extra: Mapping[str, str],
        timeout: float,
        stop: _Stop,
    ) -> list[_Ready]:
        """One task per service; a task first waits for its dependencies' tasks, then their conditions."""
        touched: list[_Ready] = []
        recreated: set[str] = set()
        futures: dict[str, Future[None]] = {}
        with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix=f"up-{spec.name}") as pool:
            # Submitted in dependency order, so a task only ever waits on tasks that already hold a worker.
            for svc in spec.services:
                deps = [futures[d.service] for d in svc.depends_on if d.service in futures]
                args = (spec, svc, plan, deps, image_ids, extra, timeout, stop, touched, recreated)
                futures[svc.name] = pool.submit(self._converge_service, *args)
            done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
            if any(f.exception() for f in done):
                stop.abort()  # the others stop at their next wait instead of starting more containers
        errors = [e for f in futures.values() if (e := f.exception()) is not None]
        if errors:
            real = [e for e in errors if getattr(e, "reason", "") != "Aborted"]
            raise (real or errors)[0]
        return touched

    def _converge_service(
        self,
        spec: ProjectSpec,
        svc: ServiceSpec,
        plan: Plan,
        deps: list[Future[None]],
        image_ids: Mapping[str, str | None],
        extra: Mapping[str, str],
        timeout: float,
        stop: _Stop,
        touched: list[_Ready],
        recreated: set[str],
    ) -> None:
        for dep in deps:
            dep.result()  # a dependency that failed fails its dependents with the same error
        changes = [c for c in plan.for_service(svc.name) if c.action is not Action.REMOVE]
        # depends_on.restart: a dependent follows its dependency when that was recreated.
        follow = not changes and any(d.restart and d.service in recreated for d in svc.depends_on)
        if not changes and not follow:
            return
        self._await_dependencies(spec, svc, timeout, stop)
        image_id = image_ids.get(svc.image) or ""
        for change in changes:
            stop.check(svc.name)
            if change.action is Action.CREATE:
                self._create(spec, svc, change.number, image_id, extra)
            elif change.action is Action.RECREATE:
                self._recreate(spec, svc, change, image_id, extra)
                recreated.add(svc.name)
            else:
                self._start(svc, change)
            touched.append(_Ready(svc, change.container))
        if follow:
            live = self.observe([spec.name])[spec.name].service(svc.name)
            for c in live:
                self._engine.restart_container(c.id, svc.stop_timeout)
                touched.append(_Ready(svc, c.name))

    def _create(
        self,
        spec: ProjectSpec,
        svc: ServiceSpec,
        number: int,
        image_id: str,
        extra: Mapping[str, str],
        keep_volumes: Mapping[str, str] | None = None,
    ) -> None:
        req = container_request(
            spec, svc, number, image_id=image_id, extra_labels=extra, keep_volumes=keep_volumes or {}
        )
        try:
            cid = self._engine.create_container(req.name, req.body)
            for network, endpoint in req.connect:
                self._engine.connect_network(network, cid, endpoint)
            self._engine.start_container(req.name)  # by name: error messages then name it
        except EngineError as exc:
            hint = ""
            if exc.status == 409:
                hint = " (a container with this name exists outside the project: remove or rename it)"
            raise DeployError(
                f"service {svc.name!r}: {exc}{hint}", service=svc.name, reason="StartFailed"
            ) from exc

    def _recreate(
        self, spec: ProjectSpec, svc: ServiceSpec, change: Change, image_id: str, extra: Mapping[str, str]
    ) -> None:
        old = self._engine.inspect_container(change.container_id or change.container) or {}
        named = {v.name for v in spec.volumes}
        # Anonymous volumes (an image's VOLUME, `- /data`) keep their data across a recreate, as in Compose.
        keep = {
            m["Destination"]: m["Name"]
            for m in old.get("Mounts") or ()
            if m.get("Type") == "volume" and _ANONYMOUS.match(m.get("Name") or "") and m["Name"] not in named
        }
        if old:
            self._engine.stop_container(old["Id"], svc.stop_timeout)
            self._engine.remove_container(old["Id"])  # keeps its volumes: the new container takes them
        self._create(spec, svc, change.number, image_id, extra, keep)

    def _start(self, svc: ServiceSpec, change: Change) -> None:
        ref = change.container_id or change.container
        try:
            info = self._engine.inspect_container(ref) or {}
            if (info.get("State") or {}).get("Paused"):
                self._engine.unpause_container(ref)
            else:
                self._engine.start_container(ref)
        except EngineError as exc:
            raise DeployError(f"service {svc.name!r}: {exc}", service=svc.name, reason="StartFailed") from exc

    # --- waiting ---

    def _await_dependencies(self, spec: ProjectSpec, svc: ServiceSpec, timeout: float, stop: _Stop) -> None:
        for dep in svc.depends_on:
            target = spec.service(dep.service)
            if target is None:
                continue  # optional (required: false) and not in the project
            try:
                for number in range(1, target.replicas + 1):
                    self._await(target, target.container(spec.name, number), dep.condition, timeout, stop)
            except DeployError as exc:
                if dep.required or exc.reason in ("Cancelled", "Aborted"):
                    raise
                # required: false -> Compose carries on without the optional dependency.

    def _await_ready(self, touched: list[_Ready], timeout: float, stop: _Stop) -> None:
        if not touched:
            return
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            futures = [pool.submit(self._await, r.service, r.container, None, timeout, stop) for r in touched]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() for f in done):
                stop.abort()
        errors = [e for f in futures if (e := f.exception()) is not None]
        if errors:
            real = [e for e in errors if getattr(e, "reason", "") != "Aborted"]
            raise (real or errors)[0]

    def _await(
        self, svc: ServiceSpec, container: str, condition: Condition | None, timeout: float, stop: _Stop
    ) -> None:
        """Poll one container until it meets ``condition`` (None: "ready": healthy if it has a
        healthcheck, else running or completed). Raises DeployError with the evidence otherwise."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            info = self._engine.inspect_container(container)
            if info is None:
                raise DeployError(
                    f"service {svc.name!r}: container {container} disappeared",
                    service=svc.name,
                    reason="Missing",
                )
            verdict = _verdict(svc, info, condition)
            if verdict == "ok":
                return
            if verdict != "wait":
                message = self._evidence(svc, info, verdict, condition, timeout)
                raise DeployError(message, service=svc.name, reason=verdict)
            if time.monotonic() >= deadline:
                message = self._evidence(svc, info, "Timeout", condition, timeout)
                raise DeployError(message, service=svc.name, reason="Timeout")
            stop.sleep(delay, svc.name)
            delay = min(delay * 1.5, 0.5)

    def _evidence(
        self,
        svc: ServiceSpec,
        info: Mapping[str, Any],
        reason: str,
        condition: Condition | None,
        timeout: float,
    ) -> str:
        """The message of a failed wait: what happened, the last health probe, the last log lines."""
        state = info.get("State") or {}
        health = state.get("Health")
        probes = (health or {}).get("Log") or []
        probe = "no health check has completed yet"
        if probes:
            last = probes[-1]
            probe = f"last health check exited {last.get('ExitCode')}: {str(last.get('Output', '')).strip()}"
        logs = self._engine.container_logs(str(info.get("Id")), LOG_LINES).rstrip()
        tail = f"\nlast {LOG_LINES} log lines:\n{logs}" if logs else "\n(no log output)"
        who = f"service {svc.name!r} ({str(info.get('Name', '')).lstrip('/')})"
        if reason == "Timeout":
            goal = "complete" if condition is Condition.COMPLETED else "become healthy" if health else "start"
            return f"{who} did not {goal} within {timeout:g}s" + (f"; {probe}" if health else "") + tail
        if reason == "Unhealthy":
            return f"{who} is unhealthy; {probe}{tail}"
        if reason == "NoHealthcheck":
            return f"{who} has no healthcheck, but a dependent waits for it with service_healthy"
        return f"{who} exited with code {state.get('ExitCode')}{tail}"

    # --- down ---

    def down(
        self, project_name: str, *, volumes: bool = False, images: bool = False, timeout: float = 10.0
    ) -> None:
        """Remove the project's containers and networks (`docker compose down`); its volumes only with
        ``volumes``, the images built for it only with ``images``. Only labelled objects are touched."""
        validate_project_name(project_name)
        owned = {L.PROJECT: project_name}
        self._remove([c["Id"] for c in self._engine.list_containers(project_name)], timeout, volumes=volumes)
        problems: list[str] = []
        for net in self._engine.list_networks(owned):
            problems += _attempt(lambda n=net: self._engine.remove_network(n["Name"]))
        if volumes:
            for vol in self._engine.list_volumes(owned):
                problems += _attempt(lambda v=vol: self._engine.remove_volume(v["Name"]))
        if images:
            for image in self._engine.list_images(owned):
                problems += _attempt(lambda i=image: self._engine.remove_image(i))
        if problems:
            raise DeployError(
                f"down of {project_name!r} left things behind: " + "; ".join(problems), reason="DownFailed"
            )

    def volume_names(self, project_name: str) -> list[str]:
        """Names of the volumes labelled as this project's (what `down --volumes` would remove)."""
        validate_project_name(project_name)
        return sorted(v["Name"] for v in self._engine.list_volumes({L.PROJECT: project_name}))


def _spec(project: RenderedLike) -> ProjectSpec:
    validate_project_name(project.name)
    return project_spec(project)


def _attempt(fn: Any) -> list[str]:
    try:
        fn()
    except EngineError as exc:
        return [str(exc)]
    return []


def _verdict(svc: ServiceSpec, info: Mapping[str, Any], condition: Condition | None) -> str:
    """ "ok", "wait", or the DeployError reason why this container will never meet ``condition``."""
    state = info.get("State") or {}
    status = state.get("Status", "")
    health = (state.get("Health") or {}).get("Status")
    code = state.get("ExitCode")
    if condition is Condition.STARTED:
        return "wait" if status == "created" else "ok"
    if condition is Condition.COMPLETED:
        if status == "exited":
            return "ok" if code == 0 else "Exited"
        return "Exited" if status in ("restarting", "dead") else "wait"
    if condition is Condition.HEALTHY and health is None:
        return "NoHealthcheck"
    if status in ("exited", "dead", "restarting"):
        # Ready also covers a job nobody waits on that already finished with 0 (as plan.completed).
        finished = condition is None and status == "exited" and code == 0 and finishes(svc)
        return "ok" if finished and health is None else "Exited"
    if health == "healthy" or (health is None and status == "running"):
        return "ok"
    if health == "unhealthy":
        return "Unhealthy"
    return "wait"
