"""The poll and drift-check duration histograms get samples from a real daemon's poll and drift check."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.report.promtext import samples, value

pytestmark = pytest.mark.docker


def test_poll_and_drift_check_durations_are_observed_per_app(tmp_path: Path) -> None:
    """After one poll and one drift check, both histograms hold one sample for the app (1 ms…10 s)."""
    repo = Repo(tmp_path)
    prefix = unique_prefix()
    daemon = _daemon(load_config(write_config(tmp_path, repo.bare, prefix)), metrics=True)
    assert daemon.metrics is not None
    # Suspended: the poll makes the target and the drift check observes it, but nothing is deployed.
    daemon.state.suspend(f"{prefix}-production", "test")
    try:
        before = daemon.metrics.exposition()[0].decode()
        assert value(before, "reconciler_poll_duration_seconds_count", app="demo") is None
        daemon.poll("demo")
        daemon.check_drift()
        text = daemon.metrics.exposition()[0].decode()
        assert [e.project for e in daemon.environments() if e.project] == [f"{prefix}-production"]
    finally:
        daemon.queue.shutdown()
        daemon.state.close()
    for name in ("reconciler_poll_duration_seconds", "reconciler_drift_check_duration_seconds"):
        assert value(text, f"{name}_count", app="demo") == 1.0, name
        total = value(text, f"{name}_sum", app="demo")
        assert total is not None and 0.0 < total < 60.0
        buckets = {ls["le"]: v for ls, v in samples(text)[f"{name}_bucket"] if ls.get("app") == "demo"}
        assert buckets["0.001"] <= buckets["10.0"] == buckets["+Inf"] == 1.0
