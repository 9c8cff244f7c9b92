"""Scheduled jobs against real Docker, PostgreSQL and restic: a backup kept and listed, a restore drill that
counts real rows and fails on a corrupted repository, a copy that anonymises or resets, a cron job firing."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.config import load_config
from reconciler.daemon.instance import lock_dir, project_lock
from reconciler.jobs.schedule import JobScheduler, JobService, next_run
from reconciler.report import Metrics, StaticView
from reconciler.state import State
from tests.jobs.conftest import Site, psql, sh

BACKUP = """\
nightly-backup:
  kind: backup
  schedule: "0 3 * * *"
  service: db
  run: pg_dump -h db -Fc -U postgres app
  keep_last: 2
restore-drill:
  kind: restore_drill
  schedule: "0 5 * * 0"
  from: nightly-backup
  service: db
  restore: pg_restore -U postgres -d postgres --create
  verify: psql -U postgres -d app -tAc 'select count(*) from users'
"""

COPY = """\
refresh:
  kind: copy
  schedule: "0 4 * * 1"
  from: production/nightly-backup
  service: db
  restore: pg_restore -h db -U postgres -d postgres --clean --if-exists --create
  anonymize: psql -h db -U postgres -d app -v ON_ERROR_STOP=1 -c "{sql}"
  reset: psql -h db -U postgres -d postgres -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS app WITH (FORCE)"
"""
GOOD_SQL = "UPDATE users SET email = 'user' || id || '@example.invalid'"
BAD_SQL = "UPDATE no_such_table SET email = ''"


def restic_snapshots(site: Site) -> list[dict[str, object]]:
    env = {**os.environ, "RESTIC_REPOSITORY": str(site.repo), "RESTIC_PASSWORD_FILE": str(site.password_file)}
    out = sh("restic", "snapshots", "--json", env=env).stdout
    return json.loads(out) or []


def runs(config: Path, env: str, job: str) -> list[str]:
    cfg = load_config(config)
    with State.open(cfg.state_dir) as state:
        return [r.result for r in state.job_runs("mrs", env, job)]


@pytest.fixture(scope="module")
def backed_up(site: Site) -> Path:
    """The first backup, made through `reconciler jobs run`."""
    config = site.config(BACKUP, COPY.format(sql=GOOD_SQL))
    assert main(["jobs", "run", "-c", str(config), "production", "nightly-backup"]) == 0
    return config


def test_backup_is_written_to_restic_and_listed(
    site: Site, backed_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`jobs run` streams pg_dump's output into restic: one snapshot, tagged, listed by `backups list`."""
    snaps = restic_snapshots(site)
    assert [s["tags"] for s in snaps] == [["reconciler/mrs/production/nightly-backup"]]
    assert snaps[0]["paths"] == ["/mrs-production-nightly-backup.dump"]
    capsys.readouterr()
    assert main(["backups", "list", "-c", str(backed_up), "production"]) == 0
    out = capsys.readouterr().out
    assert "nightly-backup" in out and "/mrs-production-nightly-backup.dump" in out
    assert runs(backed_up, "production", "nightly-backup") == ["success"]
    assert main(["jobs", "list", "-c", str(backed_up)]) == 0
    listed = capsys.readouterr().out
    assert "mrs/production  nightly-backup  backup" in listed and "success" in listed


