#!/usr/bin/env bash
# Every check, in the order CI runs them: ruff (lint + format), mypy (strict on the package), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m ruff check reconciler tests bench
"$PY" -m ruff format --check reconciler tests bench
"$PY" -m mypy
"$PY" -m pytest "$@"
