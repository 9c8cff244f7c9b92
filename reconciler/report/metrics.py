"""Prometheus metrics: event counters the daemon records, and state gauges built from the view at scrape time.

The daemon calls the recorders (``reconcile``, ``rollback``, ``self_heal``, ``git_poll``; the webhook handler
calls ``webhook``); ``/metrics`` serves ``exposition()``. Metric names and labels are a contract (issue 5).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from reconciler.report.view import DaemonView
from reconciler.status import EnvironmentStatus, Result, Sync

# Go clients (Argo CD, Flux) expose no `_created` series; without this every counter doubles the output.
# The switch is process-wide, which is fine: this module is the process's only Prometheus user.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

RECONCILE_RESULTS: Final = ("success", "failure", "noop")
GIT_POLL_RESULTS: Final = ("success", "failure")
WEBHOOK_PROVIDERS: Final = ("github", "gitlab", "gitea")
WEBHOOK_RESULTS: Final = (
    "accepted",  # authenticated push for a known repository: a poll was asked for
    "ignored",  # authenticated, but not a push (ping, tag...)
    "unauthorized",  # missing or bad signature/token
    "too_large",  # body over the limit
    "bad_request",  # no length, not JSON, no repository in the payload
    "unknown_repo",  # authenticated push for a repository no app watches
    "replayed",  # a delivery ID seen before
)
# The classic text format every Prometheus 2.x and 3.x parses; our metric names need nothing newer.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Deploys range from a restart (seconds) to image builds waiting for health (minutes).
DURATION_BUCKETS: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
GIT_POLL_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A no-op poll or drift check takes milliseconds; a slow git host or a loaded engine, seconds.
CYCLE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Counter series of an environment that left the view are dropped after this long without an event:
# longer than any alert window, so a preview's last failure is still alerted on after it is gone.
DEFAULT_RETENTION_SECONDS: Final = 3600.0

EnvKey = tuple[str, str]  # (app, environment)
ProjectKey = tuple[str, str, str]  # (app, environment, project)


def _result_label(result: str) -> str:
    """success|failure|noop; a rolled-back deploy counts as a failure (``rollback`` counts the rollback)."""
    if result == Result.ROLLED_BACK:
        return "failure"
    if result not in RECONCILE_RESULTS:
        raise ValueError(f"reconcile result must be one of {RECONCILE_RESULTS}, not {result!r}")
    return str(result)


class Metrics:
    """Owns a CollectorRegistry: the event counters, and a collector reading ``view`` at each scrape."""

    def __init__(
        self,
        view: DaemonView,
        *,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._view = view
        self._retention = retention_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # Last time an environment was seen in the view or had an event: drives the pruning of old series.
        self._env_seen: dict[EnvKey, float] = {}
        self._project_seen: dict[ProjectKey, float] = {}
        self._heal_services: dict[EnvKey, set[str]] = {}
        self._retry_reasons: dict[EnvKey, set[str]] = {}
        self._violations: dict[ProjectKey, int] = {}  # policy violations of each project's last revision

        # Not registered on their own: _Collector emits them after reading the view (zero series, pruning).
        self.reconcile_total = Counter(
            "reconciler_reconcile",
            "Reconciles of an environment by result: success, failure (including rolled back) or noop.",
            ["app", "environment", "project", "result"],
            registry=None,
        )
        self.reconcile_duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Time to reconcile an environment, from start to converged or failed.",
            ["app", "environment"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.rollbacks_total = Counter(
            "reconciler_rollbacks",
            "Automatic or manual rollbacks to the last successful revision.",
            ["app", "environment"],
            registry=None,
        )
        self.self_heals_total = Counter(
            "reconciler_self_heals",
            "Drifted services repaired by self-heal.",
            ["app", "environment", "service"],
            registry=None,
        )
        self.retries_total = Counter(
            "reconciler_retries",
            "Transient failures (Docker 5xx or 429, registry throttling, timeouts, refused connections, DNS, "
            "git) retried with backoff during a deploy, by reason. Never a rollback, never a failed commit.",
            ["app", "environment", "reason"],
            registry=None,
        )
        self.git_poll_total = Counter(
            "reconciler_git_poll",
            "Git polls (ls-remote, and fetch when a head moved) by result: success or failure.",
            ["app", "result"],
            registry=None,
        )
        self.git_poll_duration = Histogram(
            "reconciler_git_poll_duration_seconds",
            "Time of one git poll of an app.",
            ["app"],
            buckets=GIT_POLL_BUCKETS,
            registry=None,
        )
        self.poll_duration = Histogram(
            "reconciler_poll_duration_seconds",
            "Time of one whole poll of an app: ls-remote, branch to environment, deploy decisions, sweep.",
            ["app"],
            buckets=CYCLE_BUCKETS,
            registry=None,
        )
        self.drift_check_duration = Histogram(
            "reconciler_drift_check_duration_seconds",
            "Time of one host's whole drift check (one list call per object kind, a plan per environment), "
            "observed once for each app it covered.",
            ["app", "host"],
            buckets=CYCLE_BUCKETS,
            registry=None,
        )
        self.webhook_total = Counter(
            "reconciler_webhook_requests",
            "Push webhook requests by provider and result.",
            ["provider", "result"],
            registry=None,
        )
        # A bounded set, created at zero so `increase()` sees the first unauthorized request or failure.
        for provider in WEBHOOK_PROVIDERS:
            for result in WEBHOOK_RESULTS:
                self.webhook_total.labels(provider, result)
        # Scheduled jobs (issue 11). The `job` label is the job's name; Prometheus stores it as `exported_job`
        # beside the scrape's own `job` label (docs/metrics.md).
        job_labels = ["app", "environment", "job"]
        self.job_runs_total = Counter(
            "reconciler_job_runs",
            "Runs of a scheduled job by result.",
            [*job_labels, "result"],
            registry=None,
        )
        self.job_last_success = Gauge(
            "reconciler_job_last_success_timestamp_seconds",
            "Unix time of a job's last successful run (seeded from state at start).",
            job_labels,
            registry=None,
        )
        self.backup_size = Gauge(
            "reconciler_backup_size_bytes",
            "Size of a backup job's last kept dump.",
            job_labels,
            registry=None,
        )
        self.job_info = Gauge(
            "reconciler_job_info",
            "Always 1: a configured job and its kind.",
            [*job_labels, "kind"],
            registry=None,
        )
        self._events: tuple[Counter | Histogram | Gauge, ...] = (
            self.reconcile_total,
            self.reconcile_duration,
            self.rollbacks_total,
            self.self_heals_total,
            self.retries_total,
            self.git_poll_total,
            self.git_poll_duration,
            self.poll_duration,
            self.drift_check_duration,
            self.webhook_total,
            self.job_runs_total,
            self.job_last_success,
            self.backup_size,
            self.job_info,
        )
        self.registry.register(_Collector(self))

    # -- recorders, called by the daemon ------------------------------------------------------------

    def reconcile(self, app: str, environment: str, project: str, result: str, duration: float) -> None:
        """One reconcile of an environment finished with ``result`` after ``duration`` seconds."""
        label = _result_label(result)
        with self._lock:
            self._touch(app, environment, project)
            self._ensure_reconcile_series(app, environment, project)
        self.reconcile_total.labels(app, environment, project, label).inc()
        self.reconcile_duration.labels(app, environment).observe(max(duration, 0.0))

    def rollback(self, app: str, environment: str) -> None:
        """An environment was rolled back to its last successful revision."""
        with self._lock:
            self._env_seen[(app, environment)] = self._clock()
        self.rollbacks_total.labels(app, environment).inc()

    def self_heal(self, app: str, environment: str, service: str) -> None:
        """Self-heal repaired one drifted service."""
        with self._lock:
            self._env_seen[(app, environment)] = self._clock()
            self._heal_services.setdefault((app, environment), set()).add(service)
        self.self_heals_total.labels(app, environment, service).inc()

    def retry(self, app: str, environment: str, reason: str) -> None:
        """A transient failure during a deploy, retried with backoff."""
        with self._lock:
            self._env_seen[(app, environment)] = self._clock()
            self._retry_reasons.setdefault((app, environment), set()).add(reason)
        self.retries_total.labels(app, environment, reason).inc()

    def policy_violations(self, app: str, environment: str, project: str, count: int) -> None:
        """The policy check of a revision found ``count`` violations (0: clean)."""
        with self._lock:
            self._violations[(app, environment, project)] = count

    def git_poll(self, app: str, ok: bool, duration: float) -> None:
        """One git poll of ``app`` finished, successfully or not, after ``duration`` seconds."""
        self._ensure_git_series(app)
        self.git_poll_total.labels(app, "success" if ok else "failure").inc()
        self.git_poll_duration.labels(app).observe(max(duration, 0.0))

    def poll(self, app: str, duration: float) -> None:
        """One whole poll of ``app`` (git listing, decisions, sweep) took ``duration`` seconds."""
        self.poll_duration.labels(app).observe(max(duration, 0.0))

    def drift_check(self, apps: Iterable[str], duration: float, *, host: str = "local") -> None:
        """One drift check of ``host`` covering environments of ``apps`` took ``duration`` seconds: the
        check is one listing for all of them, so its whole time is observed once per app."""
        for app in sorted(set(apps)):
            self.drift_check_duration.labels(app, host).observe(max(duration, 0.0))

    def webhook(self, provider: str, result: str) -> None:
        """One webhook request was answered with ``result`` (see WEBHOOK_RESULTS)."""
        self.webhook_total.labels(provider, result).inc()

    def job_run(
        self, app: str, environment: str, job: str, result: str, *, at: float, size: int | None = None
    ) -> None:
        """A scheduled job finished (result success|failure); ``at`` is when, ``size`` a backup's bytes."""
        for each in ("success", "failure"):
            self.job_runs_total.labels(app, environment, job, each)
        self.job_runs_total.labels(app, environment, job, result).inc()
        if result == "success":
            self.job_last_success.labels(app, environment, job).set(at)
            if size is not None:
                self.backup_size.labels(app, environment, job).set(size)

    # -- exposition ---------------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE

    # -- bookkeeping, under self._lock ------------------------------------------------------------------

    def _touch(self, app: str, environment: str, project: str) -> None:
        now = self._clock()
        self._env_seen[(app, environment)] = now
        self._project_seen[(app, environment, project)] = now

    def _ensure_reconcile_series(self, app: str, environment: str, project: str) -> None:
        for result in RECONCILE_RESULTS:
            self.reconcile_total.labels(app, environment, project, result)

    def _ensure_git_series(self, app: str) -> None:
        for result in GIT_POLL_RESULTS:
            self.git_poll_total.labels(app, result)

    def _observe_view(self, envs: Iterable[EnvironmentStatus]) -> None:
        """Create zero series for the environments in view; drop series of long-gone ones.

        Called at each scrape. Zero series let ``increase(...{result="failure"})`` see a first failure;
        dropping lets previews' counters go away with them instead of piling up forever.
        """
        with self._lock:
            now = self._clock()
            apps: set[str] = set()
            for env in envs:
                self._touch(env.app, env.environment, env.project)
                self._ensure_reconcile_series(env.app, env.environment, env.project)
                self.rollbacks_total.labels(env.app, env.environment)
                apps.add(env.app)
            for app in apps:
                self._ensure_git_series(app)
            expired = now - self._retention
            for (app, environment, project), seen in list(self._project_seen.items()):
                if seen < expired:
                    for result in RECONCILE_RESULTS:
                        self.reconcile_total.remove(app, environment, project, result)
                    del self._project_seen[(app, environment, project)]
                    self._violations.pop((app, environment, project), None)
            for (app, environment), seen in list(self._env_seen.items()):
                if seen < expired:
                    self.rollbacks_total.remove(app, environment)
                    self.reconcile_duration.remove(app, environment)
                    for service in self._heal_services.pop((app, environment), set()):
                        self.self_heals_total.remove(app, environment, service)
                    for reason in self._retry_reasons.pop((app, environment), set()):
                        self.retries_total.remove(app, environment, reason)
                    del self._env_seen[(app, environment)]


