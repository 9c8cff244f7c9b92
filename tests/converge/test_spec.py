"""Normalizing compose services into container specs, the config hash, and refusing unsupported keys."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from reconciler import labels as L
from reconciler.errors import UnsupportedError
from reconciler.spec import FIELDS_LABEL, Condition, PullPolicy, container_request, project_spec
from tests.converge.helpers import Rendered

# Shaped exactly like `docker compose config --format json` output (long syntax everywhere).
WEB: dict[str, Any] = {
    "image": "example/web:1",
    "command": ["-c", "httpd -f"],
    "entrypoint": ["/bin/sh"],
    "environment": {"B": "2", "A": "1", "UNSET": None},
    "ports": [
        {"mode": "ingress", "target": 8080, "protocol": "tcp"},
        {"mode": "ingress", "host_ip": "127.0.0.1", "target": 8000, "published": "9000", "protocol": "udp"},
    ],
    "expose": ["3000", "4000-4001"],
    "volumes": [
        {
            "type": "bind",
            "source": "/srv/site",
            "target": "/www",
            "read_only": True,
            "bind": {"create_host_path": True},
        },
        {"type": "volume", "source": "data", "target": "/data", "volume": {}},
        {"type": "volume", "target": "/anon", "volume": {}},
        {"type": "tmpfs", "target": "/cache", "tmpfs": {"size": "1000"}},
    ],
    "networks": {"default": None, "back": {"aliases": ["w1"]}},
    "depends_on": {
        "db": {"condition": "service_healthy", "required": True, "restart": True},
        "migrate": {"condition": "service_completed_successfully", "required": True},
    },
    "healthcheck": {"test": ["CMD", "true"], "interval": "1m30s", "timeout": "500ms", "retries": 3},
    "restart": "on-failure:3",
    "labels": {"team": "web"},
    "user": "1000:1000",
    "working_dir": "/www",
    "hostname": "webhost",
    "extra_hosts": ["h=1.2.3.4"],
    "cap_add": ["NET_ADMIN"],
    "cap_drop": ["ALL"],
    "privileged": False,
    "init": True,
    "tmpfs": ["/run:size=10m"],
    "ulimits": {"nofile": {"soft": 1024, "hard": 2048}, "nproc": 512},
    "logging": {"driver": "json-file", "options": {"max-size": "10m"}},
    "stop_grace_period": "1m30s",
    "stop_signal": "SIGINT",
    "shm_size": "67108864",
    "sysctls": {"net.core.somaxconn": "1024"},
    "dns": ["8.8.8.8"],
    "mem_limit": "536870912",
    "cpus": 0.5,
    "deploy": {"replicas": 2, "resources": {"limits": {"cpus": 0.5, "memory": "536870912"}}, "placement": {}},
    "secrets": [{"source": "token", "target": "/run/secrets/token"}],
    "configs": [{"source": "conf"}],
    "profiles": ["web"],
    "pull_policy": "missing",
}
MODEL: dict[str, Any] = {
    "name": "shop",
    "services": {
        "web": WEB,
        "db": {"image": "example/db", "command": None, "entrypoint": None, "networks": {"default": None}},
        "migrate": {"image": "example/db", "command": ["migrate"], "networks": {"default": None}},
    },
    "networks": {"default": {"name": "shop_default", "ipam": {}}, "back": {"name": "shop_back", "ipam": {}}},
    "volumes": {"data": {"name": "shop_data"}},
    "secrets": {"token": {"name": "shop_token", "file": "/srv/token.txt"}},
    "configs": {"conf": {"name": "shop_conf", "file": "/srv/app.conf"}},
}


def rendered(model: dict[str, Any] | None = None) -> Rendered:
    return Rendered("shop", "/srv", ("/srv/compose.yaml",), copy.deepcopy(model or MODEL))


def with_web(**changes: Any) -> Rendered:
    model = copy.deepcopy(MODEL)
    for key, value in changes.items():
        if value is None:
            model["services"]["web"].pop(key, None)
        else:
            model["services"]["web"][key] = value
    return rendered(model)


def web_body(project: Rendered | None = None, number: int = 1) -> dict[str, Any]:
    spec = project_spec(project or rendered())
    svc = spec.service("web")
    assert svc is not None
    req = container_request(spec, svc, number, image_id="sha256:abc", extra_labels={L.APP: "shop"})
    return {"name": req.name, "connect": req.connect, **req.body}


def test_container_request_maps_every_supported_key() -> None:
    """Each supported compose key lands in the Engine API create body the way Compose would put it."""
    b = web_body()
    host = b["HostConfig"]
    assert b["name"] == "shop-web-1"
    assert b["Image"] == "example/web:1"
    assert (b["Entrypoint"], b["Cmd"]) == (["/bin/sh"], ["-c", "httpd -f"])
    assert b["Env"] == ["A=1", "B=2", "UNSET"]  # an unresolved variable is a bare name, as in Compose
    assert b["ExposedPorts"] == {
        "8080/tcp": {},
        "8000/udp": {},
        "3000/tcp": {},
        "4000/tcp": {},
        "4001/tcp": {},
    }
    assert host["PortBindings"] == {
        "8080/tcp": [{"HostIp": "", "HostPort": ""}],
        "8000/udp": [{"HostIp": "127.0.0.1", "HostPort": "9000"}],
    }
    # A named volume without options is a Binds string, as Compose v2 passes it.
    assert sorted(host["Binds"]) == ["/srv/site:/www:ro", "shop_data:/data:rw"]
    mounts = {m["Target"]: m for m in host["Mounts"]}
    assert "Source" not in mounts["/anon"]
    assert mounts["/cache"]["TmpfsOptions"] == {"SizeBytes": 1000}
    assert mounts["/run/secrets/token"] == {
        "Type": "bind", "Source": "/srv/token.txt", "Target": "/run/secrets/token", "ReadOnly": True
    }  # fmt: skip
    assert mounts["/conf"]["Source"] == "/srv/app.conf" and mounts["/conf"]["ReadOnly"]
    assert host["NetworkMode"] == "shop_back"  # priority ties are broken by name, as Compose does
    assert b["NetworkingConfig"]["EndpointsConfig"]["shop_back"]["Aliases"] == ["web", "shop-web-1", "w1"]
    assert b["connect"] == (("shop_default", {"Aliases": ["web", "shop-web-1"]}),)
    assert b["Healthcheck"] == {
        "Test": ["CMD", "true"],
        "Interval": 90 * 10**9,
        "Timeout": 5 * 10**8,
        "Retries": 3,
    }
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert (b["User"], b["WorkingDir"], b["Hostname"]) == ("1000:1000", "/www", "webhost")
    assert host["ExtraHosts"] == ["h:1.2.3.4"]
    assert (host["CapAdd"], host["CapDrop"], host["Privileged"], host["Init"]) == (
        ["NET_ADMIN"],
        ["ALL"],
        False,
        True,
    )
    assert host["Tmpfs"] == {"/run": "size=10m"}
    assert host["Ulimits"] == [
        {"Name": "nofile", "Soft": 1024, "Hard": 2048},
        {"Name": "nproc", "Soft": 512, "Hard": 512},
    ]
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m"}}
    assert (b["StopTimeout"], b["StopSignal"]) == (90, "SIGINT")
    assert (host["ShmSize"], host["Memory"], host["NanoCpus"]) == (64 * 2**20, 512 * 2**20, 5 * 10**8)
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert host["Dns"] == ["8.8.8.8"]


def test_container_labels_are_compose_labels_plus_ours() -> None:
    """Containers carry every label Compose v2 needs to list and remove them, plus our extra labels."""
    labels = web_body(number=2)["Labels"]
    assert labels[L.PROJECT] == "shop" and labels[L.SERVICE] == "web"
    assert labels[L.CONTAINER_NUMBER] == "2" and labels[L.ONEOFF] == "False"
    assert labels[L.WORKING_DIR] == "/srv" and labels[L.CONFIG_FILES] == "/srv/compose.yaml"
    assert labels[L.DEPENDS_ON] == "db:service_healthy:true,migrate:service_completed_successfully:false"
    assert labels[L.IMAGE] == "sha256:abc" and labels[L.VERSION] == "2.40.3"
    assert len(labels[L.CONFIG_HASH]) == 64 and FIELDS_LABEL in labels
    assert labels[L.APP] == "shop" and labels[L.MANAGED] == "true" and labels["team"] == "web"


def test_hash_ignores_ordering_scale_build_and_restart_of_dependencies() -> None:
    """Scaling, rebuilding, depends_on.restart and key order never change the config hash."""
    base = project_spec(rendered()).service("web")
    assert base is not None
    same = [
        with_web(environment={"UNSET": None, "B": "2", "A": "1"}),
        with_web(deploy={"replicas": 5, "resources": {"limits": {"cpus": "0.50", "memory": "512m"}}}),
        with_web(build={"context": "/srv", "args": {"X": "1"}}),
        with_web(pull_policy="always", profiles=None, cap_drop=["ALL", "ALL"]),
        with_web(depends_on={**WEB["depends_on"], "db": {"condition": "service_healthy", "required": True}}),
    ]
    for project in same:
        svc = project_spec(project).service("web")
        assert svc is not None and svc.config_hash == base.config_hash


def test_field_hashes_name_what_changed() -> None:
    """A changed value changes the hash and only the field hash of its own key."""
    base = project_spec(rendered()).service("web")
    changed = project_spec(with_web(environment={"A": "1", "B": "3", "UNSET": None})).service("web")
    assert base is not None and changed is not None
    assert base.config_hash != changed.config_hash
    diff = {
        k
        for k in base.field_hashes.keys() | changed.field_hashes.keys()
        if base.field_hashes.get(k) != changed.field_hashes.get(k)
    }
    assert diff == {"environment"}


def test_service_controls_are_read() -> None:
    """Replicas, pull policy, stop timeout and dependencies are read from the service."""
    spec = project_spec(rendered())
    web = spec.service("web")
    assert web is not None
    assert (web.replicas, web.pull_policy, web.stop_timeout) == (2, PullPolicy.MISSING, 90)
    assert [(d.service, d.condition, d.restart) for d in web.depends_on] == [
        ("db", Condition.HEALTHY, True),
        ("migrate", Condition.COMPLETED, False),
    ]
    assert [s.name for s in spec.services] == ["db", "migrate", "web"]
    assert spec.one_shots == {"migrate"}


def test_build_only_service_gets_compose_image_name() -> None:
    """A service with only `build:` is tagged {project}-{service}, as Compose v2 does."""
    model = copy.deepcopy(MODEL)
    model["services"]["api"] = {
        "build": {
            "context": "/srv/api",
            "dockerfile": "Dockerfile",
            "args": {"V": "1", "N": None},
            "target": "prod",
        }
    }
    api = project_spec(rendered(model)).service("api")
    assert api is not None and api.build is not None
    assert api.image == "shop-api"
    assert (api.build.context, api.build.args, api.build.target) == ("/srv/api", {"V": "1"}, "prod")


@pytest.mark.parametrize(
    ("service", "key"),
    [
        ({"external_links": ["db"]}, "external_links"),
        ({"links": ["db"], "networks": {"default": None, "back": None}}, "links"),
        ({"volumes_from": ["db:rx"]}, "volumes_from"),
        ({"deploy": {"mode": "global"}}, "deploy.mode"),
        ({"deploy": {"restart_policy": {"condition": "any", "max_attempts": 3}}}, "deploy.restart_policy"),
        ({"cgroup": "shared"}, "cgroup"),
        (
            {"deploy": {"resources": {"reservations": {"generic_resources": [{}]}}}},
            "deploy.resources.reservations",
        ),
        ({"network_mode": "sideways"}, "network_mode"),
        ({"pull_policy": "daily"}, "pull_policy"),
        ({"build": {"context": ".", "ssh": ["default"]}}, "build.ssh"),
        ({"volumes": [{"type": "npipe", "source": "x", "target": "/x"}]}, "volumes"),
        ({"secrets": [{"source": "token", "uid": "1"}]}, "secrets"),
        ({"post_start": [{"command": "true"}]}, "post_start"),
    ],
)
def test_unsupported_keys_are_refused_by_name(service: dict[str, Any], key: str) -> None:
    """A key we cannot converge fails with the service and key named, never silently ignored."""
    model = copy.deepcopy(MODEL)
    model["services"]["odd"] = {"image": "x", **service}
    with pytest.raises(UnsupportedError) as err:
        project_spec(rendered(model))
    assert err.value.location.service == "odd"
    assert err.value.location.key == key
    assert "'odd'" in str(err.value) and key.split(".")[0] in str(err.value)


def test_unsupported_top_level_and_secret_sources_are_refused() -> None:
    """Top-level keys and secret sources we cannot converge are refused, naming the key."""
    for extra in ({"models": {"m": {}}}, {"secrets": {"token": {"external": True}}}):
        with pytest.raises(UnsupportedError) as err:
            project_spec(rendered({**copy.deepcopy(MODEL), **extra}))
        assert err.value.location.key is not None and err.value.location.key.split(".")[0] in extra


def test_dependency_cycle_is_refused() -> None:
    """A depends_on cycle is an error naming a service in it."""
    model = copy.deepcopy(MODEL)
    model["services"]["db"]["depends_on"] = {"web": {"condition": "service_started"}}
    with pytest.raises(UnsupportedError, match="cycle"):
        project_spec(rendered(model))


def test_named_networks_and_volumes_resolve_and_external_ones_keep_their_name() -> None:
    """Networks and volumes are {project}_{key} unless named or external, as Compose names them."""
    model = copy.deepcopy(MODEL)
    model["networks"]["ext"] = {"name": "shared", "external": True}
    model["volumes"]["cache"] = {"name": "custom-cache"}
    spec = project_spec(rendered(model))
    assert {n.key: (n.name, n.external) for n in spec.networks} == {
        "default": ("shop_default", False), "back": ("shop_back", False), "ext": ("shared", True)
    }  # fmt: skip
    assert {v.key: v.name for v in spec.volumes} == {"data": "shop_data", "cache": "custom-cache"}


def test_primary_network_is_chosen_by_key_not_by_name() -> None:
    """Compose joins networks by priority, then by the service's key for them (compose-go
    ``NetworksByPriority``), not by their `name:`: the first one is the container's NetworkMode."""
    model = copy.deepcopy(MODEL)
    model["networks"].update(apps={"name": "z-apps", "ipam": {}}, control={"name": "a-control", "ipam": {}})
    model["services"]["web"]["networks"] = {"control": None, "apps": None}
    body = web_body(rendered(model))
    assert body["HostConfig"]["NetworkMode"] == "z-apps"
    assert [net for net, _ in body["connect"]] == ["a-control"]
    model["services"]["web"]["networks"]["control"] = {"priority": 10}
    assert web_body(rendered(model))["HostConfig"]["NetworkMode"] == "a-control"


