#!/usr/bin/env bash
# Creates .venv with gradscope installed in editable mode.
# Uses the torch already importable by python3 when there is one; otherwise installs the
# pinned CPU release (a range such as torch>=2.3 would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  if python3 -c "import torch" 2>/dev/null; then
    python3 -m venv --system-site-packages .venv
  else
    python3 -m venv .venv
  fi
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/pip install --quiet --disable-pip-version-check -e "$spec"
