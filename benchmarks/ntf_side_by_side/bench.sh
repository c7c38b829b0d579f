#!/usr/bin/env bash
# Side-by-side training throughput: Next-Token-Failures' own train.py (a checkout of
# github.com/gregorbachmann/Next-Token-Failures at NTF_DIR, unmodified, timed from the outside by
# ntf_timed.py) vs our benchmarks/stargraph_throughput.py, same model, same graph family
# G(deg 2, path 5, 50 nodes), same batch size, same threads, float32 on CPU. Writes $OUT (JSON).
# Their code is not part of this project: clone it yourself and point NTF_DIR at it.
#
#   full run (idle machine, ~3-5 min):   NTF_DIR=~/Next-Token-Failures bash benchmarks/ntf_side_by_side/bench.sh
#   smoke (tiny model, 1 thread, <30 s): SMOKE=1 NTF_DIR=... bash benchmarks/ntf_side_by_side/bench.sh
#
# Env overrides: THREADS (default 2; 1 in SMOKE), BS (128), STEPS (timed steps, 40; 3 in SMOKE),
# WARMUP (untimed steps first, 5; 1 in SMOKE), PROFILE (profiled steps of our side, 10), N_LAYER/N_EMBD/N_HEAD (6/384/6; 1/16/2 in SMOKE),
# NTF_DIR (required), MAIN (this repository), PY ($MAIN/.venv/bin/python), WORK (scratch: logs, graph cache;
# default a temporary folder), OUT ($WORK/result.json).
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${NTF_DIR:?set NTF_DIR to a checkout of Next-Token-Failures}"
NTF_DIR=$(cd "$NTF_DIR" && pwd)
MAIN=${MAIN:-$(cd "$SCRIPT_DIR/../.." && pwd)}
HERE=${WORK:-$(mktemp -d)}
PY=${PY:-$MAIN/.venv/bin/python}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = "1" ]; then
  THREADS=${THREADS:-1}; STEPS=${STEPS:-3}; WARMUP=${WARMUP:-1}
  N_LAYER=${N_LAYER:-1}; N_EMBD=${N_EMBD:-16}; N_HEAD=${N_HEAD:-2}; SIDE_TIMEOUT=${SIDE_TIMEOUT:-120}
else
  THREADS=${THREADS:-2}; STEPS=${STEPS:-40}; WARMUP=${WARMUP:-5}
  N_LAYER=${N_LAYER:-6}; N_EMBD=${N_EMBD:-384}; N_HEAD=${N_HEAD:-6}; SIDE_TIMEOUT=${SIDE_TIMEOUT:-1200}
fi
BS=${BS:-128}
PROFILE=${PROFILE:-10}                # profiled steps of our side after the timed ones (where its time goes)
DEG=2; PATH_LEN=5; NUM_NODES=50
OUT=${OUT:-$HERE/result.json}
LOGS=$HERE/logs; mkdir -p "$LOGS"
NTRAIN=$(( (STEPS + WARMUP) * BS ))   # exactly STEPS+WARMUP full batches = one NTF epoch
NTEST=$BS                             # NTF evaluates after epoch 0 regardless; keep it to one batch

export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
export PYTHONDONTWRITEBYTECODE=1            # never write __pycache__ into $MAIN
export STEPCREDIT_CACHE=$HERE/cache         # our graph cache stays in the scratch folder
export TQDM_MININTERVAL=1

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
echo "[bench] smoke=$SMOKE threads=$THREADS bs=$BS steps=$STEPS warmup=$WARMUP model=${N_LAYER}L/${N_EMBD}d/${N_HEAD}h loadavg=$LOAD_BEFORE"
awk -v l="${LOAD_BEFORE%% *}" 'BEGIN{ if (l > 0.5) print "[bench] WARNING: 1-min load average " l " > 0.5: the machine is not idle, numbers will be low/noisy" }'

# ---------------------------------------------------------------- data (NTF text format, from our exporter)
# The graphs our side trains on (same data settings, same seed), written where their loader looks.
GDIR=$NTF_DIR/data/datasets/graphs
# (The benchmark draws its train set excluding its --eval-prompts test graphs: export with n_test = EVAL.)
EVAL=256
DATA_SETS=(--set data.degree=$DEG --set data.path_len=$PATH_LEN --set data.num_nodes=$NUM_NODES
           --set data.n_train=$NTRAIN --set data.n_test=$EVAL --set data.n_eval_train=$NTEST)
echo "[bench] exporting our $NTRAIN train / $EVAL test graphs in NTF format to $GDIR"
( cd "$MAIN" && "$PY" benchmarks/stargraph_throughput.py --preset paper "${DATA_SETS[@]}" --export-ntf "$GDIR" --export-only ) \
    > "$LOGS/export.log" 2>&1 || { echo "[bench] export failed, see $LOGS/export.log"; exit 1; }

# ---------------------------------------------------------------- (a) NTF's train.py
NTF_PYPATH=""
"$PY" -c "import wandb" >/dev/null 2>&1 || NTF_PYPATH=$SCRIPT_DIR/stubs   # wandb only imported, never used
echo "[bench] (a) NTF train.py: n_train=$NTRAIN (= $((STEPS+WARMUP)) steps of $BS), epochs 1, n_test=$NTEST"
rm -f "$HERE/ntf_result.json"
T0=$EPOCHREALTIME
PYTHONPATH=$NTF_PYPATH timeout "$SIDE_TIMEOUT" "$PY" "$SCRIPT_DIR/ntf_timed.py" --ntf-dir "$NTF_DIR" --threads "$THREADS" --warmup "$WARMUP" \
    --out "$HERE/ntf_result.json" -- \
    --model gpt --n_layer "$N_LAYER" --n_embd "$N_EMBD" --n_head "$N_HEAD" \
    --deg $DEG --path_len $PATH_LEN --num_nodes $NUM_NODES --n_train "$NTRAIN" --n_test "$NTEST" \
    --batch_size "$BS" --lr 0.0005 --epochs 1 > "$LOGS/ntf.log" 2>&1
