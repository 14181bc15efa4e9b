#!/usr/bin/env bash
# Installs comfygate into .venv and serves it on the embedded default
# (SQLite file, local result folder, in-process dispatch, built-in engine).
# Arguments pass through to `comfygate serve`, e.g. --port 8080.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -U pip
.venv/bin/python -m pip install -q -e '.[onnx]'
exec .venv/bin/comfygate serve "$@"
