"""SQLite state: deploy history, applied vs attempted, failures, pins, suspensions, names, durability."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.state import SCHEMA_VERSION, State, StateError
from reconciler.status import Result

A, B, C = "a" * 40, "b" * 40, "c" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(tmp_path: Path, clock: Clock) -> Iterator[State]:
    with State.open(tmp_path / "state", clock=clock) as st:
        yield st


def deploy(state: State, commit: str, result: Result, project: str = "mrs-production", **kw: str) -> int:
    deploy_id = state.start_deploy(
        "mrs", "production", project, "master", commit, "poll", f"rendered {commit}"
    )
    state.finish_deploy(deploy_id, result, **kw)
    return deploy_id


def test_history_records_every_attempt(state: State) -> None:
    """Each attempt is kept with its commit, times, result, error and rendered config; newest first."""
    first = deploy(state, A, Result.SUCCESS)
    second = deploy(state, B, Result.FAILURE, error="web exited with code 1")
    running = state.start_deploy("mrs", "production", "mrs-production", "master", C, "webhook", "cfg")
    records = state.history("mrs-production")
    assert [r.id for r in records] == [running, second, first]
    assert [r.result for r in records] == [Result.RUNNING, Result.FAILURE, Result.SUCCESS]
    failed = records[1]
    assert (failed.app, failed.environment, failed.branch, failed.commit, failed.trigger) == (
        "mrs",
        "production",
        "master",
        B,
        "poll",
    )
    assert failed.error == "web exited with code 1"
    assert failed.finished is not None and failed.finished > failed.started
    assert records[0].finished is None and records[0].trigger == "webhook"
    assert state.rendered_config(second) == f"rendered {B}"
    assert state.rendered_config(9999) is None
    assert state.last_deploy("mrs-production") == records[0]
    assert state.history("mrs-production", limit=1) == records[:1]
    assert state.history("other") == [] and state.last_deploy("other") is None


def test_applied_and_attempted_are_kept_apart(state: State) -> None:
    """A failed attempt moves "last attempted" but not "last applied"; success moves both."""
    assert state.last_applied("p") is None and state.last_attempted("p") is None
    deploy(state, A, Result.SUCCESS, project="p")
    assert (state.last_attempted("p"), state.last_applied("p")) == (A, A)
    deploy(state, B, Result.FAILURE, project="p")
    assert (state.last_attempted("p"), state.last_applied("p")) == (B, A)
    deploy(state, B, Result.ROLLED_BACK, project="p")
    assert state.last_applied("p") == A
    assert state.last_success("p") is not None and state.last_success("p").commit == A  # type: ignore[union-attr]
    # A rollback deploy of the good commit is recorded as such.
    rollback = deploy(state, A, Result.SUCCESS, project="p", rollback_of=B)
    record = state.history("p", limit=1)[0]
    assert (record.id, record.rollback_of, record.commit) == (rollback, B, A)
    deploy(state, C, Result.NOOP, project="p")
    assert state.last_applied("p") == C
    state.record_applied("p", A)
    assert state.last_applied("p") == A and state.last_attempted("p") == C


def test_interrupted_deploys_are_closed_at_start_up(tmp_path: Path, clock: Clock) -> None:
    """Attempts left running by a killed daemon are marked failed on the next start."""
    with State.open(tmp_path, clock=clock) as st:
        deploy_id = st.start_deploy("mrs", "staging", "mrs-staging", "develop", A, "poll", "")
    with State.open(tmp_path, clock=clock) as st:
        assert [r.id for r in st.interrupted()] == [deploy_id]
        closed = st.interrupt_running("interrupted")
        assert [(r.id, r.result, r.error) for r in closed] == [(deploy_id, Result.FAILURE, "interrupted")]
        assert st.interrupted() == [] and st.last_applied("mrs-staging") is None


def test_failed_commits(state: State) -> None:
    """A failed commit is remembered per project until cleared (a manual sync)."""
    state.mark_failed("p", B)
    state.mark_failed("p", B)
    assert state.is_failed("p", B) and not state.is_failed("p", A) and not state.is_failed("q", B)
    state.clear_failed("p")
    assert not state.is_failed("p", B)


def test_pins(state: State) -> None:
    """A pin holds a project at a commit until unpinned."""
    assert state.pinned("p") is None
    state.pin("p", A)
    state.pin("p", B)
    assert state.pinned("p") == B
    state.unpin("p")
    assert state.pinned("p") is None


def test_suspensions(state: State) -> None:
    """Suspending records a reason (possibly empty); resume lifts it."""
    assert state.suspension("p") is None and not state.is_suspended("p")
    state.suspend("p", "db migration by hand")
    assert state.suspension("p") == "db migration by hand"
    state.suspend("q")
    assert state.suspension("q") == "" and state.is_suspended("q")
    state.resume("p")
    assert state.suspension("p") is None and state.is_suspended("q")


def test_environments_and_removal_keep_history(state: State) -> None:
    """Environments are upserted by project; removing one forgets its state but keeps its history."""
    state.upsert_environment("test-feature-x", "mrs", "preview", "feature/x", True)
    state.upsert_environment("mrs-production", "mrs", "production", "master", False)
    state.upsert_environment("test-feature-x", "mrs", "preview", "feature/x", True)
    rows = state.environments()
    assert [(r.project, r.environment, r.ephemeral) for r in rows] == [
        ("test-feature-x", "preview", True),
        ("mrs-production", "production", False),
    ]
    assert rows[0].updated > rows[0].created
    deploy(state, A, Result.FAILURE, project="test-feature-x")
    state.mark_failed("test-feature-x", A)
    state.pin("test-feature-x", A)
    state.suspend("test-feature-x", "x")
    state.remove_environment("test-feature-x")
    assert [r.project for r in state.environments()] == ["mrs-production"]
    assert len(state.history("test-feature-x")) == 1
    assert state.last_attempted("test-feature-x") is None
    assert not state.is_failed("test-feature-x", A)
    assert state.pinned("test-feature-x") is None and state.suspension("test-feature-x") is None


def test_assignments(state: State) -> None:
    """A branch's project name is remembered per app until released; one name never serves two branches."""
    state.assign("mrs", "feature/x", "test-feature-x")
    state.assign("mrs", "Feature/X", "test-feature-x-1a2b3c")
    state.assign("mrs", "feature/x", "test-feature-x")  # idempotent
    state.assign("other", "feature/x", "other-feature-x")
    assert state.assignments("mrs") == {"feature/x": "test-feature-x", "Feature/X": "test-feature-x-1a2b3c"}
    assert list(state.assignments("mrs")) == ["feature/x", "Feature/X"]  # oldest first
    with pytest.raises(ValueError, match="already assigned"):
        state.assign("mrs", "feature-x", "test-feature-x")
    state.release("mrs", "feature/x")
    assert state.assignments("mrs") == {"Feature/X": "test-feature-x-1a2b3c"}
    state.assign("mrs", "feature-x", "test-feature-x")
    assert state.assignments("other") == {"feature/x": "other-feature-x"}


