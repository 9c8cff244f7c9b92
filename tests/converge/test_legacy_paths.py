"""Release 0's hash resolved the symlinks of mounted host paths; now the adapters resolve them and spec reads
no filesystem (``host_paths`` names the paths, ``project_spec(real_paths=...)`` takes them resolved)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.converge import _spec
from reconciler.daemon.deploy import real_paths
from reconciler.spec import host_paths, project_spec


@dataclass
class _Rendered:
    model: dict[str, Any]
    name: str = "legacy"
    working_dir: str = "/srv/legacy"
    config_files: tuple[str, ...] = ("/srv/legacy/compose.yml",)
    bind_digests: dict[str, str] = field(default_factory=dict)


def _model(site: str, token: str) -> dict[str, Any]:
    return {
        "name": "legacy",
        "services": {
            "web": {
                "image": "nginx:1.25",
                "volumes": [
                    {"type": "bind", "source": site, "target": "/srv/html"},
                    {"type": "volume", "source": "data", "target": "/data"},
                ],
                "secrets": [{"source": "token"}],
                "networks": {"default": None},
            }
        },
        "networks": {"default": {"name": "legacy_default"}},
        "volumes": {"data": {"name": "legacy_data"}},
        "secrets": {"token": {"name": "legacy_token", "file": token}},
    }


def _legacy(model: dict[str, Any], **kw: Any) -> str:
    svc = project_spec(_Rendered(model), **kw).service("web")
    assert svc is not None
    return svc.legacy_hash


def test_host_paths_are_the_bind_and_file_sources() -> None:
    """Bind sources and secret/config files, spelled as the spec spells them ($$ unescaped); no volumes."""
    model = _model("/srv/legacy/$$site", "/srv/legacy/token.txt")
    assert host_paths(model) == {"/srv/legacy/$site", "/srv/legacy/token.txt"}


def test_spec_takes_resolved_paths_and_reads_no_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    """The legacy hash of a link equals the one of its target once the caller passes the resolved paths."""

    def forbidden(*_: Any) -> str:
        raise AssertionError("spec must not resolve host paths")

    monkeypatch.setattr(os.path, "realpath", forbidden)
    linked = _model("/srv/legacy/current/site", "/srv/legacy/current/token.txt")
    target = _model("/srv/legacy/tree-1/site", "/srv/legacy/tree-1/token.txt")
    resolved = {
        "/srv/legacy/current/site": "/srv/legacy/tree-1/site",
        "/srv/legacy/current/token.txt": "/srv/legacy/tree-1/token.txt",
    }
    assert _legacy(linked, real_paths=resolved) == _legacy(target)
    assert _legacy(linked) != _legacy(target)  # unresolved paths count as written


def test_converge_resolves_symlinks_as_release_0_did(tmp_path: Path) -> None:
    """A plain render (no deployer) gets its mounted paths resolved by converge, the adapter."""
    (tmp_path / "tree-1").mkdir()
    (tmp_path / "tree-1" / "site").mkdir()
    (tmp_path / "tree-1" / "token.txt").write_text("x\n")
    (tmp_path / "current").symlink_to(tmp_path / "tree-1")
    linked = _Rendered(_model(f"{tmp_path}/current/site", f"{tmp_path}/current/token.txt"))
    target = _model(f"{tmp_path}/tree-1/site", f"{tmp_path}/tree-1/token.txt")
    svc = _spec(linked).service("web")
    assert svc is not None and svc.legacy_hash == _legacy(target)


def test_deployer_resolves_paths_as_the_new_tree_will_show_them(tmp_path: Path) -> None:
    """The checkout link still points at the running tree while a revision is resolved: paths under it
    resolve into the tree being deployed; paths outside the checkout resolve as they are."""
    for tree in ("tree-old", "tree-new"):
        (tmp_path / tree / "conf").mkdir(parents=True)
    (tmp_path / "tree-new" / "conf" / "site").symlink_to("../html")
    (tmp_path / "stable").symlink_to(tmp_path / "tree-old")
    (tmp_path / "outside").mkdir()
    (tmp_path / "link-outside").symlink_to(tmp_path / "outside")
    stable = str(tmp_path / "stable")
    model = _model(f"{stable}/conf/site", f"{tmp_path}/link-outside/token.txt")
    assert real_paths(model, stable, str(tmp_path / "tree-new")) == {
        f"{stable}/conf/site": str(tmp_path / "tree-new" / "html"),
        f"{tmp_path}/link-outside/token.txt": str(tmp_path / "outside" / "token.txt"),
    }
