"""Differential tests of the finest-grained rules: random interpolation templates and YAML scalars.

Hundreds of generated templates (nesting, every operator, `$$`, stray `$` and braces) and tricky plain
scalars are written into one compose file and rendered by us and by compose; every value must match.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.render.harness import Case, first_difference, oracle, ours

VARIABLES = {"SET": "value", "EMPTY": "", "NUM": "42", "SPACE": "a b"}
NAMES = [*VARIABLES, "UNSET", "set", "_under"]
LITERALS = ["a", "-", ":", "}", "x/y", " ", "+", "?", ".", "$5", "a$", "$ x", "{b}", "=", "#"]


def template(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        name = rng.choice(NAMES)
        if kind < 0.3:
            parts.append(rng.choice(LITERALS))
        elif kind < 0.4:
            parts.append(rng.choice(["$$", "$${SET}", "$$SET"]))
        elif kind < 0.55:
            parts.append(f"${name}")
        elif kind < 0.65:
            parts.append("${" + name + "}")
        else:
            ops = [":-", "-", ":+", "+"]
            if name in ("SET", "NUM", "SPACE"):
                ops += [":?", "?"]
            if name == "EMPTY":
                ops.append("?")
            arg = (
                template(rng, depth + 1) if depth < 2 and rng.random() < 0.5 else rng.choice(["d", "", "x y"])
            )
            parts.append("${" + name + rng.choice(ops) + arg + "}")
    return "".join(parts)


def interpolation_case(seed: int, count: int = 120) -> Case:
    rng = random.Random(seed)
    lines = ["services:", "  app:", "    image: busybox", "    environment:"]
    for i in range(count):
        value = template(rng).replace("'", "''")
        lines.append(f"      V{i:03d}: '{value}'")
    return Case(
        name=f"templates-{seed}",
        files={"compose.yaml": "\n".join(lines) + "\n"},
        compose_files=["compose.yaml"],
        env=VARIABLES,
    )


SCALARS = [
    "yes", "no", "on", "off", "y", "n", "true", "True", "TRUE", "false", "null", "~", "Null",
    "0", "007", "08", "0o17", "0x1F", "0b101", "-12", "+12", "1_000", "12:30", "22:22:22",
    "1.5", "1.50", "1e3", "1E-2", ".5", "5.", "-0.0", ".inf", "-.inf", ".nan", "1_0.5",
    "2024-01-02T10:00:00", "2024-1-2x", "123456789012345678901234", "9223372036854775808",
    "0.1", "100000000000000000000.0", "1e21", "0.00001", "3.14159265358979", "'quoted'",
]  # fmt: skip


def scalar_case() -> Case:
    lines = ["services:", "  app:", "    image: busybox", "    environment:"]
    labels = ["    labels:"]
    for i, scalar in enumerate(SCALARS):
        lines.append(f"      S{i:02d}: {scalar}")
        labels.append(f"      l{i:02d}: {scalar}")
    return Case(
        name="plain-scalars",
        files={"compose.yaml": "\n".join(lines + labels) + "\n"},
        compose_files=["compose.yaml"],
    )


def timestamp_case() -> Case:
    """Timestamps decode to time.Time: compose refuses them in typed fields, prints them in x- fields."""
    stamps = [
        "2024-01-02",
        "2024-1-2",
        "2024-01-02T10:00:00Z",
        "2001-12-14t21:59:43.10-05:00",
        "2024-01-02 10:00:00",
    ]
    lines = [f"x-t{i}: {stamp}" for i, stamp in enumerate(stamps)]
    return Case(
        name="timestamps",
        files={"compose.yaml": "\n".join([*lines, "services:", "  app:", "    image: busybox"]) + "\n"},
        compose_files=["compose.yaml"],
    )


CASES = [interpolation_case(seed) for seed in (1, 2, 3)] + [scalar_case(), timestamp_case()]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_values_match_compose(case: Case, tmp_path: Path) -> None:
    """Every generated template and plain scalar renders to exactly compose's value."""
    root = case.write(tmp_path / "proj")
    theirs = oracle(case, root)
    assert theirs.model is not None, theirs.stderr
    assert first_difference(ours(case, root), theirs.model) is None
