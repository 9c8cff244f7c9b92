"""The deploy policy: each denied key of a preview is a violation, fixed environments allow it, and
`policy:` in environments.yaml is read over the defaults with located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from reconciler.config.parser import parse_config
from reconciler.errors import ConfigError
from reconciler.policy import (
    EPHEMERAL,
    PERMISSIVE,
    Allow,
    Facts,
    Limits,
    Policy,
    apply_limits,
    evaluate,
    is_database_image,
    parse_memory,
)

CHECKOUT = "/srv/state/checkouts/trees/t1"
STABLE = "/srv/state/checkouts/demo-x"


def _model(svc: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "demo-x", "services": {"web": {"image": "app:1", **svc}}, **top}


def _bind(source: str) -> dict[str, Any]:
    return {"volumes": [{"type": "bind", "source": source, "target": "/mnt"}]}


def _facts(**kw: Any) -> Facts:
    return Facts(checkout=CHECKOUT, project="demo-x", **kw)


# (id, service keys, top-level keys, facts, expected (key, rule) pairs)
DENIED: list[tuple[str, dict[str, Any], dict[str, Any], Facts, list[tuple[str, str]]]] = [
    ("privileged", {"privileged": True}, {}, _facts(), [("privileged", "privileged")]),
    ("network_mode", {"network_mode": "host"}, {}, _facts(), [("network_mode", "host_namespaces")]),
    ("pid", {"pid": "host"}, {}, _facts(), [("pid", "host_namespaces")]),
    ("ipc", {"ipc": "host"}, {}, _facts(), [("ipc", "host_namespaces")]),
    ("uts", {"uts": "host"}, {}, _facts(), [("uts", "host_namespaces")]),
    ("userns_mode", {"userns_mode": "host"}, {}, _facts(), [("userns_mode", "host_namespaces")]),
    ("devices", {"devices": [{"source": "/dev/fuse", "target": "/dev/fuse"}]}, {}, _facts(),
     [("devices", "devices")]),
    ("socket", _bind("/var/run/docker.sock"), {}, _facts(),
     [("volumes", "docker_socket"), ("volumes", "binds_outside_checkout")]),
    ("socket /run", _bind("/run/docker.sock"), {}, _facts(),
     [("volumes", "docker_socket"), ("volumes", "binds_outside_checkout")]),
    ("socket parent", _bind("/var/run"), {}, _facts(),
     [("volumes", "docker_socket"), ("volumes", "binds_outside_checkout")]),
    ("root", _bind("/"), {}, _facts(), [("volumes", "docker_socket"), ("volumes", "binds_outside_checkout")]),
    ("socket via symlink in checkout", _bind(f"{STABLE}/sock"), {},
     _facts(real_paths={f"{STABLE}/sock": "/run/docker.sock"}),
     [("volumes", "docker_socket"), ("volumes", "binds_outside_checkout")]),
    ("socket via DOCKER_HOST", _bind("/srv/d.sock"), {}, _facts(sockets=("/srv/d.sock",)),
     [("volumes", "docker_socket"), ("volumes", "binds_outside_checkout")]),
    ("bind /etc", _bind("/etc"), {}, _facts(), [("volumes", "binds_outside_checkout")]),
    ("symlink leaving the checkout", _bind(f"{STABLE}/etc"), {},
     _facts(real_paths={f"{STABLE}/etc": "/etc"}), [("volumes", "binds_outside_checkout")]),
    ("secret file", {"secrets": [{"source": "s"}]}, {"secrets": {"s": {"file": "/etc/shadow"}}}, _facts(),
     [("secrets.s.file", "binds_outside_checkout")]),
    ("config file", {"configs": ["c"]}, {"configs": {"c": {"file": "/etc/passwd"}}}, _facts(),
     [("configs.c.file", "binds_outside_checkout")]),
    ("build context", {"build": {"context": "/etc"}}, {}, _facts(),
     [("build.context", "binds_outside_checkout")]),
    ("volume bound to the host", {"volumes": [{"type": "volume", "source": "v", "target": "/m"}]},
     {"volumes": {"v": {"name": "demo-x_v", "driver_opts": {"type": "none", "o": "bind", "device": "/"}}}},
     _facts(), [("volumes.v.driver_opts.device", "docker_socket"),
                ("volumes.v.driver_opts.device", "binds_outside_checkout")]),
    ("dockerfile outside", {"build": {"context": f"{STABLE}/app", "dockerfile": "/etc/Dockerfile"}}, {},
     _facts(real_paths={f"{STABLE}/app": f"{CHECKOUT}/app"}),
     [("build.dockerfile", "binds_outside_checkout")]),
    ("additional context", {"build": {"context": "https://x/y.git", "additional_contexts": {"h": "/home"}}},
     {}, _facts(), [("build.additional_contexts.h", "binds_outside_checkout")]),
    ("cap_add", {"cap_add": ["CHOWN", "SYS_ADMIN", "CAP_NET_ADMIN"]}, {}, _facts(),
     [("cap_add", "cap_add"), ("cap_add", "cap_add")]),
    ("apparmor", {"security_opt": ["apparmor=unconfined"]}, {}, _facts(), [("security_opt", "unconfined")]),
    ("seccomp", {"security_opt": ["seccomp:unconfined"]}, {}, _facts(), [("security_opt", "unconfined")]),
    ("label", {"security_opt": ["label:disable", "label=disable"]}, {}, _facts(),
     [("security_opt", "unconfined"), ("security_opt", "unconfined")]),
    ("external volume", {}, {"volumes": {"db": {"name": "db", "external": True}}}, _facts(),
     [("volumes.db.external", "external")]),
    ("another stack's container", {"volumes_from": ["container:prod-db-1", "db"], "pid": "container:x"}, {},
     _facts(), [("volumes_from", "external"), ("pid", "external")]),
    ("external network", {}, {"networks": {"n": {"name": "n", "external": True}}}, _facts(),
     [("networks.n.external", "external")]),
    ("volume of another project", {}, {"volumes": {"db": {"name": "demo-production-dbdata"}}},
     _facts(owners={("volume", "demo-production-dbdata"): "demo-production"}),
     [("volumes.db.name", "external")]),
    ("network of no project", {}, {"networks": {"n": {"name": "shared"}}},
     _facts(owners={("network", "shared"): ""}), [("networks.n.name", "external")]),
    ("memory above the maximum", {"mem_limit": "4294967296"}, {}, _facts(), [("mem_limit", "limits")]),
    ("cpus above the maximum", {"deploy": {"resources": {"limits": {"cpus": 4}}}}, {}, _facts(),
     [("cpus", "limits")]),
    ("pids above the maximum", {"pids_limit": 100000}, {}, _facts(), [("pids_limit", "limits")]),
    ("unlimited pids", {"pids_limit": -1}, {}, _facts(), [("pids_limit", "limits")]),
    ("scale", {"scale": 10}, {}, _facts(), [("scale", "max_replicas")]),
    ("replicas", {"deploy": {"replicas": 10}}, {}, _facts(), [("deploy.replicas", "max_replicas")]),
    ("database port", {"image": "postgres:16", "ports": [{"target": 5432, "published": "5432"}]}, {},
     _facts(), [("ports", "database_ports")]),
    ("database port on ::", {"image": "docker.io/library/redis", "ports": [
        {"target": 6379, "published": "6379", "host_ip": "::"}]}, {}, _facts(),
     [("ports", "database_ports")]),
    ("database on a random port", {"image": "postgis/postgis:15", "ports": [{"target": 5432}]}, {}, _facts(),
     [("ports", "database_ports")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("svc", "top", "facts", "expected"), [d[1:] for d in DENIED], ids=[d[0] for d in DENIED]
)
def test_ephemeral_default_denies(
    svc: dict[str, Any], top: dict[str, Any], facts: Facts, expected: list[tuple[str, str]]
) -> None:
    """Each denied key of a preview gives exactly the expected violations, each naming the service."""
    found = evaluate(_model(svc, **top), EPHEMERAL, facts)
    assert sorted((v.key, v.rule) for v in found) == sorted(expected)
    assert all(v.service in ("web", None) and v.value for v in found)


@pytest.mark.parametrize(
    ("svc", "top", "facts", "expected"), [d[1:] for d in DENIED], ids=[d[0] for d in DENIED]
)
def test_fixed_default_allows_all_but_database_ports(
    svc: dict[str, Any], top: dict[str, Any], facts: Facts, expected: list[tuple[str, str]]
) -> None:
    """A fixed environment's default refuses only a database port on a public address."""
    found = evaluate(_model(svc, **top), PERMISSIVE, facts)
    assert [(v.key, v.rule) for v in found] == [e for e in expected if e[1] == "database_ports"]


