#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one go (< 8 minutes on one GPU): the GPU tests and the
# benchmark. Usage: bash scripts/gpu_check.sh [OUTDIR]   (PYTHON=... to pick the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/gpu_check}
mkdir -p "$out"
python=${PYTHON:-.venv/bin/python}
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
status=0
"$python" - <<'PY' 2>&1 | tee "$out/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY
timeout 300 "$python" -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tee "$out/gpu_tests.txt" || status=1
timeout 240 "$python" scripts/benchmark.py --device cuda --json "$out/benchmark_gpu.json" 2>&1 \
  | tee "$out/benchmark_gpu.txt" || status=1
exit $status
