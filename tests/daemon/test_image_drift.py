"""An image tag that now points elsewhere is drift `image`: a tag moved on this host, or (with
`image_check: registry`) a newer image pushed to the registry under the same tag. Healing recreates on it."""

from __future__ import annotations

import contextlib
import http.server
import io
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.report.metrics import Metrics
from tests.daemon.conftest import BASE_IMAGE, Repo, wait_for
from tests.daemon.test_lifecycle import containers
from tests.daemon.test_run_process import Daemon as RunningDaemon
from tests.daemon.test_run_process import free_port

pytestmark = pytest.mark.docker


def _config(tmp: Path, repo: Repo, project: str, image: str, **env: Any) -> Path:
    """One environment, two services running ``image`` (committed to the test repository)."""
    service = {
        "image": image,
        "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
        "stop_grace_period": "2s",
    }
    compose = {"services": {"app": service, "worker": dict(service)}}  # no YAML alias
    repo.commit("master", {"image.yml": yaml.safe_dump(compose)})
    production = {"branch": "master", "project": project, "compose": ["image.yml"], "timeout": "60s", **env}
    app = {"repo": str(repo.bare), "poll_interval": "1h", "environments": {"production": production}}
    doc = {
        "state_dir": str(tmp / "state"),
        "listen": f"127.0.0.1:{free_port()}",
        "drift_interval": "1s",
        "apps": {"demo": app},
    }
    path = tmp / "environments.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _other_image(scratch: Scratch, tag: str, label: str) -> str:
    """Build a tiny image different from the base image (one LABEL more), tagged ``tag``; returns its ID."""
    dockerfile = f"FROM {BASE_IMAGE}\nLABEL io.reconciler.test.variant={label}\n"
    fileobj = io.BytesIO(dockerfile.encode())
    image, _ = scratch.client.images.build(fileobj=fileobj, tag=tag, rm=True, pull=False)
    scratch.images.append(tag)
    return str(image.id)


class Scratch:
    """What one test made: its project and the image tags and IDs to remove once its containers are gone."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.project = f"tim{uuid.uuid4().hex[:6]}-production"
        self.images: list[str] = []
        self.repositories: list[str] = []  # pushed here: the digest references a push or pull leaves

    def tag(self, image: str, ref: str) -> None:
        name, _, tag = ref.rpartition(":")
        self.client.images.get(image).tag(name, tag)
        self.images.append(ref)

    def remove(self) -> None:
        label = f"com.docker.compose.project={self.project}"
        for c in self.client.api.containers(all=True, filters={"label": label}):
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(c["Id"], force=True, v=True)
        for ref in reversed(self.images):
            with contextlib.suppress(docker.errors.APIError):
                self.client.api.remove_image(ref)
        for image in self.client.api.images(all=True):
            for digest in image.get("RepoDigests") or ():
                if digest.partition("@")[0] in self.repositories:
                    with contextlib.suppress(docker.errors.APIError):
                        self.client.api.remove_image(digest)


@pytest.fixture
def scratch(docker_client: docker.DockerClient, cleanup: Any) -> Iterator[Scratch]:
    s = Scratch(docker_client)
    cleanup(s.project)
    yield s
    s.remove()


@pytest.fixture
def local_tag(scratch: Scratch) -> str:
    """A tag of its own for the base image (never busybox:1.36, which other tests share)."""
    ref = f"reconciler-test/imgdrift-{uuid.uuid4().hex[:6]}:1"
    scratch.tag(BASE_IMAGE, ref)
    return ref


def _image_drifts(api_env: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in api_env.get("drifts", ()) if d["reason"] == "image"]


def test_retagged_image_is_reported_then_sync_recreates(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, scratch: Scratch, local_tag: str
) -> None:
    """`docker tag other TAG` under a running service: the daemon reports drift `image` (API and
    reconciler_service_drift) within a drift interval; `reconciler sync` recreates on the new image."""
    project = scratch.project
    cfg = _config(tmp_path, repo, project, local_tag)
    port = load_config(cfg).listen[1]
    d = RunningDaemon(cfg, port, tmp_path / "daemon.log")
    d.start()
    try:
        wait_for(lambda: d.api().get(project, {}).get("health") == "Healthy", 120)
        assert _image_drifts(d.api()[project]) == []
        old = containers(docker_client, project)["app"].image.id

        new = _other_image(scratch, local_tag.replace(":1", ":other"), "moved")
        docker_client.images.get(new).tag(local_tag)
        drifts = wait_for(lambda: _image_drifts(d.api()[project]), 30)
        assert isinstance(drifts, list) and sorted(x["service"] for x in drifts) == ["app", "worker"]
        assert old.removeprefix("sha256:")[:12] in drifts[0]["detail"]
        key = (
            "reconciler_service_drift",
            tuple(
                sorted(
                    {
                        "app": "demo",
                        "environment": "production",
                        "host": "local",
                        "project": project,
                        "service": "app",
                        "reason": "image",
                    }.items()
                )
            ),
        )
        assert d.metrics().get(key) == 1.0
        assert containers(docker_client, project)["app"].image.id == old  # reported, not healed

        sync = subprocess.run(
            [sys.executable, "-m", "reconciler", "sync", "-c", str(cfg), "production"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert sync.returncode == 0, sync.stderr
        assert {c.image.id for c in containers(docker_client, project).values()} == {new}
        wait_for(lambda: not _image_drifts(d.api()[project]), 30)
        wait_for(lambda: key not in d.metrics(), 30)
    finally:
        d.stop(signal.SIGTERM)


def test_retagged_image_self_heals(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, scratch: Scratch, local_tag: str
) -> None:
    """With self_heal, the moved tag's drift is repaired: the container runs the new image, no drift left."""
    project = scratch.project
    daemon = _daemon(load_config(_config(tmp_path, repo, project, local_tag, self_heal=True)))
    daemon.attach_metrics(Metrics(daemon))
    daemon.poll("demo")
    assert daemon.queue.wait_idle(240)
    try:
        # One image lookup per distinct image per drift check, however many services share it.
        engine = daemon.converger._engine
        looked_up: list[str] = []
        image_id = engine.image_id
        engine.image_id = lambda ref: looked_up.append(ref) or image_id(ref)
        daemon.check_drift()
        assert looked_up == [local_tag]
        engine.image_id = image_id

        new = _other_image(scratch, local_tag.replace(":1", ":other"), "healed")
        docker_client.images.get(new).tag(local_tag)
        daemon.check_drift()
        assert daemon.queue.wait_idle(120)
        assert {c.image.id for c in containers(docker_client, project).values()} == {new}
        daemon.check_drift()
        status = {s.project: s for s in daemon.environments()}[project]
        assert status.drifts == ()
    finally:
        daemon.queue.shutdown()


