"""environments.yaml's `backups` and `jobs`: parsed into typed jobs, with located errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.config.parser import parse_config
from reconciler.errors import ConfigError
from reconciler.jobs.model import JobKind

GOOD = """\
backups: {repository: /var/backups/mrs-restic, password_file: /etc/reconciler/restic.pass}
apps:
  mrs:
    repo: /srv/mrs.git
    environments:
      production:
        branch: master
        project: mrs-production
        compose: [compose.yaml]
        jobs:
          nightly-backup: {kind: backup, schedule: "0 3 * * *", service: db,
                           run: "pg_dump -Fc -U postgres app", keep_last: 14}
          restore-drill: {kind: restore_drill, schedule: "0 5 * * 0", from: nightly-backup, service: db,
                          restore: "pg_restore -U postgres -d postgres --create",
                          verify: "psql -U postgres -tAc 'select count(*) from users'"}
      staging:
        branch: develop
        project: mrs-staging
        compose: [compose.yaml]
        jobs:
          refresh: {kind: copy, schedule: "0 4 * * 1", from: production/nightly-backup, service: db,
                    restore: "pg_restore -h db -U postgres -d postgres --clean --create",
                    anonymize: "psql -U postgres app -f /anonymize.sql",
                    reset: [dropdb, -h, db, -U, postgres, app]}
"""


def parse(text: str) -> object:
    return parse_config(text, Path("/etc/reconciler/environments.yaml"))


def test_jobs_are_parsed() -> None:
    """Commands are split like a shell would (never run by one); `from` resolves across environments."""
    config = parse(GOOD)
    prod = config.app("mrs").environment("production")  # type: ignore[attr-defined]
    backup, drill = prod.jobs
    assert backup.kind is JobKind.BACKUP and backup.keep_last == 14 and backup.min_ratio == 0.5
    assert backup.run == ("pg_dump", "-Fc", "-U", "postgres", "app")
    assert drill.verify == ("psql", "-U", "postgres", "-tAc", "select count(*) from users")
    refresh = config.app("mrs").environment("staging").jobs[0]  # type: ignore[attr-defined]
    assert refresh.source == "production/nightly-backup" and refresh.reset[0] == "dropdb"
    assert config.backups.repository == "/var/backups/mrs-restic"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('schedule: "0 3 * * *"', 'schedule: "0 25 * * *"', "invalid cron expression"),
        ("from: nightly-backup,", "from: nope,", "names no backup job"),
        ("{kind: copy,", "{kind: kopy,", "`kind` must be one of"),
        ("keep_last: 14}", "keep_last: 14, keep: 3}", "unknown key 'keep'"),
        (
            "\n                    reset: [dropdb, -h, db, -U, postgres, app]}",
            "}",
            "missing required key `reset`",
        ),
        (
            "backups: {repository: /var/backups/mrs-restic, password_file: /etc/reconciler/restic.pass}\n",
            "",
            "jobs need the top-level `backups` repository",
        ),
    ],
)
def test_bad_jobs_are_located(old: str, new: str, message: str) -> None:
    """Each mistake is reported with the file, line and key, never a traceback."""
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse(GOOD.replace(old, new, 1))
    assert message in str(info.value)
    assert "environments.yaml:" in str(info.value)
