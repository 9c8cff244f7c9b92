"""Differential test: the container we create from a file is the one Compose v2 creates from it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.converge.conftest import BUSYBOX, Stack, inspect
from tests.converge.helpers import compose

pytestmark = pytest.mark.docker

# Nearly every supported service key, in the syntaxes people write.
KITCHEN_SINK = f"""
services:
  web:
    image: {BUSYBOX}
    entrypoint: ["/bin/sh"]
    command: ["-c", "exec httpd -f -p 8080 -h /www"]
    env_file: web.env
    environment: {{X: "1", UNSET_ONE: null}}
    ports: ["8080", "127.0.0.1::8081/udp"]
    expose: ["3000", "4000-4001"]
    volumes:
      - ./site:/www:ro
      - data:/data
      - /anon
      - type: tmpfs
        target: /cache
        tmpfs: {{size: 1000000}}
    networks:
      default:
      back: {{aliases: [w1]}}
    healthcheck: {{test: ["CMD", "true"], interval: 2s, timeout: 1s, retries: 2, start_period: 1s}}
    restart: on-failure:3
    labels: {{team: web}}
    user: "1000:1000"
    working_dir: /www
    hostname: webhost
    domainname: example.org
    extra_hosts: ["h:1.2.3.4"]
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    init: true
    read_only: true
    tmpfs: ["/run:size=65536"]
    ulimits: {{nofile: {{soft: 1024, hard: 2048}}, nproc: 512}}
    logging: {{driver: json-file, options: {{max-size: 10m}}}}
    stop_grace_period: 3s
    stop_signal: SIGTERM
    shm_size: 32m
    sysctls: {{net.core.somaxconn: 1024}}
    dns: [1.1.1.1]
    dns_search: [example.org]
    mem_limit: 256m
    cpus: 0.5
    pids_limit: 100
    security_opt: ["no-new-privileges:true"]
    group_add: ["100"]
    tty: true
    stdin_open: true
    secrets: [token]
    configs: [conf]
volumes:
  data:
networks:
  back:
secrets:
  token: {{file: ./token.txt}}
configs:
  conf: {{file: ./app.conf}}
"""
FILES = {"web.env": "FOO=bar\n", "site/index.html": "hi\n", "token.txt": "s3cret\n", "app.conf": "x=1\n"}


def comparable(name: str, project: str) -> dict[str, Any]:
    """What Docker made of a container, with the project name and known spelling differences removed:
    Compose writes `CAP_NET_ADMIN` and unexpanded `expose` ranges, and mounts named volumes via Binds."""
    info = json.loads(json.dumps(inspect(name)).replace(project, "PROJECT"))
    cfg = {
        k: info["Config"].get(k)
        for k in ("Cmd", "Entrypoint", "User", "WorkingDir", "Hostname", "Domainname", "Tty", "OpenStdin",
                  "StopSignal", "StopTimeout", "Healthcheck", "Image")
    }  # fmt: skip
    cfg["Env"] = sorted(info["Config"]["Env"])
    cfg["Labels"] = {
        k: v for k, v in info["Config"]["Labels"].items() if not k.startswith(("com.docker", "io."))
    }
    exposed = set()
    for port in info["Config"].get("ExposedPorts") or {}:
        number, _, proto = port.partition("/")
        first, _, last = number.partition("-")
        exposed |= {f"{n}/{proto or 'tcp'}" for n in range(int(first), int(last or first) + 1)}
    cfg["ExposedPorts"] = sorted(exposed)
    host = {k: v for k, v in info["HostConfig"].items() if k not in ("Binds", "Mounts")}
    for key in ("CapAdd", "CapDrop"):
        host[key] = sorted(c.removeprefix("CAP_") for c in host[key] or ())
    host["Devices"] = host["Devices"] or []
    host["Ulimits"] = sorted(host["Ulimits"] or (), key=lambda u: u["Name"])
    mounts = sorted(
        (
            {
                "Type": m["Type"],
                "Source": "ANONYMOUS" if re.fullmatch(r"[0-9a-f]{64}", m.get("Name", "")) else m["Source"],
                "Destination": m["Destination"],
                "RW": m["RW"],
            }
            for m in info["Mounts"]
        ),
        key=lambda m: m["Destination"],
    )
    aliases = {
        net: sorted(a for a in ep["Aliases"] or () if not re.fullmatch(r"[0-9a-f]{12}", a))
        for net, ep in info["NetworkSettings"]["Networks"].items()
    }
    return {"config": cfg, "host": host, "mounts": mounts, "aliases": aliases}


def up_beside_compose(stack: Stack, service: str = "web") -> dict[str, Any]:
    """`up` the stack's compose.yaml with us and, as another project, with Compose v2; assert that replica
    1 of ``service`` is the same container field by field, and return ours (comparable form)."""
    stack.up(timeout=30)
    theirs = f"{stack.name}-compose"
    try:
        done = compose(theirs, "-f", str(stack.dir / "compose.yaml"), "up", "-d", cwd=stack.dir)
        assert done.returncode == 0, done.stderr
        ours = comparable(f"{stack.name}-{service}-1", stack.name)
        reference = comparable(f"{theirs}-{service}-1", theirs)
    finally:
        compose(theirs, "down", "-v", "-t", "1")
    for section in ours:
        assert ours[section] == reference[section], section
    return ours


def test_we_create_what_compose_creates(stack: Stack) -> None:
    """Config, host config, mounts and network aliases match Compose v2's container for the same file."""
    stack.write(KITCHEN_SINK, **FILES)
    up_beside_compose(stack)
    assert stack.plan().is_noop