# --- image_check: registry, against a real registry ---

REGISTRY_BIN = Path("/usr/bin/docker-registry")


class Registry:
    """Debian's docker-registry (distribution v2) on a free 127.0.0.1 port, storage under the test's
    temp dir. Docker treats 127.0.0.0/8 registries as insecure, so push and pull need no TLS."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        doc = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}},
            "http": {"addr": self.host},
        }
        config.write_text(yaml.safe_dump(doc))
        log = (self.root / "registry.log").open("ab")
        self.proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)], stdout=log, stderr=log)
        wait_for(self._answers, 30)

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, (self.root / "registry.log").read_text()
        try:
            with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2) as resp:
                return int(resp.status) == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    if not REGISTRY_BIN.is_file():
        pytest.skip("docker-registry is not installed (scripts/setup.sh installs it)")
    reg = Registry(tmp_path / "registry")
    reg.start()
    yield reg
    reg.stop()


def _push(client: docker.DockerClient, ref: str) -> str:
    """Push ``ref``; returns the digest the registry now serves for it."""
    name, _, tag = ref.rpartition(":")
    last: dict[str, Any] = {}
    for chunk in client.api.push(name, tag=tag, stream=True, decode=True):
        assert "error" not in chunk, chunk
        last = chunk
    return str(last["aux"]["Digest"])


def _registry_drifts(daemon: Any, project: str) -> list[Any]:
    daemon.check_drift()
    status = {s.project: s for s in daemon.environments()}[project]
    return [d for d in status.drifts if str(d.reason) == "image"]


def _deployed_from_registry(
    tmp_path: Path, repo: Repo, scratch: Scratch, registry: Registry, **env: Any
) -> tuple[str, str, Path, Any]:
    """The base image pushed as REGISTRY/app:1 and deployed by a daemon with `image_check: registry`."""
    ref = f"{registry.host}/app:1"
    scratch.repositories.append(f"{registry.host}/app")
    scratch.tag(BASE_IMAGE, ref)
    _push(scratch.client, ref)
    old = str(scratch.client.images.get(ref).id)
    cfg = _config(
        tmp_path, repo, scratch.project, ref, image_check="registry", image_check_interval="1s", **env
    )
    daemon = _daemon(load_config(cfg))
    daemon.attach_metrics(Metrics(daemon))
    daemon.poll("demo")
    assert daemon.queue.wait_idle(240)
    assert containers(scratch.client, scratch.project)["app"].image.id == old
    assert _registry_drifts(daemon, scratch.project) == []
    return ref, old, cfg, daemon


def _push_newer(scratch: Scratch, ref: str, old: str) -> tuple[str, str]:
    """Another image pushed under ``ref``, as a CI elsewhere would: this host's tag still names ``old``."""
    new = _other_image(scratch, ref, f"newer-{uuid.uuid4().hex[:6]}")
    digest = _push(scratch.client, ref)
    scratch.tag(old, ref)
    assert scratch.client.images.get(ref).id == old
    return new, digest


