"""``reconciler jobs list|run`` and ``reconciler backups list``: scheduled jobs from the command line.

``jobs run`` runs a job now, beside a running daemon (the project lock keeps them apart); its exit status
is the job's result.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from reconciler.config import load_config
from reconciler.config.model import Config, EnvConfig
from reconciler.errors import ConfigError
from reconciler.jobs.model import JobConfig, JobResult
from reconciler.jobs.runner import project_of


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.command == "backups":
        return _backups_list(config, args)
    if args.jobs_command == "list":
        return _list(config)
    return _run(config, args)


def find_env(config: Config, target: str) -> EnvConfig:
    """TARGET is ``app/environment``, an environment name (unique across apps) or a project name."""
    envs = list(config.environments())
    found = [
        e for e in envs if target in (e.key, e.name) or (e.branch is not None and project_of(e) == target)
    ]
    if len(found) != 1:
        known = ", ".join(e.key for e in envs if e.jobs) or "none"
        what = "is ambiguous" if found else "names no environment"
        raise ConfigError(f"TARGET {target!r} {what}", hint=f"environments with jobs: {known}")
    return found[0]


def find_job(config: Config, target: str | None, name: str) -> tuple[EnvConfig, JobConfig]:
    envs = [find_env(config, target)] if target else list(config.environments())
    found = [(e, j) for e in envs for j in e.jobs if j.name == name]
    if len(found) != 1:
        known = ", ".join(f"{e.key} {j.name}" for e in config.environments() for j in e.jobs) or "none"
        what = "is in several environments: give TARGET" if found else "names no job"
        raise ConfigError(f"JOB {name!r} {what}", hint=f"jobs: {known}")
    return found[0]


def _state(config: Config):  # type: ignore[no-untyped-def]
    from reconciler.state import State

    return State.open(config.state_dir)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def _list(config: Config) -> int:
    from reconciler.jobs.schedule import all_jobs, next_run

    rows = [("ENVIRONMENT", "JOB", "KIND", "SCHEDULE", "LAST RUN", "RESULT", "NEXT RUN")]
    with _state(config) as state:
        for env, job in all_jobs(config):
            runs = state.job_runs(env.app, env.name, job.name, 1)
            last = runs[0] if runs else None
            nxt = next_run(job)
            rows.append(
                (
                    env.key,
                    job.name,
                    str(job.kind),
                    job.schedule,
                    _when(last.started if last else None),
                    last.result if last else "-",
                    _when(nxt.timestamp() if nxt else None),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _run(config: Config, args: argparse.Namespace) -> int:
    from reconciler.jobs.schedule import JobService

    names: list[str] = args.names
    if len(names) > 2:
        raise ConfigError(
            "give [TARGET] JOB",
            hint="e.g. reconciler jobs run -c environments.yaml production nightly-backup",
        )
    env, job = find_job(config, names[0] if len(names) == 2 else None, names[-1])
    with _state(config) as state:
        outcome = JobService(config, state).run_now(env, job, trigger="cli")
    ok = outcome.result == JobResult.SUCCESS
    print(f"{env.key} {job.name}: {outcome.result}: {outcome.message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _backups_list(config: Config, args: argparse.Namespace) -> int:
    from reconciler.jobs.model import snapshot_tag
    from reconciler.jobs.restic import Restic

    env = find_env(config, args.target)
    if config.backups is None:
        raise ConfigError("no `backups` repository is configured", hint="see docs/environments.md")
    restic = Restic(config.backups)
    rows = [("JOB", "SNAPSHOT", "TIME", "FILE")]
    for job in env.jobs:
        if str(job.kind) != "backup":
            continue
        for snap in restic.snapshots(snapshot_tag(env.app, env.name, job.name)):
            rows.append((job.name, snap.id, snap.time[:19].replace("T", " ") + "Z", ",".join(snap.paths)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
