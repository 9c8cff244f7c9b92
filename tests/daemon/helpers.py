"""Builders for daemon tests: an environments.yaml pointing at a test repository."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.daemon.conftest import ROOT


def unique_prefix() -> str:
    return f"tdm{uuid.uuid4().hex[:6]}"


def write_config(tmp: Path, bare: Path, prefix: str, **overrides: Any) -> Path:
    """An environments.yaml like the example one, with project names under ``prefix``."""
    envs: dict[str, Any] = {
        "production": {
            "branch": "master",
            "project": f"{prefix}-production",
            "compose": ["docker-compose.yml", "docker-compose.persist.yml"],
            "overlays": [str(ROOT / "examples/overlays/traefik.yml")],
            "override": {"services": {"web": {"environment": {"TIER": "production"}}}},
            "env": {"HOST": "prod.example.org"},
            "timeout": "60s",
        },
        "staging": {
            "branch": "develop",
            "project": f"{prefix}-staging",
            "compose": ["docker-compose.yml", "docker-compose.persist.yml", "docker-compose.maildev.yml"],
            "timeout": "60s",
        },
        "preview": {
            "branches": ["*"],
            "exclude": ["dependabot/*"],
            "project": f"{prefix}-test-{{branch}}",
            "compose": ["docker-compose.yml", "docker-compose.maildev.yml"],
            "ephemeral": True,
            "max": 5,
            "ttl": "14d",
            "url": "http://{branch}.preview.localhost",
            "env": {"HOST": "{branch}.preview.localhost"},
            "timeout": "60s",
        },
    }
    for name, extra in overrides.pop("envs", {}).items():
        envs.setdefault(name, {}).update(extra)
    app: dict[str, Any] = {"repo": str(bare), "poll_interval": "1h", "environments": envs}
    app.update(overrides.pop("app", {}))
    doc: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "listen": "127.0.0.1:0",
        "drift_interval": "1s",
        "apps": {"demo": app},
    }
    doc.update(overrides)
    path = tmp / "environments.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
