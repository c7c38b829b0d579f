#!/usr/bin/env bash
# The arith credit study (docs/arith_study.md, section 7; preset mathreason/presets/arith_credit.yaml): the
# arith study rerun with a competent pi_sft (1200 SFT steps) sampled hotter (M = 8 at T = 1.0), where 0.91 of
# first pits land on the first wrong equation. SFT at D_syn 1000 / 2000 / 4000, the credit arms at 2000
# (scaling.method_sizes), 3 seeds; then the data-efficiency report and the diagnostics (pits against the
# truth, samples with both a positive and a negative, spurious steps, Fig. 7 at 2000). Resumes after a kill.
#
#   bash scripts/arith_credit_study.sh                                        # -> runs/arith-credit
#   bash scripts/arith_credit_study.sh --set "scaling.seeds=[0]"              # any config override
# Two cores: run the seeds side by side (threads: 1 each), then the report:
#   for s in 0 1 2; do bash scripts/arith_credit_study.sh --set "scaling.seeds=[$s]" & done; wait
#   bash scripts/arith_credit_study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
read -ra M <<< "${MATHREASON:-.venv/bin/mathreason}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"${M[@]}" scaling --preset arith_credit "$@" --quiet
"${M[@]}" scaling-report --preset arith_credit "$@"
"${M[@]}" diagnostics --preset arith_credit "$@" --questions 50 --samples 2 --rollouts 4 --quiet
