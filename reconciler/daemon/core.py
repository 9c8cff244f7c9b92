"""The daemon: polls git, decides which environments exist at which commit, and feeds the workers.

Called by ``reconciler run`` (with the scheduler and HTTP server) and by ``reconciler sync`` (one pass).
Implements ``reconciler.report.view.DaemonView`` for the status page, the JSON API and the metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import labels as L
from reconciler import logs
from reconciler.config.hosts import DEFAULT_HOST
from reconciler.daemon.deploy import Deployer, Outcome, Target
from reconciler.daemon.ratelimit import RateLimit
from reconciler.daemon.workqueue import Job, WorkQueue
from reconciler.errors import DockerError, GitError, ReconcilerError
from reconciler.status import Drift, EnvironmentStatus, Health, Result, Sync

_REGISTRY_TIMEOUT = 15.0  # seconds for one registry digest lookup through the Engine
# Seconds a poll waits for a host's listing of leftover previews: a slow host is swept at a later poll.
_SWEEP_WAIT = 1.0
Stacks = dict[str, tuple[str, str, str]]  # project -> (project, branch, environment)

if TYPE_CHECKING:
    from reconciler.branches import Desired
    from reconciler.config import AppConfig, Config, EnvConfig
    from reconciler.converge import Converger
    from reconciler.daemon.hosts import Backends
    from reconciler.imagecheck import ImageChecker
    from reconciler.report.metrics import Metrics
    from reconciler.source import GitSource
    from reconciler.state import State


@dataclass
class AppView:
    """What the daemon last learned about one app from git."""

    heads: dict[str, str] = field(default_factory=dict)
    error: str = ""
    polled: float = 0.0
    refused: dict[str, str] = field(default_factory=dict)  # branch -> why no environment
    skipped: dict[str, str] = field(default_factory=dict)  # refs git refuses -> why (never deployed)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        state: State,
        converger: Converger,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        owner: bool = False,
        backends: Backends | None = None,
    ) -> None:
        """``owner``: this process is the daemon (`reconciler run`), so deploys left running in the
        database were interrupted by a crash; one-shot CLI commands must not claim that. ``converger``
        is the default host's; ``backends`` gives every host's (made from the configuration if None)."""
        from reconciler.daemon.hosts import Backends
        from reconciler.source import GitSource

        self.config = config
        self.state = state
        self.converger = converger
        self.metrics = metrics
        self.clock = clock
        self._apps: dict[str, AppConfig] = {a.name: a for a in config.apps}
        self._sources: dict[str, GitSource] = {
            a.name: GitSource(a.name, a.repo, Path(config.state_dir) / "git") for a in config.apps
        }
        self.backends = backends or Backends(config, default=converger)
        self.deployer = Deployer(
            config, state, converger, metrics, self._sources.__getitem__, clock, backends=self.backends
        )
        self.queue = WorkQueue(config.max_concurrent_deploys)
        self.heal_limit = RateLimit(limit=5, window=600.0)
        self.images = _image_checker(self)
        self.deployer.before_up = self.images.before_up
        self._lock = threading.RLock()
        self._views: dict[str, AppView] = {name: AppView() for name in self._apps}
        self._targets: dict[str, Target] = {}
        self._drifts: dict[str, tuple[Drift, ...]] = {}
        self._health: dict[str, Health] = {}
        self._outcomes: dict[str, Outcome] = {}
        self._commit_times: dict[str, float] = {}
        self._hosts_up: dict[str, bool] = dict.fromkeys(self.backends.names(), True)
        self._polling: set[str] = set()
        self._poll_again: set[str] = set()
        self._poll_started: dict[str, float] = {}  # app -> monotonic start of its last poll
        self._torn_down = 0.0  # monotonic end of the last teardown
        self._desired: dict[str, tuple[tuple[Any, ...], Desired]] = {}  # app -> (inputs, answer)
        self._sweeper = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sweep-listing")
        self._listing: dict[tuple[str, str, str], Future[Stacks]] = {}  # (app, host, backend) -> listing
        # How a webhook's poll is started: set by Runtime (a thread per trigger); none in one-shot CLI use.
        self.trigger: Callable[[str], None] | None = None
        self.alive_check: Callable[[], bool] = lambda: True
        self._recover(owner)

    @property
    def instance(self) -> str:
        """This reconciler's instance id (sent by the HTTP server as X-Reconciler-Instance)."""
        return self.deployer.instance

    def attach_metrics(self, metrics: Metrics) -> None:
        """Metrics read this daemon as their view, so they are attached after construction."""
        self.metrics = metrics
        self.deployer.metrics = metrics

    # -- start-up ----------------------------------------------------------------------------------
    def _recover(self, owner: bool) -> None:
        """Rebuild the view from the database (targets, interrupted deploys); live Docker state follows."""
        if owner:
            self.state.interrupt_running("interrupted: the daemon stopped during this deploy")
        from reconciler.branches import slug_of

        for row in self.state.environments():
            app = self._apps.get(row.app)
            env = self._env(row.app, row.environment)
            if app is None or env is None:
                continue
            # The slug inside the kept project name (a hash-suffixed one included), not a fresh one.
            slug = slug_of(env, row.branch, row.project)
            self._targets[row.project] = Target(app, env, row.branch, row.project, slug)
        for app_name, heads in self.state.heads().items():
            if app_name in self._views:
                self._views[app_name].heads = dict(heads)

    def _env(self, app: str, name: str) -> EnvConfig | None:
        for env in self._apps[app].environments if app in self._apps else ():
            if env.name == name:
                return env
        return None

    # -- git poll ----------------------------------------------------------------------------------
    def poll(
        self,
        app_name: str,
        *,
        only: Collection[str] | None = None,
        trigger: str = "poll",
        manual: bool = False,
    ) -> None:
        """One poll of one app; a trigger during a poll makes it run once more, never twice at once."""
        with self._lock:
            if app_name in self._polling:
                self._poll_again.add(app_name)
                return
            self._polling.add(app_name)
        try:
            while True:
                started = time.monotonic()
                try:
                    self._poll_once(app_name, only=only, trigger=trigger, manual=manual)
                except ReconcilerError as err:
                    # e.g. the state database unwritable: report it, keep every stack as it is.
                    self._views[app_name].error = str(err)
                    logs.get(app=app_name).error("poll.failed", error=str(err))
                finally:
                    if self.metrics is not None:
                        self.metrics.poll(app_name, time.monotonic() - started)
                with self._lock:
                    if app_name not in self._poll_again:
                        break
                    self._poll_again.discard(app_name)
        finally:
            with self._lock:
                self._polling.discard(app_name)

    def _poll_once(self, app_name: str, *, only: Collection[str] | None, trigger: str, manual: bool) -> None:
        from reconciler.branches import desired_environments

        app = self._apps[app_name]
        source = self._sources[app_name]
        view = self._views[app_name]
        log = logs.get(app=app_name)
        started = time.monotonic()
        previous_poll = self._poll_started.get(app_name, started)
        self._poll_started[app_name] = started
        # The sweep's Docker listing needs no git: it runs while ls-remote does. (A sync lists after its
        # own observation instead, which the listing then reuses.)
        swept = None if manual else self._sweep_listings(app_name, since=previous_poll)
        # 1. list heads: one ls-remote. A failure or an empty answer is an outage, never "branches deleted".
        try:
            heads = source.heads()
        except GitError as err:
            view.error = str(err)
            if self.metrics is not None:
                self.metrics.git_poll(app_name, False, time.monotonic() - started)
            log.warning("git.poll_failed", error=str(err))
            return
        if self.metrics is not None:
            self.metrics.git_poll(app_name, True, time.monotonic() - started)
        moved = heads != view.heads
        view.heads, view.error, view.polled = dict(heads), "", self.clock()
        if moved:
            self.state.save_heads(app_name, heads)
        # 2. branch → environment, with names kept for the life of a branch
        times = self._commit_times_for(app, source, heads)
        # One read of the small tables for the whole poll (cached until something writes).
        snap = self.state.snapshot()
        assigned = dict(snap.assignments.get(app_name, {}))
        reserved = self._reserved_names(app_name)
        # Routing a thousand branches is pure: reuse the last answer while its inputs are the same
        # (never with a ttl, whose answer also depends on the clock).
        inputs = (heads, assigned, reserved, times)
        cached = self._desired.get(app_name)
        if cached is not None and cached[0] == inputs and not any(e.ttl for e in app.environments):
            desired = cached[1]
        else:
            desired = desired_environments(app, heads, assigned, times, self.clock(), reserved=reserved)
            self._desired[app_name] = (inputs, desired)
        view.refused = {r.branch: r.message for r in desired.refused}
        if source.skipped_refs != view.skipped:
            for ref, why in source.skipped_refs.items():
                log.warning("git.ref_skipped", ref=ref, why=why)  # once per change, not every poll
            view.skipped = dict(source.skipped_refs)
        wanted: dict[str, Target] = {}
        candidates: list[tuple[Target, str]] = []
        for d in desired.environments:
            target = Target(app, d.environment, d.branch, d.project, d.slug)
            if assigned.get(d.branch) != d.project:
                try:
                    self.state.assign(app_name, d.branch, d.project)
                except ValueError as exc:  # another app holds the name: never deploy into its stack
                    view.refused[d.branch] = f"project {d.project!r} is taken: {exc}"
                    continue
            wanted[d.project] = target
            with self._lock:
                self._targets[d.project] = target
            if only is not None and not self._matches(target, only):
                continue
            candidates.append((target, d.commit))
        # A manual sync redeploys only what differs: stacks at their commit with no drift are left alone.
        current = self._unchanged(candidates) if manual else set()
        for target, commit in candidates:
            if target.project not in current:
                self._maybe_deploy(target, commit, trigger=trigger, manual=manual)
        # 3. ephemeral stacks whose branch is gone (or expired): sweep, don't rely on seeing a delete
        live = (
            self._swept(app_name, swept)
            if swept is not None
            else self._docker_stacks(app_name, since=previous_poll)
        )
        for project, branch, env_name in self._ephemeral_stacks(app_name, live):
            if project in wanted:
                continue
            if only is not None and project not in only and env_name not in only:
                continue
            if self.state.suspension(project) is not None:
                continue  # suspended: observed, not changed (not even removed)
            self._teardown(app_name, env_name, project, branch)

    def _unchanged(self, candidates: list[tuple[Target, str]]) -> set[str]:
        """Projects already at the wanted commit whose live stack matches its rendered revision.

        One container list for all of them and one render each (none after a deploy in this process);
        a failed commit, a suspension, an outage, any drift or `image_check: registry` leaves a stack to
        ``_maybe_deploy``."""
        snap = self.state.snapshot()
        check = [
            (t, c)
            for t, c in candidates
            if snap.applied.get(t.project) == (snap.pins.get(t.project) or c)
            and (t.project, snap.applied[t.project]) not in snap.failed
            and t.project not in snap.suspensions
            # Whether the registry moved a tag is only known by asking it, which the deploy does.
            and t.env.image_check != "registry"
        ]
        out: set[str] = set()
        for group in self._by_converger([t for t, _ in check]).values():
            converger = self.deployer.converger_for(group[0])
            try:
                live = converger.observe([t.project for t in group])
            except DockerError:
                continue  # that host's stacks are left to the deploy, which retries or reports
            for target in group:
                rendered = self.deployer.rendered(target)
                if rendered is None or rendered.commit != snap.applied[target.project]:
                    continue
                if self.deployer.moving(target):
                    continue
                try:
                    plan = converger.plan(rendered, live[target.project])
                except ReconcilerError:
                    continue
                if plan.is_noop and not plan.drifts():
                    out.add(target.project)
        return out

    def _by_converger(self, targets: Collection[Target]) -> dict[tuple[str, str], list[Target]]:
        """Targets grouped by the (host, backend) whose converger observes them."""
        groups: dict[tuple[str, str], list[Target]] = {}
        snap = self.state.snapshot()  # once: host_of per target would re-check the database each time
        for t in targets:
            groups.setdefault((self.deployer.host_of(t, snap), t.env.backend), []).append(t)
        return groups

    def _reserved_names(self, app_name: str) -> set[str]:
        """Project names other apps own or may own: their fixed names, their assigned and live ones."""
        from reconciler.names import branch_slug

        reserved: set[str] = set()
        for other in self._apps.values():
            if other.name == app_name:
                continue
            for env in other.environments:
                if env.branch is not None:
                    reserved.add(env.project_for(branch_slug(env.branch)))
            reserved.update(self.state.assignments(other.name).values())
        with self._lock:
            reserved.update(p for p, t in self._targets.items() if t.app.name != app_name)
        return reserved

    def _commit_times_for(self, app: AppConfig, source: GitSource, heads: dict[str, str]) -> dict[str, float]:
        if not any(env.ttl for env in app.environments):
            return {}
        missing = [sha for sha in heads.values() if sha not in self._commit_times]
        if missing:
            try:
                source.ensure_fetched(missing, branches=[b for b, sha in heads.items() if sha in missing])
                for sha in missing:
                    self._commit_times[sha] = source.commit_time(sha)
            except GitError as err:
                logs.get(app=app.name).warning("git.commit_time_failed", error=str(err))
        return {sha: self._commit_times[sha] for sha in heads.values() if sha in self._commit_times}

    @staticmethod
    def _matches(target: Target, only: Collection[str]) -> bool:
        return target.project in only or target.env.name in only

    def _maybe_deploy(self, target: Target, head: str, *, trigger: str, manual: bool = False) -> bool:
        project = target.project
        snap = self.state.snapshot()
        if project in snap.suspensions or self.deployer.moving(target):
            return False  # a move waits for `reconciler move`: status shows why
        commit = snap.pins.get(project) or head
        if manual:
            # A manual sync retries a failed commit once.
            if any(p == project for p, _ in snap.failed):
                self.state.clear_failed(project)
        elif snap.applied.get(project) == commit or (project, commit) in snap.failed:
            return False
        return self.queue.submit(
            Job(
                project,
                "deploy",
                lambda cancel: self._deploy(target, commit, trigger, cancel),
                commit=commit,
                host=self.deployer.host_of(target),
            )
        )

    def _deploy(self, target: Target, commit: str, trigger: str, cancel: threading.Event) -> Outcome:
        try:
            outcome = self.deployer.deploy(target, commit, trigger=trigger, cancel=cancel)
        except ReconcilerError as err:
            # The deploy could not even be recorded (state_dir unwritable or full, no lock directory):
            # nothing was changed; say so clearly and let the next poll try again.
            logs.get(app=target.app.name, project=target.project).error("deploy.aborted", error=str(err))
            outcome = Outcome(Result.FAILURE, commit, str(err))
        with self._lock:
            self._outcomes[target.project] = outcome
        self.check_drift(only=[target.project])
        return outcome

    def _ephemeral_stacks(
        self, app_name: str, live: dict[str, tuple[str, str, str]]
    ) -> list[tuple[str, str, str]]:
        """(project, branch, environment) of the app's ephemeral stacks: the database's, then ``live``."""
        found: dict[str, tuple[str, str, str]] = {}
        for row in self.state.snapshot().environments:
            if row.app == app_name and row.ephemeral:
                found[row.project] = (row.project, row.branch, row.environment)
        for project, stack in live.items():
            found.setdefault(project, stack)
        return list(found.values())

    def _sweep_listings(self, app_name: str, *, since: float) -> dict[tuple[str, str], Future[Stacks]]:
        """Start listing the app's ephemeral stacks on each of its hosts (one listing per host at a time:
        a host that hangs gets no second one piled up behind the first)."""
        out: dict[tuple[str, str], Future[Stacks]] = {}
        for key in self._ephemeral_hosts(app_name):
            with self._lock:
                running = self._listing.get((app_name, *key))
                if running is not None and not running.done():
                    continue
                future = self._sweeper.submit(self._docker_stacks_on, app_name, *key, since=since)
                self._listing[(app_name, *key)] = future
            out[key] = future
        return out

    def _swept(self, app_name: str, listings: dict[tuple[str, str], Future[Stacks]]) -> Stacks:
        """The listings that answer in time: a host slower than that is left for the next poll (what it
        shows is no verdict anyway: the database's rows are swept whatever Docker says)."""
        found: Stacks = {}
        done, _late = wait(listings.values(), timeout=_SWEEP_WAIT)
        for (host, _backend), future in listings.items():
            if future in done:
                for project, stack in future.result().items():
                    found.setdefault(project, stack)
            else:
                logs.get(app=app_name, host=host).warning("docker.sweep_slow", waited=_SWEEP_WAIT)
        return found

    def _ephemeral_hosts(self, app_name: str) -> list[tuple[str, str]]:
        app = self._apps[app_name]
        return sorted({(e.host, e.backend) for e in app.environments if e.ephemeral})

    def _docker_stacks(self, app_name: str, *, since: float) -> Stacks:
        found: Stacks = {}
        for host, backend in self._ephemeral_hosts(app_name):
            for project, stack in self._docker_stacks_on(app_name, host, backend, since=since).items():
                found.setdefault(project, stack)
        return found

    def _docker_stacks_on(self, app_name: str, host: str, backend: str, *, since: float) -> Stacks:
        """The app's ephemeral stacks that Docker shows (a container, volume or network of ours).

        The containers come from the last full observation when it was made after ``since`` (the
        previous poll's start) and after the last teardown: a drift check lists every container anyway,
        and a stack of ours with no database row can only be a leftover, so one cycle old is fresh enough.
        """
        found: dict[str, tuple[str, str, str]] = {}
        # Only stacks this instance made for this app: another configuration's previews (another
        # state_dir, same app name) carry another owner and are none of our business.
        mine = self.deployer.owner_prefix(app_name)
        converger = self.backends.get(host, backend)
        try:
            observed = converger.last_observation(since=max(since, self._torn_down))
            for project, lbls in converger.project_labels(
                {L.APP: app_name, L.EPHEMERAL: "true"}, live=observed
            ).items():
                if not lbls.get(L.OWNER, "").startswith(mine):
                    continue
                found.setdefault(project, (project, lbls.get(L.BRANCH, ""), lbls.get(L.ENVIRONMENT, "")))
        except DockerError as err:
            logs.get(app=app_name, host=host).warning("docker.sweep_failed", error=str(err))
        return found

    def _teardown(self, app: str, environment: str, project: str, branch: str) -> None:
        def run(_cancel: threading.Event) -> None:
            try:
                self.deployer.teardown(app, environment, project, branch)
            except ReconcilerError as err:
                logs.get(app=app, environment=environment, project=project).error(
                    "teardown.failed", error=str(err)
                )
                return
            with self._lock:
                self._targets.pop(project, None)
                self.images.forget(project)
                self._drifts.pop(project, None)
                self._health.pop(project, None)
                self._outcomes.pop(project, None)
                self._torn_down = time.monotonic()

        host, _backend = self.deployer.stack_host(app, environment, project)
        self.queue.submit(Job(project, "teardown", run, commit=None, preempts=False, host=host))

    # -- drift -------------------------------------------------------------------------------------
    def check_drift(self, only: Collection[str] | None = None, *, host: str | None = None) -> None:
        """Compare every environment's live stack (one list call per kind and host) with its rendered
        model. ``host``: only the environments running there (the daemon runs one check per host, so a
        slow host delays only its own); otherwise each host is checked in a thread of its own."""
        with self._lock:
            targets = [t for p, t in self._targets.items() if only is None or p in only]
        groups = self._by_converger(targets)
        if host is not None:
            groups = {k: v for k, v in groups.items() if k[0] == host}
        if not groups:
            return
        if len(groups) == 1:
            ((key, group),) = groups.items()
            self._timed_check(key[0], group)
            return
        threads = [
            threading.Thread(target=self._timed_check, args=(key[0], group), name=f"drift-{key[0]}")
            for key, group in groups.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _timed_check(self, host: str, targets: list[Target]) -> None:
        started = time.monotonic()
        try:
            self._check_drift(host, targets)
        finally:
            if self.metrics is not None:
                self.metrics.drift_check({t.app.name for t in targets}, time.monotonic() - started, host=host)

    def _check_drift(self, host: str, targets: list[Target]) -> None:
        converger = self.deployer.converger_for(targets[0])
        try:
            live = converger.observe([t.project for t in targets])
            self._hosts_up[host] = True
        except DockerError as err:
            self._hosts_up[host] = False
            logs.get(host=host).warning("docker.observe_failed", error=str(err))
            return
        for target in targets:
            rendered = self.deployer.rendered(target)
            stack = live.get(target.project)
            if rendered is None:
                drifts: tuple[Drift, ...] = ()
                health = Health.MISSING if stack is None or not stack.containers else Health.PROGRESSING
            else:
                try:
                    plan = converger.plan(rendered, stack)
                except ReconcilerError as err:
                    logs.get(project=target.project).warning("drift.plan_failed", error=str(err))
                    continue
                drifts = plan.drifts() + self.images.drifts(target, rendered)  # `image_check: registry`
                health = plan.health
            with self._lock:
                self._drifts[target.project] = drifts
                self._health[target.project] = health
            if (
                drifts
                and target.env.self_heal
                and not self.queue.busy(target.project)
                and not self.deployer.moving(target)
            ):
                self._self_heal(target, drifts)

    def _count_retry(self, app: str, environment: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.retry(app, environment, reason)

    def _self_heal(self, target: Target, drifts: tuple[Drift, ...]) -> None:
        if self.state.suspension(target.project) is not None:
            return
        # Reported, not healed: recreating can't fix a failing healthcheck, and network/volume options
        # would need the network or volume recreated (connections cut, data lost).
        fixable = [d for d in drifts if not d.reason.reported_only]
        if not fixable:
            return
        services = sorted({d.service for d in fixable})
        allowed = [s for s in services if self.heal_limit.allow(f"{target.project}/{s}")]
        log = logs.get(app=target.app.name, environment=target.env.name, project=target.project)
        if not allowed:
            log.warning("self_heal.rate_limited", services=services)
            return

        def run(cancel: threading.Event) -> None:
            try:
                self.deployer.heal(target, cancel)
            except ReconcilerError as err:
                log.error("self_heal.failed", error=str(err))
                return
            for service in allowed:
                if self.metrics is not None:
                    self.metrics.self_heal(target.app.name, target.env.name, service)
            log.info("self_heal.done", services=allowed)
            self.check_drift(only=[target.project])

        job = Job(
            target.project, "heal", run, commit=None, preempts=False, host=self.deployer.host_of(target)
        )
        self.queue.submit(job)

    # -- DaemonView --------------------------------------------------------------------------------
    def environments(self) -> list[EnvironmentStatus]:
        with self._lock:
            # Config order (production, staging, then previews), previews by project name.
            targets = sorted(
                self._targets.values(),
                key=lambda t: (t.app.name, [e.name for e in t.app.environments].index(t.env.name), t.project),
            )
        out: list[EnvironmentStatus] = []
        for t in targets:
            out.append(self.status_of(t))
        for app_name, view in self._views.items():
            for branch, reason in sorted(view.refused.items()):
                out.append(
                    EnvironmentStatus(
                        app=app_name,
                        environment="",
                        project="",
                        branch=branch,
                        head_commit=view.heads.get(branch),
                        deployed_commit=None,
                        sync=Sync.OUT_OF_SYNC,
                        health=Health.MISSING,
                        error=f"refused: {reason}",
                    )
                )
        return out

    def status_of(self, t: Target) -> EnvironmentStatus:
        view = self._views.get(t.app.name, AppView())
        head = view.heads.get(t.branch)
        deployed = self.state.last_applied(t.project)
        # Out of sync whenever the deployed commit is not the branch head, pinned (rolled back) or not.
        if deployed is None:
            sync = Sync.OUT_OF_SYNC
        elif head is None:
            sync = Sync.UNKNOWN
        else:
            sync = Sync.SYNCED if deployed == head else Sync.OUT_OF_SYNC
        with self._lock:
            drifts = self._drifts.get(t.project, ())
            health = self._health.get(t.project, Health.MISSING)
        if self.queue.busy(t.project) and health is not Health.HEALTHY:
            health = Health.PROGRESSING
        last = self.state.last_deploy(t.project)
        good = self.state.last_success(t.project)
        suspension = self.state.suspension(t.project)
        failed = self.state.failed_attempt(t.project)
        problems = [view.error] if view.error else []
        moving = self.deployer.moving(t)
        if moving:
            problems.append(moving)
        if failed is not None:
            problem = f"commit {failed.commit[:12]} failed: {failed.error}"
            if last is not None and last.rollback_of == failed.commit and last.result is Result.SUCCESS:
                problem += f" (rolled back to {last.commit[:12]})"
            problems.append(problem)
        error = "\n".join(problems)
        return EnvironmentStatus(
            app=t.app.name,
            environment=t.env.name,
            project=t.project,
            branch=t.branch,
            head_commit=head,
            deployed_commit=deployed,
            sync=sync,
            health=health,
            drifts=drifts,
            suspended=suspension is not None,
            suspend_reason=suspension or "",
            url=t.url(),
            ephemeral=t.ephemeral,
            last_deploy=last,
            last_success=good.finished if good is not None else None,
            error=error,
            failed_commit=failed.commit if failed is not None else None,
            host=self.deployer.host_of(t),
        )

    def docker_up(self) -> bool:
        """Every host's engine answered its last call."""
        return all(self._hosts_up.values())

    def hosts_up(self) -> dict[str, bool]:
        """Host name -> whether its engine answered the last call (``reconciler_docker_up{host}``)."""
        return dict(self._hosts_up)

    def docker_lost(self, error: str, host: str = DEFAULT_HOST) -> None:
        """A Docker Engine went away (its event stream dropped): report it before the next observation."""
        self._hosts_up[host] = False
        logs.get(host=host).warning("docker.down", error=error)

    def docker_answers(self, host: str = DEFAULT_HOST) -> bool:
        """Observe once on ``host``; sets its docker_up. Used to wait for an engine to come back."""
        try:
            self.backends.get(host).observe(())
        except DockerError:
            self._hosts_up[host] = False
            return False
        self._hosts_up[host] = True
        return True

    def alive(self) -> bool:
        """The scheduler runs and some engine answers: one remote host down is reported, not fatal."""
        return any(self._hosts_up.values()) and self.alive_check()

    def ephemeral_limits(self) -> dict[str, int | None]:
        limits: dict[str, int | None] = {}
        for app in self._apps.values():
            maxes = [e.max for e in app.environments if e.ephemeral]
            if maxes:
                limits[app.name] = (
                    None if any(m is None for m in maxes) else sum(m for m in maxes if m is not None)
                )
        return limits

    def webhook_apps(self) -> list[Any]:
        from reconciler.report.view import WebhookApp

        return [
            WebhookApp(
                app=a.name, repo=a.repo, secret=a.webhook_secret.encode() if a.webhook_secret else None
            )
            for a in self._apps.values()
        ]

    def trigger_poll(self, app: str, reason: str) -> bool:
        if app not in self._apps:
            return False
        if self.trigger is not None:
            self.trigger(app)
        else:
            threading.Thread(target=self.poll, args=(app,), kwargs={"trigger": reason}, daemon=True).start()
        return True

    def git_errors(self) -> dict[str, str]:
        """App -> the error of its last poll, for apps whose last poll failed."""
        return {name: view.error for name, view in self._views.items() if view.error}

    def outcome(self, project: str) -> Outcome | None:
        """What the last deploy of ``project`` in this process did (None: nothing was deployed)."""
        with self._lock:
            return self._outcomes.get(project)

    # -- targets for CLI commands ------------------------------------------------------------------
    def target(self, project: str) -> Target | None:
        """The live target of ``project`` (None: no environment has it now)."""
        with self._lock:
            return self._targets.get(project)

    def find_target(self, name: str) -> Target:
        """A project name or an environment name (unique across apps) → its target: a live one, or an
        environment with a fixed ``branch:`` as configured, so it can be suspended, resumed or read before
        its first deploy. A preview (``branches:``) is a target only once its branch made one."""
        from reconciler.names import branch_slug

        with self._lock:
            targets = list(self._targets.values())
        live = {t.project for t in targets}
        for app in self._apps.values():
            for env in app.environments:
                if env.branch is None:
                    continue
                # The project the next poll makes for it (a live target of that name is the same one).
                slug = branch_slug(env.branch)
                project = env.project_for(slug)
                if project not in live:
                    targets.append(Target(app, env, env.branch, project, slug))
        hits = [t for t in targets if t.project == name] or [t for t in targets if t.env.name == name]
        if len(hits) == 1:
            return hits[0]
        from reconciler.errors import ConfigError

        if not hits:
            known = ", ".join(sorted(t.project for t in targets)) or "none yet"
            raise ConfigError(
                f"no environment or project named {name!r} (known projects: {known})",
                hint="run `reconciler status -c FILE` to list them",
            )
        raise ConfigError(
            f"{name!r} names several projects ({', '.join(t.project for t in hits)}); "
            "give the project name instead"
        )


def _image_checker(daemon: Daemon) -> ImageChecker:
    """Registry lookups get an Engine client of their own with a short timeout: a slow registry delays
    one drift check by at most that per image, and never holds the client deploys use."""
    from reconciler.engine import DockerEngine
    from reconciler.imagecheck import ImageChecker

    cfg = daemon.config

    def per_host(which: str, host: str) -> DockerEngine:
        timeout = _REGISTRY_TIMEOUT if which == "lookups" else 60.0
        return DockerEngine.for_host(cfg.hosts[host], state_dir=cfg.state_dir, timeout=timeout)

    return ImageChecker(
        DockerEngine.from_env,
        daemon._count_retry,
        lookups=lambda: DockerEngine.from_env(timeout=_REGISTRY_TIMEOUT),
        host_of=daemon.deployer.host_of,
        per_host=per_host,
    )
