"""Make one Docker host match a rendered compose project: `reconciler up/plan/down`, and the daemon's deploys.

``Converger.up`` reads as the steps of `docker compose up -d --remove-orphans`: networks, volumes, images,
plan, orphans, then containers in depends_on order (each waiting on its dependencies' conditions), then
every touched container is checked to be running or healthy. Docker is reached only through ``Engine``.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from reconciler import contentfiles, logs, netpool, secrets
from reconciler import labels as L
from reconciler.engine import Engine, EngineError, EngineUnavailable
from reconciler.errors import DeployError, DockerError, ReconcilerError, StateError
from reconciler.names import validate_project_name
from reconciler.observe import Listing, Observer
from reconciler.plan import Action, Change, LiveProject, Plan, finishes, make_plan
from reconciler.spec import (
    COMPOSE_VERSION,
    Condition,
    ProjectSpec,
    PullPolicy,
    ServiceSpec,
    container_request,
    host_paths,
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

    def __init__(self, engine: Engine, *, state_dir: str | os.PathLike[str] | None = None) -> None:
        """``state_dir``: where the files of content-based secrets and configs are written (under
        ``files/<project>/``); a project with such secrets or configs needs one."""
        self._engine = engine
        self._state_dir = state_dir
        self._images: dict[str, str | None] = {}  # image ref -> ID, as of the last observe()
        self.observer = Observer(engine)
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The Engine adapter, for read-only lookups done before a deploy (the policy's facts)."""
        return self._engine

    # --- observe and plan (change nothing) ---

    def observe(self, projects: Collection[str] | None = None) -> dict[str, LiveProject]:
        """The live containers, networks and volumes of ``projects`` (all compose projects if None): one
        list call per kind; containers are inspected only when new or updated (see ``reconciler.observe``)."""
        live = self.observer.snapshot(projects)
        with self._lock:
            self._images.clear()  # an observation is a snapshot: tags are resolved again after it
        return live

    def last_observation(self, *, since: float) -> Listing | None:
        """The raw container, network and volume listings of the last observe() that listed every
        project, if it began after ``since`` (``time.monotonic()``); None otherwise."""
        return self.observer.last_listing(since=since)

    def project_labels(
        self, labels: Mapping[str, str], *, live: Listing | None = None
    ) -> dict[str, dict[str, str]]:
        """Projects with a container, volume or network carrying all of ``labels`` -> that object's labels.

        How the daemon finds ephemeral stacks to sweep even after their containers are gone. ``live``
        (a recent observe()'s listings) stands in for the three list calls."""
        found: dict[str, dict[str, str]] = {}
        wanted: dict[str, str | None] = {**labels, L.PROJECT: None}
        if live is not None:
            listings: tuple[Sequence[Mapping[str, Any]], ...] = tuple(
                [o for o in objects if all((o.get("Labels") or {}).get(k) == v for k, v in labels.items())]
                for objects in (live.containers, live.networks, live.volumes)
            )
        else:
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
        """Container events of our stacks (start, die, stop, health_status, destroy, oom, update) and
        network connect/disconnect of their containers, until ``stop`` is set. Reads in windows of
        ``window`` seconds so stopping never waits on a quiet stream; raises DockerError when the engine
        goes away (the caller reconnects, passing the ``time`` of the last event seen as ``since`` to miss
        nothing). An ``update`` makes the next observe inspect that container again."""
        filters = {
            "type": ["container", "network"],
            "event": [
                *("start", "die", "stop", "health_status", "destroy", "oom", "update"),  # containers'
                *("connect", "disconnect"),  # networks'
            ],
        }
        since = time.time() if since is None else since
        try:
            while not stop.is_set():
                until = time.time() + window
                for event in self._engine.events(since, until, filters):
                    if not self._ours(event):
                        continue
                    if event.get("Action") == "update":
                        self.observer.forget(str((event.get("Actor") or {}).get("ID") or ""))
                    yield event
                    if stop.is_set():
                        return
                if not stop.is_set() and time.time() < until - 0.25:
                    # docker-py ends the stream quietly when the engine drops the connection: that is an
                    # outage, not a quiet window (the caller reconnects from ``since``).
                    raise DockerError("the Docker event stream ended early (engine stopped or restarted?)")
                since = until
        except DockerError:
            self.observer.forget()  # an `update` may be missed while the stream is down: inspect again
            raise

    def _ours(self, event: Mapping[str, Any]) -> bool:
        """Only containers the reconciler made (and network events about them) are our business: another
        compose project starting or stopping on the host must not cost a drift check. Docker's `label`
        filter would drop every network event (they carry no labels), so the filter is applied here."""
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if event.get("Type") == "network":
            return self.observer.knows(attributes.get("container"))
        return attributes.get(L.MANAGED) == "true"

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
        owner: str | None = None,
        allow_empty: bool = False,
        subnet_pool: str | None = None,
    ) -> Plan:
        """Converge ``project`` (`docker compose up -d --remove-orphans`) and return the plan applied.

        ``owner`` (``"<instance>/<app>/<environment>"``) is stamped as ``io.reconciler.owner`` on every
        object created; an existing object of the project carrying another owner makes the deploy fail
        before anything changes. ``allow_empty``: a project with no services may remove a running stack.
        ``subnet_pool`` (a CIDR): project networks without their own IPAM get a free /24 from it.

        ``labels`` go on every container, network and volume created (not into the config hash).
        ``build=False`` builds only missing images; by default services with `build:` are rebuilt
        every time, because the checked-out source is the truth and Docker's layer cache makes an
        unchanged rebuild cheap and keeps its image ID (so nothing is recreated).
        Raises DeployError(service=..., reason=...) when a service fails to start or become healthy
        within ``timeout`` seconds, or reason="Cancelled" as soon as ``cancel`` is set while waiting;
        before any change, reason="NotOwner", "VolumeConflict"/"NetworkConflict" or "EmptyProject".

        A recreate creates the replacement first, under a temporary name, so a config Docker refuses
        never costs the running container; a start-first service switches once the replacement is ready.
        """
        spec = _spec(project)  # refuses unsupported keys and bad names before any Docker call
        log = logs.get(project=spec.name)
        for svc in spec.services:
            if svc.ignored:  # Swarm-only keys Compose drops outside Swarm too: said once per up
                log.info("up.keys_ignored", service=svc.name, keys=list(svc.ignored))
        # Refuse before any change: an empty project, or objects that another deployment owns.
        summaries = self._engine.list_containers(spec.name)
        if not spec.services and not allow_empty:
            raise _empty_project(spec.name, summaries)
        self._check_ownership(spec, summaries, owner)
        extra = dict(labels or {})
        if owner is not None:
            extra[L.OWNER] = owner
        stop = _Stop(cancel)
        # Files of content-based secrets and configs: bind-mounted, so written before any create.
        self._write_files(spec)
        # Networks and volumes first: containers refer to them by name.
        self._ensure_networks(spec, extra, subnet_pool=subnet_pool)
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
        # Every container now mounts the files of this spec: the older secret/config files can go.
        if self._state_dir is not None:
            contentfiles.prune(self._state_dir, spec.name, {f.path for f in spec.files})
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
        """The first steps of `up` and nothing more: ownership checked, files written, networks and
        volumes created, images pulled or built. No container changes, so pre-deploy hooks can run
        from the new revision next to the old stack. Returns the image IDs by image name."""
        spec = _spec(project)
        self._check_ownership(spec, self._engine.list_containers(spec.name), owner)
        extra = {**(labels or {}), **({L.OWNER: owner} if owner is not None else {})}
        self._write_files(spec)
        self._ensure_networks(spec, extra, subnet_pool=subnet_pool)
        self._ensure_volumes(spec, extra)
        return self._ensure_images(spec, build=True, stop=_Stop(cancel))

    def _write_files(self, spec: ProjectSpec) -> None:
        if not spec.files:
            return
        if self._state_dir is None:
            raise DeployError(
                f"project {spec.name!r} has secrets or configs with `content:`/`environment:`, whose files "
                "are written under a state directory, and this converger was given none",
                reason="FilesFailed",
            )
        contentfiles.write(self._state_dir, spec.name, spec.files)

    def _remove(self, ids: list[str], timeout: float | None = None, *, volumes: bool = False) -> None:
        """Stop (in parallel: each may take its stop timeout) and remove containers."""

        def remove(cid: str) -> None:
            self._engine.stop_container(cid, timeout)
            self._engine.remove_container(cid, volumes=volumes, force=True)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(remove, ids))

    def _check_ownership(
        self, spec: ProjectSpec, containers: list[dict[str, Any]], owner: str | None
    ) -> None:
        """Refuse the project when a container, network or volume it would use carries another owner, or a
        fixed-name network or volume belongs to another project. Objects without an owner label (an older
        release's, or made by hand) are adopted as they are. With ``owner`` None, only projects count."""
        for c in containers:
            name = str((c.get("Names") or [""])[0]).lstrip("/")
            _check_owner(spec.name, f"container {name}", c.get("Labels"), owner)
        used = {n for s in spec.services for n in s.config.get("networks", {})}
        for net in spec.networks:
            if net.external or net.name not in used:
                continue
            labels = (self._engine.inspect_network(net.name) or {}).get("Labels")
            _check_owner(spec.name, f"network {net.name}", labels, owner)
            _check_project(spec.name, "network", net.name, labels)
        for vol in spec.volumes:
            if vol.external:
                continue
            labels = (self._engine.inspect_volume(vol.name) or {}).get("Labels")
            _check_owner(spec.name, f"volume {vol.name}", labels, owner)
            _check_project(spec.name, "volume", vol.name, labels)

    def _ensure_networks(
        self, spec: ProjectSpec, extra: Mapping[str, str], *, subnet_pool: str | None = None
    ) -> None:
        if subnet_pool is not None:
            netpool.parse_pool(subnet_pool)  # a bad pool fails before any Docker call
        taken: list[str] | None = None  # the host's subnets, listed when a pool first needs them
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
                labels = {**net.labels, **extra, **own, L.MANAGED: "true"}
                # Only bridges whose compose file sets no subnet: a macvlan's subnet is its parent LAN's.
                own_ipam = dict(net.ipam or {"Driver": "default", "Options": {}})
                bridge = net.driver in (None, "bridge") and own_ipam.get("Driver") in (None, "default")
                pool = subnet_pool if bridge and not own_ipam.get("Config") else None
                refused: list[str] = []  # subnets another network took after we listed them
                for attempt in range(5):
                    target, subnet = net, None
                    if pool is not None:
                        if taken is None or attempt:  # once; again only after a concurrent deploy won
                            taken = netpool.subnets(self._engine.list_networks({}))
                        try:
                            subnet = netpool.allocate(pool, [*taken, *refused])
                        except DeployError as exc:
                            raise DeployError(f"network {net.name!r}: {exc}", reason=exc.reason) from exc
                        target = replace(net, ipam={**own_ipam, "Config": [{"Subnet": subnet}]})
                    try:
                        self._engine.create_network(target, labels)
                    except (EngineError, EngineUnavailable) as exc:
                        # Docker 20.10 answers 403 "Pool overlaps with other one on this address space".
                        if subnet is not None and netpool.overlaps(exc.message):
                            refused.append(subnet)
                            continue
                        if netpool.defaults_exhausted(exc.message):
                            raise netpool.defaults_exhausted_error(net.name, exc.message) from exc
                        if isinstance(exc, EngineUnavailable):
                            raise  # transient: the deploy is retried
                        if exc.status != 409:  # 409: a concurrent deploy created it first
                            raise DeployError(str(exc), reason="NetworkFailed") from exc
                    if taken is not None and subnet is not None:
                        taken.append(subnet)  # the project's next network must not get it too
                    break
                else:
                    raise DeployError(
                        f"network {net.name!r}: Docker refused subnets {', '.join(refused)} from "
                        f"networks_pool {pool} as taken, though no Docker network listed them (a host "
                        "route or VPN may use them): choose a pool no host interface uses",
                        reason="NetworkFailed",
                    )

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
                    # Only with a platform: an engine without the argument still takes the plain pull.
                    pf = {"platform": svc.platform} if svc.platform else {}
                    current = self._engine.pull_image(svc.image, **pf)
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
            name = change.container
            if change.action is Action.CREATE:
                name = self._start_new(svc, self._create(spec, svc, change.number, image_id, extra))
            elif change.action is Action.RECREATE:
                name = self._recreate(spec, svc, change, image_id, extra, timeout, stop)
                recreated.add(svc.name)
            else:
                self._start(svc, change)
            touched.append(_Ready(svc, name))
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
        *,
        name: str | None = None,
    ) -> str:
        """Create replica ``number`` (under ``name`` instead of its own, during a recreate) and connect its
        other networks; nothing is started. Returns the name it was created under."""
        req = container_request(
            spec,
            svc,
            number,
            image_id=image_id,
            extra_labels=extra,
            keep_volumes=keep_volumes or {},
            joined=self._joined(spec, svc),
            files_dir=str(contentfiles.project_dir(self._state_dir or "", spec.name)),
        )
        name = name or req.name
        try:
            pf = {"platform": req.platform} if req.platform else {}
            cid = self._engine.create_container(name, req.body, **pf)
        except (EngineError, EngineUnavailable) as exc:
            # Docker validates a create and answers 4xx for a bad config (unknown log driver...): that is
            # permanent. A 5xx or 429 here is the engine's trouble, not the config's: transient, retried.
            if isinstance(exc, EngineUnavailable):
                raise
            hint = ""
            if exc.status == 409:
                hint = " (a container with this name exists outside the project: remove or rename it)"
            raise _start_failed(svc, exc, hint) from exc
        try:
            for network, endpoint in req.connect:
                self._engine.connect_network(network, cid, endpoint)
        except (EngineError, EngineUnavailable) as exc:
            self._discard(name)
            if _unanswered(exc):
                raise
            raise _start_failed(svc, exc) from exc
        return name

    def _joined(self, spec: ProjectSpec, svc: ServiceSpec) -> dict[str, str]:
        """The IDs of the containers whose namespaces ``svc`` joins (``service:NAME``: NAME's replica 1,
        as Compose's getContainerMode). They exist: NAME is an implicit dependency, converged first."""
        out: dict[str, str] = {}
        for name in svc.joins:
            target = spec.service(name)
            ref = target.container(spec.name, 1) if target else f"{spec.name}-{name}-1"
            info = self._engine.inspect_container(ref)
            if info is None:
                raise DeployError(
                    f"service {svc.name!r} shares a namespace with service {name!r} (network_mode, pid or "
                    f"ipc `service:{name}`), but {name!r} has no container {ref}",
                    service=svc.name,
                    reason="StartFailed",
                )
            out[name] = str(info["Id"])
        return out

    def _start_new(self, svc: ServiceSpec, name: str, note: str = "") -> str:
        """Start a container created moments ago (by name: error messages then name it). Docker refusing
        it is this config's fault whatever the HTTP status (a missing device is a 500): permanent. Only
        no answer at all stays transient."""
        try:
            self._engine.start_container(name)
        except (EngineError, EngineUnavailable) as exc:
            if _unanswered(exc):
                raise
            raise _start_failed(svc, exc, note) from exc
        return name

    def _recreate(
        self,
        spec: ProjectSpec,
        svc: ServiceSpec,
        change: Change,
        image_id: str,
        extra: Mapping[str, str],
        timeout: float,
        stop: _Stop,
    ) -> str:
        """Replace a container create-first, as Compose v2 does: the replacement is created under the
        temporary name ``{old id[:12]}_{name}``, so a config Docker refuses never costs the running
        container. Returns the final name, which the replacement takes once the old one is gone."""
        final = svc.container(spec.name, change.number)
        old = self._engine.inspect_container(change.container_id or change.container)
        if old is None:  # removed meanwhile: nothing to replace
            return self._start_new(svc, self._create(spec, svc, change.number, image_id, extra))
        named = {v.name for v in spec.volumes}
        # Anonymous volumes (an image's VOLUME, `- /data`) keep their data across a recreate, as in Compose.
        keep = {
            m["Destination"]: m["Name"]
            for m in old.get("Mounts") or ()
            if m.get("Type") == "volume" and _ANONYMOUS.match(m.get("Name") or "") and m["Name"] not in named
        }
        temp = f"{str(old['Id'])[:12]}_{final}"
        new = self._create(spec, svc, change.number, image_id, extra, keep, name=temp)
        if _side_by_side(svc):
            self._replace_start_first(svc, old, new, timeout, stop)
        else:
            self._replace_stop_first(svc, old, new)
        self._engine.rename_container(new, final)
        return final

    def _replace_stop_first(self, svc: ServiceSpec, old: Mapping[str, Any], new: str) -> None:
        """Stop the old container, start the new one; if that start fails, bring the old one back."""
        old_id, old_name = str(old["Id"]), str(old.get("Name", "")).lstrip("/")
        was_running = bool((old.get("State") or {}).get("Running"))
        self._engine.stop_container(old_id, svc.stop_timeout)
        try:
            self._engine.start_container(new)
        except (EngineError, EngineUnavailable) as exc:
            self._discard(new)
            note = ""
            if was_running:
                try:
                    self._engine.start_container(old_id)
                    note = f"; the replacement was removed and {old_name} was started again"
                except ReconcilerError as again:
                    note = f"; the replacement was removed, but starting {old_name} again failed: {again}"
            if _unanswered(exc):
                raise
            raise _start_failed(svc, exc, note) from exc
        self._engine.remove_container(old_id)  # keeps its volumes: the new container took them

    def _replace_start_first(
        self, svc: ServiceSpec, old: Mapping[str, Any], new: str, timeout: float, stop: _Stop
    ) -> None:
        """Start the new container next to the old one and switch only once it is ready (healthy, or
        running without a healthcheck): the old one serves until then, and keeps serving if it never is."""
        old_id, old_name = str(old["Id"]), str(old.get("Name", "")).lstrip("/")
        keeps = f"the replacement was removed and {old_name} keeps running"
        try:
            self._start_new(svc, new, f"; {keeps}")
            self._await(svc, new, None, timeout, stop)
        except ReconcilerError as exc:  # refused, unhealthy, exited, timed out, cancelled, Docker gone
            # Out of DNS before it goes: it may have answered requests already (Docker's DNS ignores health).
            with contextlib.suppress(ReconcilerError):
                self._leave_networks(new, svc.config.get("networks") or {})
            self._discard(new)
            if isinstance(exc, DeployError) and exc.reason != "StartFailed":
                raise DeployError(f"{exc.message}\n{keeps}", service=svc.name, reason=exc.reason) from exc
            raise
        # Out of the networks first, so DNS stops answering with it and no new request reaches it.
        self._leave_networks(old_id, (old.get("NetworkSettings") or {}).get("Networks") or {})
        self._engine.stop_container(old_id, svc.stop_timeout)
        self._engine.remove_container(old_id)  # keeps its volumes: the new container took them

    def _leave_networks(self, ref: str, networks: Collection[str]) -> None:
        for network in networks:
            try:
                self._engine.disconnect_network(network, ref)
            except (EngineError, EngineUnavailable) as exc:
                if _unanswered(exc):
                    raise
                # Refused (`none`, say): stopping the container takes it out of DNS all the same.

    def _discard(self, ref: str) -> None:
        """Remove a replacement that will not be used; its failure is what gets reported, not this."""
        # If even this fails, the next plan removes the leftover temporary container as a duplicate.
        with contextlib.suppress(ReconcilerError):
            self._engine.remove_container(ref, force=True)

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
            output = secrets.scrub(str(last.get("Output", "")).strip())  # a probe may print a secret too
            probe = f"last health check exited {last.get('ExitCode')}: {output}"
        # A container may print its environment: the tail is masked before it becomes an error message.
        logs = secrets.scrub(self._engine.container_logs(str(info.get("Id")), LOG_LINES).rstrip())
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
        self,
        project_name: str,
        *,
        volumes: bool = False,
        images: bool = False,
        timeout: float = 10.0,
        owner: str | None = None,
    ) -> None:
        """Remove the project's containers and networks (`docker compose down`); its volumes only with
        ``volumes``, the images built for it only with ``images``. Only labelled objects are touched.

        With ``owner``, only objects whose ``io.reconciler.owner`` is ``owner`` or absent (an older
        release's) are removed: another owner's, and what its containers use, are left alone and logged."""
        validate_project_name(project_name)
        owned = {L.PROJECT: project_name}
        log = logs.get(project=project_name)
        containers = self._engine.list_containers(project_name)
        foreign = [c for c in containers if not _mine(c, owner)]
        # What the foreign containers use stays too: removing it would fail, or break them.
        used_networks = {n for c in foreign for n in ((c.get("NetworkSettings") or {}).get("Networks") or {})}
        used_volumes = {m.get("Name") for c in foreign for m in c.get("Mounts") or () if m.get("Name")}
        used_images = {c.get("ImageID") for c in foreign}
        for c in foreign:
            name = str((c.get("Names") or [""])[0]).lstrip("/")
            _skipped(log, "container", name, c)
        self._remove([c["Id"] for c in containers if _mine(c, owner)], timeout, volumes=volumes)
        problems: list[str] = []
        for net in self._engine.list_networks(owned):
            if not _mine(net, owner) or net["Name"] in used_networks:
                _skipped(log, "network", net["Name"], net)
                continue
            problems += _attempt(lambda n=net: self._engine.remove_network(n["Name"]))
        if volumes:
            for vol in self._engine.list_volumes(owned):
                if not _mine(vol, owner) or vol["Name"] in used_volumes:
                    _skipped(log, "volume", vol["Name"], vol)
                    continue
                problems += _attempt(lambda v=vol: self._engine.remove_volume(v["Name"]))
        if images:
            keep = set(used_images)
            if owner is not None:  # the image list carries no labels: ask for the owned ones by label
                labelled = self._engine.list_images({**owned, L.OWNER: None})
                keep |= set(labelled) - set(self._engine.list_images({**owned, L.OWNER: owner}))
            for image in self._engine.list_images(owned):
                if image in keep:
                    why = "used or owned by another deployment"
                    log.warning("down.skipped_foreign", kind="image", name=image, why=why)
                    continue
                problems += _attempt(lambda i=image: self._engine.remove_image(i))
        if self._state_dir is not None:  # the files of its content-based secrets and configs
            try:
                contentfiles.remove(self._state_dir, project_name)
            except StateError as exc:
                problems.append(exc.message)
        if problems:
            raise DeployError(
                f"down of {project_name!r} left things behind: " + "; ".join(problems), reason="DownFailed"
            )

    def volume_names(self, project_name: str) -> list[str]:
        """Names of the volumes labelled as this project's (what `down --volumes` would remove)."""
        validate_project_name(project_name)
        return sorted(v["Name"] for v in self._engine.list_volumes({L.PROJECT: project_name}))


