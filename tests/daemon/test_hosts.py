"""One daemon, two Docker Engines: production on the main engine, previews on a second one (issue 12).

The second engine (scripts/dockerd2.sh) stands in for another host. Each host is observed, checked for drift
and listened to on its own, so stopping the second engine leaves production converging on time.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler.cli import main as cli
from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.report.metrics import Metrics
from tests.daemon.conftest import Repo, wait_for
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_engine_restart import _remove_projects
from tests.daemon.test_lifecycle import containers, sync_all
from tests.daemon.test_run_process import Daemon, free_port
from tests.engines import engine_url, second_engine_answers, second_engine_lock, start_engine, stop_engine
from tests.report.promtext import samples

pytestmark = pytest.mark.docker


@pytest.fixture
def engine_b(docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """The second engine, held for the test (other tests stop and restart it), left running afterwards."""
    with second_engine_lock():
        start_engine(2)
        client = docker.DockerClient(base_url=engine_url(2))
        prefixes: list[str] = []
        client.prefixes = prefixes  # type: ignore[attr-defined]
        yield client
        if not second_engine_answers():
            start_engine(2)  # a test that stopped it and failed
        for prefix in prefixes:
            _remove_projects(client, prefix)
        client.close()


def two_host_config(tmp_path: Path, repo: Repo, prefix: str, **overrides: Any) -> Path:
    """Production (self-healing) on the default host, previews on host ``b`` (the second engine)."""
    envs = {
        "production": {"self_heal": True},
        "staging": {"branch": "nope"},
        "preview": {"host": "b"},
    }
    for name, extra in overrides.pop("envs", {}).items():
        envs.setdefault(name, {}).update(extra)
    return write_config(
        tmp_path, repo.bare, prefix, hosts={"b": {"docker": engine_url(2)}}, envs=envs, **overrides
    )


def test_production_on_one_engine_previews_on_another(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, engine_b: Any, cleanup: Any
) -> None:
    """Each environment's containers are on its own host; status, API and metrics name the host."""
    prefix = unique_prefix()
    cleanup(prefix)
    engine_b.prefixes.append(prefix)
    repo.branch("feature/a", change="<p>a</p>")
    daemon = _daemon(load_config(two_host_config(tmp_path, repo, prefix)))
    sync_all(daemon)

    prod, preview = f"{prefix}-production", f"{prefix}-test-feature-a"
    statuses = {s.project: s for s in daemon.environments()}
    assert statuses[prod].health == "Healthy", statuses[prod].error
    assert statuses[preview].health == "Healthy", statuses[preview].error
    assert (statuses[prod].host, statuses[preview].host) == ("local", "b")
    assert set(containers(docker_client, prod)) == {"db", "migrate", "web"}
    assert containers(docker_client, preview) == {}
    assert set(containers(engine_b, preview)) == {"db", "migrate", "web", "maildev"}
    assert containers(engine_b, prod) == {}

    text = Metrics(daemon).exposition()[0].decode()
    hosts = {ls["project"]: ls["host"] for ls, _ in samples(text)["reconciler_environment_out_of_sync"]}
    assert hosts == {prod: "local", preview: "b"}
    up = {ls["host"]: v for ls, v in samples(text)["reconciler_docker_up"]}
    assert up == {"local": 1, "b": 1}
    assert engine_url(2) not in text  # the host's name, never its address

    # Drift on host b is found on host b; deleting the branch removes the preview there.
    engine_b.containers.get(f"{preview}-web-1").stop(timeout=1)
    daemon.check_drift()
    drifts = {
        (d.service, str(d.reason)) for s in daemon.environments() if s.project == preview for d in s.drifts
    }
    assert ("web", "stopped") in drifts
    repo.delete("feature/a")
    sync_all(daemon)
    wait_for(lambda: not containers(engine_b, preview), 60)
    assert set(containers(docker_client, prod)) == {"db", "migrate", "web"}


def test_a_host_going_down_leaves_the_other_hosts_environments_converging(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, engine_b: Any, cleanup: Any
) -> None:
    """`reconciler run` with engine b stopped: docker_up{host="b"} is 0, production still self-heals
    and deploys a push on the default host; engine b coming back is seen again."""
    prefix = unique_prefix()
    cleanup(prefix)
    engine_b.prefixes.append(prefix)
    repo.branch("feature/b", change="<p>b</p>")
    port = free_port()
    cfg = two_host_config(tmp_path, repo, prefix, listen=f"127.0.0.1:{port}", drift_interval="2s")
    d = Daemon(cfg, port, tmp_path / "daemon.log")
    prod, preview = f"{prefix}-production", f"{prefix}-test-feature-b"
    try:
        d.start()

        def converged(project: str) -> Callable[[], bool]:
            def check() -> bool:
                env = d.api().get(project, {})
                return env.get("health") == "Healthy" and env.get("sync") == "Synced"

            return check

        wait_for(converged(prod), 180)
        wait_for(converged(preview), 180)
        assert d.api()[preview]["host"] == "b"

        stop_engine(2)
        up_b = ("reconciler_docker_up", (("host", "b"),))
        up_local = ("reconciler_docker_up", (("host", "local"),))
        wait_for(lambda: d.metrics().get(up_b) == 0, 60)
        assert d.metrics().get(up_local) == 1
        assert d.get("/healthz")  # one remote host down is reported, the daemon stays healthy

        # Production self-heals on the default host while b is down.
        web = f"{prod}-web-1"
        old_id = docker_client.containers.get(web).id
        docker_client.containers.get(web).remove(force=True)
        wait_for(lambda: _running_id(docker_client, web) not in (None, old_id), 90)
        # ...and a push to master is deployed there.
        head = repo.commit("master", {"site/index.html": "<p>v2</p>"})
        assert cli(["sync", "-c", str(cfg), prod]) == 0
        wait_for(lambda: d.api()[prod]["deployed_commit"] == head, 60)

        # Engine b is back: its preview (stopped with the engine, no restart policy) is observed again.
        start_engine(2)
        wait_for(lambda: d.metrics().get(up_b) == 1, 90)
        wait_for(lambda: any(x["reason"] == "stopped" for x in d.api()[preview]["drifts"]), 60)
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


