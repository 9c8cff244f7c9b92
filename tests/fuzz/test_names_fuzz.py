"""Hostile branch names: slugs and project names are always valid, distinct and stable; nothing crashes."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reconciler.branches import desired_environments
from reconciler.config.globs import branch_problem
from reconciler.config.model import AppConfig, EnvConfig
from reconciler.errors import ReconcilerError
from reconciler.names import branch_slug, validate_project_name
from reconciler.spec.contents import _content_mount
from tests.fuzz.guard import budget, time_limit
from tests.fuzz.strategies import branch_names

PREVIEW = EnvConfig(
    app="shop", name="preview", project="shop-{branch}", compose=("compose.yaml",), branches=("*",), max=None
)
PRODUCTION = EnvConfig(
    app="shop", name="production", project="shop-production", compose=("c.yaml",), branch="main"
)
APP = AppConfig(name="shop", repo="/srv/shop.git", environments=(PRODUCTION, PREVIEW))
SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@budget(3000)
@given(branch=branch_names)
@example(branch="a b")
@example(branch="..")
@example(branch="x" * 300)
@example(branch="$(rm -rf /);`id`|&")
@example(branch="😀/é")  # slugs to nothing: a hash
@example(branch="-/-/-")
def test_slug_of_any_branch_is_a_valid_name(branch: str) -> None:
    """Any branch slugs to [a-z0-9-] (at most 40 + hash), a valid project name."""
    with time_limit():
        slug = branch_slug(branch)
        assert SLUG.fullmatch(slug), slug
        assert len(slug) <= 47
        validate_project_name(PREVIEW.project_for(slug))
        problem = branch_problem(branch)
        assert problem is None or isinstance(problem, str)


@budget(1000)
@given(branches=st.lists(branch_names, min_size=1, max_size=8, unique=True), twins=st.booleans())
@example(branches=["Feature/Login", "feature/login", "FEATURE-LOGIN"], twins=False)
@example(branches=["😀", "é", "-", "..", "main"], twins=False)
def test_desired_stacks_never_share_a_project(branches: list[str], twins: bool) -> None:
    """Whatever the branch names (case twins, names that slug to nothing), each stack gets its own valid
    project name, and the answer is the same on every call."""
    if twins:
        branches = [*branches, *(b.swapcase() for b in branches if b.swapcase() not in branches)]
    heads = {branch: f"{i:040x}" for i, branch in enumerate(branches)}
    with time_limit():
        desired = desired_environments(APP, heads, {})
        again = desired_environments(APP, heads, {})
    projects = [d.project for d in desired.environments]
    assert len(projects) == len(set(projects))
    for project in projects:
        validate_project_name(project)
    assert desired == again
    assert {d.branch for d in desired.environments} | {r.branch for r in desired.refused} | set(
        desired.unmatched
    ) == set(branches)


@pytest.mark.parametrize("uid", ["²", "٣", "-1", "x", "1e3"])
def test_content_mount_uid_must_be_ascii_digits(uid: str) -> None:
    """A uid of non-ASCII digits ('²'.isdigit() is True, int('²') fails) is a clear error, not a crash."""
    with pytest.raises(ReconcilerError, match="not a number"):
        _content_mount("app", "secrets", {"source": "s", "uid": uid}, "/run/secrets/s", "0" * 64)
