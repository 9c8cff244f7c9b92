"""The reporting side of the daemon: Prometheus metrics, the HTTP server (status page, JSON API, webhooks).

The daemon implements ``DaemonView``, records events on ``Metrics`` and starts ``serve(view, metrics, ...)``.
"""

from __future__ import annotations

from reconciler.report.http import ServerHandle, serve
from reconciler.report.metrics import Metrics
from reconciler.report.view import DaemonView, StaticView, WebhookApp

__all__ = ["DaemonView", "Metrics", "ServerHandle", "StaticView", "WebhookApp", "serve"]
