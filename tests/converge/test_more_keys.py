"""Keys Compose v2 deploys outside Swarm (deploy.mode/restart_policy/resources.reservations, cgroup,
platform): our container gets what Compose's gets, and Swarm-only keys are ignored with a notice."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconciler.errors import DeployError
from reconciler.spec import container_request, project_spec
from tests.converge.conftest import BUSYBOX, Stack, docker, inspect
from tests.converge.helpers import compose
from tests.converge.test_compose_parity import comparable, up_beside_compose

pytestmark = pytest.mark.docker

DEPLOY = f"""
services:
  web:
    image: {BUSYBOX}
    command: ["sleep", "300"]
    hostname: web
    extra_hosts: ["h:1.2.3.4"]  # without it Compose sends [] and we send null: not these keys' concern
    platform: linux/amd64
    cgroup: private
    restart: always
    deploy:
      mode: replicated
      labels: {{tier: front}}
      placement: {{constraints: ["node.role==manager"]}}
      update_config: {{parallelism: 2, delay: 1s}}
      rollback_config: {{parallelism: 1}}
      restart_policy: {{condition: on-failure, max_attempts: 4, delay: 5s}}
      resources:
        reservations: {{memory: 64m, cpus: "0.25"}}
"""
DEVICES = f"""
services:
  gpu:
    image: {BUSYBOX}
    deploy:
      resources:
        reservations:
          devices:
            - capabilities: [gpu]
            - {{capabilities: [gpu, utility], count: 2, driver: nvidia, options: {{a: b}}}}
            - {{capabilities: [compute], device_ids: ["0", "1"]}}
"""


def test_deploy_keys_match_compose(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    """restart_policy, reservations, cgroup and platform reach the engine as Compose's do; Swarm-only keys
    are ignored with one notice."""
    stack.write(DEPLOY)
    ours = up_beside_compose(stack)
    host = ours["host"]
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 4}
    assert (host["CgroupnsMode"], host["MemoryReservation"], host["NanoCpus"]) == ("private", 64 << 20, 0)
    notices = [line for line in capfd.readouterr().err.splitlines() if "up.keys_ignored" in line]
    assert len(notices) == 1
    ignored = (
        "deploy.labels",
        "deploy.placement",
        "deploy.update_config.parallelism",
        "deploy.rollback_config",
        "deploy.restart_policy.delay",
        "deploy.resources.reservations.cpus",
    )
    assert all(key in notices[0] for key in ignored)
    assert stack.plan().is_noop


def test_platform_reaches_the_engine(stack: Stack) -> None:
    """A platform the local image was not built for is refused by the engine at create, naming the
    service (Compose passes the platform the same way)."""
    stack.write(
        f"services:\n  arm:\n    image: {BUSYBOX}\n    platform: linux/arm64\n    pull_policy: never\n"
    )
    with pytest.raises(DeployError) as err:
        stack.up(timeout=30)
    assert err.value.service == "arm"
    assert "arm64" in str(err.value) or "platform" in str(err.value)
    assert not stack.containers()


# A registry image `x:1` built only for linux/arm64: a manifest list whose one entry the registry lacks.
_ARM = "sha256:" + "a" * 64
_LIST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "size": 100,
                "digest": _ARM,
                "platform": {"architecture": "arm64", "os": "linux"},
            }
        ],
    }
).encode()
_LIST_DIGEST = "sha256:" + hashlib.sha256(_LIST).hexdigest()


@pytest.fixture
def arm_registry() -> Iterator[tuple[int, list[str]]]:
    """A registry on 127.0.0.1 serving the arm64-only manifest list; yields its port and the paths asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked.append(self.path)
            found = self.path in ("/v2/", "/v2/x/manifests/1", f"/v2/x/manifests/{_LIST_DIGEST}")
            body = _LIST if found and self.path != "/v2/" else b"{}"
            if not found:
                body = json.dumps(
                    {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
                ).encode()
            self.send_response(200 if found else 404)
            kind = "application/vnd.docker.distribution.manifest.list.v2+json"
            self.send_header("Content-Type", kind if body is _LIST else "application/json")
            self.send_header("Docker-Content-Digest", _LIST_DIGEST)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], asked
    server.shutdown()
    server.server_close()


def test_platform_reaches_the_pull(stack: Stack, arm_registry: tuple[int, list[str]]) -> None:
    """The pull asks the registry for the image of the service's platform, not the host's."""
    port, asked = arm_registry
    stack.write(f"services:\n  arm:\n    image: 127.0.0.1:{port}/x:1\n    platform: linux/arm64\n")
    with pytest.raises(DeployError) as err:
        stack.up(timeout=30)
    assert (err.value.service, err.value.reason) == ("arm", "PullFailed")
    assert f"/v2/x/manifests/{_ARM}" in asked  # the arm64 entry: the host alone would find no match


