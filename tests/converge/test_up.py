"""`up`, `plan` and `down` of a realistic stack on the real Docker Engine, and Compose v2 seeing it."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime

import pytest

from reconciler import labels as L
from reconciler.plan import Action
from reconciler.status import Health
from tests.converge.conftest import BUSYBOX, Stack, docker
from tests.converge.helpers import compose

pytestmark = pytest.mark.docker

STACK = f"""
services:
  db:
    image: {BUSYBOX}
    init: true
    command: ["sh", "-c", "mkdir -p /tmp && touch /tmp/ready && exec sleep 3600"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 1s
      retries: 20
    volumes: [data:/data]
  migrate:
    image: {BUSYBOX}
    command: ["sh", "-c", "echo migrated > /data/migrated && echo migration done"]
    volumes: [data:/data]
    depends_on:
      db: {{condition: service_healthy}}
  web:
    image: {BUSYBOX}
    init: true
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    env_file: web.env
    environment: {{MODE: one}}
    volumes: ["./site:/www:ro"]
    ports: ["127.0.0.1::8080"]
    depends_on:
      migrate: {{condition: service_completed_successfully}}
volumes:
  data:
"""
FILES = {
    "web.env": "GREETING=hello from env_file\n",
    "site/index.html": "<h1>served from a bind mount</h1>\n",
}


def ts(value: str) -> datetime:
    """Docker's RFC 3339 nano timestamps, to microseconds."""
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}")


