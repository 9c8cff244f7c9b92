"""Fixtures for the reporting tests: sample statuses, a StaticView, a live HTTP server on port 0."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from reconciler.report import Metrics, ServerHandle, StaticView, WebhookApp, serve
from reconciler.status import (
    DeployRecord,
    Drift,
    DriftReason,
    EnvironmentStatus,
    Health,
    Result,
    Sync,
)

HEAD = "c0ffee" + "0" * 34
OLD = "badc0de" + "1" * 33
PREVIEW_URL = "https://feature-login.preview.example.com"
FAILURE = "service web: container exited with code 3 (ImportError: no module named 'djang')"
NASTY_BRANCH = 'feature/<script>alert("x")</script>&'


def production() -> EnvironmentStatus:
    return EnvironmentStatus(
        app="mrs",
        environment="production",
        project="mrs-production",
        branch="master",
        head_commit=HEAD,
        deployed_commit=HEAD,
        sync=Sync.SYNCED,
        health=Health.HEALTHY,
        last_success=1_700_000_000.0,
        url="https://mrs.example.org",
        last_deploy=DeployRecord(
            id=1,
            app="mrs",
            environment="production",
            project="mrs-production",
            branch="master",
            commit=HEAD,
            started=1_700_000_000.0,
            finished=1_700_000_030.0,
            result=Result.SUCCESS,
        ),
    )


def staging() -> EnvironmentStatus:
    """Out of sync and degraded: its last deploy failed, two services drifted."""
    return EnvironmentStatus(
        app="mrs",
        environment="staging",
        project="mrs-staging",
        branch="develop",
        head_commit=HEAD,
        deployed_commit=OLD,
        sync=Sync.OUT_OF_SYNC,
        health=Health.DEGRADED,
        drifts=(
            Drift("web", DriftReason.STOPPED, "exited (3)"),
            Drift("old-worker", DriftReason.ORPHAN, "not in the config"),
        ),
        last_success=1_690_000_000.0,
        last_deploy=DeployRecord(
            id=2,
            app="mrs",
            environment="staging",
            project="mrs-staging",
            branch="develop",
            commit=HEAD,
            started=1_700_000_100.0,
            finished=1_700_000_160.0,
            result=Result.FAILURE,
            error=FAILURE,
            trigger="webhook",
        ),
    )


def preview() -> EnvironmentStatus:
    """An ephemeral environment with an untrusted branch name and a URL; never deployed successfully."""
    return EnvironmentStatus(
        app="mrs",
        environment="preview",
        project="test-feature-login",
        branch=NASTY_BRANCH,
        head_commit=HEAD,
        deployed_commit=None,
        sync=Sync.OUT_OF_SYNC,
        health=Health.PROGRESSING,
        ephemeral=True,
        url=PREVIEW_URL,
    )


def sample_environments() -> list[EnvironmentStatus]:
    return [production(), staging(), preview()]


SECRET = b"s3cr3t-mrs"
OTHER_SECRET = b"s3cr3t-blog"
MRS_REPO = "https://github.com/betagouv/mrs.git"
BLOG_REPO = "git@gitlab.com:acme/Blog.git"


def sample_view() -> StaticView:
    return StaticView(
        sample_environments(),
        ephemeral_limits={"mrs": 20},
        webhook_apps=[
            WebhookApp("mrs", MRS_REPO, SECRET),
            WebhookApp("blog", BLOG_REPO, OTHER_SECRET),
            WebhookApp("nohook", "https://github.com/acme/nohook", None),
        ],
    )


@dataclass
class Live:
    view: StaticView
    metrics: Metrics
    server: ServerHandle

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: status, headers (lower-case names), body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@pytest.fixture
def live() -> Iterator[Live]:
    view = sample_view()
    metrics = Metrics(view)
    server = serve(view, metrics, "127.0.0.1", 0)
    try:
        yield Live(view, metrics, server)
    finally:
        server.stop()