class _Collector:
    """One scrape: read the view once, update the counters' zero/pruned series, then emit everything.

    The state gauges are built from that view snapshot, so environments that are gone leave no series.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        events = [family for metric in self._metrics._events for family in metric.describe()]
        return [*events, *_state_families([], hosts_up={}, limits={}), self._policy_family([])]

    def collect(self) -> Iterable[Metric]:
        view = self._metrics._view
        envs = _unique(view.environments())
        limits = view.ephemeral_limits()
        hosts_up = view.hosts_up()
        self._metrics._observe_view(envs)
        families = [family for metric in self._metrics._events for family in metric.collect()]
        return [
            *families,
            *_state_families(envs, hosts_up=hosts_up, limits=limits),
            self._policy_family(envs),
        ]

    def _policy_family(self, envs: list[EnvironmentStatus]) -> Metric:
        family = GaugeMetricFamily(
            "reconciler_policy_violations",
            "Policy violations of the environment's last checked revision (refused when > 0); 0 when clean.",
            labels=["app", "environment", "project"],
        )
        with self._metrics._lock:
            counts = dict(self._metrics._violations)
        for env in envs:
            key = (env.app, env.environment, env.project)
            family.add_metric(list(key), counts.get(key, 0))
        return family


def _unique(envs: Iterable[EnvironmentStatus]) -> list[EnvironmentStatus]:
    """One status per (app, environment, project): duplicate series would make Prometheus drop samples."""
    seen: set[ProjectKey] = set()
    out: list[EnvironmentStatus] = []
    for env in envs:
        key = (env.app, env.environment, env.project)
        if key not in seen:
            seen.add(key)
            out.append(env)
    return out


def _state_families(
    envs: list[EnvironmentStatus], *, hosts_up: dict[str, bool], limits: dict[str, int | None]
) -> Iterator[Metric]:
    """The state gauges of issue 5, from a snapshot of the view; ``host`` is the name of the engine in
    ``hosts:`` (never its address)."""
    env_labels = ["app", "environment", "project", "host"]
    info = GaugeMetricFamily(
        "reconciler_environment_info",
        "Always 1: an environment, its branch and deployed commit ('' when nothing is deployed).",
        labels=[*env_labels, "branch", "commit"],
    )
    out_of_sync = GaugeMetricFamily(
        "reconciler_environment_out_of_sync",
        "1 when the deployed commit is not the branch head; 0 when synced or unknown.",
        labels=env_labels,
    )
    health = GaugeMetricFamily(
        "reconciler_environment_health",
        "1 for the current health status (Healthy, Progressing, Degraded, Missing); other statuses absent.",
        labels=[*env_labels, "status"],
    )
    service_drift = GaugeMetricFamily(
        "reconciler_service_drift",
        "1 for each current drift of a service, by reason; absent when none.",
        labels=[*env_labels, "service", "reason"],
    )
    env_drift = GaugeMetricFamily(
        "reconciler_environment_drift",
        "Number of current drifts of an environment.",
        labels=env_labels,
    )
    last_success = GaugeMetricFamily(
        "reconciler_last_success_timestamp_seconds",
        "Unix time of the last successful deploy; absent while an environment never had one.",
        labels=env_labels,
    )
    suspended = GaugeMetricFamily(
        "reconciler_environment_suspended",
        "1 when the environment is suspended (observed, not changed).",
        labels=env_labels,
    )
    ephemeral = GaugeMetricFamily(
        "reconciler_ephemeral_environments", "Live ephemeral (preview) environments.", labels=["app"]
    )
    ephemeral_max = GaugeMetricFamily(
        "reconciler_ephemeral_environments_max",
        "The app's `max` live previews; absent when unlimited.",
        labels=["app"],
    )
    up = GaugeMetricFamily(
        "reconciler_docker_up", "1 when the host's Docker Engine answers its last call.", labels=["host"]
    )

    previews: dict[str, int] = dict.fromkeys(limits, 0)
    for env in envs:
        key = [env.app, env.environment, env.project, env.host]
        info.add_metric([*key, env.branch, env.deployed_commit or ""], 1)
        out_of_sync.add_metric(key, 1 if env.sync is Sync.OUT_OF_SYNC else 0)
        health.add_metric([*key, str(env.health)], 1)
        for service, reason in sorted({(d.service, str(d.reason)) for d in env.drifts}):
            service_drift.add_metric([*key, service, reason], 1)
        env_drift.add_metric(key, len(env.drifts))
        if env.last_success is not None:
            last_success.add_metric(key, env.last_success)
        suspended.add_metric(key, 1 if env.suspended else 0)
        previews.setdefault(env.app, 0)
        if env.ephemeral:
            previews[env.app] += 1
    for app, count in sorted(previews.items()):
        ephemeral.add_metric([app], count)
    for app, limit in sorted(limits.items()):
        if limit is not None:
            ephemeral_max.add_metric([app], limit)
    for host, answers in sorted(hosts_up.items()):
        up.add_metric([host], 1 if answers else 0)
    yield from (info, out_of_sync, health, service_drift, env_drift, last_success, suspended)
    yield from (ephemeral, ephemeral_max, up)
