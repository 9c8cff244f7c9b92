"""The worked example of the README (examples/mrs, the MRS handbook) stays valid: its environments.yaml loads
with every hook, gate and job, and each environment's compose files render and are accepted for converge."""

from __future__ import annotations

from pathlib import Path

from reconciler.config import load_config
from reconciler.render import RenderOptions, render
from reconciler.spec import project_spec

MRS = Path(__file__).resolve().parent.parent / "examples" / "mrs"


def test_mrs_example_config_has_the_handbook_steps() -> None:
    """A backup before each production deploy, migrations after, a Host-checked gate, nightly backups, a
    weekly restore drill and a weekly anonymised refresh of staging."""
    config = load_config(str(MRS / "environments.yaml"))
    envs = {e.name: e for e in config.apps[0].environments}
    production, staging = envs["production"], envs["staging"]
    assert [s.service for s in production.hooks.pre_deploy] == ["db"]
    assert production.hooks.post_deploy[0].command == ("mrs", "migrate", "--noinput")
    assert production.health_gate is not None
    assert sorted(j.name for j in production.jobs) == ["nightly-backup", "restore-drill"]
    assert [j.name for j in staging.jobs] == ["refresh"]
    assert config.backups is not None


def test_mrs_example_compose_files_render_for_every_environment() -> None:
    """Each environment's compose files render from the example app and the converge engine accepts them."""
    config = load_config(str(MRS / "environments.yaml"))
    for env in config.apps[0].environments:
        files = tuple(str(MRS / "app" / f) for f in env.compose)
        rendered = render(
            RenderOptions(files=files, project_name=f"mrs-{env.name}", working_dir=str(MRS / "app"))
        )
        spec = project_spec(rendered)
        assert {s.name for s in spec.services} == {"db", "django"}
