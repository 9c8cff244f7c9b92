"""Branch to environment: routing, slugs, names kept for a branch's life, max and ttl (pure, table-driven)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from reconciler.branches import Desired, RefusalReason, desired_environments, route
from reconciler.config import AppConfig, EnvConfig

SHA = {name: hashlib.sha1(name.encode()).hexdigest() for name in ("a", "b", "c", "d", "e", "f")}
DAY = 86400.0


def env(name: str, project: str, *, branch: str | None = None, **kw: Any) -> EnvConfig:
    return EnvConfig(
        app="app", name=name, project=project, compose=("docker-compose.yml",), branch=branch, **kw
    )


def app(*envs: EnvConfig) -> AppConfig:
    return AppConfig(name="app", repo="/srv/app.git", environments=envs)


PREVIEW = env(
    "preview", "test-{branch}", branches=("*",), exclude=("dependabot/*",), url="http://{branch}.x/{project}"
)
STANDARD = app(
    PREVIEW,  # listed first on purpose: an exact branch still wins over a glob
    env("production", "app-production", branch="master"),
    env("staging", "app-staging", branch="develop"),
)


def heads(*branches: str) -> dict[str, str]:
    return {b: hashlib.sha1(b.encode()).hexdigest() for b in branches}


def projects(desired: Desired) -> dict[str, str]:
    return {d.branch: d.project for d in desired.environments}


def h(branch: str) -> str:
    return hashlib.sha1(branch.encode()).hexdigest()[:6]


@pytest.mark.parametrize(
    ("config", "branch", "expected"),
    [
        (STANDARD, "master", "production"),
        (STANDARD, "develop", "staging"),
        (STANDARD, "feature/login", "preview"),
        (STANDARD, "dependabot/npm/lodash", None),
        (
            app(env("a", "a-{branch}", branches=("feature/*",)), env("b", "b-{branch}", branches=("*",))),
            "feature/x",
            "a",
        ),
        (
            app(env("a", "a-{branch}", branches=("feature/*",)), env("b", "b-{branch}", branches=("*",))),
            "fix/y",
            "b",
        ),
        (
            app(env("b", "b-{branch}", branches=("*",)), env("a", "a-{branch}", branches=("feature/*",))),
            "feature/x",
            "b",
        ),
        # An excluded branch falls through to the next glob environment.
        (
            app(
                env("a", "a-{branch}", branches=("*",), exclude=("wip/*",)),
                env("b", "b-{branch}", branches=("wip/*",)),
            ),
            "wip/1",
            "b",
        ),
        (app(env("a", "a-{branch}", branches=("release-[0-9]*",))), "release-2", "a"),
        (app(env("a", "a-{branch}", branches=("release-[0-9]*",))), "release-x", None),
        (app(env("a", "a-{branch}", branches=("Feature/*",))), "feature/x", None),  # case-sensitive
    ],
)
def test_route(config: AppConfig, branch: str, expected: str | None) -> None:
    """An exact `branch` wins, then `branches` globs in file order, minus `exclude`."""
    found = route(config, branch)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize(
    ("branch", "project"),
    [
        ("feature/login", "test-feature-login"),
        ("fix/Bug_42", "test-fix-bug-42"),
        ("--Weird__Name--", "test-weird-name"),
        ("a" * 40, "test-" + "a" * 40),
        ("a" * 41, "test-" + "a" * 40 + "-" + h("a" * 41)),
        ("release/" + "x" * 50, "test-release-" + "x" * 32 + "-" + h("release/" + "x" * 50)),
        ("_/_", "test-" + h("_/_")),
    ],
)
def test_slugs(branch: str, project: str) -> None:
    """Slug: lower-case, runs outside [a-z0-9] become '-', trimmed, 40 chars max, hash suffix if truncated."""
    desired = desired_environments(STANDARD, heads(branch), {})
    assert projects(desired) == {branch: project}
    assert desired.environments[0].url == f"http://{project.removeprefix('test-')}.x/{project}"


def test_fixed_and_preview_environments_with_commits() -> None:
    """Every listed branch gets its environment at its head commit; unmatched branches are reported."""
    listing = heads("master", "develop", "feature/login", "dependabot/x")
    desired = desired_environments(STANDARD, listing, {})
    got = [(d.environment.name, d.branch, d.commit, d.project) for d in desired.environments]
    assert got == [
        ("preview", "feature/login", listing["feature/login"], "test-feature-login"),
        ("production", "master", listing["master"], "app-production"),
        ("staging", "develop", listing["develop"], "app-staging"),
    ]
    assert desired.unmatched == ("dependabot/x",)
    assert desired.refused == ()


def test_collision_gets_hash_suffix_deterministically() -> None:
    """Two branches with one slug: in sorted order the first keeps it, the next gets '-' + sha1[:6]."""
    listing = heads("feature-x", "Feature/X")
    first = desired_environments(STANDARD, listing, {})
    assert projects(first) == {"Feature/X": "test-feature-x", "feature-x": f"test-feature-x-{h('feature-x')}"}
    assert desired_environments(STANDARD, dict(reversed(listing.items())), {}) == first


def test_names_stay_for_the_life_of_a_branch() -> None:
    """An assigned name is kept even when a newcomer would sort first and take it on a fresh start."""
    before = desired_environments(STANDARD, heads("feature-x"), {})
    assigned = projects(before)
    assert assigned == {"feature-x": "test-feature-x"}
    after = desired_environments(STANDARD, heads("feature-x", "Feature/X"), assigned)
    assert projects(after) == {"feature-x": "test-feature-x", "Feature/X": f"test-feature-x-{h('Feature/X')}"}
    # The same input always gives the same names.
    assert desired_environments(STANDARD, heads("feature-x", "Feature/X"), assigned) == after


def test_name_of_a_deleted_branch_is_not_reused_until_released() -> None:
    """While a gone branch holds its name (teardown pending), a new branch with that slug gets a suffix."""
    desired = desired_environments(STANDARD, heads("master", "feature-x"), {"feature/x": "test-feature-x"})
    assert projects(desired)["feature-x"] == f"test-feature-x-{h('feature-x')}"
    released = desired_environments(STANDARD, heads("master", "feature-x"), {})
    assert projects(released)["feature-x"] == "test-feature-x"


def test_assigned_name_that_no_longer_fits_the_template_is_replaced() -> None:
    """If the project template changed, a branch gets a name from the new template."""
    desired = desired_environments(STANDARD, heads("feature/a"), {"feature/a": "old-feature-a"})
    assert projects(desired) == {"feature/a": "test-feature-a"}


def test_kept_slug_is_the_assigned_one() -> None:
    """A kept name keeps its slug too (used in the url), even when it carries a hash suffix."""
    kept = f"test-feature-x-{h('feature-x')}"
    desired = desired_environments(STANDARD, heads("feature-x"), {"feature-x": kept})
    (d,) = desired.environments
    assert (d.project, d.slug) == (kept, f"feature-x-{h('feature-x')}")


def test_reserved_and_fixed_names_are_never_taken() -> None:
    """A branch whose name would be another app's project, or a fixed environment's, gets a suffix."""
    config = app(
        env("production", "app-production", branch="master"), env("preview", "app-{branch}", branches=("*",))
    )
    desired = desired_environments(config, heads("master", "production", "other"), {}, reserved={"app-other"})
    assert projects(desired) == {
        "master": "app-production",
        "production": f"app-production-{h('production')}",
        "other": f"app-other-{h('other')}",
    }


MAXED = app(env("preview", "test-{branch}", branches=("*",), max=3))


@pytest.mark.parametrize(
    ("live", "listed", "kept", "refused"),
    [
        # Nothing live: the first three in alphabetical order.
        ((), "abcde", "abc", "de"),
        # Already-live branches are never evicted by newcomers, even ones sorting first.
        ("cde", "abcde", "cde", "ab"),
        ("e", "abcde", "abe", "cd"),
        # More live than max (max lowered): the live ones are kept alphabetically.
        ("abcde", "abcde", "abc", "de"),
        ((), "ab", "ab", ""),
    ],
)
def test_max(live: str, listed: str, kept: str, refused: str) -> None:
    """At most `max` live branches; extras are refused with a reason, live ones first, then alphabetical."""
    assigned = {b: f"test-{b}" for b in live}
    desired = desired_environments(MAXED, heads(*listed), assigned)
    assert "".join(sorted(projects(desired))) == kept
    assert "".join(r.branch for r in desired.refused) == refused
    assert all(r.reason is RefusalReason.MAX and "maximum of 3" in r.message for r in desired.refused)


def test_ttl() -> None:
    """A head commit older than ttl is refused; missing commit times never refuse anything."""
    config = app(
        env("preview", "test-{branch}", branches=("*",), ttl=14 * DAY),
        env("production", "p", branch="master"),
    )
    listing = heads("old", "new", "unknown", "master")
    now = 1_700_000_000.0
    times = {
        listing["old"]: now - 15 * DAY,
        listing["new"]: now - 13 * DAY,
        listing["master"]: now - 400 * DAY,
    }
    desired = desired_environments(config, listing, {"old": "test-old"}, times, now)
    assert sorted(projects(desired)) == ["master", "new", "unknown"]
    (refusal,) = desired.refused
    assert (refusal.branch, refusal.environment, refusal.reason, refusal.commit) == (
        "old",
        "preview",
        RefusalReason.TTL,
        listing["old"],
    )
    assert "15.0d old" in refusal.message
    # Without a clock or times, ttl cannot apply.
    assert desired_environments(config, listing, {}).refused == ()


def test_ttl_refusals_do_not_count_against_max() -> None:
    """An expired branch frees its slot for another one."""
    config = app(env("preview", "test-{branch}", branches=("*",), ttl=DAY, max=1))
    listing = heads("a", "b")
    desired = desired_environments(
        config, listing, {"a": "test-a"}, {listing["a"]: 0.0, listing["b"]: DAY + 10}, 2 * DAY - 5
    )
    assert projects(desired) == {"b": "test-b"}
    assert [r.reason for r in desired.refused] == [RefusalReason.TTL]


def test_hundred_branches_are_stable_and_unique() -> None:
    """Many branches, many colliding slugs: every project is unique, and a re-run changes nothing."""
    names = [f"feature/{i % 10}" for i in range(10)] + [f"Feature-{i % 10}" for i in range(10)]
    names += [f"team/{i}/{'x' * 45}" for i in range(80)]
    first = desired_environments(STANDARD, heads(*names), {})
    got = projects(first)
    assert len(got) == 100 and len(set(got.values())) == 100
    again = desired_environments(STANDARD, heads(*names), got)
    assert projects(again) == got


def test_slug_of_a_kept_name_is_its_own_suffixed_slug() -> None:
    """After a restart the slug comes from the kept project name, hash suffix included."""
    from reconciler.branches import slug_of
    from reconciler.names import branch_hash

    env = _env_for_slug_test()
    suffixed = f"feature-a-{branch_hash('feature-a')}"
    assert slug_of(env, "feature-a", f"test-{suffixed}") == suffixed
    assert slug_of(env, "feature/a", "test-feature-a") == "feature-a"
    # A name that no longer fits the template falls back to the branch's plain slug.
    assert slug_of(env, "feature/a", "elsewhere") == "feature-a"


def _env_for_slug_test():  # type: ignore[no-untyped-def]
    from reconciler.config import EnvConfig

    return EnvConfig(app="demo", name="preview", project="test-{branch}", compose=("c.yml",), branches=("*",))