@pytest.mark.parametrize("heal", ["sync", "self_heal"])
def test_newer_image_in_registry_is_drift_and_healing_pulls(
    tmp_path: Path, repo: Repo, scratch: Scratch, registry: Registry, heal: str
) -> None:
    """A newer image pushed to the registry under the running tag is drift `image` after the interval;
    `reconciler sync` (or self-heal) pulls the tag, recreates on the new image, and the drift is gone."""
    self_heal = heal == "self_heal"
    ref, old, cfg, daemon = _deployed_from_registry(tmp_path, repo, scratch, registry, self_heal=self_heal)
    project = scratch.project
    try:
        new, digest = _push_newer(scratch, ref, old)
        if self_heal:

            def healed() -> bool:
                daemon.check_drift()
                assert daemon.queue.wait_idle(120)
                return {c.image.id for c in containers(scratch.client, project).values()} == {new}

            wait_for(healed, 60)
        else:
            drifts = wait_for(lambda: _registry_drifts(daemon, project), 30)
            assert isinstance(drifts, list) and sorted(d.service for d in drifts) == ["app", "worker"]
            assert "registry has a newer image" in drifts[0].detail
            assert digest.removeprefix("sha256:")[:12] in drifts[0].detail
            assert containers(scratch.client, project)["app"].image.id == old  # reported only
            sync = subprocess.run(
                [sys.executable, "-m", "reconciler", "sync", "-c", str(cfg), "production"],
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert sync.returncode == 0, sync.stderr
            assert {c.image.id for c in containers(scratch.client, project).values()} == {new}
        assert scratch.client.images.get(ref).id == new
        wait_for(lambda: _registry_drifts(daemon, project) == [], 30)
    finally:
        daemon.queue.shutdown()


class _Failing(http.server.BaseHTTPRequestHandler):
    """A registry that answers every request with 503, after ``delay`` seconds."""

    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


def _failed_checks(daemon: Any) -> float:
    for line in daemon.metrics.exposition()[0].decode().splitlines():
        if line.startswith("reconciler_retries_total{") and 'reason="image_check"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_unreachable_failing_or_slow_registry_is_no_drift_but_counted(
    tmp_path: Path, repo: Repo, scratch: Scratch, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry that stopped, answers 503, or answers too slowly is never a verdict: no drift, the
    container is kept, and each failed check is counted in reconciler_retries_total{reason="image_check"}."""
    import reconciler.daemon.core

    monkeypatch.setattr(reconciler.daemon.core, "_REGISTRY_TIMEOUT", 3.0)  # "slow" comes sooner
    _, old, _, daemon = _deployed_from_registry(tmp_path, repo, scratch, registry)
    registry.stop()
    try:
        for delay in (None, 0.0, 10.0):  # refused connection, 503 at once, 503 after the timeout
            server = None
            if delay is not None:
                handler = type("Handler", (_Failing,), {"delay": delay})
                server = _Server(("127.0.0.1", registry.port), handler)
                threading.Thread(target=server.serve_forever, daemon=True).start()
            try:
                before = _failed_checks(daemon)

                def counted(before: float = before) -> bool:
                    assert _registry_drifts(daemon, scratch.project) == []
                    return _failed_checks(daemon) > before

                wait_for(counted, 60)
            finally:
                if server is not None:
                    server.shutdown()
                    server.server_close()
        assert {c.image.id for c in containers(scratch.client, scratch.project).values()} == {old}
    finally:
        daemon.queue.shutdown()
