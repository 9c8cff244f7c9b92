"""`reconciler run`: the daemon's named tasks: git pollers, drift watcher, Docker events, HTTP server.

APScheduler drives the timers; timer, webhook and CLI triggers all end in ``Daemon.poll`` and the same
per-environment work queue. SIGTERM/SIGINT finish the current step and exit cleanly.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from reconciler import labels as L
from reconciler import logs
from reconciler.config.hosts import DEFAULT_HOST
from reconciler.errors import DockerError

if TYPE_CHECKING:
    from reconciler.daemon.core import Daemon

_DEBOUNCE = 1.0  # seconds between two drift checks triggered by Docker events


class Runtime:
    def __init__(self, daemon: Daemon) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self.daemon = daemon
        self.stop_event = threading.Event()
        self.scheduler = BackgroundScheduler(
            timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1}
        )
        self.server: Any = None
        self._events_threads: list[threading.Thread] = []
        self._debounce_lock = threading.Lock()
        # Per host: monotonic time of the last event-triggered check, and until when one is due.
        self._last_trigger: dict[str, float] = {}
        self._pending_until: dict[str, float] = {}

    def start(self) -> None:
        """Start the scheduler, the HTTP server and the event listener (non-blocking; used by tests too)."""
        from reconciler.report.http import serve

        d = self.daemon
        cfg = d.config
        now = datetime.now(UTC)
        for app in cfg.apps:
            self.scheduler.add_job(
                d.poll,
                "interval",
                seconds=app.poll_interval,
                args=[app.name],
                id=f"poll:{app.name}",
                next_run_time=now,
                misfire_grace_time=None,
            )
        # One drift check per host, each its own job: a host that hangs holds only its own check.
        for host in d.backends.names():
            self.scheduler.add_job(
                d.check_drift,
                "interval",
                seconds=cfg.drift_interval,
                kwargs={"host": host},
                id=_drift_job(host),
                next_run_time=now,
                misfire_grace_time=None,
            )
        d.trigger = self._trigger_poll
        d.alive_check = lambda: bool(self.scheduler.running)
        self.scheduler.start()
        host, port = cfg.listen
        if d.metrics is None:
            from reconciler.report.metrics import Metrics

            d.attach_metrics(Metrics(d))
        assert d.metrics is not None
        from reconciler.jobs.schedule import attach

        attach(self.scheduler, cfg, d.state, d.metrics)  # backups, restore drills, copies (issue 11)
        self.server = serve(d, d.metrics, host, port, http_auth=cfg.http_auth)
        for host in d.backends.names():
            thread = threading.Thread(
                target=self._watch_events, args=(host,), name=f"docker-events-{host}", daemon=True
            )
            thread.start()
            self._events_threads.append(thread)
        logs.get().info(
            "daemon.started", listen=f"http://{host}:{self.server.port}/", apps=[a.name for a in cfg.apps]
        )

    def _trigger_poll(self, app: str) -> None:
        """Run the app's poll now; Daemon.poll coalesces it with a poll already under way."""
        threading.Thread(
            target=self.daemon.poll, args=(app,), kwargs={"trigger": "webhook"}, daemon=True
        ).start()

    def _watch_events(self, host: str = DEFAULT_HOST) -> None:
        """Docker events (die, stop, health_status, update, network connect/disconnect) make the drift check
        run now; reconnect when dropped.

        A dropped stream means the engine went away (restarted, or the socket is gone): Docker is reported
        down at once, and once it answers again a drift check runs and the stream resumes from where it
        broke, so what happened meanwhile (a container stopped during the restart) is never missed."""
        backoff = 1.0
        since: float | None = None
        while not self.stop_event.is_set():
            try:
                mine = f"{self.daemon.instance}/"
                for event in self.daemon.backends.get(host).events(self.stop_event, since=since):
                    backoff = 1.0
                    since = _event_time(event, since)
                    # Another reconciler instance's containers (another state_dir) are not ours to check.
                    owner = ((event.get("Actor") or {}).get("Attributes") or {}).get(L.OWNER, mine)
                    if str(owner).startswith(mine):
                        self._drift_now(host)
            except DockerError as err:
                logs.get(host=host).warning("docker.events_dropped", error=str(err))
                self.daemon.docker_lost(str(err), host)
                since = since or time.time()
                # Wait for the engine: each attempt is one observation, which also sets docker_up.
                while not self.stop_event.wait(backoff):
                    backoff = min(backoff * 2, 30.0)
                    if self.daemon.docker_answers(host):
                        logs.get(host=host).info("docker.events_resumed")
                        self._drift_now(host)
                        break
                continue
            if self.stop_event.wait(backoff):
                return

    def _drift_now(self, host: str = DEFAULT_HOST) -> None:
        """Run the drift check soon: at once, or at most once per ``_DEBOUNCE`` seconds in a burst of
        events (a restart of a stack, a host booting), so a burst costs one or two checks, not dozens."""
        if self.stop_event.is_set():
            return
        job = self.scheduler.get_job(_drift_job(host))
        if job is None:
            return
        now = time.monotonic()
        with self._debounce_lock:
            at = max(now, self._last_trigger.get(host, -_DEBOUNCE) + _DEBOUNCE)
            if self._pending_until.get(host, 0.0) > now:
                return  # a check is already due within the window: it will see this event too
            self._last_trigger[host] = at
            self._pending_until[host] = at
        job.modify(next_run_time=datetime.now(UTC) + timedelta(seconds=at - now))

    def stop(self) -> None:
        self.stop_event.set()
        with contextlib.suppress(Exception):  # already stopped
            self.scheduler.shutdown(wait=True)
        # Finish the current step: waits for health are cancelled, running API calls complete.
        self.daemon.queue.shutdown(cancel=True)
        if self.server is not None:
            self.server.stop()
        logs.get().info("daemon.stopped")

    def run_forever(self) -> int:
        def handle(signum: int, _frame: Any) -> None:
            logs.get().info("daemon.signal", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self.start()
        while not self.stop_event.wait(1.0):
            pass
        self.stop()
        return 0


def _drift_job(host: str) -> str:
    """The scheduler id of ``host``'s drift check ("drift" for the default host, as before hosts)."""
    return "drift" if host == DEFAULT_HOST else f"drift:{host}"


def _event_time(event: dict[str, Any], last: float | None) -> float | None:
    """The time of an event (unix seconds, nanosecond precision when Docker gives it)."""
    nano = event.get("timeNano")
    if isinstance(nano, int):
        return nano / 1e9
    seconds = event.get("time")
    return float(seconds) if isinstance(seconds, int | float) else last
