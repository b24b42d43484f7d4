#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the linters and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/browser.sh
.venv/bin/ruff check gradscope tests scripts
# two workers; a file stays on one worker so module-scoped recordings run once
.venv/bin/python -m pytest -n 2 --dist loadfile "$@"