# Normalized specs of frozen rendered projects, by identity: the drift check plans every live stack
# against the same Resolved revision each cycle, and normalizing is most of a no-op plan's cost.
_SPECS: OrderedDict[int, tuple[RenderedLike, ProjectSpec]] = OrderedDict()
_SPECS_LOCK = threading.Lock()
_SPECS_MAX = 512


def _fresh_spec(project: RenderedLike) -> ProjectSpec:
    # spec reads no filesystem: the deployer's Resolved carries the mounted paths resolved when it was
    # deployed; a plain render (`reconciler up`, `plan`) gets them resolved here, as release 0 did.
    real = getattr(project, "real_paths", None)
    if real is None:
        real = {path: os.path.realpath(path) for path in host_paths(project.model)}
    return project_spec(project, real_paths=real)


def _spec(project: RenderedLike) -> ProjectSpec:
    params = getattr(project, "__dataclass_params__", None)
    if params is None or not params.frozen:
        validate_project_name(project.name)
        return _fresh_spec(project)
    key = id(project)
    with _SPECS_LOCK:
        hit = _SPECS.get(key)
        if hit is not None and hit[0] is project:
            _SPECS.move_to_end(key)
            return hit[1]
    validate_project_name(project.name)
    spec = _fresh_spec(project)
    with _SPECS_LOCK:
        _SPECS[key] = (project, spec)  # the entry keeps the project alive, so its id is not reused
        while len(_SPECS) > _SPECS_MAX:
            _SPECS.popitem(last=False)
    return spec