ALLOWED: list[tuple[str, dict[str, Any]]] = [
    ("bind inside the checkout", _bind(f"{STABLE}/data")),
    ("safe caps", {"cap_add": ["chown", "NET_BIND_SERVICE"]}),
    ("confined security_opt", {"security_opt": ["no-new-privileges:true"]}),
    ("database on loopback", {"image": "postgres:16", "ports": [
        {"target": 5432, "published": "5432", "host_ip": "127.0.0.1"}]}),
    ("database on ::1", {"image": "mysql", "ports": [
        {"target": 3306, "published": "3306", "host_ip": "::1"}]}),
    ("public web port", {"image": "nginx", "ports": [{"target": 80, "published": "8080"}]}),
    ("limits within the maximum", {"mem_limit": "536870912", "cpus": 0.5, "pids_limit": 100, "scale": 2}),
    ("service network mode", {"network_mode": "service:db"}),
]  # fmt: skip


@pytest.mark.parametrize("svc", [a[1] for a in ALLOWED], ids=[a[0] for a in ALLOWED])
def test_ephemeral_default_allows(svc: dict[str, Any]) -> None:
    """Keys that stay inside the preview pass the safe defaults."""
    facts = _facts(real_paths={f"{STABLE}/data": f"{CHECKOUT}/data"})
    assert evaluate(_model(svc), EPHEMERAL, facts) == []


