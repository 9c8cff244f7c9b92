"""The config hash is a contract with every container already running: these values must never change.

A change here means every container of every user is recreated on upgrade. Bump ``spec.HASH_VERSION`` and
keep the old algorithm instead (``ServiceSpec.hash_matches`` recognizes each version's label).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler import labels as L
from reconciler.spec import HASH_VERSION, project_spec


@dataclass
class _Rendered:
    model: dict[str, Any]
    name: str = "golden"
    working_dir: str = "/srv/golden"
    config_files: tuple[str, ...] = ("/srv/golden/compose.yml",)
    bind_digests: dict[str, str] = field(default_factory=dict)


WEB = {
    "name": "golden",
    "services": {
        "web": {
            "image": "nginx:1.25",
            "command": ["nginx", "-g", "daemon off;"],
            "environment": {"A": "1", "B": None},
            "ports": [{"target": 80, "published": "8080", "protocol": "tcp", "mode": "ingress"}],
            "volumes": [
                {"type": "bind", "source": "/srv/golden/site", "target": "/srv/html", "read_only": True},
                {"type": "volume", "source": "data", "target": "/data"},
            ],
            "networks": {"default": None},
            "restart": "unless-stopped",
            "healthcheck": {"test": ["CMD", "true"], "interval": "5s"},
            "labels": {"x": "y"},
        }
    },
    "networks": {"default": {"name": "golden_default"}},
    "volumes": {"data": {"name": "golden_data"}},
}
DB = {
    "name": "golden",
    "services": {
        "db": {
            "image": "postgres:15",
            "environment": {"POSTGRES_PASSWORD": "x"},
            "deploy": {"resources": {"limits": {"memory": "512M", "cpus": "0.5"}}},
            "networks": {"default": None},
        },
        "app": {
            "image": "app:1",
            "depends_on": {"db": {"condition": "service_healthy", "required": True}},
            "networks": {"default": None},
        },
    },
    "networks": {"default": {"name": "golden_default"}},
}
# Release 0 (no io.reconciler.hash-version label) stamped these; they were computed by that release.
LEGACY = {
    "web": "2dfcaf1537a6fb958d8f28cdbf27b0649afab7b9f3621f9bcdc45644ae19c1de",
    "db": "abb5827cfd1c8686f9e44e23f94d04dd20d1401bf957091b98921b120be285de",
    "app": "3033e0f83489ced4b40c422e9255b2c9d8842b2fe5410c7f6da168c2a3b76a12",
}
VERSION_1 = {
    "web": "2dfcaf1537a6fb958d8f28cdbf27b0649afab7b9f3621f9bcdc45644ae19c1de",
    "db": "abb5827cfd1c8686f9e44e23f94d04dd20d1401bf957091b98921b120be285de",
    "app": "098cc1a943d30a5109ed07dd3c05338c266f020c74805f12966666750e6d370a",
}


def _hashes(model: dict[str, Any], **kw: Any) -> dict[str, tuple[str, str]]:
    spec = project_spec(_Rendered(model, **kw))
    return {s.name: (s.config_hash, s.legacy_hash) for s in spec.services}


def test_hash_values_are_pinned() -> None:
    """Version 1 and the legacy (release 0) hash of fixed inputs keep their exact values."""
    assert HASH_VERSION == 1
    got = {**_hashes(WEB), **_hashes(DB)}
    assert {k: v[0] for k, v in got.items()} == VERSION_1
    assert {k: v[1] for k, v in got.items()} == LEGACY


def test_containers_of_release_0_are_recognized() -> None:
    """A container stamped by release 0 (no version label) matches its unchanged service: no recreate."""
    svc = project_spec(_Rendered(DB)).service("app")
    assert svc is not None
    assert svc.hash_matches({L.CONFIG_HASH: LEGACY["app"]})
    assert svc.hash_matches({L.CONFIG_HASH: VERSION_1["app"], L.HASH_VERSION: "1"})
    assert not svc.hash_matches({L.CONFIG_HASH: LEGACY["app"], L.HASH_VERSION: "1"})
    assert not svc.hash_matches({L.CONFIG_HASH: "0" * 64})


def test_bind_digest_enters_the_hash_and_depends_on_leaves_it() -> None:
    """A mounted file's content digest changes the hash; depends_on and the source's tree do not."""
    base = _hashes(WEB)["web"][0]
    same = _hashes(WEB, bind_digests={"/srv/golden/site": "a" * 40})["web"][0]
    other = _hashes(WEB, bind_digests={"/srv/golden/site": "b" * 40})["web"][0]
    assert base != same != other
    assert _hashes(WEB, bind_digests={"/srv/golden/site": "a" * 40})["web"][0] == same
    no_deps = {**DB, "services": {**DB["services"], "app": {"image": "app:1", "networks": {"default": None}}}}
    assert _hashes(no_deps)["app"][0] == VERSION_1["app"]
