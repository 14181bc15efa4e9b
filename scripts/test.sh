#!/usr/bin/env bash
# Installs what the tests need into .venv and runs every check CI runs:
# ruff (lint + format), mypy --strict, import-linter, then pytest (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -U pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest "$@"
