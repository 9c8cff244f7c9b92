"""Differential tests: our model equals `docker-compose config --format json` (Compose v2.40.3).

Runs every fixture and 60 seeded random multi-file projects through both renderers with the same files
and a clean environment; whole documents must be equal, and inputs compose rejects we must reject too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.render.generate import generated_cases
from tests.render.harness import Case, all_cases, first_difference, oracle, ours_or_error

FIXTURES = [c for c in all_cases() if c.oracle]
GENERATED = generated_cases(60)


def _agree(case: Case, root: Path) -> None:
    mine, error = ours_or_error(case, root)
    theirs = oracle(case, root)
    if theirs.model is None:
        assert mine is None, f"compose rejects this input but we render it:\n{theirs.stderr}"
        assert error is not None and "internal error" not in error
        return
    assert mine is not None, f"compose renders this input but we fail: {error}"
    assert first_difference(mine, theirs.model) is None


@pytest.mark.parametrize("case", FIXTURES, ids=[c.name for c in FIXTURES])
def test_fixture_matches_compose(case: Case, tmp_path: Path) -> None:
    """Every fixture renders exactly as compose does (or both refuse it)."""
    _agree(case, case.write(tmp_path / "proj"))


@pytest.mark.parametrize("case", GENERATED, ids=[c.name for c in GENERATED])
def test_generated_project_matches_compose(case: Case, tmp_path: Path) -> None:
    """A random 2-4 file project (ports, volumes, env, labels, depends_on...) renders as compose does."""
    _agree(case, case.write(tmp_path / "proj"))


def test_generated_projects_mostly_render() -> None:
    """The generator produces mostly valid projects, so the comparison exercises real models."""
    assert len(GENERATED) >= 50
    assert len({c.files["compose.yaml"] for c in GENERATED}) == len(GENERATED)