def test_device_requests_match_compose(stack: Stack) -> None:
    """deploy.resources.reservations.devices become the DeviceRequests Compose creates (no GPU here, so
    both containers are created and never started)."""
    stack.write(DEVICES)
    spec = project_spec(stack.render())
    svc = spec.service("gpu")
    assert svc is not None
    req = container_request(spec, svc, 1, image_id="")
    stack.converger._engine.create_container(req.name, req.body)
    theirs = f"{stack.name}-compose"
    try:
        done = compose(theirs, "-f", str(stack.dir / "compose.yaml"), "create", cwd=stack.dir)
        assert done.returncode == 0, done.stderr
        reference = inspect(f"{theirs}-gpu-1")["HostConfig"]["DeviceRequests"]
    finally:
        compose(theirs, "down", "-v", "-t", "1")
    ours = inspect(req.name)["HostConfig"]["DeviceRequests"]
    assert ours == reference
    assert [(d["Count"], d["Capabilities"]) for d in ours] == [
        (-1, [["gpu"]]),
        (2, [["gpu", "utility"]]),
        (0, [["compute"]]),
    ]


SHARING = f"""
services:
  app:
    image: {BUSYBOX}
    command: ["sleep", "300"]
    hostname: app
    extra_hosts: ["h:1.2.3.4"]
    links: [b, "c:alias"]
    volumes_from: [b, "container:CEE"]
    volumes: ["data:/d:z"]
  b:
    image: {BUSYBOX}
    command: ["sleep", "300"]
    scale: 2
    volumes: ["/vb"]
  c:
    image: {BUSYBOX}
    command: ["sleep", "300"]
    container_name: CEE
    volumes: ["/vc"]
volumes:
  data:
"""


def _sharing(info: dict[str, Any], project: str, cee: str) -> dict[str, Any]:
    """The links (sorted: their order carries no meaning), volumes_from (IDs made names) and the mode of
    /d of a container, with the project and the container_name replaced."""
    froms = info["HostConfig"]["VolumesFrom"] or ()
    names = {i: inspect(i)["Name"].lstrip("/") for i in froms}
    networks = info["NetworkSettings"]["Networks"]
    text = json.dumps(
        {
            "links": {n: e["Links"] for n, e in networks.items()},
            "volumes_from": [names.get(v, v) for v in froms],
            "modes": {
                m["Destination"]: [m["Mode"], m["RW"]] for m in info["Mounts"] if m["Destination"] == "/d"
            },
        }
    )
    out: dict[str, Any] = json.loads(text.replace(cee, "CEE").replace(project, "PROJECT"))
    out["links"] = {n: sorted(links) for n, links in out["links"].items()}
    return out


def test_links_volumes_from_and_selinux_match_compose(stack: Stack) -> None:
    """links (on the endpoint), volumes_from (replica 1 of the service) and `:z` on a named volume reach
    the engine as Compose's do."""
    cee = f"{stack.name}-cee"
    stack.write(SHARING.replace("CEE", cee))
    stack.up(timeout=30)
    ours = inspect(f"{stack.name}-app-1")
    ours_sharing = _sharing(ours, stack.name, cee)
    ours_cmp = comparable(f"{stack.name}-app-1", stack.name)
    docker("rm", "-f", cee)  # container_name is global: make room for Compose's
    theirs = f"{stack.name}-compose"
    try:
        done = compose(theirs, "-f", str(stack.dir / "compose.yaml"), "up", "-d", cwd=stack.dir)
        assert done.returncode == 0, done.stderr
        reference = comparable(f"{theirs}-app-1", theirs)
        ref_sharing = _sharing(inspect(f"{theirs}-app-1"), theirs, cee)
    finally:
        compose(theirs, "down", "-v", "-t", "1")
    for section in ("config", "mounts", "aliases"):
        assert ours_cmp[section] == reference[section], section
    assert {k: v for k, v in ours_cmp["host"].items() if k != "VolumesFrom"} == {
        k: v for k, v in reference["host"].items() if k != "VolumesFrom"
    }
    assert ours_sharing == ref_sharing
    assert ours_sharing["volumes_from"] == ["PROJECT-b-1", "CEE"]
    assert ours_sharing["modes"] == {"/d": ["rw,z", True]}
    links = ours_sharing["links"]["PROJECT_default"]
    assert {"PROJECT-b-2:b-1", "PROJECT-b-1:PROJECT-b-1", "CEE:alias", "CEE:c-1"} <= set(links)


def test_volumes_from_keeps_read_only(stack: Stack) -> None:
    """`service:ro` mounts the service's volumes read-only (Compose drops the mode; Docker honours it)."""
    stack.write(
        f"services:\n  app:\n    image: {BUSYBOX}\n    command: [sleep, '300']\n    volumes_from: ['b:ro']\n"
        f"  b:\n    image: {BUSYBOX}\n    command: [sleep, '300']\n    volumes: ['/vb']\n"
    )
    stack.up(timeout=30)
    mounts = {m["Destination"]: m["RW"] for m in inspect(f"{stack.name}-app-1")["Mounts"]}
    assert mounts == {"/vb": False}
    assert stack.plan().is_noop
