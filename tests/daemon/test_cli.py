"""The daemon's one-shot commands as operators type them: sync, status, history, suspend, resume, rollback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config

pytestmark = pytest.mark.docker


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=300
    )


def status(cfg: Path) -> dict[str, dict[str, Any]]:
    out = cli("status", "-c", str(cfg), "--format", "json")
    assert out.returncode == 0, out.stderr
    return {e["project"]: e for e in json.loads(out.stdout) if e["project"]}


def test_sync_status_suspend_resume_rollback_history(
    tmp_path: Path, repo: Repo, docker_client: Any, cleanup: Any
) -> None:
    """An operator syncs, freezes production, resumes it, rolls it back and reads its history."""
    prefix = unique_prefix()
    cleanup(prefix)
    prod = f"{prefix}-production"
    cfg = write_config(tmp_path, repo.bare, prefix)
    first = repo.commit("master", {"site/index.html": "<p>v1</p>"})

    out = cli("sync", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert prod in out.stdout
    table = cli("status", "-c", str(cfg))
    assert table.returncode == 0
    assert "SYNC" in table.stdout and prod in table.stdout and "Synced" in table.stdout
    assert status(cfg)[prod]["deployed_commit"] == first

    # Suspended: observed, not changed.
    second = repo.commit("master", {"site/index.html": "<p>v2</p>"})
    assert cli("suspend", "-c", str(cfg), "production", "--reason", "release freeze").returncode == 0
    assert cli("sync", "-c", str(cfg)).returncode == 0
    s = status(cfg)[prod]
    assert s["deployed_commit"] == first and s["suspended"] and s["suspend_reason"] == "release freeze"
    assert s["sync"] == "OutOfSync"

    assert cli("resume", "-c", str(cfg), prod).returncode == 0
    assert cli("sync", "-c", str(cfg)).returncode == 0
    assert status(cfg)[prod]["deployed_commit"] == second

    # Rollback goes to the previous good commit and stays there (pinned) until resumed.
    out = cli("rollback", "-c", str(cfg), "production")
    assert out.returncode == 0, out.stderr
    assert cli("sync", "-c", str(cfg)).returncode == 0
    s = status(cfg)[prod]
    assert s["deployed_commit"] == first and s["sync"] == "OutOfSync"
    web = docker_client.containers.get(f"{prod}-web-1")
    assert b"v1" in web.exec_run(["cat", "/www/index.html"]).output

    out = cli("rollback", "-c", str(cfg), prod, "--to", second[:10])
    assert out.returncode == 0, out.stderr
    assert status(cfg)[prod]["deployed_commit"] == second

    hist = cli("history", "-c", str(cfg), "production", "--format", "json")
    records = json.loads(hist.stdout)
    rollbacks = [r["commit"] for r in records if r["trigger"] == "manual-rollback"]
    assert rollbacks == [second, first] and records[0]["trigger"] == "manual-rollback"
    assert {r["commit"] for r in records} == {first, second}
    assert "COMMIT" in cli("history", "-c", str(cfg), "production").stdout


def test_bad_input_gets_a_located_message_not_a_traceback(tmp_path: Path, repo: Repo) -> None:
    """A config error, an unknown target and a bad rollback commit each exit 1 with a readable message."""
    prefix = unique_prefix()
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"self_heal": "yes please"}})
    out = cli("status", "-c", str(cfg))
    assert out.returncode == 1
    assert "environments.yaml:" in out.stderr and "self_heal" in out.stderr
    assert "Traceback" not in out.stderr

    cfg = write_config(tmp_path, repo.bare, prefix)
    out = cli("history", "-c", str(cfg), "nope")
    assert out.returncode == 1 and "nope" in out.stderr and "Traceback" not in out.stderr
    out = cli("sync", "-c", str(cfg), "nope")
    assert out.returncode == 1 and "nope" in out.stderr and "Traceback" not in out.stderr
