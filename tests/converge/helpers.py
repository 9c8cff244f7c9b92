"""Test helpers for the converge tests: render compose files with the reference Compose v2 binary.

Used only until/unless ``reconciler.render`` can render the fixtures itself (see ``render_project``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def compose_binary() -> str:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(spec.submodule_search_locations[0]) / "docker-compose")


@dataclass(frozen=True)
class Rendered:
    """Same shape as reconciler.render.RenderedProject."""

    name: str
    working_dir: str
    config_files: tuple[str, ...]
    model: Mapping[str, Any]
    environment: Mapping[str, str] = field(default_factory=dict)


def compose_config(files: list[Path], project: str, directory: Path | None = None) -> Rendered:
    """Render with `docker-compose config --format json` (the model our renderer must match)."""
    directory = directory or files[0].parent
    args = [compose_binary(), "-p", project, "--project-directory", str(directory)]
    for f in files:
        args += ["-f", str(f)]
    out = subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, check=True)
    return Rendered(project, str(directory), tuple(str(f) for f in files), json.loads(out.stdout))


def compose(project: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COMPOSE_PROJECT_NAME": project}
    return subprocess.run(
        [compose_binary(), "-p", project, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def render_files(files: list[Path], project: str, directory: Path) -> Any:
    """Render through ``reconciler.render`` when it is available, else through the Compose v2 binary."""
    try:
        from reconciler.render import RenderOptions, render
    except ImportError:
        return compose_config(files, project, directory)
    return render(
        RenderOptions(
            files=tuple(str(f) for f in files),
            project_directory=str(directory),
            project_name=project,
            environ=dict(os.environ),
        )
    )
