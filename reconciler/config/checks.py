"""Checks across keys and environments: no glob cancelled by an exclude, no two environments on one project.

Called by the parser once the keys involved are read; ``r`` supplies ``fail`` for located errors.
"""

from __future__ import annotations

from reconciler.config.globs import _covers
from reconciler.config.model import AppConfig, EnvConfig
from reconciler.config.readers import _Readers
from reconciler.config.yaml_lines import _Map
from reconciler.names import branch_slug


def check_unique(r: _Readers, apps: tuple[AppConfig, ...], apps_map: _Map) -> None:
    """Two environments must never be able to produce the same project name."""

    def env_line(env: EnvConfig, key: str) -> int:
        return int(apps_map[env.app]["environments"][env.name].key_lines.get(key, env.line))

    fixed: dict[str, EnvConfig] = {}
    patterns: dict[str, EnvConfig] = {}
    for app in apps:
        exact: dict[str, EnvConfig] = {}
        for env in app.environments:
            key = f"apps.{app.name}.environments.{env.name}"
            if env.branch is not None:
                if env.branch in exact:
                    other = exact[env.branch]
                    raise r.fail(
                        f"branch {env.branch!r} is already taken by environment {other.name!r} "
                        f"(line {env_line(other, 'branch')})",
                        env_line(env, "branch"),
                        f"{key}.branch",
                        hint="each branch feeds at most one environment of an app",
                    )
                exact[env.branch] = env
                name = env.project_for(branch_slug(env.branch))
                table, what = fixed, f"project {name!r}"
            else:
                # Compare templates with {app} filled in: "test-{branch}" in two apps collides.
                name = env.project.replace("{app}", app.name)
                table, what = patterns, f"project template {env.project!r}"
            if name in table:
                other = table[name]
                raise r.fail(
                    f"{what} is already used by environment {other.key!r} "
                    f"(line {env_line(other, 'project')}): two environments would share one stack",
                    env_line(env, "project"),
                    f"{key}.project",
                    hint="give each environment its own project name (e.g. include {app})",
                )
            table[name] = env


def check_cancelled(
    r: _Readers, branches: tuple[str, ...], exclude: tuple[str, ...], m: _Map, where: str
) -> None:
    for pattern in branches:
        for ex in exclude:
            if _covers(ex, pattern):
                raise r.fail(
                    f"exclude {ex!r} removes every branch that {pattern!r} matches: "
                    "this glob can never select a branch",
                    m.key_lines["exclude"],
                    f"{where}.exclude",
                    hint="narrow `exclude` or remove the glob from `branches`",
                )
