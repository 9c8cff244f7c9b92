"""Upgrading the reconciler never recreates an unchanged container: a stack made by the previous release
(its real code, taken from git history) is planned as up to date by this one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import labels as L
from tests.converge.conftest import BUSYBOX, Stack, docker

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
RELEASE_0 = "c4c2f88"  # the last release before io.reconciler.hash-version (hash version 0)

COMPOSE = f"""
services:
  web:
    image: {BUSYBOX}
    init: true
    command: ["httpd", "-f", "-p", "8000", "-h", "/www"]
    volumes:
      - ./site:/www:ro
      - data:/data
    depends_on: [cache]
    networks:
      default:
        priority: 10
  cache:
    image: {BUSYBOX}
    init: true
    command: ["sleep", "3600"]
volumes:
  data:
"""


@pytest.fixture
def release_0(tmp_path: Path) -> Path:
    """The previous release's package, exported from git history (skipped in a clone without it)."""
    out = tmp_path / "release-0"
    out.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", RELEASE_0, "reconciler"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {RELEASE_0} is not in this clone's history (shallow clone?)")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


def test_a_stack_of_the_previous_release_is_adopted_without_a_recreate(stack: Stack, release_0: Path) -> None:
    """`up` by release 0, then `plan` and `up` by this release: nothing to do, the same containers."""
    stack.write(COMPOSE, **{"site/index.html": "<p>hi</p>"})
    old = subprocess.run(
        [sys.executable, "-m", "reconciler", "up", "-f", str(stack.dir / "compose.yaml"), "-p", stack.name],
        capture_output=True,
        text=True,
        cwd=release_0,
        env={"PYTHONPATH": str(release_0), "PATH": "/usr/bin:/bin"},
        timeout=300,
        check=False,
    )
    assert old.returncode == 0, old.stderr
    before = {n: c["Id"] for n, c in stack.containers().items()}
    assert before and all(L.HASH_VERSION not in c["Config"]["Labels"] for c in stack.containers().values())

    plan = stack.plan()
    assert plan.is_noop, plan.to_dict()
    stack.up()
    assert {n: c["Id"] for n, c in stack.containers().items()} == before
    # A real change still recreates, and the new container carries this release's hash version.
    stack.write(COMPOSE.replace("3600", "3601"), **{"site/index.html": "<p>hi</p>"})
    stack.up()
    after = stack.containers()
    changed = [n for n in after if after[n]["Id"] != before.get(n)]
    assert len(changed) == 1
    assert after[changed[0]]["Config"]["Labels"][L.HASH_VERSION] == "1"
    docker("ps")  # the engine still answers
