"""CLI papercuts: status without Docker, IPv6 and wildcard listens, another configuration's daemon, targets
before their first deploy, and log lines kept off stdout."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _api_url
from reconciler.daemon.instance import instance_id
from reconciler.report import Metrics, ServerHandle, StaticView, serve
from reconciler.status import EnvironmentStatus, Health, Sync
from tests.daemon.conftest import Repo, wait_for
from tests.daemon.helpers import unique_prefix, write_config

INSTANCE_HEADER = "X-Reconciler-Instance"
ELSEWHERE = "elsewhere-production"  # a project only the in-process test server knows


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ipv6_loopback() -> bool:
    try:
        free_port("::1")
    except OSError:
        return False
    return True


def json_lines(text: str) -> list[dict[str, Any]]:
    """The structlog JSON lines in ``text``."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class _View(StaticView):
    """A StaticView that names its reconciler instance, as the daemon does."""

    def __init__(self, instance: str | None) -> None:
        super().__init__(
            [
                EnvironmentStatus(
                    app="other",
                    environment="production",
                    project=ELSEWHERE,
                    branch="main",
                    head_commit=None,
                    deployed_commit=None,
                    sync=Sync.UNKNOWN,
                    health=Health.MISSING,
                )
            ]
        )
        if instance is not None:
            self.instance = instance


@contextlib.contextmanager
def api_server(host: str, port: int, instance: str | None) -> Iterator[ServerHandle]:
    view = _View(instance)
    handle = serve(view, Metrics(view), host, port)
    try:
        yield handle
    finally:
        handle.stop()


def containers(client: docker.DockerClient, project: str) -> list[str]:
    label = f"com.docker.compose.project={project}"
    return sorted(c.name for c in client.containers.list(all=True, filters={"label": label}))


def status_rows(cfg: Path) -> tuple[list[dict[str, Any]], str]:
    out = cli("status", "-c", str(cfg), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout), out.stderr


# -- the HTTP server names its instance ----------------------------------------------------------------


def test_every_response_names_the_instance() -> None:
    """Routes, 404s and the standard library's own 501 carry X-Reconciler-Instance when the view has one."""
    with api_server("127.0.0.1", 0, "0123456789ab") as handle:
        for method, path, status in (
            ("GET", "/api/environments", 200),
            ("GET", "/healthz", 200),
            ("GET", "/nowhere", 404),
            ("BREW", "/", 501),
        ):
            conn = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=10)
            conn.request(method, path)
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert (resp.status, resp.getheader(INSTANCE_HEADER)) == (status, "0123456789ab"), path
    with (
        api_server("127.0.0.1", 0, None) as handle,
        urllib.request.urlopen(f"{handle.url}/healthz", timeout=10) as resp,
    ):
        assert resp.headers.get(INSTANCE_HEADER) is None


# -- where status connects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9469/api/environments"),
        ("::1", "http://[::1]:9469/api/environments"),
        ("fd00::5", "http://[fd00::5]:9469/api/environments"),
        ("0.0.0.0", "http://127.0.0.1:9469/api/environments"),
        ("::", "http://[::1]:9469/api/environments"),
        ("localhost", "http://localhost:9469/api/environments"),
    ],
)
def test_api_url_brackets_ipv6_and_maps_wildcards_to_loopback(host: str, url: str) -> None:
    """An IPv6 listen is bracketed in the URL and a wildcard listen is reached on loopback."""
    assert _api_url(host, 9469, "/api/environments") == url


NEEDS_IPV6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this host")


@pytest.mark.docker
@pytest.mark.parametrize(
    ("listen", "serve_on"),
    [
        pytest.param("[::1]", "::1", marks=NEEDS_IPV6),
        pytest.param("[::]", "::1", marks=NEEDS_IPV6),
        ("0.0.0.0", "127.0.0.1"),
    ],
)
def test_status_reaches_the_daemon_on_ipv6_and_wildcard_listens(
    tmp_path: Path, listen: str, serve_on: str
) -> None:
    """`status` asks the daemon on an IPv6 listen, and on loopback for a wildcard listen."""
    port = free_port(serve_on)
    cfg = write_config(tmp_path, tmp_path / "absent.git", unique_prefix(), listen=f"{listen}:{port}")
    with api_server(serve_on, port, instance_id(tmp_path / "state")):
        rows, stderr = status_rows(cfg)
    assert [r["project"] for r in rows] == [ELSEWHERE]
    assert "another configuration" not in stderr


# -- another configuration's daemon ---------------------------------------------------------------------


@pytest.mark.docker
def test_status_ignores_a_daemon_of_another_configuration(tmp_path: Path) -> None:
    """A daemon with another instance id on our `listen` is not shown as ours; ours is."""
    port = free_port()
    cfg = write_config(tmp_path, tmp_path / "absent.git", unique_prefix(), listen=f"127.0.0.1:{port}")
    with api_server("127.0.0.1", port, "0123456789ab"):
        rows, stderr = status_rows(cfg)
    assert ELSEWHERE not in [r["project"] for r in rows]
    assert f"the daemon on 127.0.0.1:{port} belongs to another configuration" in stderr
    assert "0123456789ab" in stderr

    # Without the header (not a reconciler, or one from before it) it is not ours either.
    with api_server("127.0.0.1", port, None):
        rows, stderr = status_rows(cfg)
    assert ELSEWHERE not in [r["project"] for r in rows]
    assert "belongs to another configuration" in stderr

    with api_server("127.0.0.1", port, instance_id(tmp_path / "state")):
        rows, stderr = status_rows(cfg)
    assert [r["project"] for r in rows] == [ELSEWHERE]
    assert "another configuration" not in stderr