def test_heads(state: State) -> None:
    """The last heads seen per app are replaced as a whole."""
    state.save_heads("mrs", {"master": A, "develop": B})
    state.save_heads("other", {"main": C})
    state.save_heads("mrs", {"master": B})
    assert state.heads() == {"mrs": {"master": B}, "other": {"main": C}}


def test_reopen_keeps_everything(tmp_path: Path, clock: Clock) -> None:
    """Closing and reopening the database (a daemon restart) loses nothing."""
    with State.open(tmp_path, clock=clock) as st:
        deploy(st, A, Result.SUCCESS)
        st.pin("mrs-production", A)
        st.suspend("mrs-production", "why")
        st.assign("mrs", "feature/x", "test-feature-x")
        st.upsert_environment("mrs-production", "mrs", "production", "master", False)
        st.mark_failed("mrs-production", B)
    with State.open(tmp_path, clock=clock) as st:
        assert st.last_applied("mrs-production") == A
        assert st.pinned("mrs-production") == A and st.suspension("mrs-production") == "why"
        assert st.assignments("mrs") == {"feature/x": "test-feature-x"}
        assert st.is_failed("mrs-production", B) and len(st.environments()) == 1
    with sqlite3.connect(tmp_path / "state.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_timestamps_come_from_the_clock_or_the_caller(state: State, clock: Clock) -> None:
    """Times are the injected clock's, unless passed explicitly."""
    deploy_id = state.start_deploy("mrs", "production", "p", "master", A, "poll", "", at=50.0)
    state.finish_deploy(deploy_id, Result.SUCCESS, at=60.0)
    record = state.history("p")[0]
    assert (record.started, record.finished) == (50.0, 60.0)
    state.upsert_environment("p", "mrs", "production", "master", False)
    assert state.environments()[0].created == clock.now


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer reconciler is not touched."""
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="newer reconciler"):
        State.open(tmp_path)


def test_unusable_database_is_a_state_error(tmp_path: Path) -> None:
    """A file that is not a database gives a StateError naming it."""
    (tmp_path / "state.db").write_text("not a database" * 100)
    with pytest.raises(StateError, match=r"state\.db"):
        State.open(tmp_path)


def test_concurrent_writes_from_threads_and_processes(tmp_path: Path) -> None:
    """Worker threads and a second connection (a CLI next to the daemon) write at once; nothing is lost."""
    daemon = State.open(tmp_path)
    cli = State.open(tmp_path)
    errors: list[BaseException] = []

    def worker(st: State, project: str) -> None:
        try:
            for i in range(50):
                deploy_id = st.start_deploy(
                    "mrs", "preview", project, project, f"{i:040x}", "poll", "x" * 1000
                )
                st.finish_deploy(deploy_id, Result.SUCCESS)
                st.mark_failed(project, f"{i:040x}")
                st.assign("mrs", project, project)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(daemon if i % 2 else cli, f"p{i}")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(6):
        history = daemon.history(f"p{i}", limit=100)
        assert len(history) == 50 and all(r.result is Result.SUCCESS for r in history)
        assert daemon.last_applied(f"p{i}") == f"{49:040x}"
    ids = [r.id for i in range(6) for r in daemon.history(f"p{i}", limit=100)]
    assert len(set(ids)) == 300
    assert len(daemon.assignments("mrs")) == 6
    daemon.close()
    cli.close()


def test_a_state_left_in_a_cycle_is_closed_at_exit(tmp_path: Path) -> None:
    """The CLI's exit skips the last garbage collection (``cli.entry`` freezes the heap): a State only a
    reference cycle holds is still closed, so SQLite folds its WAL back into the database."""
    code = (
        "import gc, sys\n"
        "from pathlib import Path\n"
        "from reconciler.state import State\n"
        "state = State.open(Path(sys.argv[1]))\n"
        "state.save_heads('app', {'main': 'a' * 40})\n"
        "state.loop = state\n"  # a cycle: reference counting alone never frees it
        "del state\n"
        "gc.freeze()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert (tmp_path / "state.db").exists()
    assert not (tmp_path / "state.db-wal").exists()
    with State.open(tmp_path) as reopened:
        assert reopened.heads() == {"app": {"main": "a" * 40}}