def test_network_mode_host_skips_networks() -> None:
    """network_mode host/none/bridge is passed through and joins no project network."""
    body = web_body(with_web(network_mode="host", networks=None))
    assert body["HostConfig"]["NetworkMode"] == "host"
    assert "NetworkingConfig" not in body and body["connect"] == ()


def test_keep_volumes_carries_anonymous_volumes_over() -> None:
    """On recreate, the old container's anonymous volumes are reused, for declared and image volumes."""
    spec = project_spec(rendered())
    svc = spec.service("web")
    assert svc is not None
    req = container_request(
        spec, svc, 1, image_id="x", keep_volumes={"/anon": "a" * 64, "/var/lib": "b" * 64}
    )
    mounts = {m["Target"]: m for m in req.body["HostConfig"]["Mounts"]}
    assert mounts["/anon"]["Source"] == "a" * 64
    assert mounts["/var/lib"]["Source"] == "b" * 64
    assert "shop_data:/data:rw" in req.body["HostConfig"]["Binds"]  # a named volume stays named


def test_durations_and_sizes_parse_like_compose() -> None:
    """Go durations and Docker sizes normalize to the same numbers however they are written."""
    a = project_spec(with_web(stop_grace_period="90s", shm_size="64m", mem_limit="512M")).service("web")
    b = project_spec(with_web(stop_grace_period="1m30s", shm_size=64 * 2**20, mem_limit=512 * 2**20)).service(
        "web"
    )
    assert a is not None and b is not None and a.config_hash == b.config_hash
    with pytest.raises(UnsupportedError, match="duration"):
        project_spec(with_web(stop_grace_period="soon"))
