#!/usr/bin/env bash
# Install, lint and run the test suite. pytest's "no tests collected" (exit 5) fails like any error.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
