"""Readers for the scheduled-jobs settings: the top-level ``backups`` and each environment's ``jobs``.

Called by the parser (``reconciler.config.parser``); builds ``reconciler.jobs.model`` dataclasses.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.config.yaml_lines import _Map, _Seq, _type_name
from reconciler.jobs.model import DEFAULT_MIN_RATIO, BackupsConfig, JobConfig, JobKind

if TYPE_CHECKING:
    from reconciler.config.model import AppConfig
    from reconciler.config.readers import _Readers

_BACKUPS_KEYS = ("repository", "password_file")
_COMMON = ("kind", "schedule", "service", "timeout")
_KEYS = {
    JobKind.BACKUP: (*_COMMON, "run", "keep_last", "keep_within", "min_ratio"),
    JobKind.RESTORE_DRILL: (*_COMMON, "from", "restore", "verify", "ready"),
    JobKind.COPY: (*_COMMON, "from", "restore", "anonymize", "reset"),
}
_REQUIRED = {
    JobKind.BACKUP: ("run",),
    JobKind.RESTORE_DRILL: ("from", "restore", "verify"),
    JobKind.COPY: ("from", "restore", "anonymize", "reset"),
}


def read_backups(r: _Readers, doc: _Map) -> BackupsConfig | None:
    m = r.mapping(doc, "backups", "backups")
    if m is None:
        return None
    r.check_keys(m, _BACKUPS_KEYS, "backups")
    repo = r.string(m, "repository", "backups.repository", required=True)
    pw = r.string(m, "password_file", "backups.password_file", required=True)
    assert repo is not None and pw is not None
    if not repo.strip():
        raise r.fail("`repository` is empty", m.key_lines["repository"], "backups.repository")
    # A local path is relative to the file; anything with a scheme (s3:, sftp:, rest:...) is restic's.
    if ":" not in repo or repo.startswith(("/", ".", "~")):
        repo = str((r.base / Path(repo).expanduser()).resolve())
    return BackupsConfig(repository=repo, password_file=(r.base / Path(pw).expanduser()).resolve())


def _command(r: _Readers, m: _Map, key: str, where: str) -> tuple[str, ...]:
    """A command as a string (split like a shell would, never run by one) or a list of strings."""
    if key not in m:
        return ()
    value, line = m[key], m.key_lines[key]
    if isinstance(value, str):
        try:
            argv = tuple(shlex.split(value))
        except ValueError as exc:
            raise r.fail(f"cannot split `{key}` into arguments: {exc}", line, f"{where}.{key}") from None
    elif isinstance(value, _Seq) and all(isinstance(v, str) for v in value):
        argv = tuple(value)
    else:
        raise r.fail(
            f"`{key}` must be a command (string or list of strings), not {_type_name(value)}",
            line,
            f"{where}.{key}",
        )
    if not argv:
        raise r.fail(f"`{key}` is empty", line, f"{where}.{key}")
    return argv


def read_jobs(r: _Readers, m: _Map, where: str) -> tuple[JobConfig, ...]:
    jobs_map = r.mapping(m, "jobs", f"{where}.jobs")
    if jobs_map is None:
        return ()
    return tuple(_job(r, jobs_map, name, f"{where}.jobs") for name in jobs_map)


def _job(r: _Readers, jobs_map: _Map, name: Any, parent: str) -> JobConfig:
    line = jobs_map.key_lines[name]
    where = f"{parent}.{name}"
    r.check_name(name, line, where, "job")
    m = r.mapping(jobs_map, name, where, required=True)
    assert m is not None
    raw_kind = r.string(m, "kind", f"{where}.kind", required=True)
    if raw_kind not in tuple(JobKind):
        raise r.fail(
            f"`kind` must be one of {', '.join(JobKind)}, not {raw_kind!r}",
            m.key_lines["kind"],
            f"{where}.kind",
        )
    kind = JobKind(raw_kind)
    r.check_keys(m, _KEYS[kind], where)
    for key in _REQUIRED[kind]:
        r.value(m, key, f"{where}.{key}", True)
    schedule = r.string(m, "schedule", f"{where}.schedule", required=True)
    assert schedule is not None
    _check_cron(r, schedule, m.key_lines["schedule"], f"{where}.schedule")
    service = r.string(m, "service", f"{where}.service", required=True)
    assert service is not None
    ratio = m.get("min_ratio", DEFAULT_MIN_RATIO)
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
        raise r.fail(
            f"`min_ratio` must be a number from 0 to 1, not {ratio!r}",
            m.key_lines.get("min_ratio", line),
            f"{where}.min_ratio",
            hint="0.5 refuses a dump smaller than half the previous one; 0 turns the check off",
        )
    keep_within = r.string(m, "keep_within", f"{where}.keep_within")
    source = r.string(m, "from", f"{where}.from")
    return JobConfig(
        name=name,
        kind=kind,
        schedule=schedule,
        service=service,
        run=_command(r, m, "run", where),
        keep_last=r.integer(m, "keep_last", f"{where}.keep_last", minimum=1),
        keep_within=keep_within,
        min_ratio=float(ratio),
        source=source,
        restore=_command(r, m, "restore", where),
        verify=_command(r, m, "verify", where),
        ready=_command(r, m, "ready", where),
        anonymize=_command(r, m, "anonymize", where),
        reset=_command(r, m, "reset", where),
        timeout=r.duration(m, "timeout", f"{where}.timeout", 3600.0),
        line=line,
    )


def _check_cron(r: _Readers, expr: str, line: int, where: str) -> None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr)
    except ValueError as exc:
        raise r.fail(
            f"invalid cron expression {expr!r}: {exc}",
            line,
            where,
            hint='five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *"',
        ) from None


def check_job_refs(r: _Readers, app: AppConfig, has_backups: bool) -> None:
    """Every `from` names a backup job of the same app; jobs need the top-level `backups` repository."""
    for env in app.environments:
        for job in env.jobs:
            where = f"apps.{app.name}.environments.{env.name}.jobs.{job.name}"
            if not has_backups:
                raise r.fail(
                    "jobs need the top-level `backups` repository",
                    job.line,
                    where,
                    hint="add backups: {repository: /var/backups/restic, password_file: /etc/restic.pass}",
                )
            if env.branch is None:
                raise r.fail(
                    "jobs only run in environments with `branch` (one fixed project), not `branches`",
                    job.line,
                    where,
                    hint="move the job to the environment that follows one branch",
                )
            if job.source is None:
                continue
            env_name, _, job_name = job.source.rpartition("/")
            target = env if not env_name else next((e for e in app.environments if e.name == env_name), None)
            found = next((j for j in target.jobs if j.name == job_name), None) if target else None
            if found is None or found.kind != JobKind.BACKUP:
                raise r.fail(
                    f"`from: {job.source}` names no backup job of app {app.name!r}",
                    job.line,
                    f"{where}.from",
                    hint="give JOB (same environment) or ENVIRONMENT/JOB of a job with kind: backup",
                )
