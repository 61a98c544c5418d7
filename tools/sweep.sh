#!/usr/bin/env bash
# Run a sweep of training runs from a spec file; see docs/sweeps.md.
#   tools/sweep.sh SPEC [--parallel N] [--gpus 0,1,...] [--launcher local|slurm] [--dry-run]
#                       [--retry-failed] [--status] [--output-root DIR] [KEY VALUE ...]
#   tools/sweep.sh SPEC --workers N [--storage URL] [--study-name NAME] ...   (an Optuna study)
# A thin wrapper over `python -m detlab.sweep`; set PYTHON to choose the interpreter.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}"
python="${PYTHON:-$(command -v python || command -v python3)}"
exec "${python}" -m detlab.sweep "$@"
