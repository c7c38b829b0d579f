#!/usr/bin/env bash
# A small cached artefact of the arith task for teaching (about 7 minutes on 2 CPU cores; docs/arith_study.md):
# pi_sft trained on 1000 generated problems (half of its questions get both correct and incorrect
# samples; trained on 500 it memorises them), its 4 samples per question, their grades, per-step
# advantages and first pits from best-of-5 rollouts, the four kinds of preference pairs, and a per-step
# DPO policy,
# all in one ordinary run folder (default runs/arith-artefact; checkpoints deleted, final models kept), so a
# notebook can show real positives, negatives, Q curves, pits and a per-step DPO update without training.
# The run folder is about 30 MB; its teaching copy RUN_DIR-teach (mathreason.artefact: pi_sft in bfloat16,
# the first 200 questions' samples, grades, advantages, pits and pairs, 100 test questions) about 3.5 MB.
#
#   bash scripts/arith_artefact.sh [RUN_DIR] [--set section.field=value ...]
#
# TEACH_DIR sets where the teaching copy goes (default RUN_DIR-teach). The course's lesson 4 reads the copy
# committed as notebooks/artefacts/arith-teach (remake it: TEACH_DIR=notebooks/artefacts/arith-teach bash
# scripts/arith_artefact.sh) or $STEPCREDIT_TEACH_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
M="${MATHREASON:-.venv/bin/mathreason}"
RUN="${1:-runs/arith-artefact}"
shift || true
TEACH="${TEACH_DIR:-$RUN-teach}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$M" pipeline --preset arith --set "run_dir=$RUN" --set threads=2 --set data.subset_size=1000 --set sft.keep_checkpoints=false \
    --set pref.train.keep_checkpoints=false --set "eval.policies=[sft,pref/per_step_dpo]" --methods sft,per_step_dpo "$@" --quiet
du -sh "$RUN"
rm -rf "$TEACH"
mkdir -p "$(dirname "$TEACH")"
"${PYTHON:-.venv/bin/python}" -m mathreason.artefact "$RUN" "$TEACH" --questions 200 --test-questions 100
du -sh "$TEACH"
