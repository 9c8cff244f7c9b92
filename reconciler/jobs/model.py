"""The configuration of scheduled jobs: the top-level ``backups`` repository and each environment's ``jobs``.

Pure data, built by ``reconciler.config.jobs`` and read by ``reconciler.jobs.runner`` and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

DEFAULT_MIN_RATIO = 0.5
DEFAULT_READY = "pg_isready -q -U postgres"
DEFAULT_JOB_TIMEOUT = 3600.0


class JobKind(StrEnum):
    BACKUP = "backup"
    RESTORE_DRILL = "restore_drill"
    COPY = "copy"


class JobResult(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True)
class BackupsConfig:
    """Where backups go: a restic repository (any restic backend) and the file holding its password."""

    repository: str
    password_file: Path


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """One job of one environment; which fields matter depends on ``kind`` (checked by the parser)."""

    name: str
    kind: JobKind
    schedule: str  # a crontab expression, read by APScheduler's CronTrigger
    service: str
    run: tuple[str, ...] = ()  # backup: the dump command; its standard output is the dump
    keep_last: int | None = None
    keep_within: str | None = None  # restic duration, e.g. "30d"
    min_ratio: float = DEFAULT_MIN_RATIO  # refuse a dump smaller than this share of the previous one
    source: str | None = None  # restore_drill / copy (`from`): "JOB" or "ENVIRONMENT/JOB"
    restore: tuple[str, ...] = ()  # reads the dump on standard input
    verify: tuple[str, ...] = ()  # restore_drill: prints a number > 0, or prints no number and exits 0
    ready: tuple[str, ...] = ()  # restore_drill: exits 0 once the scratch database accepts connections
    anonymize: tuple[str, ...] = ()  # copy
    reset: tuple[str, ...] = ()  # copy: removes the copied data when anonymisation fails
    timeout: float = DEFAULT_JOB_TIMEOUT
    line: int = 0


def snapshot_tag(app: str, environment: str, job: str) -> str:
    """The restic tag of one backup job's snapshots (names are [a-z0-9_-], so '/' is unambiguous)."""
    return f"reconciler/{app}/{environment}/{job}"


def dump_filename(app: str, environment: str, job: str) -> str:
    return f"{app}-{environment}-{job}.dump"
