"""Branches to environments: which stacks an app should have, at which commit, under which project name.

Pure (no git, no Docker, no clock): the daemon passes the heads from ``ls-remote``, the project names already
assigned (from state), commit times and ``now``, and gets back the desired environments plus refusals.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from reconciler.config import AppConfig, EnvConfig
from reconciler.errors import InvalidNameError
from reconciler.names import ProjectName, branch_slug, validate_project_name


class RefusalReason(StrEnum):
    MAX = "max"  # the environment already has `max` live branches
    TTL = "ttl"  # the head commit is older than `ttl`
    NAME = "name"  # no valid, unused project name could be derived


@dataclass(frozen=True)
class DesiredEnv:
    """One stack that should exist: ``project`` running ``commit`` of ``branch``."""

    app: str
    environment: EnvConfig
    branch: str
    commit: str
    project: ProjectName
    slug: str
    url: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A branch that matched an environment but gets no stack (reported, and torn down if it had one)."""

    app: str
    environment: str
    branch: str
    commit: str
    reason: RefusalReason
    message: str


@dataclass(frozen=True)
class Desired:
    """What an app should look like now."""

    environments: tuple[DesiredEnv, ...]  # in config order, then by branch
    refused: tuple[Refusal, ...]
    unmatched: tuple[str, ...]  # branches no environment takes (sorted)

    def by_project(self) -> dict[str, DesiredEnv]:
        return {d.project: d for d in self.environments}


def route(app: AppConfig, branch: str) -> EnvConfig | None:
    """The environment that takes ``branch``: an exact ``branch`` first, then ``branches`` in file order."""
    for env in app.environments:
        if env.branch == branch:
            return env
    for env in app.environments:
        if env.branch is None and env.matches(branch):
            return env
    return None


