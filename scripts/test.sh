#!/usr/bin/env bash
# The README's test command: set everything up (idempotent), then run every check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/check.sh "$@"
