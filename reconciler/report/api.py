"""The JSON shape of an environment, served by ``GET /api/environments``.

Pure: EnvironmentStatus in, plain dicts out. The same fields as ``reconciler status --format json``.
"""

from __future__ import annotations

from typing import Any

from reconciler.status import DeployRecord, EnvironmentStatus


def deploy_json(record: DeployRecord | None) -> dict[str, Any] | None:
    """A deploy attempt; times are unix seconds (``finished`` null while it runs)."""
    if record is None:
        return None
    return {
        "result": str(record.result),
        "error": record.error,
        "commit": record.commit,
        "started": record.started,
        "finished": record.finished,
        "trigger": record.trigger,
        "rollback_of": record.rollback_of,
    }


def environment_json(env: EnvironmentStatus) -> dict[str, Any]:
    """One environment as the API shows it."""
    return {
        "app": env.app,
        "environment": env.environment,
        "project": env.project,
        "host": env.host,
        "branch": env.branch,
        "head_commit": env.head_commit,
        "deployed_commit": env.deployed_commit,
        "sync": str(env.sync),
        "health": str(env.health),
        "drifts": [{"service": d.service, "reason": str(d.reason), "detail": d.detail} for d in env.drifts],
        "suspended": env.suspended,
        "suspend_reason": env.suspend_reason,
        "url": env.url,
        "ephemeral": env.ephemeral,
        "error": env.error,
        "failed_commit": env.failed_commit,
        "last_success": env.last_success,
        "last_deploy": deploy_json(env.last_deploy),
    }


def environments_json(envs: list[EnvironmentStatus]) -> list[dict[str, Any]]:
    """Every environment, in the daemon's order (the config's: production before previews)."""
    return [environment_json(e) for e in envs]
