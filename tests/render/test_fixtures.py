"""Table-driven render tests: each YAML fixture under fixtures/ states inputs and expected output or error."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import ComposeError
from tests.render.harness import Case, all_cases, expectation_failures, ours, with_root

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fixture(case: Case, tmp_path: Path) -> None:
    """The rendered model has the fixture's expected values, or rendering fails with its message."""
    root = case.write(tmp_path / "proj")
    if case.error is not None:
        with pytest.raises(ComposeError) as raised:
            ours(case, root)
        assert with_root(case.error, root) in str(raised.value)
        assert "internal error" not in str(raised.value)
        return
    model = ours(case, root)
    assert expectation_failures(case, model, root) == []


def test_every_fixture_file_has_cases() -> None:
    """Every fixture file parses into at least one named case (guards against silent YAML mistakes)."""
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(names) >= 60
