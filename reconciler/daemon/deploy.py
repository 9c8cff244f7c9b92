"""Deploy, roll back and tear down one environment: the apply half of the daemon's pipeline.

Called by the per-environment workers (``workqueue``) and by the one-shot CLI commands (sync, rollback).
Each step reads as a line of the reconcile; every exit path records its outcome in the state database.
"""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from reconciler import labels as L
from reconciler import logs, secrets
from reconciler.config.hosts import DEFAULT_HOST
from reconciler.daemon.instance import instance_id, project_lock
from reconciler.errors import (
    ComposeError,
    DeployError,
    InputError,
    PolicyError,
    ReconcilerError,
    TransientError,
)
from reconciler.policy import apply_limits, evaluate
from reconciler.status import Result

if TYPE_CHECKING:
    from reconciler.config import AppConfig, Config, EnvConfig
    from reconciler.config.hooks import HookStep
    from reconciler.converge import Converger
    from reconciler.daemon.hosts import Backends
    from reconciler.report.metrics import Metrics
    from reconciler.source import GitSource
    from reconciler.state import Snapshot, State


@dataclass(frozen=True)
class Target:
    """One environment instance: an environment of an app, bound to a branch and a project name."""

    app: AppConfig
    env: EnvConfig
    branch: str
    project: str
    slug: str

    @property
    def ephemeral(self) -> bool:
        return bool(self.env.ephemeral)

    def labels(self) -> dict[str, str]:
        """Our labels on every container, network and volume of the stack (not part of the config hash)."""
        return {
            L.MANAGED: "true",
            L.APP: self.app.name,
            L.ENVIRONMENT: self.env.name,
            L.BRANCH: self.branch,
            L.EPHEMERAL: "true" if self.ephemeral else "false",
        }

    def url(self) -> str | None:
        return self.env.url_for(self.slug, self.project)

    def expand(self, value: str) -> str:
        """``{branch}`` (slug), ``{app}`` and ``{project}`` in an `env:` value, so each preview can get its
        own HOST. Only these exact tokens are replaced: other braces (JSON, say) stay as written."""
        for token, text in (("{branch}", self.slug), ("{app}", self.app.name), ("{project}", self.project)):
            value = value.replace(token, text)
        return value


@dataclass(frozen=True)
class Outcome:
    """What one deploy did: the result recorded, and the error if any."""

    result: Result
    commit: str
    error: str = ""
    rolled_back_to: str | None = None
    skipped: str = ""  # why a queued deploy did nothing (suspended, pinned meanwhile)

    def __post_init__(self) -> None:
        # Shown by `sync`, the API and logs: a container's log tail in the error may print a secret.
        object.__setattr__(self, "error", secrets.scrub(self.error))


