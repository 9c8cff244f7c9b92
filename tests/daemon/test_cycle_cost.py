"""A no-op cycle (poll + drift check) writes nothing to SQLite and lists containers once, on a real daemon."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.state import State
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config

pytestmark = pytest.mark.docker


class CountingEngine:
    """The real Docker Engine adapter, with every call counted by method name."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted if callable(attr) else attr


def test_a_no_op_cycle_writes_nothing_and_lists_each_kind_once(
    tmp_path: Path, repo: Repo, cleanup: Any
) -> None:
    """Converged production and preview, branches no environment takes: poll + drift check make no SQLite
    write and one list call per object kind; a suspend written by another process is still seen."""
    prefix = unique_prefix()
    cleanup(prefix)
    repo.branch("feature/one", change="<p>one</p>")
    for name in ("dependabot/a", "dependabot/b", "dependabot/c"):  # excluded: no environment
        repo.branch(name, base="master")
    cfg = write_config(tmp_path, repo.bare, prefix)
    daemon = _daemon(load_config(cfg))
    try:
        daemon.poll("demo")
        assert daemon.queue.wait_idle(240)
        daemon.check_drift()
        statuses = {s.project: s for s in daemon.environments() if s.project}
        assert set(statuses) == {f"{prefix}-production", f"{prefix}-test-feature-one"}
        assert all(s.sync == "Synced" and s.health == "Healthy" for s in statuses.values()), statuses
        deploys = {p: len(daemon.state.history(p)) for p in statuses}

        engine = CountingEngine(daemon.converger._engine)
        daemon.converger._engine = engine
        daemon.converger.observer._engine = engine  # the drift check's observer lists through it
        statements: list[str] = []
        daemon.state._db.set_trace_callback(statements.append)
        for _cycle in range(2):
            engine.calls.clear()
            statements.clear()
            changes = daemon.state.changes()
            daemon.poll("demo")
            daemon.check_drift()
            assert daemon.state.changes() == changes
            writes = [s for s in statements if not s.lstrip().upper().startswith(("SELECT", "PRAGMA"))]
            assert writes == []
            assert engine.calls["list_containers"] == 1, engine.calls
            assert engine.calls["list_volumes"] == 1 and engine.calls["list_networks"] == 1, engine.calls
            assert not {"create_container", "start_container", "remove_container"} & set(engine.calls)
        daemon.state._db.set_trace_callback(None)
        assert {p: len(daemon.state.history(p)) for p in statuses} == deploys

        # `reconciler suspend` from another process: the daemon's cached view of the state sees it.
        with State.open(Path(daemon.config.state_dir)) as other:
            other.suspend(f"{prefix}-production", "freeze")
        repo.commit("master", {"site/index.html": "<p>v2</p>"})
        daemon.poll("demo")
        assert daemon.queue.wait_idle(120)
        assert len(daemon.state.history(f"{prefix}-production")) == deploys[f"{prefix}-production"]
        assert daemon.state.suspension(f"{prefix}-production") == "freeze"
    finally:
        daemon.queue.shutdown()
        daemon.state.close()
