"""Real compose setups, made runnable offline, give the containers Compose v2 gives, field by field.

Each fixture is rendered, then only what cannot run here is rewritten: every image becomes the local busybox
running `sleep 3600` (no `build:`), health checks run `true` (at most every 2s), a user name the image lacks
is dropped, fixed host ports move to free ones and `container_name` gets the project's prefix. Mounts,
networks, env, labels, limits and the rest stay. We `up` it, inspect, `down`; then Compose does the same
under the same project name; ``comparable`` (test_compose_parity) must match for every container.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from reconciler.render import RenderOptions, render
from tests.converge.conftest import BUSYBOX, Stack, inspect
from tests.converge.helpers import compose
from tests.converge.test_compose_parity import comparable
from tests.converge.test_real_projects import REAL

pytestmark = pytest.mark.docker

# Fixtures that run offline without touching the host outside their directory (no absolute host paths to
# create, no host networking or privileged containers, no IPv6 networks). Not log-collector: its `memlock: -1`
# ulimit is refused by this test engine's runtime ("error setting rlimit type 8"), for Compose as for us.
PARITY = [
    "document-archive",
    "erp-postgres",
    "file-sync-fpm-proxy",
    "host-monitor",
    "log-search-stack",
    "network-inventory",
    "photo-library",
    "proxy-go-postgres-queue",
    "proxy-python-mariadb",
    "spa-node-mariadb",
    "video-meetings",
    "waf-gateway",
]
# Files a fixture's secrets need (the real setups keep them next to the compose file).
SECRETS = {"db/password.txt": "s3cret\n"}
# Differences we know and accept: (section, field) -> (ours, Compose's). `healthcheck: {disable: false}`
# (photo-library) makes Compose send an empty HealthConfig, which Docker fills from the image exactly as it
# does for none; normalizing it into the spec would change the pinned config hash of such services.
KNOWN = {("config", "Healthcheck"): (None, {})}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total, number = 0.0, ""
    i = 0
    while i < len(value):
        if value[i].isdigit() or value[i] == ".":
            number += value[i]
            i += 1
            continue
        unit = "ms" if value.startswith("ms", i) else value[i]
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    return total


def runnable(model: dict[str, Any], project: str) -> dict[str, Any]:
    """The rendered model with only what cannot run offline rewritten (see the module docstring)."""
    model = json.loads(json.dumps(model))
    model["name"] = project
    ports: dict[tuple[str, str], str] = {}
    for svc in model["services"].values():
        svc.pop("build", None)
        svc.pop("pull_policy", None)
        svc["image"] = BUSYBOX
        svc["entrypoint"] = ["sleep"]
        svc["command"] = ["3600"]
        if svc.get("user") and not str(svc["user"]).split(":")[0].isdigit():
            del svc["user"]  # the busybox image has no /etc/passwd
        health = svc.get("healthcheck")
        if health and "test" in health:
            health["test"] = ["CMD", "true"]
            if _seconds(health.get("interval", "30s")) > 2:
                health["interval"] = "2s"
        if svc.get("container_name"):
            svc["container_name"] = f"{project}-{svc['container_name']}"
        for port in svc.get("ports") or ():
            if port.get("published"):
                key = (port.get("host_ip", ""), port["published"])
                port["published"] = ports.setdefault(key, str(_free_port()))
    return model


def _comparable(name: str, project: str) -> dict[str, Any]:
    """``comparable``, with Docker's default hostname (the container id) made equal on both sides."""
    out = comparable(name, project)
    if out["config"]["Hostname"] == inspect(name)["Id"][:12]:
        out["config"]["Hostname"] = "CONTAINER-ID"
    return out


def _bind_sources(model: dict[str, Any], directory: Path) -> None:
    """Create the bind sources in the project that Docker will not create (long syntax): a real checkout has
    them. A name with a dot is a file (nginx.conf, config.xml), anything else a directory."""
    for svc in model["services"].values():
        for vol in svc.get("volumes") or ():
            source = Path(vol.get("source") or "/")
            if vol["type"] != "bind" or (vol.get("bind") or {}).get("create_host_path") or source.exists():
                continue
            assert source.is_relative_to(directory), f"{source} is outside the project"
            if "." in source.name:
                source.parent.mkdir(parents=True, exist_ok=True)
                source.touch()
            else:
                source.mkdir(parents=True)


def _names(model: dict[str, Any], project: str) -> list[str]:
    return sorted(
        svc.get("container_name") or f"{project}-{name}-1" for name, svc in model["services"].items()
    )


@pytest.mark.parametrize("name", PARITY)
def test_we_create_what_compose_creates(stack: Stack, name: str) -> None:
    """Every container of the setup matches Compose v2's (config, host config, mounts, network aliases), and
    our plan right after our `up` is a no-op."""
    shutil.copytree(REAL / name, stack.dir, dirs_exist_ok=True)
    for rel, text in SECRETS.items():
        (stack.dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (stack.dir / rel).write_text(text)
    environ = {"HOME": str(stack.dir), "PWD": str(stack.dir)}
    rendered = render(RenderOptions(project_name=stack.name, working_dir=str(stack.dir), environ=environ))
    model = runnable(rendered.model, stack.name)
    _bind_sources(model, stack.dir)
    for stale in ("compose.yaml", "docker-compose.yml"):
        (stack.dir / stale).unlink(missing_ok=True)
    compose_file: Path = stack.dir / "compose.yaml"
    compose_file.write_text(json.dumps(model, indent=1))
    names = _names(model, stack.name)

    stack.up(timeout=90)
    assert stack.plan().is_noop  # and a second look finds nothing to change
    ours = {n: _comparable(n, stack.name) for n in names}
    stack.converger.down(stack.name, volumes=True, timeout=1)
    try:
        done = compose(stack.name, "-f", str(compose_file), "up", "-d", cwd=stack.dir)
        assert done.returncode == 0, done.stderr
        theirs = {n: _comparable(n, stack.name) for n in names}
    finally:
        compose(stack.name, "-f", str(compose_file), "down", "-v", "-t", "1", cwd=stack.dir)
    assert _differences(ours, theirs) == {}


def _differences(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """container -> section -> key -> (ours, Compose's), for every field that differs."""
    out: dict[str, Any] = {}
    for container, sections in ours.items():
        for section, mine in sections.items():
            other = theirs[container][section]
            if mine == other:
                continue
            if isinstance(mine, dict) and isinstance(other, dict):
                keys = sorted(k for k in set(mine) | set(other) if mine.get(k) != other.get(k))
                diff = {k: (mine.get(k), other.get(k)) for k in keys}
                diff = {k: v for k, v in diff.items() if KNOWN.get((section, k)) != v}
            else:
                diff = {"": (mine, other)}
            if diff:
                out.setdefault(container.removeprefix("tcv-"), {})[section] = diff
    return out
