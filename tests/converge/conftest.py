"""Fixtures for the converge tests: a throw-away compose project (name prefixed `tcv-`) on the real engine."""

from __future__ import annotations

import json
import secrets
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler import labels as L
from reconciler.converge import Converger
from reconciler.engine import DockerEngine
from tests.converge.helpers import Rendered, render_files

BUSYBOX = "reconciler-test/busybox:latest"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=120)


def inspect(ref: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(docker("inspect", ref).stdout)[0]
    return out


@dataclass
class Stack:
    """One compose project in a temp dir; everything it creates is removed after the test."""

    name: str
    dir: Path
    converger: Converger
    images: list[str] = field(default_factory=list)  # tags a test built by hand, removed afterwards

    def write(self, compose: str, **files: str) -> Path:
        for rel, text in files.items():
            path = self.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        path = self.dir / "compose.yaml"
        path.write_text(textwrap.dedent(compose))
        return path

    def render(self) -> Rendered:
        return render_files([self.dir / "compose.yaml"], self.name, self.dir)

    def up(self, **kwargs: Any) -> Any:
        return self.converger.up(self.render(), timeout=kwargs.pop("timeout", 60), **kwargs)

    def plan(self) -> Any:
        return self.converger.plan(self.render())

    def containers(self) -> dict[str, dict[str, Any]]:
        """Name -> inspect of every container labelled with this project."""
        ids = docker("ps", "-aq", "--filter", f"label={L.PROJECT}={self.name}").stdout.split()
        infos = [inspect(i) for i in ids]
        return {i["Name"].lstrip("/"): i for i in infos}

    def ids(self) -> dict[str, str]:
        return {name: info["Id"] for name, info in self.containers().items()}


@pytest.fixture(scope="session")
def converger() -> Converger:
    return Converger(DockerEngine())


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest, converger: Converger) -> Iterator[Stack]:
    test = request.node.name.removeprefix("test_").replace("_", "-")[:18].strip("-")
    s = Stack(f"tcv-{test}-{secrets.token_hex(2)}", tmp_path, converger)
    yield s
    # Hand-made containers may lack our labels: remove by name prefix too (only this test's prefix).
    by_name = docker("ps", "-aq", "--filter", f"name=^{s.name}-").stdout.split()
    if by_name:
        docker("rm", "-f", *by_name, check=False)
    converger.down(s.name, volumes=True, images=True, timeout=1)
    for tag in s.images:
        docker("rmi", "-f", tag, check=False)
