"""The daemon's memory in SQLite (``state_dir/state.db``): deploys, revisions, pins, suspensions, names.

Used by the daemon's workers (several threads) and by the CLI commands, possibly in another process at
the same time: WAL mode, one connection guarded by a lock, short transactions, a busy timeout.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reconciler import secrets
from reconciler.errors import StateError
from reconciler.status import DeployRecord, Result

SCHEMA_VERSION = 1
# Results after which the deployed commit is what runs: "applied".
_APPLIED = (Result.SUCCESS.value, Result.NOOP.value)

_SCHEMA = """
CREATE TABLE deploys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    environment TEXT NOT NULL,
    project TEXT NOT NULL,
    branch TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    result TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    rollback_of TEXT,
    rendered_config TEXT NOT NULL DEFAULT ''
);
CREATE INDEX deploys_by_project ON deploys (project, id);
CREATE TABLE environments (
    project TEXT PRIMARY KEY,
    app TEXT NOT NULL,
    environment TEXT NOT NULL,
    branch TEXT NOT NULL,
    ephemeral INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE revisions (
    project TEXT PRIMARY KEY,
    attempted TEXT,
    attempted_at REAL,
    applied TEXT,
    applied_at REAL
);
CREATE TABLE failed_commits (
    project TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    failed_at REAL NOT NULL,
    PRIMARY KEY (project, commit_sha)
);
CREATE TABLE pins (project TEXT PRIMARY KEY, commit_sha TEXT NOT NULL, pinned_at REAL NOT NULL);
CREATE TABLE suspensions (project TEXT PRIMARY KEY, reason TEXT NOT NULL, suspended_at REAL NOT NULL);
CREATE TABLE heads (
    app TEXT NOT NULL,
    branch TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    PRIMARY KEY (app, branch)
);
CREATE TABLE assignments (
    app TEXT NOT NULL,
    branch TEXT NOT NULL,
    project TEXT NOT NULL UNIQUE,
    assigned_at REAL NOT NULL,
    PRIMARY KEY (app, branch)
);
"""

# Added on every open (not a schema version step): older databases gain it, older readers ignore it.
_JOB_RUNS = """
CREATE TABLE IF NOT EXISTS job_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL,
    environment TEXT NOT NULL,
    job TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    result TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    size INTEGER
)"""

# Likewise: each deploy hook step's exit code and output tail, by deploy attempt (`reconciler history`).
_HOOK_RUNS = """
CREATE TABLE IF NOT EXISTS hook_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deploy_id INTEGER NOT NULL,
    phase TEXT NOT NULL,
    service TEXT NOT NULL,
    command TEXT NOT NULL,
    exit_code INTEGER,
    output TEXT NOT NULL DEFAULT '',
    finished REAL NOT NULL
)"""

# Likewise: the host each project's stack runs on (a missing row: "local", where every stack of a release
# before hosts ran). Moving a stack to another host rewrites it only once the move is confirmed.
_PLACEMENTS = """
CREATE TABLE IF NOT EXISTS placements (
    project TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    placed_at REAL NOT NULL
)"""


@dataclass(frozen=True)
class HookRecord:
    """One deploy hook step as it ran: ``exit_code`` None when it never got one (not created, timed out)."""

    deploy_id: int
    phase: str
    service: str
    command: str
    exit_code: int | None
    output: str
    finished: float


@dataclass(frozen=True)
class JobRun:
    """One run of a scheduled job (result ``running`` until it finishes)."""

    id: int
    app: str
    environment: str
    job: str
    trigger: str
    started: float
    finished: float | None
    result: str
    message: str
    size: int | None


@dataclass(frozen=True)
class Snapshot:
    """The small tables every poll consults for every environment, read in one go.

    ``State.snapshot()`` reloads it only after a write (by this process or another one), so a poll
    with nothing moved costs one ``PRAGMA data_version`` instead of a query per environment."""

    applied: Mapping[str, str]  # project -> last applied commit
    pins: Mapping[str, str]  # project -> pinned commit
    suspensions: Mapping[str, str]  # project -> reason (may be "")
    failed: frozenset[tuple[str, str]]  # (project, commit) never retried in a loop
    assignments: Mapping[str, Mapping[str, str]]  # app -> branch -> project, oldest first
    environments: tuple[EnvRow, ...]
    placements: Mapping[str, str] = field(default_factory=dict)  # project -> host name, when recorded


@dataclass(frozen=True)
class EnvRow:
    """An environment the daemon created and has not removed yet."""

    project: str
    app: str
    environment: str
    branch: str
    ephemeral: bool
    created: float
    updated: float


class State:
    """Open with ``State.open(state_dir)``; every method is one short transaction, safe from any thread."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.RLock()
        self._writes = 0  # this connection's commits: PRAGMA data_version only counts other connections'
        self._snapshot: tuple[int, int, Snapshot] | None = None
        try:
            # 0700 / 0600: the database holds deploy history and rendered configurations.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.path.touch(mode=0o600, exist_ok=True)
            # One connection shared by the threads (check_same_thread off, every use under the lock);
            # autocommit mode, with explicit BEGIN IMMEDIATE where several statements must agree.
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            self._db.execute("PRAGMA foreign_keys=ON")
            # Closed at exit too when this State is only reachable through a reference cycle, which the
            # CLI's exit leaves uncollected (``cli.entry``): SQLite then folds the WAL back in as before.
            weakref.finalize(self, _close_at_exit, self._db, self._lock)
            self._migrate()
            self._db.execute(_JOB_RUNS)
            self._db.execute(_HOOK_RUNS)
            self._db.execute(_PLACEMENTS)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state database {str(self.path)!r}: {exc}") from exc
        except OSError as exc:
            raise StateError(f"cannot create {str(self.path.parent)!r}: {exc.strerror or exc}") from exc

    @classmethod
    def open(cls, state_dir: Path, *, clock: Callable[[], float] = time.time) -> State:
        return cls(Path(state_dir) / "state.db", clock=clock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- deploy attempts ---

    def start_deploy(
        self,
        app: str,
        environment: str,
        project: str,
        branch: str,
        commit: str,
        trigger: str,
        rendered_config: str,
        *,
        at: float | None = None,
    ) -> int:
        """Record an attempt (result ``running``) and make ``commit`` the last attempted revision."""
        now = self._now(at)
        rendered_config = secrets.scrub(rendered_config)  # secrets never reach the database
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO deploys (app, environment, project, branch, commit_sha, trigger, started, "
                "result, rendered_config) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    app,
                    environment,
                    project,
                    branch,
                    commit,
                    trigger,
                    now,
                    Result.RUNNING.value,
                    rendered_config,
                ),
            )
            db.execute(
                "INSERT INTO revisions (project, attempted, attempted_at) VALUES (?, ?, ?) "
                "ON CONFLICT (project) DO UPDATE SET attempted = excluded.attempted, "
                "attempted_at = excluded.attempted_at",
                (project, commit, now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def finish_deploy(
        self,
        deploy_id: int,
        result: Result,
        error: str = "",
        rollback_of: str | None = None,
        *,
        at: float | None = None,
    ) -> None:
        """Close an attempt. ``success``/``noop`` make its commit the last applied revision; ``failure``
        and ``rolled_back`` leave the last applied revision as it was (the rollback restored it)."""
        now = self._now(at)
        error = secrets.scrub(error)  # a container's log tail may print a secret
        with self._tx() as db:
            row = db.execute("SELECT project, commit_sha FROM deploys WHERE id = ?", (deploy_id,)).fetchone()
            if row is None:
                raise KeyError(deploy_id)
            db.execute(
                "UPDATE deploys SET finished = ?, result = ?, error = ?, rollback_of = ? WHERE id = ?",
                (now, Result(result).value, error, rollback_of, deploy_id),
            )
            if Result(result).value in _APPLIED:
                self._set_applied(db, row[0], row[1], now)

    def record_hook(
        self,
        deploy_id: int,
        phase: str,
        service: str,
        command: str,
        exit_code: int | None,
        output: str,
        *,
        at: float | None = None,
    ) -> None:
        """Keep what a hook step did with its deploy attempt (command and output scrubbed of secrets)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO hook_runs (deploy_id, phase, service, command, exit_code, output, finished) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    deploy_id,
                    phase,
                    service,
                    secrets.scrub(command),
                    exit_code,
                    secrets.scrub(output),
                    self._now(at),
                ),
            )

    def hook_runs(self, deploy_id: int) -> list[HookRecord]:
        """The hook steps of one deploy attempt, in the order they ran."""
        rows = self._query(
            "SELECT deploy_id, phase, service, command, exit_code, output, finished FROM hook_runs "
            "WHERE deploy_id = ? ORDER BY id",
            (deploy_id,),
        )
        return [HookRecord(*tuple(r)) for r in rows]

    def history(self, project: str, limit: int = 50) -> list[DeployRecord]:
        """Deploy attempts of ``project``, newest first (kept after the environment is removed)."""
        rows = self._query(f"{_SELECT_DEPLOY} WHERE project = ? ORDER BY id DESC LIMIT ?", (project, limit))
        return [_record(r) for r in rows]

    def last_deploy(self, project: str) -> DeployRecord | None:
        rows = self.history(project, limit=1)
        return rows[0] if rows else None

    def last_success(self, project: str) -> DeployRecord | None:
        """The newest attempt that ended ``success`` or ``noop``: what a rollback goes back to."""
        rows = self._query(
            f"{_SELECT_DEPLOY} WHERE project = ? AND result IN (?, ?) ORDER BY id DESC LIMIT 1",
            (project, *_APPLIED),
        )
        return _record(rows[0]) if rows else None

    def failed_attempt(self, project: str) -> DeployRecord | None:
        """The newest deploy of a new revision (not a rollback, not superseded) if it failed.

        A rollback's success never hides the failure that caused it: this stays until a newer
        deploy of a revision succeeds (or the same one is retried successfully)."""
        rows = self._query(
            f"{_SELECT_DEPLOY} WHERE project = ? AND trigger NOT IN ('rollback', 'manual-rollback') "
            "AND result != ? AND error NOT LIKE 'Cancelled:%' ORDER BY id DESC LIMIT 1",
            (project, Result.RUNNING.value),
        )
        if not rows:
            return None
        record = _record(rows[0])
        return record if record.result is Result.FAILURE else None

    def deploy(self, deploy_id: int) -> DeployRecord | None:
        rows = self._query(f"{_SELECT_DEPLOY} WHERE id = ?", (deploy_id,))
        return _record(rows[0]) if rows else None

    def rendered_config(self, deploy_id: int) -> str | None:
        rows = self._query("SELECT rendered_config FROM deploys WHERE id = ?", (deploy_id,))
        return str(rows[0][0]) if rows else None

    def interrupted(self) -> list[DeployRecord]:
        """Attempts still ``running`` in the database: the daemon died during them."""
        rows = self._query(f"{_SELECT_DEPLOY} WHERE result = ? ORDER BY id", (Result.RUNNING.value,))
        return [_record(r) for r in rows]

    def interrupt_running(self, error: str, *, at: float | None = None) -> list[DeployRecord]:
        """At start-up: close every attempt left ``running`` as a failure with ``error``; return them."""
        now = self._now(at)
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM deploys WHERE result = ?", (Result.RUNNING,))]
            db.execute(
                "UPDATE deploys SET finished = ?, result = ?, error = ? WHERE result = ?",
                (now, Result.FAILURE, error, Result.RUNNING),
            )
        return [r for r in (self.deploy(i) for i in ids) if r is not None]

    # --- revisions: last attempted and last applied are kept apart ---

    def last_attempted(self, project: str) -> str | None:
        rows = self._query("SELECT attempted FROM revisions WHERE project = ?", (project,))
        return rows[0][0] if rows else None

    def last_applied(self, project: str) -> str | None:
        return self.snapshot().applied.get(project)

    def record_applied(self, project: str, commit: str, *, at: float | None = None) -> None:
        """Set the applied revision without a deploy (e.g. rebuilt from container labels at start-up)."""
        now = self._now(at)
        with self._tx() as db:
            self._set_applied(db, project, commit, now)

    # --- failed commits: never retried in a loop ---

    def mark_failed(self, project: str, commit: str, *, at: float | None = None) -> None:
        now = self._now(at)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO failed_commits (project, commit_sha, failed_at) VALUES (?, ?, ?)",
                (project, commit, now),
            )

    def is_failed(self, project: str, commit: str) -> bool:
        return (project, commit) in self.snapshot().failed

    def clear_failed(self, project: str) -> None:
        """Forget failures (a manual ``sync`` tries again)."""
        with self._tx() as db:
            db.execute("DELETE FROM failed_commits WHERE project = ?", (project,))

    # --- pins (rollback --to) ---

    def pin(self, project: str, commit: str, *, at: float | None = None) -> None:
        now = self._now(at)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO pins (project, commit_sha, pinned_at) VALUES (?, ?, ?)",
                (project, commit, now),
            )

    def unpin(self, project: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM pins WHERE project = ?", (project,))

    def pinned(self, project: str) -> str | None:
        return self.snapshot().pins.get(project)

    # --- suspensions ---

    def suspend(self, project: str, reason: str = "", *, at: float | None = None) -> None:
        now = self._now(at)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO suspensions (project, reason, suspended_at) VALUES (?, ?, ?)",
                (project, reason, now),
            )

    def resume(self, project: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM suspensions WHERE project = ?", (project,))

    def suspension(self, project: str) -> str | None:
        """The reason if suspended (may be ``""``), None if not: test with ``is not None``."""
        return self.snapshot().suspensions.get(project)

    def is_suspended(self, project: str) -> bool:
        return self.suspension(project) is not None

    # --- environments ---

    def upsert_environment(
        self,
        project: str,
        app: str,
        environment: str,
        branch: str,
        ephemeral: bool,
        *,
        at: float | None = None,
    ) -> None:
        now = self._now(at)
        with self._tx() as db:
            db.execute(
                "INSERT INTO environments (project, app, environment, branch, ephemeral, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project) DO UPDATE SET app = excluded.app, "
                "environment = excluded.environment, branch = excluded.branch, "
                "ephemeral = excluded.ephemeral, updated = excluded.updated",
                (project, app, environment, branch, int(ephemeral), now, now),
            )

    def environments(self) -> list[EnvRow]:
        return list(self.snapshot().environments)

    def remove_environment(self, project: str) -> None:
        """Forget an environment and its revisions, failures, pin and suspension; history stays.

        A branch created again later with the same name must start clean, not inherit a pin or a failure.
        """
        with self._tx() as db:
            for table in ("environments", "revisions", "failed_commits", "pins", "suspensions", "placements"):
                db.execute(f"DELETE FROM {table} WHERE project = ?", (project,))

    # --- placements: the host a project's stack runs on ---

    def place(self, project: str, host: str, *, at: float | None = None) -> None:
        now = self._now(at)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO placements (project, host, placed_at) VALUES (?, ?, ?)",
                (project, host, now),
            )

    def placement(self, project: str) -> str | None:
        """The host recorded for ``project`` (None: never recorded, so the default host)."""
        return self.snapshot().placements.get(project)

    # --- project-name assignments: a branch keeps its name for its life ---

    def assign(self, app: str, branch: str, project: str, *, at: float | None = None) -> None:
        """Remember ``branch``'s project name; raises ValueError if another branch holds that name."""
        now = self._now(at)
        with self._tx() as db:
            holder = db.execute(
                "SELECT app, branch FROM assignments WHERE project = ?", (project,)
            ).fetchone()
            if holder is not None and tuple(holder) != (app, branch):
                raise ValueError(f"project {project!r} is already assigned to {holder[0]}:{holder[1]}")
            db.execute(
                "INSERT INTO assignments (app, branch, project, assigned_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (app, branch) DO UPDATE SET project = excluded.project, "
                "assigned_at = CASE WHEN project = excluded.project THEN assigned_at "
                "ELSE excluded.assigned_at END",
                (app, branch, project, now),
            )

    def assignments(self, app: str) -> dict[str, str]:
        """Branch -> project for ``app``, oldest assignment first."""
        return dict(self.snapshot().assignments.get(app, {}))

    def release(self, app: str, branch: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM assignments WHERE app = ? AND branch = ?", (app, branch))

    # --- the last heads seen per app (so a restart can show them before git answers) ---

    def save_heads(self, app: str, heads: Mapping[str, str]) -> None:
        """Replace ``app``'s recorded heads. Callers never save an empty or failed listing."""
        with self._tx() as db:
            db.execute("DELETE FROM heads WHERE app = ?", (app,))
            db.executemany(
                "INSERT INTO heads (app, branch, commit_sha) VALUES (?, ?, ?)",
                [(app, branch, sha) for branch, sha in heads.items()],
            )

    def heads(self) -> dict[str, dict[str, str]]:
        """App -> (branch -> sha), as last saved."""
        out: dict[str, dict[str, str]] = {}
        for app, branch, sha in self._query(
            "SELECT app, branch, commit_sha FROM heads ORDER BY app, branch", ()
        ):
            out.setdefault(app, {})[branch] = sha
        return out

    def changes(self) -> int:
        """Rows this connection inserted, updated or deleted since it opened (SQLite ``total_changes``)."""
        with self._lock:
            return int(self._db.total_changes)

    # --- the snapshot of small tables ---

    def snapshot(self) -> Snapshot:
        """Revisions, pins, suspensions, failed commits, assignments and environments as of now.

        Cached until a write: this connection counts its own commits, and SQLite's ``data_version``
        changes when another connection (a CLI command in another process) commits."""
        with self._lock:
            try:
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise StateError(f"cannot read the state database {str(self.path)!r}: {exc}") from exc
            cached = self._snapshot
            if cached is not None and cached[0] == version and cached[1] == self._writes:
                return cached[2]
            snap = self._load_snapshot()
            self._snapshot = (version, self._writes, snap)
            return snap

    def _load_snapshot(self) -> Snapshot:
        assignments: dict[str, dict[str, str]] = {}
        for app, branch, project in self._query(
            "SELECT app, branch, project FROM assignments ORDER BY assigned_at, branch", ()
        ):
            assignments.setdefault(app, {})[branch] = project
        envs = self._query(
            "SELECT project, app, environment, branch, ephemeral, created, updated FROM environments "
            "ORDER BY app, environment, project",
            (),
        )
        return Snapshot(
            applied={
                r[0]: r[1]
                for r in self._query("SELECT project, applied FROM revisions WHERE applied IS NOT NULL", ())
            },
            pins={r[0]: r[1] for r in self._query("SELECT project, commit_sha FROM pins", ())},
            suspensions={r[0]: r[1] for r in self._query("SELECT project, reason FROM suspensions", ())},
            failed=frozenset(
                (r[0], r[1]) for r in self._query("SELECT project, commit_sha FROM failed_commits", ())
            ),
            assignments=assignments,
            environments=tuple(EnvRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in envs),
            placements=MappingProxyType(
                {r[0]: r[1] for r in self._query("SELECT project, host FROM placements", ())}
            ),
        )

    # --- plumbing ---

    # --- scheduled job runs ---

    def start_job_run(
        self, app: str, environment: str, job: str, trigger: str, *, at: float | None = None
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO job_runs (app, environment, job, trigger, started, result) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (app, environment, job, trigger, self._now(at), "running"),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def finish_job_run(
        self, run_id: int, result: str, message: str, size: int | None, *, at: float | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE job_runs SET finished = ?, result = ?, message = ?, size = ? WHERE id = ?",
                (self._now(at), result, message, size, run_id),
            )

    def job_runs(self, app: str, environment: str, job: str, limit: int = 20) -> list[JobRun]:
        """Runs of one job, newest first."""
        rows = self._query(
            "SELECT id, app, environment, job, trigger, started, finished, result, message, size "
            "FROM job_runs WHERE app = ? AND environment = ? AND job = ? ORDER BY id DESC LIMIT ?",
            (app, environment, job, limit),
        )
        return [JobRun(*tuple(r)) for r in rows]

    def _now(self, at: float | None) -> float:
        return float(at) if at is not None else self.clock()

    @staticmethod
    def _set_applied(db: sqlite3.Connection, project: str, commit: str, now: float) -> None:
        db.execute(
            "INSERT INTO revisions (project, applied, applied_at) VALUES (?, ?, ?) "
            "ON CONFLICT (project) DO UPDATE SET applied = excluded.applied, "
            "applied_at = excluded.applied_at",
            (project, commit, now),
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front (no upgrade deadlocks)."""
        with self._lock:
            try:
                yield from self._tx_locked()
            finally:
                self._writes += 1  # committed or rolled back: the snapshot is read again

    def _tx_locked(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StateError(f"the state database {str(self.path)!r} is unavailable: {exc}") from exc
        try:
            yield self._db
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StateError(f"cannot write the state database {str(self.path)!r}: {exc}") from exc
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise StateError(f"cannot write the state database {str(self.path)!r}: {exc}") from exc

    def _query(self, sql: str, params: tuple[object, ...]) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"cannot read the state database {str(self.path)!r}: {exc}") from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{str(self.path)!r} was written by a newer reconciler (schema {version}, "
                f"this one knows {SCHEMA_VERSION})",
                hint="upgrade reconciler, or point state_dir elsewhere",
            )
        if version == 0:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # Re-check under the write lock: another process may have created it meanwhile.
                if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise


_SELECT_DEPLOY = (
    "SELECT id, app, environment, project, branch, commit_sha, started, finished, result, error, "
    "trigger, rollback_of FROM deploys"
)


def _record(r: Any) -> DeployRecord:
    return DeployRecord(
        id=r[0],
        app=r[1],
        environment=r[2],
        project=r[3],
        branch=r[4],
        commit=r[5],
        started=r[6],
        finished=r[7],
        result=Result(r[8]),
        error=r[9],
        trigger=r[10],
        rollback_of=r[11],
    )


def _close_at_exit(db: sqlite3.Connection, lock: threading.RLock) -> None:
    # A daemon thread stuck in a query at exit keeps the connection: better a WAL file left than a hang.
    if lock.acquire(timeout=1.0):
        try:
            db.close()
        finally:
            lock.release()