def test_own_volume_name_is_not_foreign() -> None:
    """A fixed-name volume this project already owns (or that does not exist yet) is fine."""
    model = _model({}, volumes={"db": {"name": "mine"}, "new": {"name": "fresh"}})
    assert evaluate(model, EPHEMERAL, _facts(owners={("volume", "mine"): "demo-x"})) == []


def test_external_names_allow_only_those() -> None:
    """`external: [proxy]` lets the listed networks through and still refuses every other."""
    policy = Policy(**{**EPHEMERAL.__dict__, "external_names": ("proxy",)})
    model = _model(
        {}, networks={"proxy": {"name": "proxy", "external": True}, "x": {"name": "x", "external": True}}
    )
    assert [v.key for v in evaluate(model, policy, _facts())] == ["networks.x.external"]


def test_exception_is_pinned_to_service_and_image() -> None:
    """An `allow:` exception covers its service only while it runs the named image."""
    policy = Policy(
        **{**EPHEMERAL.__dict__, "allow": (Allow("web", "traefik:*", frozenset({"docker_socket"})),)}
    )
    svc = {**_bind("/var/run/docker.sock"), "image": "traefik:v3"}
    rules = [v.rule for v in evaluate(_model(svc), policy, _facts())]
    assert rules == ["binds_outside_checkout"]
    svc["image"] = "evil:latest"
    assert sorted(v.rule for v in evaluate(_model(svc), policy, _facts())) == [
        "binds_outside_checkout",
        "docker_socket",
    ]


def test_every_violation_is_listed() -> None:
    """Several services with several problems: every one is reported, services in name order."""
    model = {
        "services": {
            "b": {"image": "x", "privileged": True, "pid": "host"},
            "a": {"image": "redis:7", "ports": [{"target": 6379, "published": "6379"}]},
        }
    }
    found = evaluate(model, EPHEMERAL, _facts())
    assert [(v.service, v.key) for v in found] == [("a", "ports"), ("b", "privileged"), ("b", "pid")]
    assert str(found[1]) == "service 'b': privileged = true (policy `privileged`)"


def test_port_range() -> None:
    """Published host ports must fall in the environment's range; a random port is not bounded."""
    policy = Policy(port_range=(8000, 8999))
    ports = [
        {"target": 80, "published": "8080"},
        {"target": 81, "published": "9000"},
        {"target": 82, "published": "8990-9010"},
        {"target": 83},
    ]
    found = evaluate(_model({"ports": ports}), policy, _facts())
    assert [v.value for v in found] == ["0.0.0.0:9000:81", "0.0.0.0:8990-9010:82"]