def get(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_stack_converges_in_dependency_order_and_plan_is_then_empty(stack: Stack) -> None:
    """db becomes healthy, then migrate runs to completion, then web starts and serves its bind mount."""
    stack.write(STACK, **FILES)
    plan = stack.up()
    assert [(c.action, c.container) for c in plan.changes] == [
        (Action.CREATE, f"{stack.name}-db-1"),
        (Action.CREATE, f"{stack.name}-migrate-1"),
        (Action.CREATE, f"{stack.name}-web-1"),
    ]
    c = stack.containers()
    db, migrate, web = (c[f"{stack.name}-{s}-1"] for s in ("db", "migrate", "web"))
    first_healthy = min(ts(p["End"]) for p in db["State"]["Health"]["Log"] if p["ExitCode"] == 0)
    assert first_healthy <= ts(migrate["State"]["StartedAt"])
    assert (migrate["State"]["Status"], migrate["State"]["ExitCode"]) == ("exited", 0)
    assert ts(migrate["State"]["FinishedAt"]) <= ts(web["State"]["StartedAt"])
    assert "GREETING=hello from env_file" in web["Config"]["Env"]
    port = web["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    page = get(f"http://127.0.0.1:{port}/index.html", time.monotonic() + 10)
    assert "served from a bind mount" in page
    # Right after up: no false drift from Docker's defaults.
    again = stack.plan()
    assert again.is_noop, again.changes
    assert again.health is Health.HEALTHY
    assert stack.up().is_noop
    assert stack.ids() == {n: i["Id"] for n, i in c.items()}


def test_changing_one_service_recreates_only_it(stack: Stack) -> None:
    """Editing web's environment recreates web only; db keeps running and migrate is not re-run."""
    stack.write(STACK, **FILES)
    stack.up()
    before = stack.ids()
    stack.write(STACK.replace("MODE: one", "MODE: two"), **FILES)
    plan = stack.plan()
    assert [(c.action, c.service, c.fields) for c in plan.changes] == [
        (Action.RECREATE, "web", ("environment",))
    ]
    stack.up()
    after = stack.ids()
    web = f"{stack.name}-web-1"
    assert after[web] != before[web]
    assert {n: i for n, i in after.items() if n != web} == {n: i for n, i in before.items() if n != web}
    assert "MODE=two" in stack.containers()[web]["Config"]["Env"]
    assert stack.plan().is_noop


def test_removed_service_is_removed_as_orphan(stack: Stack) -> None:
    """A service deleted from the file has its container removed by the next up."""
    stack.write(STACK, **FILES)
    stack.up()
    without_web = STACK[: STACK.index("  web:")] + "volumes:\n  data:\n"
    stack.write(without_web, **FILES)
    plan = stack.plan()
    assert [(c.action, c.container, c.details) for c in plan.changes] == [
        (Action.REMOVE, f"{stack.name}-web-1", "service 'web' is not in the config")
    ]
    stack.up()
    assert sorted(stack.containers()) == [f"{stack.name}-db-1", f"{stack.name}-migrate-1"]


def test_down_removes_containers_and_networks_and_keeps_volumes(stack: Stack) -> None:
    """down leaves the named volume (with its data) unless asked to remove volumes."""
    stack.write(STACK, **FILES)
    stack.up()
    assert stack.converger.volume_names(stack.name) == [f"{stack.name}_data"]
    stack.converger.down(stack.name, timeout=2)
    assert stack.containers() == {}
    assert docker("network", "ls", "-q", "--filter", f"label={L.PROJECT}={stack.name}").stdout.strip() == ""
    assert stack.converger.volume_names(stack.name) == [f"{stack.name}_data"]
    stack.up()  # the data survives a redeploy: migrate's marker is still there
    out = docker("exec", f"{stack.name}-db-1", "cat", "/data/migrated").stdout
    assert out.strip() == "migrated"
    stack.converger.down(stack.name, volumes=True, timeout=2)
    assert stack.converger.volume_names(stack.name) == []


def test_compose_v2_lists_and_removes_what_we_created(stack: Stack) -> None:
    """The real `docker-compose -p NAME ps` shows our containers and `down` removes them and the network."""
    stack.write(STACK, **FILES)
    stack.up()
    ps = compose(stack.name, "ps", "-a", "--format", "json")
    assert ps.returncode == 0, ps.stderr
    rows = [json.loads(line) for line in ps.stdout.splitlines() if line.strip()]
    assert sorted((r["Service"], r["Name"]) for r in rows) == [
        ("db", f"{stack.name}-db-1"),
        ("migrate", f"{stack.name}-migrate-1"),
        ("web", f"{stack.name}-web-1"),
    ]
    filtered = docker("ps", "-a", "--filter", f"label={L.PROJECT}={stack.name}", "--format", "{{.Names}}")
    assert sorted(filtered.stdout.split()) == sorted(r["Name"] for r in rows)
    down = compose(stack.name, "down")
    assert down.returncode == 0, down.stderr
    assert stack.containers() == {}
    assert docker("network", "ls", "-q", "--filter", f"name={stack.name}_default").stdout.strip() == ""


def test_networks_volumes_and_aliases_follow_compose_naming(stack: Stack) -> None:
    """Networks and volumes are {project}_{key} with Compose's labels; services resolve each other by name."""
    stack.write(
        f"""
        services:
          a:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
            networks:
              back: {{aliases: [alpha]}}
              default:
            volumes: [cache:/cache]
          b:
            image: {BUSYBOX}
            init: true
            command: ["sleep", "3600"]
        networks:
          back:
        volumes:
          cache:
        """
    )
    stack.up(labels={L.APP: "demo", L.EPHEMERAL: "true"})
    net = json.loads(docker("network", "inspect", f"{stack.name}_back").stdout)[0]
    assert net["Labels"][L.PROJECT] == stack.name and net["Labels"][L.NETWORK] == "back"
    assert L.CONFIG_HASH not in net["Labels"] and net["Labels"][L.APP] == "demo"
    vol = json.loads(docker("volume", "inspect", f"{stack.name}_cache").stdout)[0]
    assert vol["Labels"][L.VOLUME] == "cache" and vol["Labels"][L.EPHEMERAL] == "true"
    a = stack.containers()[f"{stack.name}-a-1"]
    assert a["Config"]["Labels"][L.APP] == "demo"
    aliases = a["NetworkSettings"]["Networks"][f"{stack.name}_back"]["Aliases"]
    assert {"a", "alpha", f"{stack.name}-a-1"} <= set(aliases)
    # b reaches a by service name on the default network, and by container name.
    for host in ("a", f"{stack.name}-a-1"):
        docker("exec", f"{stack.name}-b-1", "ping", "-c", "1", "-W", "2", host)
    assert stack.plan().is_noop
