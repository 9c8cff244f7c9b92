"""The Metrics registry: state gauges built from the view at scrape time, and the event counters."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.report import Metrics, StaticView
from reconciler.status import Sync

from .conftest import HEAD, OLD, preview, production, sample_view, staging
from .promtext import label_sets, samples, value

STATE_GAUGES = (
    "reconciler_environment_info",
    "reconciler_environment_out_of_sync",
    "reconciler_environment_health",
    "reconciler_service_drift",
    "reconciler_environment_drift",
    "reconciler_last_success_timestamp_seconds",
    "reconciler_environment_suspended",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(metrics: Metrics) -> str:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return body.decode()


def test_state_gauges_describe_each_environment() -> None:
    """Each environment gets info, sync, health, drift, last success and suspended series with its labels."""
    text = scrape(Metrics(sample_view()))
    key = {"app": "mrs", "environment": "staging", "project": "mrs-staging"}
    assert value(text, "reconciler_environment_info", **key, branch="develop", commit=OLD) == 1
    assert value(text, "reconciler_environment_out_of_sync", **key) == 1
    assert value(text, "reconciler_environment_out_of_sync", project="mrs-production") == 0
    assert value(text, "reconciler_environment_drift", **key) == 2
    assert value(text, "reconciler_environment_drift", project="mrs-production") == 0
    assert value(text, "reconciler_service_drift", **key, service="web", reason="stopped") == 1
    assert value(text, "reconciler_service_drift", **key, service="old-worker", reason="orphan") == 1
    assert value(text, "reconciler_last_success_timestamp_seconds", **key) == 1_690_000_000.0
    assert value(text, "reconciler_environment_suspended", **key) == 0
    assert value(text, "reconciler_environment_info", project="mrs-production", commit=HEAD) == 1


def test_health_shows_only_the_current_status() -> None:
    """environment_health has one series per environment, value 1, labelled with its current status."""
    text = scrape(Metrics(sample_view()))
    health = {ls["project"]: (ls["status"], v) for ls, v in samples(text)["reconciler_environment_health"]}
    assert health == {
        "mrs-production": ("Healthy", 1),
        "mrs-staging": ("Degraded", 1),
        "test-feature-login": ("Progressing", 1),
    }


def test_absent_series_for_no_drift_and_no_success() -> None:
    """No service_drift series for a clean environment; no last-success series before a first success."""
    text = scrape(Metrics(sample_view()))
    drifted = {ls["project"] for ls in label_sets(text, "reconciler_service_drift")}
    assert drifted == {"mrs-staging"}
    with_success = {ls["project"] for ls in label_sets(text, "reconciler_last_success_timestamp_seconds")}
    assert with_success == {"mrs-production", "mrs-staging"}
    assert value(text, "reconciler_environment_info", project="test-feature-login") == 1
    assert value(text, "reconciler_environment_info", project="test-feature-login", commit="") == 1


def test_series_of_a_removed_environment_disappear() -> None:
    """When an environment leaves the view, none of its state series remain at the next scrape."""
    view = sample_view()
    metrics = Metrics(view)
    before = scrape(metrics)
    assert all(any(ls["project"] == "mrs-staging" for ls in label_sets(before, g)) for g in STATE_GAUGES)

    view.set_environments([production(), preview()])
    after = scrape(metrics)
    for gauge in STATE_GAUGES:
        assert all(ls["project"] != "mrs-staging" for ls in label_sets(after, gauge)), gauge
    assert label_sets(after, "reconciler_service_drift") == []


def test_drift_series_follow_the_current_drifts() -> None:
    """A fixed drift's series goes away; a new one appears; the count follows."""
    view = sample_view()
    metrics = Metrics(view)
    fixed = dataclasses.replace(staging(), drifts=staging().drifts[1:])
    view.set_environments([production(), fixed, preview()])
    text = scrape(metrics)
    assert value(text, "reconciler_service_drift", service="web", reason="stopped") is None
    assert value(text, "reconciler_service_drift", service="old-worker", reason="orphan") == 1
    assert value(text, "reconciler_environment_drift", project="mrs-staging") == 1


def test_sync_unknown_is_not_out_of_sync() -> None:
    """An environment whose head is unknown (git unreachable) reports out_of_sync 0."""
    view = StaticView([dataclasses.replace(staging(), sync=Sync.UNKNOWN, head_commit=None)])
    assert value(scrape(Metrics(view)), "reconciler_environment_out_of_sync", project="mrs-staging") == 0


def test_docker_up_and_preview_counts() -> None:
    """docker_up follows the view; previews are counted per app; max is present only where it is set."""
    view = sample_view()
    view.limits = {"mrs": 20, "blog": None}
    metrics = Metrics(view)
    text = scrape(metrics)
    assert value(text, "reconciler_docker_up") == 1
    assert value(text, "reconciler_ephemeral_environments", app="mrs") == 1
    assert value(text, "reconciler_ephemeral_environments", app="blog") == 0
    assert value(text, "reconciler_ephemeral_environments_max", app="mrs") == 20
    assert value(text, "reconciler_ephemeral_environments_max", app="blog") is None

    view.is_docker_up = False
    assert value(scrape(metrics), "reconciler_docker_up") == 0


def test_suspended_environment() -> None:
    """A suspended environment reports reconciler_environment_suspended 1."""
    view = StaticView([dataclasses.replace(production(), suspended=True, suspend_reason="hotfix")])
    assert value(scrape(Metrics(view)), "reconciler_environment_suspended", project="mrs-production") == 1