def _running_id(client: docker.DockerClient, name: str) -> str | None:
    try:
        c = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    return str(c.id) if c.status == "running" else None


def test_a_changed_host_waits_for_move_which_stops_the_old_stack_first(
    tmp_path: Path,
    repo: Repo,
    docker_client: docker.DockerClient,
    engine_b: Any,
    cleanup: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Production moved to host b in the file is refused (and keeps running) until `reconciler move`,
    which removes it from the old host (volumes stay) and deploys the same commit on host b."""
    prefix = unique_prefix()
    cleanup(prefix)
    engine_b.prefixes.append(prefix)
    cfg = two_host_config(tmp_path, repo, prefix)
    daemon = _daemon(load_config(cfg))
    sync_all(daemon)
    prod = f"{prefix}-production"
    deployed = daemon.state.last_applied(prod)
    assert deployed is not None
    volumes_before = {
        v.name for v in docker_client.volumes.list(filters={"label": f"com.docker.compose.project={prod}"})
    }
    assert volumes_before

    doc = yaml.safe_load(cfg.read_text())
    doc["apps"]["demo"]["environments"]["production"]["host"] = "b"
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    moved = _daemon(load_config(cfg))
    repo.commit("master", {"site/index.html": "<p>not yet</p>"})
    sync_all(moved)
    status = {s.project: s for s in moved.environments()}[prod]
    assert status.host == "local"
    assert "reconciler move" in status.error
    assert moved.state.last_applied(prod) == deployed  # the push waits for the move
    assert set(containers(docker_client, prod)) == {"db", "migrate", "web"}

    capsys.readouterr()
    assert cli(["sync", "-c", str(cfg), prod]) == 1
    out = capsys.readouterr()
    assert f"{prod}: waiting for a move at {deployed[:12]}" in out.out
    assert f"reconciler move -c FILE {prod} b" in out.err

    # `move` confirms only what the file says.
    assert cli(["move", "-c", str(cfg), prod, "local"]) == 1
    assert "places environment 'production' on host 'b'" in capsys.readouterr().err
    assert cli(["move", "-c", str(cfg), prod, "b"]) == 0
    assert f"{prod}: moved to host b at {deployed[:12]}" in capsys.readouterr().out
    assert containers(docker_client, prod) == {}
    assert set(containers(engine_b, prod)) == {"db", "migrate", "web"}
    volumes_after = {
        v.name for v in docker_client.volumes.list(filters={"label": f"com.docker.compose.project={prod}"})
    }
    assert volumes_after == volumes_before  # data never moves by itself, and is never deleted

    after = _daemon(load_config(cfg))
    sync_all(after)
    status = {s.project: s for s in after.environments()}[prod]
    assert status.host == "b" and not status.error
    assert status.deployed_commit != deployed  # the waiting push is deployed on host b now


def test_a_remote_host_refuses_binds_of_the_checkout(tmp_path: Path, repo: Repo, cleanup: Any) -> None:
    """The example app bind-mounts ./site: on a tcp:// host without shared_fs that file is not there,
    so the deploy is refused before any Docker call, naming the host, the path and what to do."""
    prefix = unique_prefix()
    cleanup(prefix)
    cfg = write_config(
        tmp_path,
        repo.bare,
        prefix,
        hosts={"far": {"docker": "tcp://127.0.0.1:9"}},
        envs={"production": {"host": "far"}, "staging": {"branch": "nope"}, "preview": {"branches": ["x-*"]}},
    )
    daemon = _daemon(load_config(cfg))
    sync_all(daemon)
    status = {s.project: s for s in daemon.environments()}[f"{prefix}-production"]
    assert status.last_deploy is not None and status.last_deploy.result == "failure"
    error = status.last_deploy.error
    assert "host 'far'" in error and "./site" in error and "shared_fs: true" in error


def test_move_refuses_while_the_old_host_does_not_answer(
    tmp_path: Path,
    repo: Repo,
    docker_client: docker.DockerClient,
    cleanup: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An outage of the old host is no verdict: `move` stops nothing, records nothing, and says how to go
    on; the stack keeps running there."""
    from tests.dockerproxy import DockerProxy

    prefix = unique_prefix()
    cleanup(prefix)
    with DockerProxy() as proxy:
        cfg = write_config(
            tmp_path,
            repo.bare,
            prefix,
            hosts={"old": {"docker": proxy.url}},
            envs={
                "production": {"host": "old"},
                "staging": {"branch": "nope"},
                "preview": {"branches": ["x-*"]},
            },
        )
        daemon = _daemon(load_config(cfg))
        sync_all(daemon)
        prod = f"{prefix}-production"
        assert daemon.state.placement(prod) == "old"
        doc = yaml.safe_load(cfg.read_text())
        doc["apps"]["demo"]["environments"]["production"]["host"] = "local"
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        before = {s: c.id for s, c in containers(docker_client, prod).items()}
        capsys.readouterr()
        with proxy.outage():
            assert cli(["move", "-c", str(cfg), prod, "local"]) == 1
            err = capsys.readouterr().err
        assert f"cannot stop {prod} on host 'old'" in err and "--abandon" in err and "Traceback" not in err
        assert daemon.state.placement(prod) == "old"
        assert {s: c.id for s, c in containers(docker_client, prod).items()} == before
