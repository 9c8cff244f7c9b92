#!/usr/bin/env bash
# Every check, in the order CI runs them: ruff (lint + format), mypy (strict on the package), the import
# contracts in pyproject.toml (import-linter: the pure core imports no adapter), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m ruff check reconciler tests bench
"$PY" -m ruff format --check reconciler tests bench
"$PY" -m mypy
# import-linter has no `python -m` entry point: call what its `lint-imports` console script calls.
"$PY" -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
"$PY" -m pytest "$@"