NTF_RC=$?
NTF_WALL=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{print b - a}')
[ $NTF_RC -eq 0 ] || { echo "[bench] NTF side failed (rc=$NTF_RC); tail of $LOGS/ntf.log:"; tail -20 "$LOGS/ntf.log"; }

# ---------------------------------------------------------------- (b) ours
echo "[bench] (b) ours: benchmarks/stargraph_throughput.py --preset paper, same model/batch/threads, --amp off"
rm -f "$HERE/ours_result.json"
T0=$EPOCHREALTIME
( cd "$MAIN" && timeout "$SIDE_TIMEOUT" "$PY" benchmarks/stargraph_throughput.py --preset paper --threads "$THREADS" \
    --amp off --set sft.batch_size=$BS --set model.n_layer=$N_LAYER --set model.n_embd=$N_EMBD \
    --set model.n_head=$N_HEAD "${DATA_SETS[@]}" \
    --steps "$STEPS" --warmup "$WARMUP" --eval-prompts "$EVAL" --profile "$PROFILE" --out "$HERE/ours_result.json" ) > "$LOGS/ours.log" 2>&1
OURS_RC=$?
OURS_WALL=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{print b - a}')
[ $OURS_RC -eq 0 ] || { echo "[bench] our side failed (rc=$OURS_RC); tail of $LOGS/ours.log:"; tail -20 "$LOGS/ours.log"; }

# ---------------------------------------------------------------- combine
"$PY" - "$OUT" <<PYEOF
import json, os, platform, sys, time
def load(p):
    try:
        with open(p) as f: return json.load(f)
    except Exception as e: return {"error": repr(e)}
ntf, ours = load("$HERE/ntf_result.json"), load("$HERE/ours_result.json")
n, o = ntf.get("ntf_samples_per_s"), ours.get("train_samples_per_s")
cpu = ""
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except Exception: pass
res = {
    "ntf_samples_per_s": n,
    "ours_samples_per_s": o,
    "ours_over_ntf": (o / n) if (n and o) else None,
    # The most our side could reach if everything but the arithmetic of the model (matmul, attention, GELU,
    # layer norm: kernels any trainer of this model runs) cost nothing: NTF's step time / our kernel time.
    "ours_over_ntf_if_overhead_free": ((o / n) / ours["train_step_profile"]["kernels"]) if (n and o and ours.get("train_step_profile")) else None,
    "unit": "training sequences (graphs) per second; each sequence = 31 input tokens (32-token graph minus last), loss on the 5 path tokens",
    "smoke": "$SMOKE" == "1",
    "steps": {"timed": $STEPS, "warmup_untimed": $WARMUP},
    "batch_size": $BS,
    "threads": $THREADS,
    "model_config": {"n_layer": $N_LAYER, "n_embd": $N_EMBD, "n_head": $N_HEAD, "bias": True, "dropout": 0.0,
                     "dtype": "float32 (no autocast on CPU on either side)", "torch_compile": False,
                     "params_ntf": ntf.get("model", {}).get("params"), "params_ours": ours.get("model", {}).get("params")},
    "graph": {"deg": $DEG, "path_len": $PATH_LEN, "num_nodes": $NUM_NODES},
    "machine": {"cpu": cpu, "nproc": os.cpu_count(), "loadavg_before": "$LOAD_BEFORE",
                "loadavg_after": open("/proc/loadavg").read().split()[:3], "python": platform.python_version(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S")},
    "details": {
        "ntf": {
            "how": "NTF's unmodified train.py (--model gpt, epochs 1, n_train = (steps+warmup)*batch_size graphs: our side's "
                   "training graphs, exported in NTF's format) run in-process by benchmarks/ntf_side_by_side/ntf_timed.py, which wraps tqdm to timestamp each "
                   "batch request of the epoch-0 training loop; samples/s = sum of batch sizes of the timed steps / time from "
                   "the request of batch <warmup> to the end of the epoch. Includes their DataLoader (per-sample __getitem__ + "
                   "collate), full-sequence logits, loss.item(), accuracy(), GradScaler (disabled on CPU), AdamW (torch default).",
            "rc": $NTF_RC, "side_wall_s": float("$NTF_WALL"), "result": ntf},
        "ours": {
            "how": "benchmarks/stargraph_throughput.py --preset paper with the same model/batch/threads and --amp off: "
                   "train_samples_per_s = timed_steps*batch_size / wall time of the timed steps after <warmup> untimed steps "
                   "(each step: batch index from pre-tokenised tensor, forward with target-only logits, loss, backward, "
                   "AdamW step, zero_grad).",
            "rc": $OURS_RC, "side_wall_s": float("$OURS_WALL"), "result": ours},
    },
}
with open(sys.argv[1], "w") as f:
    json.dump(res, f, indent=2)
print(json.dumps({k: res[k] for k in ("ntf_samples_per_s", "ours_samples_per_s", "ours_over_ntf", "ours_over_ntf_if_overhead_free", "smoke", "steps", "batch_size", "threads", "model_config")}, indent=2))
print("[bench] full result written to", sys.argv[1])
PYEOF
[ $NTF_RC -eq 0 ] && [ $OURS_RC -eq 0 ]