def test_apply_limits_fills_only_missing_limits() -> None:
    """Services without limits get the policy's; a service's own limits stay as written."""
    model = {
        "services": {
            "a": {"image": "x"},
            "b": {
                "image": "x",
                "mem_limit": "1000",
                "deploy": {"resources": {"limits": {"cpus": 0.5, "pids": 9}}},
            },
        }
    }
    out = apply_limits(model, Policy(limits=Limits(memory=1 << 20, cpus=1.0, pids=64)))
    assert out["services"]["a"] == {"image": "x", "mem_limit": str(1 << 20), "cpus": 1.0, "pids_limit": 64}
    assert out["services"]["b"] == model["services"]["b"]
    assert apply_limits(model, PERMISSIVE) is model


def test_helpers() -> None:
    """Sizes parse with units; database images match on the repository's basename."""
    assert parse_memory("512m") == 512 << 20 and parse_memory("1GiB") == 1 << 30 and parse_memory(7) == 7
    assert parse_memory("lots") is None
    assert is_database_image("registry.example.org:5000/team/postgres@sha256:abc", ("postgres",))
    assert not is_database_image("postgres-exporter:1", ("postgres",))


# -- environments.yaml ------------------------------------------------------------------------------


def _config(tmp_path: Path, policy: str, *, ephemeral: bool = True) -> Any:
    head = (
        "apps:\n  app:\n    repo: https://example.org/app.git\n    environments:\n      env:\n"
        + ('        branches: ["*"]\n        project: "app-{branch}"\n' if ephemeral else
           "        branch: main\n        project: app-main\n")
        + f"        compose: [compose.yml]\n        ephemeral: {'true' if ephemeral else 'false'}\n"
    )  # fmt: skip
    text = head + textwrap.indent(policy, "        ")
    return parse_config(text, tmp_path / "environments.yaml").apps[0].environments[0]


def test_config_defaults_by_kind(tmp_path: Path) -> None:
    """No `policy:`: previews get the safe defaults, fixed environments the permissive ones."""
    assert _config(tmp_path, "").policy == EPHEMERAL
    assert _config(tmp_path, "", ephemeral=False).policy == PERMISSIVE


def test_config_keys(tmp_path: Path) -> None:
    """Each key given replaces its default; database_images extends the built-in list."""
    env = _config(
        tmp_path,
        textwrap.dedent("""\
        policy:
          privileged: true
          cap_add: [sys_ptrace]
          limits: {memory: 2g, cpus: null}
          max_replicas: 5
          ports: {range: "8000-8999", database: allow}
          database_images: ["clickhouse*"]
          external: [proxy]
          allow:
            - {service: traefik, image: "traefik:*", docker_socket: true, binds_outside_checkout: true}
        """),
    )
    p = env.policy
    assert p.privileged and not p.devices and p.cap_add == ("SYS_PTRACE",)
    assert p.limits == Limits(memory=2 << 30, cpus=None, pids=512)
    assert (p.max_replicas, p.port_range, p.database_ports) == (5, (8000, 8999), True)
    assert p.database_images[-1] == "clickhouse*" and "postgres" in p.database_images
    assert (p.external, p.external_names) == (False, ("proxy",))
    assert p.allow == (Allow("traefik", "traefik:*", frozenset({"docker_socket", "binds_outside_checkout"})),)


@pytest.mark.parametrize(
    ("policy", "line", "key", "words"),
    [
        ("policy: {privilegd: true}", 10, "policy.privilegd", "did you mean 'privileged'"),
        ("policy: {privileged: yes please}", 10, "policy.privileged", "true or false"),
        ("policy:\n  limits: {memory: lots}", 11, "policy.limits.memory", "size"),
        ("policy:\n  ports: {range: 9000-8000}", 11, "policy.ports.range", "LOW-HIGH"),
        ("policy:\n  ports: {database: maybe}", 11, "policy.ports.database", "allow or deny"),
        ("policy: {external: 3}", 10, "policy.external", "list of names"),
        ("policy:\n  allow:\n    - {service: web, image: x}", 12, "policy.allow", "allows nothing"),
        ("policy:\n  allow:\n    - {service: web, docker_socket: true}", 12, "policy.allow.image", "image"),
        (
            "policy:\n  allow:\n    - {service: w, image: x, sudo: true}",
            12,
            "policy.allow.sudo",
            "unknown key",
        ),
    ],
)
def test_config_errors(tmp_path: Path, policy: str, line: int, key: str, words: str) -> None:
    """A wrong `policy:` is a ConfigError naming its line and key."""
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, policy)
    assert info.value.location.line == line
    assert info.value.location.key == f"apps.app.environments.env.{key}"
    assert words in str(info.value)
