"""Failed deploys name the service and the reason; bad input is refused before any Docker call."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from reconciler.converge import Converger
from reconciler.errors import DeployError, InvalidNameError, UnsupportedError
from tests.converge.conftest import BUSYBOX, Stack
from tests.converge.helpers import Rendered

pytestmark = pytest.mark.docker


class NoDocker:
    """An engine that fails the test on any call: proves validation happens before Docker is touched."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Docker was called ({name}) before the input was validated")


def test_healthcheck_timeout_names_service_and_probe_output(stack: Stack) -> None:
    """A dependency that never becomes healthy fails up with its name, the timeout and the probe's output."""
    stack.write(
        f"""
        services:
          db:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
            healthcheck:
              test: ["CMD-SHELL", "echo probe-says-not-yet; exit 1"]
              interval: 1s
              retries: 1000
          web:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
            depends_on:
              db: {{condition: service_healthy}}
        """
    )
    with pytest.raises(DeployError) as err:
        stack.up(timeout=3)
    assert (err.value.service, err.value.reason) == ("db", "Timeout")
    assert "did not become healthy within 3s" in str(err.value)
    assert "probe-says-not-yet" in str(err.value)
    assert f"{stack.name}-web-1" not in stack.containers()  # the dependent was never created


def test_unhealthy_service_fails_with_probe_output(stack: Stack) -> None:
    """A service whose healthcheck fails its retries fails up as Unhealthy, with the probe's output."""
    stack.write(
        f"""
        services:
          api:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
            healthcheck:
              test: ["CMD-SHELL", "echo cannot-connect; exit 1"]
              interval: 1s
              retries: 1
        """
    )
    with pytest.raises(DeployError) as err:
        stack.up(timeout=30)
    assert (err.value.service, err.value.reason) == ("api", "Unhealthy")
    assert "cannot-connect" in str(err.value)


def test_failed_one_shot_names_exit_code_and_last_log_lines(stack: Stack) -> None:
    """A migration that exits non-zero fails up with its exit code and last log lines; web never starts."""
    stack.write(
        f"""
        services:
          migrate:
            image: {BUSYBOX}
            command: ["sh", "-c", "for i in $$(seq 1 30); do echo line $$i; done; echo boom; exit 3"]
          web:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
            depends_on:
              migrate: {{condition: service_completed_successfully}}
        """
    )
    with pytest.raises(DeployError) as err:
        stack.up()
    message = str(err.value)
    assert (err.value.service, err.value.reason) == ("migrate", "Exited")
    assert "exited with code 3" in message
    assert "boom" in message and "line 30" in message and "line 5\n" not in message  # only the last 20
    assert f"{stack.name}-web-1" not in stack.containers()


def test_service_that_cannot_start_is_named(stack: Stack) -> None:
    """A container the engine cannot start (missing executable) fails up naming the service."""
    stack.write(f"services:\n  app:\n    image: {BUSYBOX}\n    command: [/no/such/binary]\n")
    with pytest.raises(DeployError) as err:
        stack.up()
    assert (err.value.service, err.value.reason) == ("app", "StartFailed")
    assert "/no/such/binary" in str(err.value)


def test_missing_image_with_pull_policy_never_is_named(stack: Stack) -> None:
    """An absent image that may not be pulled fails up naming the service and the image."""
    stack.write(f"services:\n  app:\n    image: {stack.name}-absent:1\n    pull_policy: never\n")
    with pytest.raises(DeployError) as err:
        stack.up()
    assert (err.value.service, err.value.reason) == ("app", "ImageMissing")
    assert f"{stack.name}-absent:1" in str(err.value)


def test_cancel_stops_waiting_for_health(stack: Stack) -> None:
    """Setting `cancel` while up waits for a healthcheck ends up early with reason Cancelled."""
    stack.write(
        f"""
        services:
          slow:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
            healthcheck: {{test: ["CMD", "false"], interval: 1s, retries: 1000}}
        """
    )
    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    try:
        with pytest.raises(DeployError) as err:
            stack.up(timeout=600, cancel=cancel)
    finally:
        timer.cancel()
    assert err.value.reason == "Cancelled"


def test_unsupported_key_is_refused_before_any_docker_call(stack: Stack) -> None:
    """A key the engine cannot converge fails plan and up with the key and service named."""
    stack.write(
        f"services:\n  app:\n    image: {BUSYBOX}\n    external_links: [o]\n  o:\n    image: {BUSYBOX}\n"
    )
    converger = Converger(NoDocker())
    for call in (converger.plan, converger.up):
        with pytest.raises(UnsupportedError) as err:
            call(stack.render())
        assert "'external_links'" in str(err.value) and "'app'" in str(err.value)


def test_invalid_project_name_is_refused_before_any_docker_call() -> None:
    """A project name Compose would reject is refused by up, plan and down without touching Docker."""
    converger = Converger(NoDocker())
    bad = Rendered("Bad.Name", "/tmp", (), {"name": "Bad.Name", "services": {}})
    for call in (lambda: converger.up(bad), lambda: converger.plan(bad), lambda: converger.down("Bad.Name")):
        with pytest.raises(InvalidNameError):
            call()
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    cli = subprocess.run(
        [sys.executable, "-m", "reconciler", "down", "-p", "Bad.Name"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert cli.returncode == 1
    assert "invalid project name 'Bad.Name'" in cli.stderr and "Traceback" not in cli.stderr
