"""The state vocabulary shared by the daemon, the CLI, the metrics collector and the status page.

Argo CD's model carried into compose: an environment is Synced/OutOfSync (deployed commit vs branch head)
and Healthy/Progressing/Degraded/Missing (live containers), with a list of drifts explaining why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Sync(StrEnum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"


class Health(StrEnum):
    """Ordered from best to worst, as gitops-engine's health codes."""

    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    MISSING = "Missing"

    def is_worse(self, other: Health) -> bool:
        order = list(Health)
        return order.index(self) > order.index(other)


class DriftReason(StrEnum):
    MISSING = "missing"  # no container for the service
    STOPPED = "stopped"  # exited/created, except one-shots that completed successfully
    CONFIG = "config"  # config-hash label differs from the rendered spec
    IMAGE = "image"  # running image ID differs from what the tag resolves to now
    ORPHAN = "orphan"  # project container whose service is not in the config
    UNHEALTHY = "unhealthy"  # healthcheck reports unhealthy
    LIMITS = "limits"  # resource limits changed by `docker update`
    RESTART_POLICY = "restart_policy"  # restart policy changed by `docker update --restart`
    NETWORKS = "networks"  # disconnected from a network of the config, or connected by hand to another
    NETWORK_OPTIONS = "network_options"  # a project network's options (reported only)
    VOLUME_OPTIONS = "volume_options"  # a project volume's driver/options/labels (reported only)
    FOREIGN = "foreign"  # replaced by a hand-run `docker compose up` in a project we own

    @property
    def reported_only(self) -> bool:
        """Self-heal leaves it alone: recreating cannot fix it, or would lose data or cut connections."""
        return self in (DriftReason.UNHEALTHY, DriftReason.NETWORK_OPTIONS, DriftReason.VOLUME_OPTIONS)


class Result(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    NOOP = "noop"
    ROLLED_BACK = "rolled_back"  # failed, then the last good revision was restored
    RUNNING = "running"


ALL_HEALTH: tuple[Health, ...] = tuple(Health)
ALL_DRIFT_REASONS: tuple[DriftReason, ...] = tuple(DriftReason)


@dataclass(frozen=True)
class Drift:
    service: str
    reason: DriftReason
    detail: str = ""


@dataclass(frozen=True)
class DeployRecord:
    """One deploy attempt, as kept in history."""

    id: int
    app: str
    environment: str
    project: str
    branch: str
    commit: str
    started: float  # unix seconds
    finished: float | None
    result: Result
    error: str = ""
    trigger: str = "poll"  # poll | webhook | sync | rollback | self-heal | manual
    rollback_of: str | None = None  # the failed commit this deploy rolled back from


@dataclass(frozen=True)
class EnvironmentStatus:
    """Everything the status page, the JSON API, `reconciler status` and the metrics show for one env."""

    app: str
    environment: str
    project: str
    branch: str
    head_commit: str | None
    deployed_commit: str | None
    sync: Sync
    health: Health
    drifts: tuple[Drift, ...] = ()
    suspended: bool = False
    suspend_reason: str = ""
    url: str | None = None
    ephemeral: bool = False
    last_deploy: DeployRecord | None = None
    last_success: float | None = None  # unix seconds of the last successful deploy
    error: str = ""  # current problem: git unreachable, refused by max, the last revision that failed...
    failed_commit: str | None = None  # the newest revision whose deploy failed, until a newer one deploys
    services: tuple[str, ...] = field(default=())
    host: str = "local"  # the name (in `hosts:`) of the Docker Engine it runs on

    @property
    def out_of_sync(self) -> bool:
        return self.sync is Sync.OUT_OF_SYNC
