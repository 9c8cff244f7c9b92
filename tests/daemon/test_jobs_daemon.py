"""The daemon schedules the configured jobs on its own scheduler and seeds their metrics from state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.daemon.runtime import Runtime
from reconciler.report.metrics import Metrics
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config

pytestmark = pytest.mark.docker

JOBS = {
    "nightly-backup": {"kind": "backup", "schedule": "0 3 * * *", "service": "db", "run": "pg_dump app"},
    "restore-drill": {
        "kind": "restore_drill",
        "schedule": "0 5 * * 0",
        "from": "nightly-backup",
        "service": "db",
        "restore": "pg_restore -d postgres --create",
        "verify": "psql -tAc 'select 1'",
    },
}


def test_daemon_schedules_jobs_and_seeds_metrics(tmp_path: Path, repo: Repo, cleanup: Any) -> None:
    """Each job gets a cron trigger in the daemon's scheduler; a success recorded earlier shows at once."""
    prefix = unique_prefix()
    cleanup(prefix)
    backups = {"repository": str(tmp_path / "restic"), "password_file": str(tmp_path / "pass")}
    cfg = write_config(tmp_path, repo.bare, prefix, backups=backups, envs={"production": {"jobs": JOBS}})
    daemon = _daemon(load_config(cfg))
    run = daemon.state.start_job_run("demo", "production", "nightly-backup", "cli", at=1_700_000_000.0)
    daemon.state.finish_job_run(run, "success", "backed up", 4321, at=1_700_000_060.0)
    metrics = Metrics(daemon)
    daemon.attach_metrics(metrics)
    runtime = Runtime(daemon)
    runtime.start()
    try:
        job = runtime.scheduler.get_job("demo/production/nightly-backup")
        assert job is not None and "hour='3', minute='0'" in str(job.trigger)
        assert runtime.scheduler.get_job("demo/production/restore-drill") is not None
        text = metrics.exposition()[0].decode()
        labels = 'app="demo",environment="production",job="nightly-backup"'
        assert f"reconciler_job_last_success_timestamp_seconds{{{labels}}} 1.70000006e+09" in text
        assert f"reconciler_backup_size_bytes{{{labels}}} 4321.0" in text
        assert f'reconciler_job_runs_total{{{labels},result="failure"}} 0.0' in text
        drill = 'app="demo",environment="production",job="restore-drill",kind="restore_drill"'
        assert f"reconciler_job_info{{{drill}}} 1.0" in text
    finally:
        runtime.stop()
