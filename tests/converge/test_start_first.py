"""deploy.update_config.order: start-first replaces a web service while it keeps answering, measured by a
client container that requests it by service name in a loop for the whole update.

One limit is Docker's, not ours: disconnecting a container removes its interface before its DNS record (a
few ms idle, tens under load: libnetwork's ``sbLeave`` runs before ``Delete`` drops the record), so a
request that resolved the old container's address just then hangs. A sequential client can lose at most
that one request, and only to the old container; the tests hold the switch-over to exactly that bound."""

from __future__ import annotations

import time

import pytest

from reconciler.errors import DeployError
from tests.converge.conftest import BUSYBOX, Stack, docker

pytestmark = pytest.mark.docker

# The client prints one line per request: "ok <body> Connecting to web (<ip>:80)" or "FAIL Connecting to web
# (<ip>:80)" (wget's first progress line names the address it used). Dollars are doubled for compose.
STACK = """
services:
  web:
    image: IMAGE
    init: true
    command: ["sh", "-c", "mkdir -p /www && echo $$VERSION > /www/index.html && exec httpd -f -p 80 -h /www"]
    environment: {VERSION: one}
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1/"]
      interval: 1s
      timeout: 2s
      retries: 30
    deploy:
      update_config: {order: start-first}
  client:
    image: IMAGE
    init: true
    stop_grace_period: 1s
    command:
      - sh
      - -c
      - >-
        while true; do
        if body=$$(timeout 5 wget -O- http://web/ 2>/err);
        then echo "ok $$body $$(head -n 1 /err)"; else echo "FAIL $$(head -n 1 /err)"; fi;
        usleep 10000;
        done
    depends_on:
      web: {condition: service_healthy}
""".replace("IMAGE", BUSYBOX)


def requests_seen(stack: Stack) -> list[str]:
    """Every request the client made so far, in order."""
    out = docker("logs", f"{stack.name}-client-1").stdout.splitlines()
    return [line for line in out if line.startswith(("ok ", "FAIL "))]


def await_requests(stack: Stack, count: int) -> list[str]:
    """The client's requests once there are at least ``count`` of them (fails after a generous deadline)."""
    deadline = time.monotonic() + 60
    while len(seen := requests_seen(stack)) < count:
        assert time.monotonic() < deadline, f"the client made only {len(seen)} requests: {seen[-5:]}"
        time.sleep(0.1)
    return seen


def bodies(lines: list[str]) -> set[str]:
    """What the answered requests among ``lines`` were answered with."""
    return {line.split()[1] for line in lines if line.startswith("ok ")}


def address(stack: Stack, container: str) -> str:
    networks = stack.containers()[container]["NetworkSettings"]["Networks"]
    return str(networks[f"{stack.name}_default"]["IPAddress"])


def test_start_first_update_answers_every_request(stack: Stack) -> None:
    """A start-first update of a healthchecked web service answers requests before, during and after it,
    none fails but (at most) the one Docker's disconnect cut off on the old container, and the new
    container ends under the usual name."""
    stack.write(STACK)
    stack.up(timeout=60)
    web = f"{stack.name}-web-1"
    old_id, old_ip = stack.containers()[web]["Id"], address(stack, web)
    before = len(await_requests(stack, 5))
    stack.write(STACK.replace("VERSION: one", "VERSION: two"))
    stack.up(timeout=60)
    during = len(requests_seen(stack))
    seen = await_requests(stack, during + 5)
    failed = [line for line in seen if not line.startswith("ok ")]
    assert len(failed) <= 1 and all(f"({old_ip}:80)" in line for line in failed), failed
    assert during > before, "no request was made while the update ran"
    assert bodies(seen[:before]) == {"one"} and len(seen[:before]) == before
    assert bodies(seen[before:during]) >= {"one"}
    # After up returned only the new container answers (the request in flight then may be older).
    assert bodies(seen[during + 1 :]) == {"two"} and all(
        line.startswith("ok ") for line in seen[during + 1 :]
    )
    containers = stack.containers()
    assert sorted(containers) == [f"{stack.name}-client-1", web]
    assert containers[web]["Id"] != old_id and "VERSION=two" in containers[web]["Config"]["Env"]
    assert stack.plan().is_noop


def test_start_first_unhealthy_replacement_leaves_the_old_one_serving(stack: Stack) -> None:
    """A replacement that turns unhealthy fails the deploy and is removed; the old container, untouched,
    answers every request, and no request to it failed."""
    stack.write(STACK)
    stack.up(timeout=60)
    web = f"{stack.name}-web-1"
    old, old_ip = stack.containers()[web], address(stack, web)
    await_requests(stack, 5)
    broken = STACK.replace("VERSION: one", "VERSION: two").replace("retries: 30", "retries: 1")
    broken = broken.replace('"wget", "-q", "-O-", "http://127.0.0.1/"', '"false"')
    stack.write(broken)
    with pytest.raises(DeployError) as err:
        stack.up(timeout=60)
    assert (err.value.reason, err.value.service) == ("Unhealthy", "web")
    assert f"{web} keeps running" in str(err.value)
    after = len(requests_seen(stack))
    seen = await_requests(stack, after + 5)
    failed = [line for line in seen if not line.startswith("ok ")]
    # The replacement was in Docker's DNS while it ran: removing it may cut off one request to it.
    assert len(failed) <= 1 and not any(f"({old_ip}:80)" in line for line in failed), failed
    assert bodies(seen[after + 1 :]) == {"one"} and all(line.startswith("ok ") for line in seen[after + 1 :])
    containers = stack.containers()
    assert sorted(containers) == [f"{stack.name}-client-1", web]
    now = containers[web]
    assert now["Id"] == old["Id"] and now["State"]["StartedAt"] == old["State"]["StartedAt"]
