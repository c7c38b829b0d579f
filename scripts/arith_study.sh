#!/usr/bin/env bash
# The arith study (README, "A learnable math task"): every method of the arith preset at every D_syn size
# and seed (mathreason scaling), the data-efficiency report (scaling-report), and the diagnostics: first
# pits against the task's first wrong equation at every point, and the paper's Fig. 7 (mean Q per step of
# each trained policy) at the largest size (mathreason diagnostics). Every stage resumes after a kill.
#
#   bash scripts/arith_study.sh                                   # the whole study -> runs/arith
#   bash scripts/arith_study.sh --set run_dir=runs/arith-2 --set "scaling.seeds=[0]"   # any config override
set -euo pipefail
cd "$(dirname "$0")/.."
M="${MATHREASON:-.venv/bin/mathreason}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$M" scaling --preset arith "$@" --quiet
"$M" scaling-report --preset arith "$@"
"$M" diagnostics --preset arith "$@" --quiet
