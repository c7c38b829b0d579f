#!/usr/bin/env bash
# The first-pit pilot of the arith task (docs/results/arith_pit_pilot.json): does a larger D_syn, seen about
# once in the preset's 600 SFT steps, make first pits land on the first wrong equation? Normal stages and
# config overrides only:
#   1. `scaling` with one point and method sft: pi_sft on N problems of a POOL-problem arith pool
#      (600 steps of 32, as in the study) and its greedy test accuracy (reported, never selected on);
#   2. `pipeline --stages sample,grade,advantages` in a probe run whose D_syn is a random PROBE of those N
#      training problems (data.dsyn = the point's data/dsyn.jsonl, data.subset_size) and whose sampling and
#      rollout policy is the point's pi_sft (a model path, as the Fig. 7 runs of `diagnostics` do), with
#      SAMPLES samples per question (the advantages stage values the first 2, as in the preset);
#   3. `diagnostics --no-qcurves` on the probe: pit_truth, sample_mix and spurious_steps
#      (-> ROOT/probe-N/report/diagnostics.json; `python docs/results/export_arith_pits.py ROOT` collects them).
#
#   bash scripts/arith_pit_pilot.sh 20000                 # N = 20000 of a 20000-problem pool -> runs/arith-pits
#   bash scripts/arith_pit_pilot.sh 10000                 # N = 10000 of the same pool (nested subset, same test set)
#   bash scripts/arith_pit_pilot.sh 20000 --set threads=2 # any config override, passed to every command
#   SEED=1 bash scripts/arith_pit_pilot.sh 2000 ...      # a replicate: its own pi_sft, samples and pits
#   env: POOL (20000), PROBE (2000 questions), SAMPLES (8 per question), SEED (0), ROOT (runs/arith-pits),
#        MATHREASON (the command, default .venv/bin/mathreason; e.g. "python -m mathreason.cli")
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:?usage: arith_pit_pilot.sh N [--set key=value ...]}"
shift
POOL="${POOL:-20000}"
PROBE="${PROBE:-2000}"
SAMPLES="${SAMPLES:-8}"
SEED="${SEED:-0}"
ROOT="${ROOT:-runs/arith-pits}"
case "$ROOT" in /*) ;; *) ROOT="$PWD/$ROOT" ;; esac
read -ra M <<< "${MATHREASON:-.venv/bin/mathreason}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"${M[@]}" scaling --preset arith --set run_dir="$ROOT" --set data.arith.train_size="$POOL" \
  --set "scaling.sizes=[$N]" --set "scaling.seeds=[$SEED]" --set "scaling.methods=[sft]" "$@" --quiet
POINT="$ROOT/seed-$SEED/size-$N"
P=(--preset arith --set data.arith.train_size="$POOL" --set data.dsyn="$POINT/data/dsyn.jsonl"
   --set sample.policy="$POINT/sft/model" --set advantages.policy="$POINT/sft/model" --set sample.n="$SAMPLES")
"${M[@]}" pipeline "${P[@]}" --set run_dir="$ROOT/probe-$N/seed-$SEED/size-$PROBE" --set seed="$SEED" \
  --set data.subset_size="$PROBE" "$@" --stages sample,grade,advantages --quiet
# every seed probed so far (diagnostics.json is rewritten with all of them, so SEED=1 after SEED=0 keeps seed 0's entry)
SEEDS=$(ls -d "$ROOT/probe-$N"/seed-*/ | sed 's#.*/seed-\([0-9]*\)/$#\1#' | sort -n | paste -sd, -)
"${M[@]}" diagnostics "${P[@]}" --set run_dir="$ROOT/probe-$N" --set "scaling.sizes=[$PROBE]" \
  --set "scaling.seeds=[$SEEDS]" "$@" --no-qcurves --quiet
