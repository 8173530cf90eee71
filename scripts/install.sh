#!/usr/bin/env bash
# Create .venv (if missing) and install Kenning with its pinned dependencies and the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
echo "installed: $(.venv/bin/python -c 'import kenning, torch; print("kenning", kenning.__version__, "torch", torch.__version__)')"