def test_restore_drill_counts_real_rows(
    site: Site, backed_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The drill restores the latest dump into a scratch database and its verify query counts 3 users."""
    before = sh(
        "docker", "ps", "-aq", "--filter", "label=io.reconciler.job=mrs/production/restore-drill"
    ).stdout
    assert main(["jobs", "run", "-c", str(backed_up), "restore-drill"]) == 0
    assert "verified: 3" in capsys.readouterr().out
    after = sh(
        "docker", "ps", "-aq", "--filter", "label=io.reconciler.job=mrs/production/restore-drill"
    ).stdout
    assert before == after == ""  # the scratch container is gone


def test_empty_and_shrunken_dumps_are_refused(site: Site, backed_up: Path) -> None:
    """An empty dump, or one under half the previous size, keeps no snapshot and fails the job."""
    count = len(restic_snapshots(site))
    empty = site.config(BACKUP.replace("pg_dump -h db -Fc -U postgres app", '"true"'))
    assert main(["jobs", "run", "-c", str(empty), "nightly-backup"]) == 1
    tiny = site.config(BACKUP.replace("pg_dump -h db -Fc -U postgres app", "echo tiny"))
    assert main(["jobs", "run", "-c", str(tiny), "nightly-backup"]) == 1
    assert len(restic_snapshots(site)) == count
    assert runs(tiny, "production", "nightly-backup")[:2] == ["failure", "failure"]
    site.config(BACKUP, COPY.format(sql=GOOD_SQL))  # restore the real configuration


def test_copy_anonymises_staging(site: Site, backed_up: Path) -> None:
    """A copy loads production's latest backup into staging, then anonymises it."""
    assert main(["jobs", "run", "-c", str(backed_up), "staging", "refresh"]) == 0
    emails = psql(site.staging, "SELECT email FROM users ORDER BY id", db="app").stdout.split()
    assert emails == ["user1@example.invalid", "user2@example.invalid", "user3@example.invalid"]


def test_failed_anonymisation_resets_staging(
    site: Site, backed_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When anonymisation fails, the reset command removes the copied data and the job fails."""
    config = site.config(BACKUP, COPY.format(sql=BAD_SQL))
    assert main(["jobs", "run", "-c", str(config), "staging", "refresh"]) == 1
    err = capsys.readouterr().err
    assert "anonymisation exited with status" in err and "was reset" in err
    exists = psql(site.staging, "SELECT count(*) FROM pg_database WHERE datname = 'app'").stdout.strip()
    assert exists == "0"
    site.config(BACKUP, COPY.format(sql=GOOD_SQL))


def test_cron_job_fires_and_records_metrics(site: Site, backed_up: Path) -> None:
    """The scheduler holds one CronTrigger per job; a due job runs, is recorded, and shows in the metrics."""
    config = load_config(backed_up)
    metrics = Metrics(StaticView())
    with State.open(config.state_dir) as state:
        service = JobService(config, state, metrics=metrics)
        scheduler = JobScheduler(service)
        job = scheduler.scheduler.get_job("mrs/production/nightly-backup")
        assert str(job.trigger) == "cron[month='*', day='*', day_of_week='*', hour='3', minute='0']"
        now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        env = config.app("mrs").environment("production")
        assert next_run(env.jobs[0], now) == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
        before = len(state.job_runs("mrs", "production", "nightly-backup"))
        scheduler.start()
        try:
            # Due now instead of at 03:00: the trigger and the run path are the real ones.
            scheduler.scheduler.modify_job("mrs/production/nightly-backup", next_run_time=datetime.now(UTC))
            deadline = time.monotonic() + 180
            while True:
                done = [r for r in state.job_runs("mrs", "production", "nightly-backup") if r.finished]
                if len(done) > before:
                    break
                assert time.monotonic() < deadline, "the scheduled backup did not run"
                time.sleep(0.5)
        finally:
            scheduler.stop()
        assert done[0].trigger == "schedule" and done[0].result == "success", done[0].message
        text = metrics.exposition()[0].decode()
        labels = 'app="mrs",environment="production",job="nightly-backup"'
        assert f'reconciler_job_runs_total{{{labels},result="success"}} 1.0' in text
        assert f"reconciler_backup_size_bytes{{{labels}}} {float(done[0].size or 0)}" in text
        assert f"reconciler_job_last_success_timestamp_seconds{{{labels}}}" in text
        assert f'reconciler_job_info{{{labels},kind="backup"}} 1.0' in text
    # keep_last: 2 pruned the older snapshots of this job.
    assert len(restic_snapshots(site)) <= 2


def _waiting_on(path: Path) -> bool:
    """True when some process is blocked on an flock of ``path`` (a ``->`` line of /proc/locks)."""
    inode = os.stat(path).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields and fields[-3].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def test_job_waits_for_a_deploy_of_its_environment(site: Site, backed_up: Path) -> None:
    """A job takes its environment's project lock, the one deploys hold: while held, it waits (blocked in
    flock, seen in /proc/locks) and starts no container; released, it runs and succeeds."""
    config = load_config(backed_up)
    env = config.app("mrs").environment("production")
    label = "label=io.reconciler.job=mrs/production/nightly-backup"
    outcome: list[object] = []
    with State.open(config.state_dir) as state:
        with project_lock(site.production):
            service = JobService(config, state)
            worker = threading.Thread(target=lambda: outcome.append(service.run_now(env, env.jobs[0])))
            worker.start()
            deadline = time.monotonic() + 60
            while not _waiting_on(lock_dir() / f"{site.production}.lock"):
                assert time.monotonic() < deadline, "the job never waited for the project lock"
                time.sleep(0.1)
            assert sh("docker", "ps", "-aq", "--filter", label).stdout == ""
            released = time.time()
        worker.join(timeout=300)
    assert outcome and outcome[0].result == "success", outcome  # type: ignore[attr-defined]
    created = sh(
        "docker",
        "events",
        "--since",
        str(int(released) - 1),
        "--until",
        str(int(time.time()) + 1),
        "--filter",
        label,
        "--filter",
        "event=create",
        "--format",
        "{{.TimeNano}}",
    ).stdout.split()
    assert created and min(int(t) for t in created) >= int(released * 1e9)


def test_restore_drill_fails_on_corrupted_backup(
    site: Site, backed_up: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A repository whose data was damaged fails the drill (restic refuses the unreadable dump)."""
    for pack in (site.repo / "data").rglob("*"):
        if pack.is_file():
            pack.chmod(0o644)
            pack.write_bytes(b"\0" * pack.stat().st_size)
    assert main(["jobs", "run", "-c", str(backed_up), "restore-drill"]) == 1
    assert "restore-drill" in capsys.readouterr().err
    assert runs(backed_up, "production", "restore-drill")[0] == "failure"
