"""Fire each environment's jobs on their cron expressions (APScheduler 3's ``CronTrigger``, in UTC), record
every run in state and metrics. Started by the daemon; ``JobService.run_now`` serves ``jobs run`` too.

Runs never overlap: APScheduler runs one instance of a job at a time, and the runner holds the
environment's project lock, which deploys and the other jobs of that environment take too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.config.model import Config, EnvConfig
from reconciler.jobs.model import JobConfig, JobResult
from reconciler.jobs.runner import JobOutcome, JobRunner

if TYPE_CHECKING:
    from reconciler.report.metrics import Metrics
    from reconciler.state import State


def trigger_of(job: JobConfig) -> Any:
    from apscheduler.triggers.cron import CronTrigger

    return CronTrigger.from_crontab(job.schedule, timezone=UTC)


def next_run(job: JobConfig, now: datetime | None = None) -> datetime | None:
    """When ``job`` fires next after ``now`` (UTC)."""
    fire: datetime | None = trigger_of(job).get_next_fire_time(None, now or datetime.now(UTC))
    return fire


def all_jobs(config: Config) -> Iterator[tuple[EnvConfig, JobConfig]]:
    for env in config.environments():
        for job in env.jobs:
            yield env, job


class JobService:
    """Runs jobs and records them: one ``job_runs`` row per run, the metrics, a structlog event."""

    def __init__(
        self,
        config: Config,
        state: State,
        *,
        runner: JobRunner | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.state = state
        self.runner = runner or JobRunner(config)
        self.metrics = metrics
        self.clock = clock

    def seed_metrics(self) -> None:
        """Set each job's last success from state, so a restarted daemon does not look like missed backups."""
        if self.metrics is None:
            return
        for env, job in all_jobs(self.config):
            self.metrics.job_info.labels(env.app, env.name, job.name, str(job.kind)).set(1)
            for r in ("success", "failure"):
                self.metrics.job_runs_total.labels(env.app, env.name, job.name, r)
            last = next(
                (
                    run
                    for run in self.state.job_runs(env.app, env.name, job.name, 50)
                    if run.result == JobResult.SUCCESS
                ),
                None,
            )
            if last is not None and last.finished is not None:
                self.metrics.job_last_success.labels(env.app, env.name, job.name).set(last.finished)
                if last.size is not None:
                    self.metrics.backup_size.labels(env.app, env.name, job.name).set(last.size)

    def run_now(self, env: EnvConfig, job: JobConfig, trigger: str = "cli") -> JobOutcome:
        import structlog

        log = structlog.get_logger("reconciler").bind(app=env.app, environment=env.name, job=job.name)
        run_id = self.state.start_job_run(env.app, env.name, job.name, trigger, at=self.clock())
        log.info("job.started", kind=str(job.kind), trigger=trigger)
        try:
            outcome = self.runner.run(env, job)
        except Exception as exc:  # a bug must still close the run: never a row left `running`
            log.exception("job.crashed")
            outcome = JobOutcome(JobResult.FAILURE, f"{env.key} job {job.name!r} crashed: {exc!r}")
        finished = self.clock()
        self.state.finish_job_run(run_id, str(outcome.result), outcome.message, outcome.size, at=finished)
        if self.metrics is not None:
            self.metrics.job_run(
                env.app, env.name, job.name, str(outcome.result), at=finished, size=outcome.size
            )
        (log.info if outcome.result == JobResult.SUCCESS else log.error)(
            "job.finished", result=str(outcome.result), message=outcome.message
        )
        return outcome


class JobScheduler:
    """A background APScheduler with one cron job per configured job; ``stop`` waits for running ones."""

    def __init__(self, service: JobService, *, scheduler: Any = None) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.service = service
        self.scheduler = scheduler or BackgroundScheduler(timezone=UTC)
        for env, job in all_jobs(service.config):
            self.scheduler.add_job(
                service.run_now,
                trigger_of(job),
                args=(env, job, "schedule"),
                id=f"{env.key}/{job.name}",
                name=f"{env.key}/{job.name}",
                max_instances=1,  # a slow run is never started twice
                coalesce=True,  # runs missed while the daemon was busy or down collapse into one
                misfire_grace_time=3600,
            )

    def start(self) -> None:
        self.service.seed_metrics()
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)


def attach(scheduler: Any, config: Config, state: State, metrics: Metrics | None) -> JobScheduler | None:
    """Add the configured jobs to the daemon's running scheduler (None when there are none)."""
    if config.backups is None or not any(True for _ in all_jobs(config)):
        return None
    jobs = JobScheduler(JobService(config, state, metrics=metrics), scheduler=scheduler)
    jobs.service.seed_metrics()
    return jobs