# -- targets before their first deploy ------------------------------------------------------------------


@pytest.mark.docker
def test_a_fixed_branch_environment_is_a_target_before_its_first_deploy(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """suspend, history and resume work on a fixed environment that never deployed, not on a preview."""
    prefix = unique_prefix()
    cleanup(prefix)
    prod = f"{prefix}-production"
    cfg = write_config(tmp_path, repo.bare, prefix)

    out = cli("suspend", "-c", str(cfg), "production", "--reason", "not before launch")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{prod}: suspended (observed, not changed)\n"
    hist = cli("history", "-c", str(cfg), "production", "--format", "json")
    assert hist.returncode == 0, hist.stderr
    assert json.loads(hist.stdout) == []

    # The suspension holds: a sync finds master for production and deploys nothing.
    assert cli("sync", "-c", str(cfg)).returncode == 0
    assert containers(docker_client, prod) == []
    assert json.loads(cli("history", "-c", str(cfg), prod, "--format", "json").stdout) == []

    out = cli("resume", "-c", str(cfg), prod)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{prod}: resumed (follows branch 'master')\n"
    out = cli("sync", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    assert containers(docker_client, prod) != []
    assert {r["project"]: r for r in status_rows(cfg)[0]}[prod]["suspended"] is False

    out = cli("suspend", "-c", str(cfg), "preview")
    assert out.returncode == 1
    assert "no environment or project named 'preview'" in out.stderr and "Traceback" not in out.stderr


# -- one deployed environment: sync output, status without Docker, `run` -------------------------------


@dataclass
class Deployed:
    cfg: Path
    project: str
    commit: str
    port: int
    sync: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[Deployed]:
    """production deployed once by `reconciler sync` (stdout and stderr apart), for the tests below."""
    root = tmp_path_factory.mktemp("deployed")
    repo = Repo(root)
    prefix = unique_prefix()
    port = free_port()
    cfg = write_config(root, repo.bare, prefix, listen=f"127.0.0.1:{port}")
    commit = repo.commit("master", {"site/index.html": "<p>v1</p>"})
    try:
        yield Deployed(cfg, f"{prefix}-production", commit, port, cli("sync", "-c", str(cfg)))
    finally:
        api = docker_client.api
        label = "com.docker.compose.project"
        for c in api.containers(all=True, filters={"label": label}):
            if (c.get("Labels") or {}).get(label, "").startswith(prefix):
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_container(c["Id"], force=True, v=True)
        for n in docker_client.networks.list(filters={"label": label}):
            if n.attrs["Labels"].get(label, "").startswith(prefix):
                n.remove()
        for v in docker_client.volumes.list(filters={"label": label}):
            if (v.attrs.get("Labels") or {}).get(label, "").startswith(prefix):
                v.remove(force=True)


@pytest.mark.docker
def test_sync_prints_its_table_on_stdout_and_logs_on_stderr(deployed: Deployed) -> None:
    """`sync` piped: stdout holds only its result lines, the JSON log lines of the deploy are on stderr."""
    out = deployed.sync
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{deployed.project}: success at {deployed.commit[:12]}"]
    events = {(e.get("event"), e.get("project")) for e in json_lines(out.stderr)}
    assert ("deploy.done", deployed.project) in events


@pytest.mark.docker
def test_status_without_docker_shows_the_state_database_and_says_docker_is_unreachable(
    deployed: Deployed, tmp_path: Path
) -> None:
    """Docker unreachable: `status` prints the state database's table, says health and drift are unknown."""
    where = f"unix://{tmp_path}/no-engine.sock"
    out = cli("status", "-c", str(deployed.cfg), env={"DOCKER_HOST": where})
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:3] == ["APP", "ENVIRONMENT", "PROJECT"]
    (row,) = [r.split() for r in rows if deployed.project in r]
    assert deployed.commit[:8] in row and "unknown" in row
    assert f"the Docker Engine at {where} is unreachable, so health and drift are unknown" in out.stderr

    out = cli("status", "-c", str(deployed.cfg), "--format", "json", env={"DOCKER_HOST": where})
    assert out.returncode == 0, out.stderr
    assert {r["project"]: r["deployed_commit"] for r in json.loads(out.stdout)} == {
        deployed.project: deployed.commit
    }
    assert "is unreachable" in out.stderr


@pytest.mark.docker
def test_run_logs_on_stderr_and_status_trusts_its_own_daemon(deployed: Deployed, tmp_path: Path) -> None:
    """`reconciler run` logs on stderr only, names its instance on the API, and `status` uses that answer."""
    stdout, stderr = tmp_path / "run.out", tmp_path / "run.err"
    with stdout.open("wb") as out_file, stderr.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "-c", str(deployed.cfg)],
            stdout=out_file,
            stderr=err_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        url = f"http://127.0.0.1:{deployed.port}/api/environments"

        def answers() -> str | None:
            assert proc.poll() is None, stderr.read_text()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    rows = json.load(resp)
                    header = resp.headers.get(INSTANCE_HEADER)
            except OSError:
                return None
            # Polled once: production is known at the commit the fixture deployed.
            return header if any(r["project"] == deployed.project for r in rows) else None

        assert wait_for(answers, 60) == instance_id(deployed.cfg.parent / "state")
        out = cli("status", "-c", str(deployed.cfg))
        assert out.returncode == 0, out.stderr
        assert deployed.project in out.stdout and out.stderr == ""
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    assert stdout.read_text() == ""
    events = [e.get("event") for e in json_lines(stderr.read_text())]
    assert "daemon.started" in events and "daemon.stopped" in events
