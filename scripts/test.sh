#!/usr/bin/env bash
# The test command: lint, then the whole suite on both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q "$@"
