#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh) and runs the built-in demo: trains a small two-task
# model with planted problems on CPU, records it with `gradscope record`, prints the report.
# Extra arguments go to `gradscope demo` (e.g. --html report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/gradscope demo "$@"
