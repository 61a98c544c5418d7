#!/usr/bin/env bash
# Train-step figures for docs/benchmarks.md: RUNS separate runs of benchmarks/train_step.py
# (separate processes, one after another), then the median of each figure over the runs with
# its spread, the machine, load before/after each run, library builds and dates.
#
# Usage: benchmarks/publish_figures.sh [OUT_DIR] [train_step.py options...]
#   RUNS=3 (default, at least 3) benchmarks/publish_figures.sh results/step --iters 3 --threads 2
# Writes OUT_DIR/run1.json ... runN.json and OUT_DIR/figures.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
runs="${RUNS:-3}"
out="${1:-benchmarks/results/train_step_$(date -u +%Y%m%d_%H%M)}"
shift || true
if [ "$runs" -lt 3 ]; then
    echo "RUNS=$runs: a published figure is the median of at least 3 separate runs." >&2
    exit 2
fi
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
    echo "== run $i of $runs ($(date -u '+%H:%M:%S UTC'))"
    python "$here/train_step.py" --json "$out/run$i.json" "$@"
done
files=()
for i in $(seq 1 "$runs"); do files+=("$out/run$i.json"); done
python "$here/summarize_runs.py" "${files[@]}" --out "$out/figures.md"
