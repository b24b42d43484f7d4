#!/usr/bin/env bash
# The GPU measurement of issue 16 in one command (docs/performance.md, "On a GPU").
#
#   scripts/gpu_bench.sh --prepare   # here, once: the anchors' packages into .gpu-site/ (.gitignore)
#   scripts/gpu_bench.sh [OUT]       # on the GPU machine (carry .gpu-site); results under OUT
#
# On the device tool:  run(command="scripts/gpu_bench.sh $OUT", carry=[".gpu-site"], timeout_s=540)
# 1. host synchronisations per step, plain vs gradscope (scripts/gpu_syncs.py, ~1 min);
# 2. side by side (interleaved), the anchors' 41M GPT (4 x 768, T 512, B 16, V 16384) then
#    MLP and CNN: plain, gradscope minimal / standard / standard every 10, Opacus hooks and
#    ghost, torch.func, BackPACK; peak memory from torch.cuda.max_memory_allocated (~3 min).
# The device image has torch, pyarrow, rich, typer, pandas; Opacus, BackPACK and unfoldNd
# (pure Python) travel in .gpu-site. Python 3.12 there.
set -uo pipefail
cd "$(dirname "$0")/.."
SITE=.gpu-site
PY=${PYTHON:-python3}
if [ "${1:-}" = "--prepare" ]; then
  PY=${PYTHON:-.venv/bin/python}
  src=$("$PY" -c "import opacus, os; print(os.path.dirname(os.path.dirname(opacus.__file__)))") || exit 1
  rm -rf "$SITE" && mkdir -p "$SITE"
  for pkg in opacus backpack unfoldNd; do cp -r "$src/$pkg" "$SITE/" || exit 1; done
  find "$SITE" -name __pycache__ -prune -exec rm -rf {} +
  du -sh "$SITE"
  exit 0
fi
OUT=${1:-${OUT:-gpu-bench-out}}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import torch, pyarrow, opacus, backpack; print(torch.__version__, torch.cuda.get_device_name())" \
  2>&1 | tee "$OUT/versions.txt"
timeout 150 "$PY" scripts/gpu_syncs.py --json "$OUT/syncs.json" 2>&1 | tee "$OUT/syncs.txt"
timeout 330 "$PY" scripts/bench_overhead.py --device cuda --models gpt,mlp,cnn --steps 20 --warmup 3 \
  --no-isolate --memory-steps 5 --json "$OUT/bench-cuda.json" 2>&1 | tee "$OUT/bench-cuda.txt"
