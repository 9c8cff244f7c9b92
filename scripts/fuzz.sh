#!/usr/bin/env bash
# A long, random fuzz run: CI runs the same suite derandomized with fewer cases; this is the `long` hypothesis
# profile of tests/conftest.py with FUZZ_SCALE (default 20) times as many cases. Extra arguments go to
# pytest, e.g. `-k compose`. A failure prints the `@reproduce_failure` blob to paste on the test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HYPOTHESIS_PROFILE=long FUZZ_SCALE=${FUZZ_SCALE:-20}
exec "$PY" -m pytest tests/fuzz tests/render/test_api.py -q -p no:cacheprovider -m "not docker" "$@"
