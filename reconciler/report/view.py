"""What the reporting side reads from the daemon: the ``DaemonView`` protocol and a static one for tests.

The daemon implements ``DaemonView``; the metrics collector, the HTTP routes and the webhook handler only
ever read through it (and ask it for a poll), so they can be tested without Docker or git.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from reconciler.status import EnvironmentStatus


@dataclass(frozen=True)
class WebhookApp:
    """An app that push webhooks may wake up: its repository URL and webhook secret.

    ``secret`` None means webhooks are disabled for the app: no request can authenticate for it.
    """

    app: str
    repo: str
    secret: bytes | None = field(default=None, repr=False)  # never shown in logs or reprs


class DaemonView(Protocol):
    """The daemon as the reporting side sees it. Every method may be called from HTTP threads."""

    def environments(self) -> list[EnvironmentStatus]:
        """Every environment that currently exists (configured, or live ephemeral)."""
        ...

    def docker_up(self) -> bool:
        """Whether every host's Docker Engine answered its last call."""
        ...

    def hosts_up(self) -> dict[str, bool]:
        """Host name (in ``hosts:``) -> whether its engine answered its last call."""
        ...

    def alive(self) -> bool:
        """Scheduler running and Docker answering: /healthz answers 200."""
        ...

    def ephemeral_limits(self) -> dict[str, int | None]:
        """App -> its ``max`` live previews (None: no limit)."""
        ...

    def webhook_apps(self) -> list[WebhookApp]:
        """Every app with its repository and webhook secret."""
        ...

    def trigger_poll(self, app: str, reason: str) -> bool:
        """Queue an immediate git poll of ``app``; True when queued, False when one was already pending."""
        ...


class StaticView:
    """An in-memory DaemonView for tests: set the fields, read them back; records triggered polls."""

    def __init__(
        self,
        environments: Iterable[EnvironmentStatus] = (),
        *,
        docker_up: bool = True,
        alive: bool = True,
        ephemeral_limits: dict[str, int | None] | None = None,
        webhook_apps: Iterable[WebhookApp] = (),
        hosts_up: dict[str, bool] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.envs: list[EnvironmentStatus] = list(environments)
        self.is_docker_up = docker_up
        self.hosts: dict[str, bool] | None = hosts_up
        self.is_alive = alive
        self.limits: dict[str, int | None] = dict(ephemeral_limits or {})
        self.hooks: list[WebhookApp] = list(webhook_apps)
        self.polls: list[tuple[str, str]] = []  # (app, reason) for every trigger_poll call

    def environments(self) -> list[EnvironmentStatus]:
        with self._lock:
            return list(self.envs)

    def set_environments(self, environments: Iterable[EnvironmentStatus]) -> None:
        with self._lock:
            self.envs = list(environments)

    def docker_up(self) -> bool:
        return self.is_docker_up

    def hosts_up(self) -> dict[str, bool]:
        return dict(self.hosts) if self.hosts is not None else {"local": self.is_docker_up}

    def alive(self) -> bool:
        return self.is_alive

    def ephemeral_limits(self) -> dict[str, int | None]:
        return dict(self.limits)

    def webhook_apps(self) -> list[WebhookApp]:
        return list(self.hooks)

    def trigger_poll(self, app: str, reason: str) -> bool:
        with self._lock:
            self.polls.append((app, reason))
        return True
