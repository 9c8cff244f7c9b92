"""Fixtures for the scheduled-jobs tests: the local PostgreSQL image, a restic repository, and deployed
production/staging projects running it on the real engine (names suffixed with a random hex)."""

from __future__ import annotations

import secrets
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.converge import Converger
from reconciler.engine import DockerEngine
from tests.converge.helpers import render_files

ROOT = Path(__file__).resolve().parents[2]
PG_IMAGE = "reconciler-test/postgres:15"


def sh(
    *args: str, check: bool = True, timeout: float = 300, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="session")
def pg_image() -> str:
    """Build (once, cached by tag) the PostgreSQL 15 image from Debian packages."""
    sh("bash", str(ROOT / "scripts" / "postgres-image.sh"), PG_IMAGE, timeout=900)
    return PG_IMAGE


def container_of(project: str, service: str = "db") -> str:
    out = sh(
        "docker",
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    ).stdout.split()
    assert len(out) == 1, out
    return out[0]


def psql(project: str, sql: str, db: str = "postgres") -> subprocess.CompletedProcess[str]:
    return sh(
        "docker", "exec", container_of(project), "psql", "-U", "postgres", "-d", db, "-tAc", sql, check=False
    )


def wait_ready(project: str, deadline: float = 120) -> None:
    end = time.monotonic() + deadline
    cid = container_of(project)
    while sh("docker", "exec", cid, "pg_isready", "-q", "-U", "postgres", check=False).returncode != 0:
        assert time.monotonic() < end, "postgres did not become ready"
        time.sleep(0.3)


@dataclass
class Site:
    """An app with a production and a staging project, each running PostgreSQL, plus a restic repository."""

    dir: Path
    app: str
    production: str
    staging: str
    repo: Path
    password_file: Path

    def config(self, prod_jobs: str, staging_jobs: str = "") -> Path:
        """Write environments.yaml with these jobs (YAML mappings indented for the `jobs:` key)."""
        lines = [
            f"state_dir: {self.dir / 'state'}",
            f"backups: {{repository: {self.repo}, password_file: {self.password_file}}}",
            "apps:",
            f"  {self.app}:",
            f"    repo: {self.dir / 'repo'}",
            "    environments:",
        ]
        envs = (
            ("production", "master", self.production, prod_jobs),
            ("staging", "develop", self.staging, staging_jobs),
        )
        for name, branch, project, jobs in envs:
            lines += [f"      {name}:", f"        branch: {branch}", f"        project: {project}"]
            lines.append("        compose: [compose.yaml]")
            if jobs.strip():
                lines.append("        jobs:")
                lines += ["          " + line for line in textwrap.dedent(jobs).strip().splitlines()]
        text = "\n".join(lines) + "\n"
        path = self.dir / "environments.yaml"
        path.write_text(text)
        return path


@pytest.fixture(scope="module")
def site(pg_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("jobs")
    suffix = secrets.token_hex(3)
    compose = tmp / "compose.yaml"
    compose.write_text(f"services:\n  db:\n    image: {pg_image}\n")
    (tmp / "restic.pass").write_text("correct horse battery staple\n")
    s = Site(tmp, "mrs", f"tjob-prod-{suffix}", f"tjob-stag-{suffix}", tmp / "restic", tmp / "restic.pass")
    converger = Converger(DockerEngine())
    try:
        for project in (s.production, s.staging):
            converger.up(render_files([compose], project, tmp), timeout=120)
        for project in (s.production, s.staging):
            wait_ready(project)
        psql(s.production, "CREATE DATABASE app")
        seeded = psql(
            s.production,
            "CREATE TABLE users (id serial primary key, email text); "
            "INSERT INTO users (email) VALUES ('ada@example.org'), ('bob@example.org'), ('eve@example.org')",
            db="app",
        )
        assert seeded.returncode == 0, seeded.stderr
        yield s
    finally:
        for project in (s.production, s.staging):
            converger.down(project, volumes=True, timeout=1)
        left = sh("docker", "ps", "-aq", "--filter", f"name=tjob-.*-{suffix}", check=False).stdout.split()
        if left:
            sh("docker", "rm", "-fv", *left, check=False)