def _mine(obj: Mapping[str, Any], owner: str | None) -> bool:
    """Whether ``down`` for ``owner`` may remove ``obj``: any owner if None; else ours, or no owner yet."""
    return owner is None or (obj.get("Labels") or {}).get(L.OWNER) in (None, owner)


def _skipped(log: Any, kind: str, name: str, obj: Mapping[str, Any]) -> None:
    other = (obj.get("Labels") or {}).get(L.OWNER)
    why = "owned by another deployment" if other else "used by another deployment's containers"
    log.warning("down.skipped_foreign", kind=kind, name=name, owner=other, why=why)


def _attempt(fn: Any) -> list[str]:
    try:
        fn()
    except EngineError as exc:
        return [str(exc)]
    return []


def _empty_project(project: str, containers: list[dict[str, Any]]) -> DeployError:
    # Docker Compose v2 refuses the same (`no service selected`): an empty render is far more often a
    # profile or an override gone wrong than a wish to remove the whole stack.
    running = sum(1 for c in containers if c.get("State") == "running")
    return DeployError(
        f"project {project!r}: the rendered project has no services (every service was removed, or all are "
        f"behind profiles that are not enabled); nothing was changed and the {running} running container(s) "
        "of the project are kept. Set `allow_empty: true` on the environment to let an empty project "
        "remove them",
        reason="EmptyProject",
    )


