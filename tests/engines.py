"""A second Docker Engine on this machine, standing in for a second host: started, restarted and stopped
through scripts/dockerd2.sh. Used by tests that take an engine away from a running daemon
(tests/daemon/test_engine_restart.py)."""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import requests.exceptions

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "dockerd2.sh"
SECOND_ENGINE = "unix:///run/reconciler-test-2.sock"
LOCK = Path("/run/reconciler-test-2.tests.lock")
# The script waits up to 180 s for its lock, then up to 60 s for each step (dockerd's exit, containerd's
# exit, the start); it fails with the engine's log tail before this.
_SCRIPT_TIMEOUT = 420.0


def engine_url(index: int) -> str:
    """The DOCKER_HOST URL of test engine ``index`` (2: a second host; 3: the single-node swarm)."""
    return f"unix:///run/reconciler-test-{index}.sock"


def start_engine(index: int) -> str:
    """Start test engine ``index`` unless it answers (base image loaded); its DOCKER_HOST URL."""
    _script("start", index)
    return engine_url(index)


def stop_engine(index: int) -> None:
    _script("stop", index)


def _script(action: str, index: int = 2) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), action, str(index)],
        capture_output=True,
        text=True,
        timeout=_SCRIPT_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"scripts/dockerd2.sh {action} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )


def second_engine_answers() -> bool:
    """True when the second engine answers a ping (it may have been started by an earlier test run)."""
    try:
        # docker-py asks the engine its API version here, so an absent engine fails already.
        client = docker.DockerClient(base_url=SECOND_ENGINE, timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False
    finally:
        client.close()


def second_engine() -> str:
    """Start the second engine unless it already answers (base image loaded); its DOCKER_HOST URL."""
    _script("start")
    return SECOND_ENGINE


def stop_second_engine() -> None:
    """SIGTERM the second engine and wait until it and its containerd have exited (its containers stop)."""
    _script("stop")


def restart_second_engine() -> None:
    """Stop, then start the second engine, as a host's Docker service restart does."""
    _script("restart")


@contextlib.contextmanager
def second_engine_lock() -> Iterator[None]:
    """Hold the second engine for this process: test runs of several sessions (which stop and restart it)
    take turns. An OS file lock, released by the kernel when the process dies."""
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
