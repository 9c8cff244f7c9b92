"""JobService records every run: a crashing runner still closes its row as a failure and counts it."""

from __future__ import annotations

from pathlib import Path

from reconciler.config.parser import parse_config
from reconciler.jobs.runner import JobRunner
from reconciler.jobs.schedule import JobService
from reconciler.report import Metrics, StaticView
from reconciler.state import State
from tests.jobs.test_jobs_config import GOOD


class _Crashing(JobRunner):
    def run(self, env: object, job: object) -> object:  # type: ignore[override]
        raise RuntimeError("boom")


def test_a_crash_is_a_recorded_failure(tmp_path: Path) -> None:
    """No run is left `running` when the runner raises: the row and the metric say failure."""
    config = parse_config(GOOD, tmp_path / "environments.yaml")
    env = config.app("mrs").environment("production")
    metrics = Metrics(StaticView())
    with State.open(tmp_path / "state") as state:
        service = JobService(config, state, runner=_Crashing(config), metrics=metrics, clock=lambda: 100.0)
        outcome = service.run_now(env, env.jobs[0], trigger="schedule")
        assert outcome.result == "failure" and "crashed" in outcome.message
        (run,) = state.job_runs("mrs", "production", "nightly-backup")
    assert (run.result, run.trigger, run.finished) == ("failure", "schedule", 100.0)
    text = metrics.exposition()[0].decode()
    labels = 'app="mrs",environment="production",job="nightly-backup"'
    assert f'reconciler_job_runs_total{{{labels},result="failure"}} 1.0' in text
    assert "reconciler_job_last_success_timestamp_seconds{" not in text
