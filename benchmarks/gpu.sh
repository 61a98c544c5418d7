#!/usr/bin/env bash
# GPU benchmark suite, under 8 minutes on one recent GPU: train step of detlab, torchvision and
# Detectron2 (where installed) FCOS / Faster R-CNN / RetinaNet R50-FPN at batch 8, 800×1333 in
# fp32, AMP fp16 and AMP bf16 (detlab channels-last and NCHW), peak GPU memory, inference
# images/s and the data pipeline feeding the GPU. See benchmarks/gpu_suite.py.
#
# Usage: benchmarks/gpu.sh [gpu_suite.py options]
#   OUT=benchmarks/results/gpu benchmarks/gpu.sh            # on the CUDA machine
#   benchmarks/gpu.sh --device cpu --quick                   # toy sizes on CPU (tests the suite)
# Writes $OUT/gpu.json (saved after every section) and $OUT/gpu.md (the tables).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-benchmarks/results/gpu_$(date -u +%Y%m%d_%H%M)}"
mkdir -p "$out"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu --format=csv \
        | tee "$out/nvidia-smi.csv"
fi
# The suite stops itself at the limit (default 470 s, under 8 minutes with start-up);
# sections finished by then are already in gpu.json.
timeout --signal=TERM "${GPU_SUITE_LIMIT_S:-470}" \
    python "$here/gpu_suite.py" --json "$out/gpu.json" --out "$out/gpu.md" "$@"
