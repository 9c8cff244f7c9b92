"""The running daemon sees `docker update` and `docker network disconnect` on its stacks: limits,
restart_policy and networks reach reconciler_service_drift, and self-heal clears them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.daemon.ratelimit import RateLimit
from reconciler.daemon.runtime import Runtime
from reconciler.report.metrics import Metrics
from tests.converge.helpers import compose_binary
from tests.daemon.conftest import Repo, wait_for
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

pytestmark = pytest.mark.docker


def drift_lines(metrics: Metrics, project: str) -> set[tuple[str, str]]:
    """(service, reason) of every reconciler_service_drift sample of ``project``."""
    text = metrics.exposition()[0].decode()
    out = set()
    for line in text.splitlines():
        if line.startswith("reconciler_service_drift{") and f'project="{project}"' in line:
            service = re.search(r'service="([^"]*)"', line)
            reason = re.search(r'reason="([^"]*)"', line)
            assert service and reason
            out.add((service.group(1), reason.group(1)))
    return out


def test_update_and_disconnect_are_reported_then_healed(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """With healing held back the three reasons show in the metric within a drift interval; once allowed,
    self-heal recreates the containers and the drift is gone."""
    prefix = unique_prefix()
    cleanup(prefix)
    prod = f"{prefix}-production"
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"self_heal": True}})
    daemon = _daemon(load_config(cfg))
    metrics = Metrics(daemon)
    daemon.attach_metrics(metrics)
    daemon.heal_limit = RateLimit(limit=0, window=600)  # report only, until the test lets it heal
    sync_all(daemon)
    runtime = Runtime(daemon)
    runtime.start()
    try:
        assert wait_for(lambda: daemon.environments() and drift_lines(metrics, prod) == set(), 30)
        live = containers(docker_client, prod)
        web, db = live["web"], live["db"]
        network = sorted(db.attrs["NetworkSettings"]["Networks"])[0]
        for args in (
            ["update", "--pids-limit", "77", "--restart", "on-failure:2", web.id],
            ["network", "disconnect", network, db.id],
        ):
            subprocess.run(["docker", *args], check=True, capture_output=True, timeout=60)
        expected = {("web", "limits"), ("web", "restart_policy"), ("db", "networks")}
        wait_for(lambda: drift_lines(metrics, prod) == expected, 30)

        daemon.heal_limit = RateLimit(limit=5, window=600)
        wait_for(lambda: drift_lines(metrics, prod) == set() and not daemon.queue.busy(prod), 120)
        healed = containers(docker_client, prod)
        assert healed["web"].attrs["HostConfig"]["PidsLimit"] in (None, 0, -1)
        assert healed["web"].attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert network in healed["db"].attrs["NetworkSettings"]["Networks"]
    finally:
        runtime.stop()


def test_compose_up_by_hand_is_foreign_then_healed_once(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """The real Compose binary run by hand on a deployed stack makes its containers `foreign`; self-heal
    makes them ours again once, and no heal follows (no fight)."""
    prefix = unique_prefix()
    cleanup(prefix)
    prod = f"{prefix}-production"
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"self_heal": True}})
    daemon = _daemon(load_config(cfg))
    metrics = Metrics(daemon)
    daemon.attach_metrics(metrics)
    daemon.heal_limit = RateLimit(limit=0, window=600)
    sync_all(daemon)
    runtime = Runtime(daemon)
    runtime.start()
    try:
        labels = containers(docker_client, prod)["web"].labels
        files = labels["com.docker.compose.project.config_files"].split(",")
        args = [
            compose_binary(),
            "-p",
            prod,
            "--project-directory",
            labels["com.docker.compose.project.working_dir"],
        ]
        done = subprocess.run(
            [*args, *(x for f in files for x in ("-f", f)), "up", "-d", "--no-build", "--pull", "never"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        wait_for(lambda: ("web", "foreign") in drift_lines(metrics, prod), 30)
        assert {reason for _, reason in drift_lines(metrics, prod)} == {"foreign"}

        daemon.heal_limit = RateLimit(limit=5, window=600)
        wait_for(lambda: drift_lines(metrics, prod) == set() and not daemon.queue.busy(prod), 120)
        heals = re.findall(
            r'reconciler_self_heals_total\{[^}]*service="(\w+)"\} (\S+)', metrics.exposition()[0].decode()
        )
        assert heals and all(float(n) == 1.0 for _, n in heals), heals
        assert all(
            c.labels.get("io.reconciler.managed") == "true" for c in containers(docker_client, prod).values()
        )
    finally:
        runtime.stop()


def test_network_options_are_reported_and_never_healed(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A pushed change to a network's labels is network_options drift that self-heal leaves alone; after
    `down` (volumes kept) self-heal brings the stack back on a network made from the config."""
    prefix = unique_prefix()
    cleanup(prefix)
    prod = f"{prefix}-production"
    cfg = write_config(tmp_path, repo.bare, prefix, envs={"production": {"self_heal": True}})
    daemon = _daemon(load_config(cfg))
    metrics = Metrics(daemon)
    daemon.attach_metrics(metrics)
    sync_all(daemon)
    before = {s: c.id for s, c in containers(docker_client, prod).items()}

    def label(doc: dict[str, Any]) -> None:
        doc["networks"] = {"default": {"labels": {"tier": "front"}}}

    repo.edit_yaml("master", "docker-compose.yml", label)
    sync_all(daemon)
    daemon.check_drift()
    assert daemon.queue.wait_idle(120)
    net = f"{prod}_default"
    assert drift_lines(metrics, prod) == {(f"network:{net}", "network_options")}
    status = {s.project: s for s in daemon.environments()}[prod]
    assert "docker network rm" in status.drifts[0].detail
    assert {s: c.id for s, c in containers(docker_client, prod).items()} == before  # nothing recreated
    assert "reconciler_self_heals_total{" not in metrics.exposition()[0].decode()

    daemon.converger.down(prod, timeout=1)
    daemon.check_drift()  # every container missing: self-heal runs up, which makes the network anew
    assert daemon.queue.wait_idle(240)
    assert docker_client.networks.get(net).attrs["Labels"]["tier"] == "front"
    assert drift_lines(metrics, prod) == set()
    daemon.queue.shutdown()
