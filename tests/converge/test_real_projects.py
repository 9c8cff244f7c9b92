"""Compose setups modelled on real projects (``fixtures/real``, listed in MODELLED_ON.md) render as Compose v2
renders them, and the converge engine accepts them: ``project_spec`` and the create request of every service,
no Docker needed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from reconciler.errors import UnsupportedError
from reconciler.render import RenderedProject, RenderOptions, render
from reconciler.spec import container_request, project_spec
from tests.converge.helpers import compose_binary

REAL = Path(__file__).parent / "fixtures" / "real"
PROJECTS = sorted(p.name for p in REAL.iterdir() if p.is_dir())
# The process environment both renderers see: only HOME (for `~` in bind sources), so nothing of the
# machine running the tests leaks into the model.
ENVIRON = {"HOME": "/home/reconciler"}
# Fixtures that use a key the converge engine refuses: fixture -> the key the UnsupportedError names
# (none today; an entry makes the test expect that clear refusal instead of acceptance).
PENDING: dict[str, str] = {}
# Known differences of our renderer from Compose v2 (bugs to fix in reconciler/render; strict: the test
# fails once fixed, so the entry gets dropped).
RENDER_DIFFERS: dict[str, str] = {}


def render_real(name: str, directory: Path | None = None) -> RenderedProject:
    """Render a fixture as `docker compose` would in its directory (compose file discovered, .env read)."""
    where = directory or REAL / name
    environ = {**ENVIRON, "PWD": str(where)}
    return render(RenderOptions(project_name=f"real-{name}", working_dir=str(where), environ=environ))


def test_every_fixture_names_its_model() -> None:
    """MODELLED_ON.md names, for every fixture and nothing else, the public project whose setup it is modelled
    on and the features it reproduces."""
    text = (REAL / "MODELLED_ON.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| ([^|]+) \| ([^|]+) \|$", text, re.M)
    assert sorted(row[0] for row in rows) == PROJECTS
    assert 25 <= len(PROJECTS) <= 40


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=RENDER_DIFFERS[n], strict=True))
        if n in RENDER_DIFFERS
        else n
        for n in PROJECTS
    ],
)
def test_we_render_what_compose_renders(name: str) -> None:
    """`docker compose config` accepts the fixture and prints exactly the model we render."""
    where = REAL / name
    done = subprocess.run(
        [compose_binary(), "-p", f"real-{name}", "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=where,
        env={**ENVIRON, "PWD": str(where), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert render_real(name).model == json.loads(done.stdout)


@pytest.mark.parametrize("name", PROJECTS)
def test_plan_accepts_it(name: str) -> None:
    """The converge spec and every service's create request are built; a pending key is refused by name."""
    rendered = render_real(name)
    if name in PENDING:
        with pytest.raises(UnsupportedError) as refused:
            project_spec(rendered)
        assert refused.value.location.key == PENDING[name] or PENDING[name] in refused.value.detail
        return
    spec = project_spec(rendered)
    assert sorted(s.name for s in spec.services) == sorted(rendered.model["services"])
    for svc in spec.services:
        joined = {s: "0" * 64 for s in svc.joins}  # `service:NAME` namespaces: the converger's lookup
        request = container_request(spec, svc, 1, image_id="sha256:" + "0" * 64, joined=joined)
        assert request is not None