def test_duplicate_environments_give_one_series() -> None:
    """A view listing an environment twice still yields one series per label set."""
    view = StaticView([staging(), staging()])
    text = scrape(Metrics(view))
    assert value(text, "reconciler_environment_drift", project="mrs-staging") == 2


def test_reconcile_counts_results_and_durations() -> None:
    """reconcile() counts by result (rolled back counts as failure) and observes the duration histogram."""
    metrics = Metrics(StaticView())
    metrics.reconcile("mrs", "staging", "mrs-staging", "success", 12.0)
    metrics.reconcile("mrs", "staging", "mrs-staging", "failure", 700.0)
    metrics.reconcile("mrs", "staging", "mrs-staging", "rolled_back", 30.0)
    metrics.reconcile("mrs", "staging", "mrs-staging", "noop", 0.2)
    text = scrape(metrics)
    key = {"app": "mrs", "environment": "staging", "project": "mrs-staging"}
    assert value(text, "reconciler_reconcile_total", **key, result="success") == 1
    assert value(text, "reconciler_reconcile_total", **key, result="failure") == 2
    assert value(text, "reconciler_reconcile_total", **key, result="noop") == 1
    hist = {"app": "mrs", "environment": "staging"}
    assert value(text, "reconciler_reconcile_duration_seconds_count", **hist) == 4
    assert value(text, "reconciler_reconcile_duration_seconds_bucket", **hist, le="600.0") == 3
    assert value(text, "reconciler_reconcile_duration_seconds_bucket", **hist, le="+Inf") == 4


def test_reconcile_refuses_an_unknown_result() -> None:
    """A result outside success|failure|noop (e.g. running) is a programming error, not a new label value."""
    metrics = Metrics(StaticView())
    with pytest.raises(ValueError, match="running"):
        metrics.reconcile("mrs", "staging", "mrs-staging", "running", 1.0)


def test_event_recorders() -> None:
    """rollback, self_heal, git_poll and webhook each count under their contract labels."""
    metrics = Metrics(StaticView())
    metrics.rollback("mrs", "production")
    metrics.self_heal("mrs", "production", "web")
    metrics.self_heal("mrs", "production", "web")
    metrics.git_poll("mrs", True, 0.3)
    metrics.git_poll("mrs", False, 10.0)
    metrics.git_poll("mrs", False, 10.0)
    metrics.webhook("github", "accepted")
    text = scrape(metrics)
    assert value(text, "reconciler_rollbacks_total", app="mrs", environment="production") == 1
    assert value(text, "reconciler_self_heals_total", app="mrs", environment="production", service="web") == 2
    assert value(text, "reconciler_git_poll_total", app="mrs", result="success") == 1
    assert value(text, "reconciler_git_poll_total", app="mrs", result="failure") == 2
    assert value(text, "reconciler_git_poll_duration_seconds_count", app="mrs") == 3
    assert value(text, "reconciler_webhook_requests_total", provider="github", result="accepted") == 1


def test_zero_series_exist_before_the_first_event() -> None:
    """Failure counters exist at 0 for each environment and app in view: increase() sees a first failure."""
    text = scrape(Metrics(sample_view()))
    for project in ("mrs-production", "mrs-staging", "test-feature-login"):
        for result in ("success", "failure", "noop"):
            assert value(text, "reconciler_reconcile_total", project=project, result=result) == 0
    assert value(text, "reconciler_git_poll_total", app="mrs", result="failure") == 0
    assert value(text, "reconciler_rollbacks_total", app="mrs", environment="staging") == 0
    for provider in ("github", "gitlab", "gitea"):
        assert value(text, "reconciler_webhook_requests_total", provider=provider, result="unauthorized") == 0


def test_counters_of_gone_environments_are_dropped_after_retention() -> None:
    """A preview's counters outlive it for the retention period, then disappear; live ones never do."""
    clock = Clock()
    view = sample_view()
    metrics = Metrics(view, retention_seconds=3600, clock=clock)
    metrics.reconcile("mrs", "preview", "test-gone", "failure", 3.0)
    metrics.self_heal("mrs", "old-env", "web")
    scrape(metrics)

    clock.now += 3000
    text = scrape(metrics)
    assert value(text, "reconciler_reconcile_total", project="test-gone", result="failure") == 1
    assert value(text, "reconciler_self_heals_total", environment="old-env", service="web") == 1

    clock.now += 1000
    text = scrape(metrics)
    assert label_sets(text, "reconciler_reconcile_total") != []
    assert all(ls["project"] != "test-gone" for ls in label_sets(text, "reconciler_reconcile_total"))
    assert value(text, "reconciler_self_heals_total", environment="old-env", service="web") is None
    # The environment "preview" itself is still in view: its histogram and rollback series stay.
    assert value(text, "reconciler_reconcile_duration_seconds_count", environment="preview") == 1
    assert value(text, "reconciler_reconcile_total", project="mrs-staging", result="failure") == 0


def test_no_created_series() -> None:
    """Counters expose no `_created` samples (as Go clients), keeping the output small."""
    metrics = Metrics(sample_view())
    metrics.reconcile("mrs", "staging", "mrs-staging", "success", 1.0)
    assert not [name for name in samples(scrape(metrics)) if name.endswith("_created")]


def test_view_errors_propagate_to_the_scrape() -> None:
    """A view that fails makes the scrape fail (so `up` drops), rather than serving partial state."""

    class Broken(StaticView):
        def environments(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("database locked")

    with pytest.raises(RuntimeError):
        Metrics(Broken()).exposition()
