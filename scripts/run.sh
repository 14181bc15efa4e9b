#!/usr/bin/env bash
# Installs comfygate into .venv and serves it on the embedded default
# (SQLite file, local result folder, in-process dispatch, built-in engine).
# Arguments pass through to `comfygate serve`, e.g. --port 8080.
# Needs Python 3.11 or newer (PYTHON=/path/to/python3.12 to choose one). A restart
# installs nothing unless pyproject.toml changed, so it needs no package index.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.comfygate-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install -q -U pip
  .venv/bin/python -m pip install -q -e '.[onnx]'
  echo "$wanted" > "$stamp"
fi
exec .venv/bin/comfygate serve "$@"