def _unanswered(exc: EngineError | EngineUnavailable) -> bool:
    """Docker never answered (connection lost, timeout): transient, whatever the call was."""
    return isinstance(exc, EngineUnavailable) and exc.status is None


def _start_failed(svc: ServiceSpec, exc: ReconcilerError, note: str = "") -> DeployError:
    return DeployError(f"service {svc.name!r}: {exc.message}{note}", service=svc.name, reason="StartFailed")


def _side_by_side(svc: ServiceSpec) -> bool:
    """Whether a recreate may start the replacement next to the old container (start-first). spec keeps
    fixed host ports and container_name stop-first; the host's network stack, another container's, or a
    fixed IP or MAC address would collide as well."""
    if svc.update_order != "start-first":
        return False
    mode = str(svc.config.get("network_mode") or "")
    if mode == "host" or mode.startswith(("container:", "service:")) or svc.config.get("mac_address"):
        return False
    networks = svc.config.get("networks") or {}
    return not any(ep.get("ipv4_address") or ep.get("ipv6_address") for ep in networks.values())


def _check_owner(project: str, what: str, labels: Mapping[str, str] | None, owner: str | None) -> None:
    other = (labels or {}).get(L.OWNER)
    if owner is None or other is None or other == owner:
        return
    raise DeployError(
        f"project {project!r}: {what} belongs to {other!r}, not to {owner!r}, so nothing was changed. "
        "Two deployments share this project name: rename the project or the environment of one of "
        f"them, or remove the other one's stack (owner {other!r}) first",
        reason="NotOwner",
    )


def _check_project(project: str, kind: str, name: str, labels: Mapping[str, str] | None) -> None:
    other = (labels or {}).get(L.PROJECT)
    if other is None or other == project:
        return  # no project label (e.g. `docker volume create`): usable, as in Compose
    raise DeployError(
        f"{kind} {name!r} belongs to project {other!r}, not to {project!r}: rename the {kind} (its `name:`) "
        f"or the project, or declare it `external: true` to share it on purpose",
        reason=f"{kind.capitalize()}Conflict",
    )


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
