"""Deploy, roll back and tear down one environment: the apply half of the daemon's pipeline.

Called by the per-environment workers (``workqueue``) and by the one-shot CLI commands (sync, rollback).
Each step reads as a line of the reconcile; every exit path records its outcome in the state database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import labels as L
from reconciler import logs
from reconciler.errors import DeployError, InputError, ReconcilerError, TransientError
from reconciler.status import Result

if TYPE_CHECKING:
    from reconciler.config import AppConfig, Config, EnvConfig
    from reconciler.converge import Converger
    from reconciler.render import RenderedProject
    from reconciler.report.metrics import Metrics
    from reconciler.source import GitSource
    from reconciler.state import State


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


class Deployer:
    """Fetch → materialize → render → converge → record, with automatic rollback for persistent envs."""

    def __init__(
        self,
        config: Config,
        state: State,
        converger: Converger,
        metrics: Metrics | None,
        source_for: Callable[[str], GitSource],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.state = state
        self.converger = converger
        self.metrics = metrics
        self.source_for = source_for
        self.clock = clock
        self._rendered: dict[str, RenderedProject] = {}
        self._lock = threading.Lock()

    # -- paths -------------------------------------------------------------------------------------
    def checkout_dir(self, project: str) -> Path:
        """Stable per-project path: relative bind mounts resolve to the same place for every commit."""
        return Path(self.config.state_dir) / "checkouts" / project

    # -- render ------------------------------------------------------------------------------------
    def render(self, target: Target, commit: str) -> RenderedProject:
        """Materialize ``commit`` at the project's stable path and render its compose files."""
        from reconciler.render import render

        source = self.source_for(target.app.name)
        source.ensure_fetched([commit])
        path = source.materialize(commit, self.checkout_dir(target.project))
        return render(self.render_options(target, path))

    def render_options(self, target: Target, path: Path) -> Any:
        from reconciler.render import RenderOptions

        env = target.env
        files = [str(path / f) for f in env.compose] + [str(o) for o in env.overlays]
        inline: tuple[tuple[str, Any], ...] = ()
        if env.override:
            inline = ((f"{self.config.path}: {target.app.name}.{env.name}.override", env.override),)
        return RenderOptions(
            files=tuple(files),
            project_directory=str(path),
            env_files=self._env_files(path, env),
            project_name=target.project,
            environ={k: target.expand(v) for k, v in env.env.items()},
            inline=inline,
        )

    @staticmethod
    def _env_files(path: Path, env: EnvConfig) -> tuple[str, ...]:
        """The repository's .env first, then the operator's env_files (later files win, as with repeated
        `--env-file`); an explicit --env-file would otherwise make compose skip the repository's .env."""
        if not env.env_files:
            return ()  # the renderer reads <checkout>/.env by itself
        repo_env = path / ".env"
        return (*([str(repo_env)] if repo_env.is_file() else []), *(str(f) for f in env.env_files))

    def rendered(self, target: Target) -> RenderedProject | None:
        """The last rendered model of a live environment (re-rendered from its checkout after a restart)."""
        with self._lock:
            cached = self._rendered.get(target.project)
        if cached is not None:
            return cached
        path = self.checkout_dir(target.project)
        if not path.exists():
            return None
        from reconciler.render import render

        try:
            project = render(self.render_options(target, path))
        except ReconcilerError:
            return None
        with self._lock:
            self._rendered[target.project] = project
        return project

    def forget(self, project: str) -> None:
        with self._lock:
            self._rendered.pop(project, None)

    # -- deploy ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _project_lock(self, project: str) -> Iterator[None]:
        """One change at a time per project across processes: the daemon's workers serialize among
        themselves, this also makes `reconciler rollback`/`sync` wait for a deploy the daemon runs."""
        path = Path(self.config.state_dir) / "locks" / f"{project}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def deploy(
        self, target: Target, commit: str, *, trigger: str, cancel: threading.Event | None = None
    ) -> Outcome:
        """Converge ``target`` to ``commit``; a persistent env that fails rolls back to its last good one."""
        with self._project_lock(target.project):
            return self._deploy(target, commit, trigger=trigger, cancel=cancel)

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
        deploy_id: int | None = None
        try:
            # 1. fetch + materialize + render (bad compose files fail here, before anything changes)
            try:
                rendered = self.render(target, commit)
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
                json.dumps(rendered.model, sort_keys=True),
            )
            log.info("deploy.start", trigger=trigger)
            # 2. plan + apply, health-gated (the converger waits for health and one-shots)
            plan = self.converger.up(
                rendered, timeout=float(target.env.deploy_timeout), labels=target.labels(), cancel=cancel
            )
            result = Result.NOOP if plan.is_noop else Result.SUCCESS
            self.state.finish_deploy(deploy_id, result)
            with self._lock:
                self._rendered[target.project] = rendered
            self._count(target, result, started)
            log.info("deploy.done", result=str(result), changes=len(plan.changes))
            return Outcome(result, commit)
        except DeployError as err:
            if err.reason == "Cancelled":
                # Superseded by a newer commit: not this commit's fault, so don't mark it failed.
                if deploy_id is not None:
                    self.state.finish_deploy(
                        deploy_id, Result.FAILURE, "Cancelled: superseded by a newer commit"
                    )
                log.info("deploy.cancelled")
                return Outcome(Result.FAILURE, commit, "cancelled")
            return self._failed(target, commit, deploy_id, err, started, log, rollback=True)
        except InputError as err:
            # Bad compose/config in this commit: nothing was changed, retrying won't help.
            return self._failed(target, commit, deploy_id, err, started, log, rollback=False)
        except TransientError as err:
            if deploy_id is not None:
                self.state.finish_deploy(deploy_id, Result.FAILURE, str(err))
            self._count(target, Result.FAILURE, started)
            log.warning("deploy.transient_error", error=str(err))
            return Outcome(Result.FAILURE, commit, str(err))

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
        message = str(err)
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
        with self._project_lock(target.project):
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
            rendered = self.render(target, commit)
            self.converger.up(rendered, timeout=float(target.env.deploy_timeout), labels=target.labels())
        except ReconcilerError as err:
            self.state.finish_deploy(
                deploy_id, Result.FAILURE, f"rollback failed: {err}", rollback_of=failed_commit
            )
            self._count(target, Result.FAILURE, started)
            log.error("rollback.failed", error=str(err))
            return Outcome(Result.FAILURE, commit, str(err))
        self.state.finish_deploy(deploy_id, Result.SUCCESS, "", rollback_of=failed_commit)
        with self._lock:
            self._rendered[target.project] = rendered
        if self.metrics is not None:
            self.metrics.rollback(target.app.name, target.env.name)
        self._count(target, Result.SUCCESS, started)
        log.warning("rollback.done", failed_commit=(failed_commit or "")[:12])
        return Outcome(Result.SUCCESS, commit)

    def heal(self, target: Target, cancel: threading.Event | None = None) -> None:
        """Self-heal: converge the live stack back to its last rendered model (no git involved)."""
        rendered = self.rendered(target)
        if rendered is None:
            return
        with self._project_lock(target.project):
            self.converger.up(
                rendered, timeout=float(target.env.deploy_timeout), labels=target.labels(), cancel=cancel
            )

    def teardown(self, app: str, environment: str, project: str, branch: str) -> None:
        """Remove an ephemeral stack with its volumes and built images, its checkout and its state row."""
        log = logs.get(app=app, environment=environment, project=project, branch=branch)
        with self._project_lock(project):
            self.converger.down(project, volumes=True, images=True)
        shutil.rmtree(self.checkout_dir(project), ignore_errors=True)
        self.forget(project)
        self.state.remove_environment(project)
        self.state.release(app, branch)
        log.info("teardown.done")

    def _count(self, target: Target, result: Result, started: float) -> None:
        if self.metrics is None:
            return
        label = {Result.ROLLED_BACK: "failure"}.get(result, str(result))
        self.metrics.reconcile(
            target.app.name, target.env.name, target.project, label, self.clock() - started
        )
