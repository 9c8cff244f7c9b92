"""Per-environment serialization: no overlap, bursts coalesce to the newest commit, newer ones cancel."""

from __future__ import annotations

import contextlib
import threading

from reconciler.daemon.ratelimit import RateLimit
from reconciler.daemon.workqueue import Job, WorkQueue


def test_burst_of_pushes_coalesces_into_one_deploy_of_the_newest_commit() -> None:
    """While one deploy runs, three newer commits arrive; only the newest is deployed next."""
    q = WorkQueue(max_concurrent=2)
    release = threading.Event()
    ran: list[str] = []
    cancelled: list[str] = []

    def deploy(commit: str, block: bool) -> Job:
        def run(cancel: threading.Event) -> None:
            ran.append(commit)
            if block:
                release.wait(10)
                if cancel.is_set():
                    cancelled.append(commit)

        return Job("prod", "deploy", run, commit=commit)

    assert q.submit(deploy("c1", block=True))
    for c in ("c2", "c3", "c4"):
        assert q.submit(deploy(c, block=False))
    release.set()
    assert q.wait_idle(10)
    assert ran == ["c1", "c4"]
    assert cancelled == ["c1"]  # the newer commit aborted c1's wait
    q.shutdown()


def test_deploys_of_one_environment_never_overlap_and_the_global_limit_holds() -> None:
    """Jobs for five environments run at most two at a time, and one environment's jobs run one at a time."""
    q = WorkQueue(max_concurrent=2)
    lock = threading.Lock()
    active: dict[str, int] = {}
    peak_total = 0
    peak_per_key = 0
    gate = threading.Barrier(2, timeout=5)

    def job(key: str, commit: str) -> Job:
        def run(_cancel: threading.Event) -> None:
            nonlocal peak_total, peak_per_key
            with lock:
                active[key] = active.get(key, 0) + 1
                peak_total = max(peak_total, sum(active.values()))
                peak_per_key = max(peak_per_key, active[key])
            # Two jobs meet here when two run at once; alone, the wait breaks after its timeout.
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()
            with lock:
                active[key] -= 1

        return Job(key, "deploy", run, commit=commit, preempts=False)

    for i in range(5):
        q.submit(job(f"env{i}", "a"))
        q.submit(job(f"env{i}", "b"))
    assert q.wait_idle(60)
    assert peak_total <= 2
    assert peak_per_key == 1
    q.shutdown()


def test_identical_job_is_not_stacked() -> None:
    """Submitting the deploy that is already running or pending is refused, so triggers never stack."""
    q = WorkQueue()
    release = threading.Event()
    q.submit(Job("p", "deploy", lambda c: release.wait(5), commit="x"))
    assert not q.submit(Job("p", "deploy", lambda c: None, commit="x"))
    assert q.submit(Job("p", "heal", lambda c: None, preempts=False))
    assert not q.submit(Job("p", "heal", lambda c: None, preempts=False))
    release.set()
    assert q.wait_idle(5)
    q.shutdown()


def test_self_heal_rate_limit_stops_a_loop() -> None:
    """At most five repairs per service per ten minutes; the window slides with the clock."""
    now = [0.0]
    limit = RateLimit(limit=5, window=600, clock=lambda: now[0])
    assert all(limit.allow("prod/web") for _ in range(5))
    assert not limit.allow("prod/web")
    assert limit.allow("prod/db")
    now[0] = 601.0
    assert limit.allow("prod/web")
