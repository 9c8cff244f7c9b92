"""A secret never leaves where it was put: a deploy with known values in `env` and `env_files` fails with
the container printing them; every output channel is searched for them, and only the container has them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from tests.daemon.conftest import BASE_IMAGE, git, wait_for
from tests.daemon.test_run_process import Daemon, free_port

pytestmark = pytest.mark.docker


def _compose(command: str) -> str:
    return yaml.safe_dump(
        {
            "services": {
                "app": {
                    "image": BASE_IMAGE,
                    "command": ["sh", "-c", command],
                    "environment": {"API_TOKEN": "${API_TOKEN}", "DB_PASSWORD": "${DB_PASSWORD}"},
                    "restart": "no",
                }
            }
        }
    )


TOKEN = "api-t0ken-" + "z" * 24


class _AuthDaemon(Daemon):
    """The daemon under `http_auth: {bearer_token_file: ...}`: every request sends the token."""

    def get(self, path: str) -> str:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return str(resp.read().decode())

    def status_without_token(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)


class _Repo:
    def __init__(self, root: Path) -> None:
        self.bare, self.work = root / "app.git", root / "work"
        git("init", "-q", "--bare", "-b", "master", str(self.bare))
        git("init", "-q", "-b", "master", str(self.work))
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def commit(self, compose: str) -> str:
        (self.work / "compose.yml").write_text(compose)
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", "change", cwd=self.work)
        git("push", "-q", "origin", "master", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def setup(
    tmp_path: Path, docker_client: docker.DockerClient, cleanup: Any
) -> Iterator[tuple[_AuthDaemon, _Repo, str, str, str]]:
    tag = uuid.uuid4().hex[:8]
    project = f"tsec{tag}"
    cleanup(project)
    from_file, from_env = f"file-s3cr3t-{tag}", f"env-s3cr3t-{tag}"
    env_file = tmp_path / "prod.env"
    env_file.write_text(f"DB_PASSWORD={from_file}\n")
    env_file.chmod(0o644)  # world-readable: the daemon warns at start
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "token").chmod(0o600)
    repo = _Repo(tmp_path)
    repo.commit(_compose("echo started; sleep 3600"))
    port = free_port()
    cfg = tmp_path / "environments.yaml"
    doc = {
        "state_dir": str(tmp_path / "state"),
        "listen": f"127.0.0.1:{port}",
        "drift_interval": "1h",
        "http_auth": {"bearer_token_file": "token"},
        "apps": {
            "demo": {
                "repo": str(repo.bare),
                "poll_interval": "1s",
                "environments": {
                    "production": {
                        "branch": "master",
                        "project": project,
                        "compose": ["compose.yml"],
                        "env": {"API_TOKEN": from_env},
                        "env_files": [str(env_file)],
                        "timeout": "20s",
                    }
                },
            }
        },
    }
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    d = _AuthDaemon(cfg, port, tmp_path / "daemon.log")
    yield d, repo, project, from_file, from_env
    if d.proc is not None and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


def test_a_secret_appears_only_inside_the_container(
    setup: tuple[_AuthDaemon, _Repo, str, str, str], docker_client: docker.DockerClient
) -> None:
    d, repo, project, from_file, from_env = setup
    secrets = (from_file, from_env)
    d.start()
    wait_for(lambda: d.api().get(project, {}).get("health") == "Healthy", 120)

    # The running container has both values: they were put there, and only there.
    container = docker_client.containers.list(filters={"label": f"com.docker.compose.project={project}"})[0]
    inside = container.exec_run(["env"]).output.decode()
    assert f"API_TOKEN={from_env}" in inside and f"DB_PASSWORD={from_file}" in inside

    # A commit whose container prints both values and exits: the deploy fails with its log tail.
    bad = repo.commit(_compose('echo "token=$API_TOKEN password=$DB_PASSWORD"; exit 3'))

    def failed() -> dict[str, Any] | None:
        row = d.api().get(project, {})
        return row if row.get("failed_commit") == bad else None

    row = wait_for(failed, 120)
    assert isinstance(row, dict)
    assert "token=*** password=***" in row["error"], row["error"]

    cfg = d.config
    outputs: dict[str, str] = {
        "/api/environments": d.get("/api/environments"),
        "/": d.get("/"),
        "/metrics": d.get("/metrics"),
    }
    for name, args in {
        "status": ("status", "-c", str(cfg), "--format", "json"),
        "history": ("history", "-c", str(cfg), project, "--format", "json"),
        "render": ("render", "-c", str(cfg), "production"),
        "render json": ("render", "-c", str(cfg), "production", "--format", "json"),
        "plan": ("plan", "-c", str(cfg), "production"),
    }.items():
        out = subprocess.run(
            [sys.executable, "-m", "reconciler", *args], capture_output=True, text=True, timeout=120
        )
        assert out.returncode in (0, 2), (name, out.stderr)
        outputs[name] = out.stdout + out.stderr
        if name == "status":
            # Answered by the daemon (with the token from the same config), not computed locally.
            assert "computed here" not in out.stderr, out.stderr
            assert any(r["project"] == project and r["failed_commit"] == bad for r in json.loads(out.stdout))
        if name == "history":
            history = json.loads(out.stdout)
    failure = next(h for h in history if h["commit"] == bad)
    assert "token=*** password=***" in failure["error"]
    assert "API_TOKEN: '***'" in outputs["render"] or "API_TOKEN: ***" in outputs["render"], outputs["render"]
    # http_auth: the API, page and metrics need the token; /healthz does not.
    for path in ("/api/environments", "/", "/metrics"):
        assert d.status_without_token(path) == 401
    assert d.status_without_token("/healthz") == 200
    d.stop()
    outputs["daemon log"] = d.log.read_text()
    warned = [line for line in outputs["daemon log"].splitlines() if "secret_file.world_readable" in line]
    assert len(warned) == 1 and "prod.env" in warned[0], outputs["daemon log"][-2000:]
    state = Path(cfg).parent / "state"
    outputs["state.db"] = b"".join(p.read_bytes() for p in state.glob("state.db*")).decode("latin-1")
    for name, text in outputs.items():
        for value in secrets:
            assert value not in text, f"{value} leaked into {name}"

    # With --show-secrets, render prints the values: the operator asked for them.
    shown = subprocess.run(
        [sys.executable, "-m", "reconciler", "render", "-c", str(cfg), "production", "--show-secrets"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert from_env in shown.stdout and from_file in shown.stdout