@dataclass(frozen=True)
class Resolved:
    """A revision rendered and resolved at deploy time: what plan, drift and self-heal compare against,
    so nothing the filesystem holds later (a newer checkout, a moved symlink) changes the decision.

    Shaped like ``render.RenderedProject`` (spec's ``RenderedLike``), with paths under the stable
    checkout path and the content digest of every mounted file of the repository."""

    name: str
    working_dir: str
    config_files: tuple[str, ...]
    model: dict[str, Any]
    commit: str
    tree: str  # the checkout tree's directory name (io.reconciler.checkout on the containers)
    bind_digests: Mapping[str, str] = field(default_factory=dict)
    # The variables it was rendered with: `environment:` secrets and configs take their values from them.
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Mounted host paths with their symlinks resolved as this tree will show them once active (the hash
    # release 0 stamped resolved them; spec itself never reads the filesystem).
    real_paths: Mapping[str, str] = field(default_factory=dict)


T = TypeVar("T")
_RETRY_FIRST = 1.0  # seconds before the first retry of a transient failure; doubles up to _RETRY_MAX
_RETRY_MAX = 30.0
_RETRY_BUDGET = 120.0  # at least this long (or the environment's timeout) before a deploy gives up


class Deployer:
    """Fetch → prepare → render → check → activate → converge → record, with automatic rollback for
    persistent environments and retries of transient failures."""

    def __init__(
        self,
        config: Config,
        state: State,
        converger: Converger,
        metrics: Metrics | None,
        source_for: Callable[[str], GitSource],
        clock: Callable[[], float] = time.time,
        backends: Backends | None = None,
    ) -> None:
        from reconciler.daemon.hosts import Backends

        self.config = config
        self.state = state
        self.converger = converger  # the default host's (compose)
        self.backends = backends or Backends(config, default=converger)
        self.metrics = metrics
        self.source_for = source_for
        self.clock = clock
        self.instance = instance_id(Path(config.state_dir))
        self._resolved: dict[str, Resolved] = {}
        self._lock = threading.Lock()
        # Tests shorten the retry schedule; production keeps the defaults.
        self.retry_first = _RETRY_FIRST
        self.retry_budget = _RETRY_BUDGET
        # Runs before every converge (the daemon's registry image check pulls tags that moved there).
        self.before_up: Callable[[Target, Resolved], None] | None = None

    # -- identity ----------------------------------------------------------------------------------
    def owner(self, app: str, environment: str) -> str:
        """The ``io.reconciler.owner`` value of this instance's objects for one environment."""
        return f"{self.instance}/{app}/{environment}"

    def owner_prefix(self, app: str) -> str:
        return f"{self.instance}/{app}/"

    # -- hosts -------------------------------------------------------------------------------------
    def host_of(self, target: Target, snap: Snapshot | None = None) -> str:
        """The host ``target``'s stack runs on: the one recorded for it; a stack deployed before hosts
        existed runs on the default one; a new one goes where the configuration says."""
        return self._host(target.project, target.env.host, snap)

    def _host(self, project: str, configured: str, snap: Snapshot | None = None) -> str:
        snap = snap or self.state.snapshot()
        placed = snap.placements.get(project)
        if placed is not None:
            return placed
        return DEFAULT_HOST if project in snap.applied else configured

    def stack_host(self, app: str, environment: str, project: str) -> tuple[str, str]:
        """(host, backend) of a stack known by name (its environment may have left the configuration)."""
        env = next(
            (e for a in self.config.apps if a.name == app for e in a.environments if e.name == environment),
            None,
        )
        configured, backend = (env.host, env.backend) if env is not None else (DEFAULT_HOST, "compose")
        return self._host(project, configured), backend

    def moving(self, target: Target) -> str:
        """Why ``target`` is not deployed where it runs: its configured host changed (else "")."""
        host = self.host_of(target)
        if host == target.env.host:
            return ""
        return (
            f"environment {target.env.name!r} runs on host {host!r} but is configured for host "
            f"{target.env.host!r}: nothing is deployed until the move is confirmed with "
            f"`reconciler move -c FILE {target.project} {target.env.host}` (docs/hosts.md)"
        )

    def converger_for(self, target: Target) -> Converger:
        """The converger of the host ``target`` runs on, for its backend."""
        return cast("Converger", self.backends.for_env(target.env, self.host_of(target)))

    # -- paths -------------------------------------------------------------------------------------
    def checkout_dir(self, project: str) -> Path:
        """Stable per-project path: relative bind mounts resolve to the same place for every commit."""
        return Path(self.config.state_dir) / "checkouts" / project

    # -- render ------------------------------------------------------------------------------------
    def resolve(self, target: Target, commit: str) -> Resolved:
        """Fetch ``commit``, write its tree next to the checkout (the checkout itself does not move),
        render it and fix the facts the plan depends on. Raises InputError for a bad commit."""
        source = self.source_for(target.app.name)
        source.ensure_fetched([commit], branches=[target.branch])
        tree = source.prepare(commit, self.checkout_dir(target.project))
        return self._resolve_tree(target, commit, tree)

    def _resolve_tree(self, target: Target, commit: str, tree: Path) -> Resolved:
        from reconciler.render import render

        stable = self.checkout_dir(target.project)
        rendered = render(self.render_options(target, tree))
        # Rendered from the tree, but containers mount the stable path: Docker follows the link when a
        # container starts, and an unchanged container keeps the tree it started with.
        model = _rebase(rendered.model, str(tree), str(stable))
        # The policy's default limits are part of the revision: plan, drift and hash all see them.
        model = apply_limits(model, target.env.policy)
        resolved = Resolved(
            name=rendered.name,
            working_dir=_rebase(rendered.working_dir, str(tree), str(stable)),
            config_files=tuple(_rebase(list(rendered.config_files), str(tree), str(stable))),
            model=model,
            commit=commit,
            tree=tree.name,
            environment=rendered.environment,
        )
        return replace(
            resolved,
            bind_digests=self._digests(target, commit, resolved),
            real_paths=self._real_paths(target, resolved),
        )

    def _real_paths(self, target: Target, resolved: Resolved) -> dict[str, str]:
        stable = self.checkout_dir(target.project)
        return real_paths(resolved.model, str(stable), str(stable.parent / resolved.tree))

    def _digests(self, target: Target, commit: str, resolved: Resolved) -> dict[str, str]:
        """Git object ids of every bind, secret and config source inside the checkout (by path as
        written): the config hash then changes exactly when a mounted file's content changes."""
        stable = str(self.checkout_dir(target.project))
        tree = os.path.realpath(self.checkout_dir(target.project).parent / resolved.tree)
        paths: dict[str, str] = {}
        for source in _mounted_sources(resolved.model):
            if source == stable or source.startswith(stable + "/"):
                # Follow symlinks inside the tree (Docker mounts the link's target): a link to a file
                # changes with that file's content. A link leaving the tree gets no digest.
                real = os.path.realpath(os.path.join(tree, os.path.relpath(source, stable)))
                if real == tree or real.startswith(tree + "/"):
                    paths[source] = os.path.relpath(real, tree)
        if not paths:
            return {}
        ids = self.source_for(target.app.name).object_ids(commit, set(paths.values()))
        return {source: ids[rel] for source, rel in paths.items() if rel in ids}

    def render_options(self, target: Target, path: Path) -> Any:
        from reconciler.render import RenderOptions

        env = target.env
        files = [str(path / f) for f in env.compose] + [str(o) for o in env.overlays]
        inline: tuple[tuple[str, Any], ...] = ()
        if env.override:
            inline = ((f"{self.config.path}: {target.app.name}.{env.name}.override", env.override),)
        environ = {k: target.expand(v) for k, v in env.env.items()}
        decrypted = self._decrypted(target, path)
        # Before rendering: a render error quoting a value is masked too.
        secrets.register(target.project, {*secrets.env_secrets(environ, env.env_files), *decrypted.values()})
        environ = {**decrypted, **environ}  # `env` wins over the encrypted files
        return RenderOptions(
            files=tuple(files),
            project_directory=str(path),
            env_files=self._env_files(path, env),
            project_name=target.project,
            environ=environ,
            inline=inline,
            # As if `docker compose` ran in the checkout: ${PWD} is the project's directory (rebased to
            # the stable checkout path with every other path), not wherever the daemon was started.
            working_dir=str(path),
            # A branch must not make the daemon read the host (`env_file: /etc/shadow`): with the policy's
            # binds_outside_checkout off, only the checkout and the operator's own files are read.
            confine_to=None if env.policy.binds_outside_checkout else str(path),
            confine_exempt=(*(str(o) for o in env.overlays), *(str(f) for f in env.env_files)),
        )

    @staticmethod
    def _decrypted(target: Target, path: Path) -> dict[str, str]:
        """The variables of the environment's SOPS files in this tree, decrypted with its own age key."""
        from reconciler.sops import decrypt_env

        sops = target.env.sops
        values: dict[str, str] = {}
        for rel in sops.env_files if sops is not None else ():
            assert sops is not None
            values.update(
                decrypt_env(path / rel, display=rel, key_file=sops.age_key_file, environment=target.env.key)
            )
        return values

    @staticmethod
    def _env_files(path: Path, env: EnvConfig) -> tuple[str, ...]:
        """The repository's .env first, then the operator's env_files (later files win, as with repeated
        `--env-file`); an explicit --env-file would otherwise make compose skip the repository's .env."""
        if not env.env_files:
            return ()  # the renderer reads <checkout>/.env by itself
        repo_env = path / ".env"
        return (*([str(repo_env)] if repo_env.is_file() else []), *(str(f) for f in env.env_files))

    def rendered(self, target: Target) -> Resolved | None:
        """The revision a live environment runs, as resolved when it was deployed (after a restart:
        resolved again from the checkout, which only ever shows a commit that passed every check)."""
        with self._lock:
            cached = self._resolved.get(target.project)
        if cached is not None:
            return cached
        source = self.source_for(target.app.name)
        tree = source.current_tree(self.checkout_dir(target.project))
        commit = source.tree_commit(tree) if tree is not None else None
        if tree is None or commit is None:
            return None
        try:
            resolved = self._resolve_tree(target, commit, tree)
        except ReconcilerError:
            return None
        with self._lock:
            self._resolved[target.project] = resolved
        return resolved

    def forget(self, project: str) -> None:
        with self._lock:
            self._resolved.pop(project, None)

    # -- deploy ------------------------------------------------------------------------------------
    def deploy(
        self, target: Target, commit: str, *, trigger: str, cancel: threading.Event | None = None
    ) -> Outcome:
        """Converge ``target`` to ``commit``; a persistent env that fails rolls back to its last good one.

        Suspension and pins are read again under the project lock: a `suspend` or `rollback` issued
        while this deploy waited in the queue wins over it."""
        with project_lock(target.project):
            stale = self._stale(target.project, commit) or self.moving(target)
            if stale:
                logs.get(project=target.project, commit=commit[:12]).info("deploy.skipped", why=stale)
                return Outcome(Result.NOOP, commit, skipped=stale)
            return self._deploy(target, commit, trigger=trigger, cancel=cancel)

    def _stale(self, project: str, commit: str) -> str:
        if self.state.suspension(project) is not None:
            return "suspended"
        pinned = self.state.pinned(project)
        if pinned is not None and pinned != commit:
            return f"pinned to {pinned[:12]}"
        return ""

    def _deploy(
        self, target: Target, commit: str, *, trigger: str, cancel: threading.Event | None
    ) -> Outcome:
        log = logs.get(
            app=target.app.name, environment=target.env.name, project=target.project, commit=commit[:12]
        )
        started = self.clock()
        self.state.upsert_environment(
            target.project, target.app.name, target.env.name, target.branch, target.ephemeral
        )
        source = self.source_for(target.app.name)
        checkout = self.checkout_dir(target.project)
        previous = source.current_tree(checkout)
        deploy_id: int | None = None
        activated = False
        try:
            # 1. fetch + render + check: a bad commit fails here, before anything changes (the
            #    checkout keeps showing the running revision).
            try:
                resolved = self._retrying(target, lambda: self.resolve(target, commit), cancel, log)
                self._check(target, resolved)
            except ReconcilerError:
                deploy_id = self.state.start_deploy(
                    target.app.name, target.env.name, target.project, target.branch, commit, trigger, ""
                )
                raise
            deploy_id = self.state.start_deploy(
                target.app.name,
                target.env.name,
                target.project,
                target.branch,
                commit,
                trigger,
                json.dumps(secrets.scrub_value(resolved.model), sort_keys=True),
            )
            log.info("deploy.start", trigger=trigger)
            # 1b. a Swarm stack of this project still on the engine: containers beside it would be a copy
            self._check_no_swarm_stack(target)
            # 2. the checkout moves to the new tree: containers created from now on mount it
            source.activate(checkout, checkout.parent / resolved.tree)
            activated = True
            # 3. pre_deploy hooks: from the new revision, before any container of the stack changes
            self._pre_deploy(target, resolved, cancel, log, deploy_id)
            # 4. plan + apply, health-gated; transient failures are retried, the stack untouched
            plan = self._retrying(target, lambda: self._up(target, resolved, cancel), cancel, log)
            # 5. post_deploy hooks, then the health gate: either failing fails (and rolls back) the deploy
            self._post_deploy(target, resolved, log, deploy_id)
            self._health_gate(target, resolved, cancel, log)
            result = Result.NOOP if plan.is_noop else Result.SUCCESS
            self.state.finish_deploy(deploy_id, result)
            if self.state.placement(target.project) is None:
                self.state.place(target.project, target.env.host)
            with self._lock:
                self._resolved[target.project] = resolved
            self._sweep(target, resolved)
            self._count(target, result, started)
            log.info("deploy.done", result=str(result), changes=len(plan.changes))
            return Outcome(result, commit)
        except ReconcilerError as err:
            if activated and previous is not None and previous.name != resolved.tree:
                # Self-heal and restarts must keep seeing the revision that runs, not the failed one.
                self._restore(source, checkout, previous, log)
            if isinstance(err, DeployError) and err.reason == "Cancelled":
                # Superseded by a newer commit: not this commit's fault, so don't mark it failed.
                if deploy_id is not None:
                    self.state.finish_deploy(
                        deploy_id, Result.FAILURE, "Cancelled: superseded by a newer commit"
                    )
                log.info("deploy.cancelled")
                return Outcome(Result.FAILURE, commit, "cancelled")
            if isinstance(err, TransientError):
                # An outage is no verdict on the commit: not marked failed, the next poll tries again.
                if deploy_id is not None:
                    self.state.finish_deploy(deploy_id, Result.FAILURE, f"transient: {err}")
                self._count(target, Result.FAILURE, started)
                log.warning("deploy.transient_error", error=str(err), reason=err.reason)
                return Outcome(Result.FAILURE, commit, str(err))
            # Bad compose/config in this commit, or a failed pre_deploy hook: nothing was changed (the
            # old stack runs untouched), and retrying won't help.
            rollback = not isinstance(err, InputError) and not _before_any_change(err)
            return self._failed(target, commit, deploy_id, err, started, log, rollback=rollback)

    def _check(self, target: Target, resolved: Resolved) -> None:
        """Everything that refuses a revision without touching Docker."""
        from reconciler.spec import project_spec

        if target.env.backend == "swarm":
            services = self._check_swarm(target, resolved)
        else:
            services = {s.name for s in project_spec(resolved).services}
        if not services and not target.env.allow_empty:
            raise ComposeError(
                f"commit {resolved.commit[:12]} renders a project with no services (every service "
                "removed, or behind a profile): the running stack is kept",
                hint=f"set `allow_empty: true` on environment {target.env.name!r} to allow removing it",
            )
        self._check_host_paths(target, resolved)
        self.check_policy(target, resolved)
        _check_hook_services(target, services)

    @staticmethod
    def _check_swarm(target: Target, resolved: Resolved) -> set[str]:
        """backend: swarm refuses what Swarm can't honour (reconciler.swarm.keys), and hooks, which run
        one-off containers next to the old stack."""
        from reconciler.errors import ConfigError
        from reconciler.swarm.translate import check_stack

        hooks = target.env.hooks
        if hooks.pre_deploy or hooks.post_deploy:
            raise ConfigError(
                f"environment {target.env.name!r}: hooks need backend: compose (backend: swarm runs no "
                "one-off containers)",
                hint="remove `hooks:` from the environment, or run the step as a service of the stack",
            )
        return set(check_stack(resolved.name, resolved.model, resolved.environment))

    def _check_no_swarm_stack(self, target: Target) -> None:
        """An environment switched from `backend: swarm` to compose moves nothing by itself: while the
        engine runs the project's Swarm services, a compose deploy would start a second copy beside them
        (the mirror of the swarm backend's ComposeStackRunning)."""
        from reconciler.engine import DockerEngine

        if target.env.backend != "compose":
            return
        engine = self.converger_for(target).engine
        if not isinstance(engine, DockerEngine):
            return  # an Engine of the tests' own: no Swarm behind it
        from reconciler.swarm.engine import SwarmEngine

        swarm = SwarmEngine.sharing(engine)
        state, manager = swarm.swarm_state()
        if state != "active" or not manager:
            return  # services are only listed on a manager; a worker's tasks are its manager's business
        services = swarm.list_services({L.STACK_NAMESPACE: target.project})
        if services:
            names = sorted(str(s.get("Spec", {}).get("Name", "?")) for s in services)
            raise DeployError(
                f"project {target.project!r} still runs as a Swarm stack on this engine "
                f"({', '.join(names[:5])}{' and more' if len(names) > 5 else ''}); nothing was changed. "
                f"Remove the stack first (`docker stack rm {target.project}` keeps its volumes), then "
                "deploy again (docs/swarm.md: moving a stack)",
                reason="SwarmStackRunning",
            )

    def _check_host_paths(self, target: Target, resolved: Resolved) -> None:
        """A remote engine's binds name paths of its own machine: files of the checkout (and the secrets
        and configs written under the state directory) exist only here, unless the host says its
        filesystem is shared."""
        from reconciler.spec import host_paths

        host = self.config.hosts[target.env.host]
        if not host.remote or host.shared_fs:
            return
        local = str(Path(self.config.state_dir))
        found = sorted(p for p in host_paths(resolved.model) if p == local or p.startswith(local + "/"))
        stable = str(self.checkout_dir(target.project))
        shown = [p.replace(stable, ".", 1) if p.startswith(stable) else p for p in found]
        for kind in ("secrets", "configs"):
            for name, item in (resolved.model.get(kind) or {}).items():
                if isinstance(item, Mapping) and ("content" in item or "environment" in item):
                    shown.append(f"{kind}.{name} (written to a file on this machine)")
        if shown:
            raise ComposeError(
                f"commit {resolved.commit[:12]} mounts files of the checkout into containers on host "
                f"{host.name!r}, a remote engine that does not see this machine's files: "
                + ", ".join(shown[:10])
                + (f" and {len(shown) - 10} more" if len(shown) > 10 else ""),
                hint=f"bake the files into the image, use a named volume, or set `shared_fs: true` on host "
                f"{host.name!r} if the same paths exist there (docs/hosts.md)",
            )

    def check_policy(self, target: Target, resolved: Resolved) -> None:
        """Refuse a revision that breaks the environment's policy, listing every violation; the
        running stack is kept. Judged on the final rendered model, with paths resolved on the host."""
        from reconciler.daemon.policy_facts import resolve_facts

        stable = self.checkout_dir(target.project)
        facts = resolve_facts(
            resolved.model,
            target.env.policy,
            project=target.project,
            stable=str(stable),
            tree=str(stable.parent / resolved.tree),
            engine=self.converger_for(target).engine,
        )
        violations = evaluate(resolved.model, target.env.policy, facts)
        if self.metrics is not None:
            self.metrics.policy_violations(target.app.name, target.env.name, target.project, len(violations))
        if violations:
            raise policy_error(resolved.commit, target.env.name, [str(v) for v in violations])

    def _up(self, target: Target, resolved: Resolved, cancel: threading.Event | None) -> Any:
        if self.before_up is not None:
            self.before_up(target, resolved)
        return self.converger_for(target).up(
            resolved,
            timeout=float(target.env.deploy_timeout),
            labels={**target.labels(), L.CHECKOUT: resolved.tree},
            cancel=cancel,
            owner=self.owner(target.app.name, target.env.name),
            allow_empty=target.env.allow_empty,
            subnet_pool=self.config.networks_pool if target.ephemeral else None,
        )

    # -- hooks and health gate ---------------------------------------------------------------------
    def _pre_deploy(
        self, target: Target, resolved: Resolved, cancel: threading.Event | None, log: Any, deploy_id: int
    ) -> None:
        """The environment's pre_deploy hooks. The new revision's networks, volumes and images are made
        first (as `up` would, idempotent); no container of the stack changes."""
        steps = target.env.hooks.pre_deploy
        if not steps:
            return
        image_ids = self._retrying(
            target,
            lambda: self.converger_for(target).prepare(
                resolved,
                labels=self._stack_labels(target, resolved),
                cancel=cancel,
                owner=self.owner(target.app.name, target.env.name),
                subnet_pool=self.config.networks_pool if target.ephemeral else None,
            ),
            cancel,
            log,
        )
        self._run_hooks(target, resolved, "pre_deploy", steps, image_ids, log, deploy_id)

    def _post_deploy(self, target: Target, resolved: Resolved, log: Any, deploy_id: int) -> None:
        steps = target.env.hooks.post_deploy
        if steps:
            self._run_hooks(target, resolved, "post_deploy", steps, {}, log, deploy_id)

    def _run_hooks(
        self,
        target: Target,
        resolved: Resolved,
        phase: str,
        steps: tuple[HookStep, ...],
        image_ids: Mapping[str, str | None],
        log: Any,
        deploy_id: int,
    ) -> None:
        """Each step in order, stopping at the first failure; output and exit code go to the log and to
        the deploy's history (``State.record_hook``), and a failure's message carries them too."""
        from reconciler.contentfiles import project_dir
        from reconciler.hooks import HookFailed, HookRunner
        from reconciler.spec import project_spec

        runner = HookRunner(
            self.converger_for(target).engine,
            files_dir=str(project_dir(self.config.state_dir, target.project)),
        )
        spec = project_spec(resolved)
        labels = {
            **self._stack_labels(target, resolved),
            L.OWNER: self.owner(target.app.name, target.env.name),
        }
        for step in steps:
            log.info("hook.start", phase=phase, service=step.service, command=list(step.command))
            try:
                run = runner.run(spec, step, phase, image_ids=image_ids, labels=labels)
            except HookFailed as err:
                code = err.run.exit_code if err.run else None
                log.error("hook.failed", phase=phase, service=step.service, exit_code=code, error=str(err))
                output = err.run.output if err.run else str(err)
                command = shlex.join(step.command)
                self.state.record_hook(deploy_id, phase, step.service, command, code, output)
                raise
            log.info(
                "hook.done", phase=phase, service=step.service, exit_code=run.exit_code, output=run.output
            )
            command = shlex.join(step.command)
            self.state.record_hook(deploy_id, phase, step.service, command, run.exit_code, run.output)

    def _health_gate(
        self, target: Target, resolved: Resolved, cancel: threading.Event | None, log: Any
    ) -> None:
        from reconciler.healthgate import GateCheck, wait_healthy

        gate = target.env.health_gate
        if gate is None:
            return
        check = GateCheck(
            url=self._gate_template(target, resolved, gate.url, "url"),
            host=self._gate_template(target, resolved, gate.host, "host") if gate.host else None,
            expect_status=gate.expect_status,
            timeout=gate.timeout,
        )
        attempts = wait_healthy(check, cancel)
        log.info("health_gate.passed", url=check.url, host=check.host, attempts=attempts)

    @staticmethod
    def _gate_template(target: Target, resolved: Resolved, template: str, key: str) -> str:
        """``{branch}``, ``{app}``, ``{project}``, then ``{VAR}``: a variable the revision was rendered
        with (the environment's `env:`, its env files, the repository's .env)."""
        from reconciler.config.hooks import placeholders

        value = target.expand(template)
        for name in placeholders(value):
            if name not in resolved.environment:
                raise DeployError(
                    f"health_gate.{key} {template!r} of environment {target.env.name!r} names {{{name}}}, "
                    "which is not a variable of the environment: set it in `env:` or an env file",
                    reason="HealthGateFailed",
                )
            value = value.replace(f"{{{name}}}", resolved.environment[name])
        return value

    def _stack_labels(self, target: Target, resolved: Resolved) -> dict[str, str]:
        return {**target.labels(), L.CHECKOUT: resolved.tree}

    def _retrying(self, target: Target, step: Callable[[], T], cancel: threading.Event | None, log: Any) -> T:
        """Run ``step``; retry transient failures with bounded exponential backoff."""
        budget = max(self.retry_budget, float(target.env.deploy_timeout))
        deadline = time.monotonic() + budget
        delay = self.retry_first
        while True:
            try:
                return step()
            except TransientError as err:
                if time.monotonic() + delay > deadline or (cancel is not None and cancel.is_set()):
                    raise
                if self.metrics is not None:
                    self.metrics.retry(target.app.name, target.env.name, err.reason)
                log.warning("deploy.retry", reason=err.reason, error=str(err), retry_in=delay)
                waiter = cancel or threading.Event()
                if waiter.wait(delay):
                    raise DeployError("cancelled while retrying", reason="Cancelled") from err
                delay = min(delay * 2, _RETRY_MAX)

    def _restore(self, source: GitSource, checkout: Path, previous: Path, log: Any) -> None:
        try:
            if previous.is_dir():
                source.activate(checkout, previous)
        except ReconcilerError as err:
            log.error("checkout.restore_failed", error=str(err))

    def _sweep(self, target: Target, resolved: Resolved) -> None:
        """Remove checkout trees no container mounts any more (and that are not the current one)."""
        try:
            live = self.converger_for(target).observe([target.project])[target.project]
            if not live.containers:
                return  # an empty answer right after a deploy is no proof that nothing mounts a tree
            keep = {resolved.tree} | {
                c.labels[L.CHECKOUT] for c in live.containers if c.labels.get(L.CHECKOUT)
            }
            self.source_for(target.app.name).sweep(self.checkout_dir(target.project), keep)
        except ReconcilerError as err:  # leftovers only cost disk; the next deploy sweeps again
            logs.get(project=target.project).warning("checkout.sweep_failed", error=str(err))

    def _failed(
        self,
        target: Target,
        commit: str,
        deploy_id: int | None,
        err: ReconcilerError,
        started: float,
        log: Any,
        *,
        rollback: bool,
    ) -> Outcome:
        message = secrets.scrub(str(err))
        if deploy_id is not None:
            self.state.finish_deploy(deploy_id, Result.FAILURE, message)
        # The same commit is not retried in a loop: wait for a new commit or a manual sync.
        self.state.mark_failed(target.project, commit)
        self._count(target, Result.FAILURE, started)
        log.error("deploy.failed", error=message)
        if not rollback or target.ephemeral:
            return Outcome(Result.FAILURE, commit, message)
        good = self.state.last_success(target.project)
        if good is None or good.commit == commit:
            return Outcome(Result.FAILURE, commit, message)
        back = self._rollback(target, good.commit, failed_commit=commit, trigger="rollback")
        return Outcome(
            Result.ROLLED_BACK if back.result is Result.SUCCESS else Result.FAILURE,
            commit,
            message,
            rolled_back_to=good.commit if back.result is Result.SUCCESS else None,
        )

    def rollback(
        self, target: Target, commit: str, *, failed_commit: str | None = None, trigger: str = "rollback"
    ) -> Outcome:
        """Redeploy a known-good ``commit`` (automatic after a failure, or `reconciler rollback`)."""
        with project_lock(target.project):
            return self._rollback(target, commit, failed_commit=failed_commit, trigger=trigger)

    def _rollback(self, target: Target, commit: str, *, failed_commit: str | None, trigger: str) -> Outcome:
        log = logs.get(
            app=target.app.name, environment=target.env.name, project=target.project, commit=commit[:12]
        )
        started = self.clock()
        deploy_id = self.state.start_deploy(
            target.app.name, target.env.name, target.project, target.branch, commit, trigger, ""
        )
        try:
            resolved = self._retrying(target, lambda: self.resolve(target, commit), None, log)
            self.check_policy(target, resolved)  # the policy may have changed since it was deployed
            self.source_for(target.app.name).activate(
                self.checkout_dir(target.project), self.checkout_dir(target.project).parent / resolved.tree
            )
            self._retrying(target, lambda: self._up(target, resolved, None), None, log)
        except ReconcilerError as err:
            self.state.finish_deploy(
                deploy_id, Result.FAILURE, f"rollback failed: {err}", rollback_of=failed_commit
            )
            self._count(target, Result.FAILURE, started)
            log.error("rollback.failed", error=str(err))
            return Outcome(Result.FAILURE, commit, str(err))
        self.state.finish_deploy(deploy_id, Result.SUCCESS, "", rollback_of=failed_commit)
        with self._lock:
            self._resolved[target.project] = resolved
        self._sweep(target, resolved)
        if self.metrics is not None:
            self.metrics.rollback(target.app.name, target.env.name)
        self._count(target, Result.SUCCESS, started)
        log.warning("rollback.done", failed_commit=(failed_commit or "")[:12])
        return Outcome(Result.SUCCESS, commit)

    def heal(self, target: Target, cancel: threading.Event | None = None) -> None:
        """Self-heal: converge the live stack back to the revision resolved at deploy time (no git)."""
        resolved = self.rendered(target)
        if resolved is None:
            return
        with project_lock(target.project):
            if self.state.suspension(target.project) is not None:
                return  # suspended while the heal waited
            self._up(target, resolved, cancel)

    def teardown(self, app: str, environment: str, project: str, branch: str) -> None:
        """Remove an ephemeral stack with its volumes and built images, its checkout and its state row.

        Only objects this instance created for this environment (or unowned ones of the project that
        an older release created) are removed; another owner's objects are left alone."""
        log = logs.get(app=app, environment=environment, project=project, branch=branch)
        with project_lock(project):
            self._converger_of(app, environment, project).down(
                project, volumes=True, images=True, owner=self.owner(app, environment)
            )
            self.source_for(app).remove_checkouts(self.checkout_dir(project))
        self.forget(project)
        self.state.remove_environment(project)
        self.state.release(app, branch)
        log.info("teardown.done")

    def _converger_of(self, app: str, environment: str, project: str) -> Converger:
        """The converger of a stack known by name (its environment may have left the configuration)."""
        host, backend = self.stack_host(app, environment, project)
        if host not in self.config.hosts:
            from reconciler.errors import ConfigError

            raise ConfigError(
                f"project {project!r} runs on host {host!r}, which the configuration no longer declares",
                hint=f"declare host {host!r} under `hosts:` again to remove it",
            )
        return cast("Converger", self.backends.get(host, backend))

    def _count(self, target: Target, result: Result, started: float) -> None:
        if self.metrics is None:
            return
        label = {Result.ROLLED_BACK: "failure"}.get(result, str(result))
        self.metrics.reconcile(
            target.app.name, target.env.name, target.project, label, self.clock() - started
        )


def _check_hook_services(target: Target, services: set[str]) -> None:
    """Every hook names a service of the revision: found before anything runs, not after the stack changed."""
    hooks = target.env.hooks
    for phase, steps in (("pre_deploy", hooks.pre_deploy), ("post_deploy", hooks.post_deploy)):
        for step in steps:
            if step.service not in services:
                raise InputError(
                    f"{step.describe(phase)} of environment {target.env.name!r} names service "
                    f"{step.service!r}, which this revision does not have "
                    f"(services: {', '.join(sorted(services)) or 'none'})",
                    hint="fix `hooks:` in environments.yaml, or the compose files",
                )


def _before_any_change(err: ReconcilerError) -> bool:
    """A pre_deploy hook failed (it ran before any container of the stack changed), or the project still
    runs as a Swarm stack (nothing was touched)."""
    return isinstance(err, DeployError) and err.reason in ("PreDeployHookFailed", "SwarmStackRunning")


def policy_error(commit: str, environment: str, violations: list[str]) -> PolicyError:
    """The refusal of a revision, one line per violation (shared by deploys and `reconciler plan`)."""
    # The first line names a violation: `status` and the page show only that line.
    more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
    lines = "".join(f"\n  - {v}" for v in violations)
    return PolicyError(
        f"refused by policy: {violations[0]}{more}\n"
        f"commit {commit[:12]} was not deployed to environment {environment!r}; "
        f"{len(violations)} violation(s):{lines}",
        tuple(violations),
        hint="change the compose files, or have an operator allow it in the environment's `policy:` "
        "in environments.yaml (see docs/environments.md, Policy)",
    )


def _rebase(value: Any, old: str, new: str) -> Any:
    """Every path under ``old`` (a checkout tree) moved under ``new`` (the stable checkout path)."""
    if isinstance(value, str):
        if value == old or value.startswith(old + "/"):
            return new + value[len(old) :]
        return value
    if isinstance(value, dict):
        return {k: _rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, old, new) for v in value]
    return value


def real_paths(model: Mapping[str, Any], stable: str, tree: str) -> dict[str, str]:
    """Every host path ``model`` mounts with its symlinks resolved, the ``stable`` checkout path taken as
    pointing at ``tree`` (where it points once that revision is activated, not where it points now)."""
    from reconciler.spec import host_paths

    real: dict[str, str] = {}
    for source in host_paths(model):
        inside = source == stable or source.startswith(stable + "/")
        path = os.path.join(tree, os.path.relpath(source, stable)) if inside else source
        real[source] = os.path.realpath(path)
    return real


def _mounted_sources(model: Mapping[str, Any]) -> Iterator[str]:
    """Host paths a container of ``model`` mounts: bind sources and file-based secrets and configs."""
    for svc in (model.get("services") or {}).values():
        for vol in (svc or {}).get("volumes") or ():
            if isinstance(vol, Mapping) and vol.get("type") == "bind" and vol.get("source"):
                yield str(vol["source"])
    for kind in ("secrets", "configs"):
        for item in (model.get(kind) or {}).values():
            if isinstance(item, Mapping) and item.get("file"):
                yield str(item["file"])