def desired_environments(
    app: AppConfig,
    heads: Mapping[str, str],
    assigned: Mapping[str, str],
    commit_times: Mapping[str, float] | None = None,
    now: float | None = None,
    *,
    reserved: Collection[str] = (),
) -> Desired:
    """Work out the stacks ``app`` should have.

    heads: branch -> head commit sha (the full ``ls-remote`` listing; never empty in practice).
    assigned: branch -> project name kept from earlier cycles (state ``assignments(app)``); a branch
        keeps its name for its life, as long as it still fits the environment's project template.
    commit_times: sha -> committer time (unix seconds), for ``ttl``; a sha without a time is never
        refused by ttl (missing data must not tear anything down).
    now: unix seconds, for ``ttl``.
    reserved: project names owned by other apps; a branch never takes one (it gets a hash suffix).

    Names still assigned to branches that are gone (their stack may still be being torn down) are
    never handed to another branch either. The daemon should ``assign`` every returned project and
    ``release`` a branch once its stack is removed.
    """
    routed: dict[EnvConfig, list[str]] = {}
    unmatched: list[str] = []
    for branch in sorted(heads):
        env = route(app, branch)
        if env is None:
            unmatched.append(branch)
        else:
            routed.setdefault(env, []).append(branch)

    refused: list[Refusal] = []
    result: dict[str, DesiredEnv] = {}  # branch -> desired
    claimed: set[str] = set(reserved)  # names taken this cycle, and other apps' names
    # Every assigned name stays reserved for its branch until the daemon releases it (after the
    # teardown): a new branch never takes over a stack that is still there.
    held = set(assigned.values())

    def refuse(env: EnvConfig, branch: str, reason: RefusalReason, message: str) -> None:
        refused.append(Refusal(app.name, env.name, branch, heads[branch], reason, message))

    def want(env: EnvConfig, branch: str, slug: str, project: str) -> None:
        result[branch] = DesiredEnv(
            app=app.name,
            environment=env,
            branch=branch,
            commit=heads[branch],
            project=ProjectName(project),
            slug=slug,
            url=env.url_for(slug, project),
        )
        claimed.add(project)

    # Fixed environments first: their names come from config and were checked unique at load.
    for env, branches in routed.items():
        if env.branch is None:
            continue
        (branch,) = branches
        slug = branch_slug(branch)
        project = env.project_for(slug)
        if _valid(project):
            want(env, branch, slug, project)
        else:  # pragma: no cover - config validation renders this exact name at load
            refuse(env, branch, RefusalReason.NAME, f"invalid project name {project!r}")

    # Glob environments: ttl, then max (live branches first), then names.
    keep: dict[str, tuple[str, str]] = {}  # branch -> (slug, project) kept from an earlier cycle
    new: list[tuple[EnvConfig, str]] = []
    for env, branches in routed.items():
        if env.branch is not None:
            continue
        candidates: list[str] = []
        for branch in branches:
            age = _age(heads[branch], commit_times, now)
            if env.ttl is not None and age is not None and age > env.ttl:
                refuse(
                    env,
                    branch,
                    RefusalReason.TTL,
                    f"head commit is {_days(age)} old, older than ttl {_days(env.ttl)}",
                )
            else:
                candidates.append(branch)
        kept = {b: s for b in candidates if (s := _kept_slug(env, assigned.get(b))) is not None}
        ordered = [b for b in candidates if b in kept] + [b for b in candidates if b not in kept]
        limit = len(ordered) if env.max is None else env.max
        for branch in ordered[limit:]:
            refuse(
                env,
                branch,
                RefusalReason.MAX,
                f"environment {env.name!r} already has its maximum of {env.max} live branches",
            )
        for branch in ordered[:limit]:
            if branch in kept:
                keep[branch] = (kept[branch], assigned[branch])
            else:
                new.append((env, branch))

    # Kept names stay as they are (unless state holds a duplicate: then the later branch gets a new name).
    taken: set[str] = set()
    for branch in sorted(keep):
        slug, project = keep[branch]
        env = route(app, branch)
        assert env is not None
        if project in claimed:
            new.append((env, branch))
            continue
        taken.add(slug)
        want(env, branch, slug, project)

    # New names in branch order, so the same listing always gives the same names.
    for env, branch in sorted(new, key=lambda item: item[1]):
        slug = branch_slug(branch, taken=taken)
        project = env.project_for(slug)
        if project in claimed or project in held:  # e.g. "production" vs a fixed "app-production"
            slug = branch_slug(branch, taken=taken | {slug})
            project = env.project_for(slug)
        if project in claimed or project in held or not _valid(project):
            refuse(
                env,
                branch,
                RefusalReason.NAME,
                f"no usable project name: {project!r} is invalid or already in use",
            )
            continue
        taken.add(slug)
        want(env, branch, slug, project)

    order = {env: i for i, env in enumerate(app.environments)}
    environments = sorted(result.values(), key=lambda d: (order[d.environment], d.branch))
    refused.sort(key=lambda r: (r.environment, r.branch))
    return Desired(tuple(environments), tuple(refused), tuple(unmatched))


def _valid(project: str) -> bool:
    try:
        validate_project_name(project)
    except InvalidNameError:
        return False
    return True


def slug_of(env: EnvConfig, branch: str, project: str) -> str:
    """The slug a kept project name was made from (a hash-suffixed one included): what ``{branch}``
    expands to for that stack after a restart."""
    if env.branch is None:
        kept = _kept_slug(env, project)
        if kept is not None:
            return kept
    return branch_slug(branch)


def _kept_slug(env: EnvConfig, project: str | None) -> str | None:
    """The slug inside an earlier project name, if that name still fits the environment's template."""
    if project is None or not _valid(project):
        return None
    pattern = ""
    seen_branch = False
    for part in re.split(r"(\{branch\}|\{app\})", env.project):
        if part == "{branch}":
            pattern += "(?P=slug)" if seen_branch else "(?P<slug>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)"
            seen_branch = True
        elif part == "{app}":
            pattern += re.escape(env.app)
        else:
            pattern += re.escape(part.replace("{{", "{").replace("}}", "}"))
    match = re.fullmatch(pattern, project)
    return match.group("slug") if match and seen_branch else None


def _age(commit: str, commit_times: Mapping[str, float] | None, now: float | None) -> float | None:
    if commit_times is None or now is None or commit not in commit_times:
        return None
    return now - commit_times[commit]


def _days(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds:.0f}s"
