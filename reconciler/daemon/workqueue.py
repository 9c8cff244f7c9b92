"""One serialized worker per environment, with a limit on concurrent deploys per host.

Called by the daemon for every trigger (timer, webhook, CLI, self-heal). Per key (project name) at most one
job runs; jobs submitted meanwhile coalesce into one pending job (the newest wins, so a burst of pushes
becomes one deploy of the newest commit), and a newer job can cancel the running one's wait for health.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


@dataclass
class Job:
    """A unit of work for one environment; ``run`` receives a cancel Event it should honour while waiting."""

    key: str
    kind: str  # deploy | teardown | heal | rollback
    run: Callable[[threading.Event], object]
    commit: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    # A job that is not preemptive (teardown, rollback) never cancels the running one.
    preempts: bool = True
    # The host it works on: each host has its own workers, so jobs stuck on a slow host never hold
    # another host's deploys.
    host: str = ""


class WorkQueue:
    """Per-key serialization + coalescing on top of a bounded thread pool."""

    def __init__(self, max_concurrent: int = 2) -> None:
        self._max = max(1, max_concurrent)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._running: dict[str, Job] = {}
        self._pending: dict[str, Job] = {}
        self._idle = threading.Condition(self._lock)
        self._closed = False

    def submit(self, job: Job) -> bool:
        """Queue ``job``; returns False when an identical job is already running or pending."""
        with self._lock:
            if self._closed:
                return False
            running = self._running.get(job.key)
            if running is None:
                self._start(job)
                return True
            if running.kind == job.kind and running.commit == job.commit and job.key not in self._pending:
                return False
            pending = self._pending.get(job.key)
            if pending is not None and pending.kind == job.kind and pending.commit == job.commit:
                return False
            self._pending[job.key] = job
            if (
                job.preempts
                and job.kind == "deploy"
                and running.kind == "deploy"
                and running.commit != job.commit
            ):
                # A newer commit supersedes a deploy that is still waiting for health.
                running.cancel.set()
            return True

    def _start(self, job: Job) -> None:
        self._running[job.key] = job
        pool = self._pools.get(job.host)
        if pool is None:
            name = f"deploy-{job.host}" if job.host else "deploy"
            pool = self._pools[job.host] = ThreadPoolExecutor(max_workers=self._max, thread_name_prefix=name)
        pool.submit(self._run, job)

    def _run(self, job: Job) -> None:
        # _done runs on the worker thread after the job, never inline under the submitter's lock
        # (Future.add_done_callback would call it inline when the job is already finished).
        try:
            job.run(job.cancel)
        except Exception:  # a job's failure must not stop its environment's queue
            import structlog

            structlog.get_logger("reconciler").exception("job.crashed", key=job.key, kind=job.kind)
        finally:
            self._done(job)

    def _done(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job.key, None)
            nxt = self._pending.pop(job.key, None)
            if nxt is not None and not self._closed:
                self._start(nxt)
            self._idle.notify_all()

    def busy(self, key: str) -> bool:
        with self._lock:
            return key in self._running or key in self._pending

    def running(self) -> dict[str, str | None]:
        with self._lock:
            return {k: j.commit for k, j in self._running.items()}

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or is pending (used by `sync` and tests)."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._running and not self._pending, timeout)

    def shutdown(self, cancel: bool = True) -> None:
        """Stop taking jobs; cancel waits of running ones, drop pending ones, wait for the current step."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            if cancel:
                for job in self._running.values():
                    job.cancel.set()
            pools = list(self._pools.values())
        for pool in pools:
            pool.shutdown(wait=True)
