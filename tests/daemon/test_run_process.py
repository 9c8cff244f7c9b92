"""`reconciler run` as users run it: HTTP server, scheduler, webhooks, drift, crash recovery."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.conftest import Repo, wait_for
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers
from tests.report.test_report_prometheus import _start_prometheus

pytestmark = pytest.mark.docker
SECRET = "hook-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "-c", str(self.config)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for(self._answers, 30)

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            self.get("/healthz")
        except OSError:
            return False
        return True

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
            return str(resp.read().decode())

    def api(self) -> dict[str, dict[str, Any]]:
        return {e["project"]: e for e in json.loads(self.get("/api/environments")) if e["project"]}

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = {}
        for fam in text_string_to_metric_families(self.get("/metrics")):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture
def daemon_proc(tmp_path: Path, repo: Repo, cleanup: Any) -> Iterator[tuple[Daemon, str, Repo]]:
    prefix = unique_prefix()
    cleanup(prefix)
    port = free_port()
    repo.branch("develop", change="<p>staging</p>")
    cfg = write_config(
        tmp_path,
        repo.bare,
        prefix,
        listen=f"127.0.0.1:{port}",
        # The timer never fires during a test: drift is found through Docker events (die, stop, start).
        drift_interval="1h",
        app={"webhook_secret": SECRET},
        envs={"production": {"self_heal": True}},
    )
    d = Daemon(cfg, port, tmp_path / "daemon.log")
    yield d, prefix, repo
    if d.proc is not None and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


def test_run_serves_status_metrics_webhooks_and_drift(
    daemon_proc: tuple[Daemon, str, Repo], docker_client: docker.DockerClient
) -> None:
    """The daemon converges, reports drift (seen through Docker events) as metrics, self-heals, and deploys
    on a signed webhook."""
    d, prefix, repo = daemon_proc
    d.start()
    prod, staging = f"{prefix}-production", f"{prefix}-staging"

    def converged() -> bool:
        api = d.api()
        return all(
            api.get(p, {}).get("health") == "Healthy" and api[p]["sync"] == "Synced" for p in (prod, staging)
        )

    wait_for(converged, 180)

    # API, metrics and `reconciler status` agree.
    api = d.api()
    cli = subprocess.run(
        [sys.executable, "-m", "reconciler", "status", "-c", str(d.config), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    cli_rows = {e["project"]: e for e in json.loads(cli.stdout) if e["project"]}
    for p in (prod, staging):
        assert cli_rows[p]["deployed_commit"] == api[p]["deployed_commit"]
        assert cli_rows[p]["sync"] == api[p]["sync"] == "Synced"
    m = d.metrics()
    labels = (("app", "demo"), ("environment", "staging"), ("host", "local"), ("project", staging))
    assert m[("reconciler_environment_out_of_sync", labels)] == 0
    assert m[("reconciler_environment_health", (*labels, ("status", "Healthy")))] == 1
    page = d.get("/")
    assert prod in page and staging in page

    # Stopping a container of a non-self-healing env shows as drift, then clears once fixed.
    web = containers(docker_client, staging)["web"]
    web.stop(timeout=1)
    drift_key = (
        "reconciler_service_drift",
        tuple(
            sorted(
                {
                    "app": "demo",
                    "environment": "staging",
                    "host": "local",
                    "project": staging,
                    "service": "web",
                    "reason": "stopped",
                }.items()
            )
        ),
    )
    wait_for(lambda: d.metrics().get(drift_key) == 1, 30)
    # A real Prometheus scraping the daemon sees the same drift.
    prom, base, _log = _start_prometheus(d.log.parent, d.port)
    try:
        query = f'reconciler_service_drift{{project="{staging}",service="web",reason="stopped"}}'

        def scraped() -> bool:
            url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": query})
            with urllib.request.urlopen(url, timeout=5) as resp:
                return bool(json.loads(resp.read())["data"]["result"])

        wait_for(scraped, 60)
    finally:
        prom.kill()
        prom.wait()
    web.start()
    wait_for(lambda: drift_key not in d.metrics(), 30)

    # A self-healing environment gets its container back.
    prod_web = containers(docker_client, prod)["web"]
    prod_web.stop(timeout=1)
    wait_for(lambda: containers(docker_client, prod)["web"].status == "running", 60)
    wait_for(
        lambda: any(k[0] == "reconciler_self_heals_total" and v >= 1 for k, v in d.metrics().items()), 30
    )

    # A signed push webhook deploys without waiting for the (1 h) poll.
    new = repo.commit("develop", {"site/index.html": "<p>staging v2</p>"})
    body = json.dumps({"ref": "refs/heads/develop", "repository": {"clone_url": str(repo.bare)}}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    bad = d.post(
        "/hooks/github",
        body,
        {"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=00", "Content-Type": "application/json"},
    )
    assert bad == 401
    code = d.post(
        "/hooks/github",
        body,
        {
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": sig,
            "X-GitHub-Delivery": "d-1",
            "Content-Type": "application/json",
        },
    )
    assert code == 202
    wait_for(lambda: d.api()[staging]["deployed_commit"] == new, 90)
    assert d.stop() == 0


def test_survives_kill_9_mid_deploy(
    daemon_proc: tuple[Daemon, str, Repo], docker_client: docker.DockerClient
) -> None:
    """SIGKILL while a deploy waits for health, then a restart, converges with no duplicate containers."""
    d, prefix, repo = daemon_proc
    prod = f"{prefix}-production"
    # A web that takes a few seconds to become healthy keeps the first deploy in progress.
    repo.edit_yaml(
        "master",
        "docker-compose.persist.yml",
        lambda d: d["services"]["web"].update(command=["sh", "-c", "sleep 3; exec httpd -f -p 8000 -h /www"]),
    )
    d.start()
    wait_for(lambda: "web" in containers(docker_client, prod), 120)
    d.stop(signal.SIGKILL)
    d.start()
    wait_for(
        lambda: d.api().get(prod, {}).get("health") == "Healthy" and d.api()[prod]["sync"] == "Synced", 180
    )
    names = [
        c.name
        for c in docker_client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={prod}"}
        )
    ]
    assert sorted(names) == sorted(set(names))
    assert sorted(names) == sorted([f"{prod}-db-1", f"{prod}-migrate-1", f"{prod}-web-1"])
    history = json.loads(
        subprocess.run(
            [sys.executable, "-m", "reconciler", "history", "-c", str(d.config), prod, "--format", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    # The killed attempt is recorded as interrupted; the restart converged what it left (often a no-op).
    assert history[0]["result"] in ("success", "noop")
    assert any("interrupted" in h["error"] for h in history[1:]), history
    assert d.stop() == 0
