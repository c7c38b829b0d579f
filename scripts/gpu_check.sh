#!/usr/bin/env bash
# GPU check in one command (about 8 minutes on one H200): every `gpu`/`vllm`-marked test, the sampling
# throughput benchmark (vLLM against transformers on the same prompts), the tiny math pipeline through
# part 2 on the vLLM backend, and the star-graph paper preset's timing, all written into ONE JSON:
#
#     OUT=/some/folder bash scripts/gpu_check.sh            # -> $OUT/gpu_check.json, $OUT/gpu_check_logs.txt
#     GPU_CHECK_QUICK=1 bash scripts/gpu_check.sh           # (or --quick / --dry-run) tiny sizes, short time boxes
#
# Parts, in order, each time-boxed with `timeout` (default seconds; GPU_CHECK_T_<PART>=N overrides one):
#   setup 90                .venv/bin/python when it imports torch (GPU_CHECK_PYTHON=... picks one), else
#                           `scripts/setup.sh math,test,vllm` (pip fails fast without a network: PIP_RETRIES=0),
#                           else the system python3 with the repo on PYTHONPATH; wheels in .whl/ (if any) are
#                           installed with --no-index into the work folder and put on PYTHONPATH
#   facts 60                nvidia-smi, CPU/memory, git commit, python/torch/CUDA/vLLM/transformers/trl versions
#   pytest_gpu 90           pytest -m "gpu or vllm" tests (pass/skip/fail counts, per test)
#   sampling_throughput 90  benchmarks/sampling_throughput.py: transformers, then vLLM, on the same prompts
#                           (a 512-wide 8-layer random Llama, 64 prompts x 8 samples x 128 tokens)
#   stargraph_throughput 45 benchmarks/stargraph_throughput.py --preset paper (SFT step time, eval rates)
#   pipeline_tiny 150       mathreason pipeline --preset tiny --methods sft,rft,per_step_dpo,dpo,awr with
#                           sample/advantages/eval on vLLM (gpu_memory_utilization 0.3); without vLLM it runs
#                           on transformers and says so; stages are read from the run folder, so a time-boxed
#                           run still reports every stage it finished (part 2 comes before rft and eval)
#   stargraph_paper_cut 150 stargraph reproduce --preset paper with SFT steps cut to 1/10 and post-training
#                           steps to 1/6, everything else as the preset, extrapolated to the full preset
# A total deadline (GPU_CHECK_TOTAL_S, default 465 s) shortens the last parts' boxes; a part left with under
# 30 s is recorded as skipped. Parts that need CUDA are recorded as skipped (with the reason) without it,
# unless GPU_CHECK_ALLOW_CPU=1. GPU_CHECK_ONLY=a,b runs only those parts (the others: skipped).
# The JSON is rewritten after every part, so a kill still leaves valid JSON with every part's status
# ("pending" for parts not reached). Work folders go to GPU_CHECK_WORK (default: a new /tmp folder); $OUT
# gets only gpu_check.json and gpu_check_logs.txt (each part's command, exit code and last 300 lines).
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2

QUICK="${GPU_CHECK_QUICK:-0}"
for arg in "$@"; do
    case "$arg" in
        --quick | --dry-run) QUICK=1 ;;
        -h | --help) sed -n '2,/^set -u$/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $arg (use --quick or --help)" >&2; exit 2 ;;
    esac
done

OUT_DIR="${OUT:-runs/gpu_check}"
mkdir -p "$OUT_DIR" && OUT_DIR="$(cd "$OUT_DIR" && pwd)"
JSON="$OUT_DIR/gpu_check.json"
LOGS="$OUT_DIR/gpu_check_logs.txt"
WORK="${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$WORK/logs"
: >"$LOGS"

if [ "$QUICK" = 1 ]; then TOTAL="${GPU_CHECK_TOTAL_S:-120}"; else TOTAL="${GPU_CHECK_TOTAL_S:-465}"; fi
MIN_PART=30
[ "$QUICK" = 1 ] && MIN_PART=5
START=$(date +%s)
ALLOW_CPU="${GPU_CHECK_ALLOW_CPU:-0}"
ONLY="${GPU_CHECK_ONLY:-}"
PARTS="setup,facts,pytest_gpu,sampling_throughput,stargraph_throughput,pipeline_tiny,stargraph_paper_cut"

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PIP_RETRIES=0 PIP_TIMEOUT=10 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# The helper needs only the standard library: any python3 will do.
HPY=""
for c in python3 python "$REPO/.venv/bin/python"; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then HPY="$c"; break; fi
done
helper() {
    if [ -n "$HPY" ]; then "$HPY" "$REPO/scripts/gpu_check.py" "$@"; else echo "gpu_check: no python3 for the helper" >&2; return 1; fi
}

helper init --json "$JSON" --parts "$PARTS" --meta "quick=$QUICK" --meta "total_budget_s=$TOTAL" \
    --meta "out_dir=$OUT_DIR" --meta "work_dir=$WORK" --meta "repo=$REPO" \
    || printf '{"schema": "stepcredit-gpu-check/1", "error": "the helper could not start", "parts": {}}\n' >"$JSON"

elapsed() { echo $(($(date +%s) - START)); }

# budget PART DEFAULT: seconds for PART's time box (its default or GPU_CHECK_T_<PART>, capped in quick mode and
# by what is left of the total deadline); prints 0 when fewer than MIN_PART seconds are left.
budget() {
    local var="GPU_CHECK_T_${1^^}" want left
    want="${!var:-$2}"
    [ "$QUICK" = 1 ] && [ -z "${!var:-}" ] && [ "$want" -gt 45 ] && want=45
    left=$((TOTAL - $(elapsed) - 5))
    [ "$want" -gt "$left" ] && want=$left
    [ "$want" -lt "$MIN_PART" ] && want=0
    echo "$want"
}

selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

skip() { # skip PART REASON (its message goes to stderr: gate's stdout is only the time box)
    helper record --json "$JSON" --part "$1" --status skipped --reason "$2" >&2
    printf '===== %s: skipped (%s)\n' "$1" "$2" >>"$LOGS"
}

# run_part PART TIMEOUT RECORD-ARGS... -- COMMAND...: run COMMAND under `timeout`, log it, record it.
RC=0
run_part() {
    local part="$1" t="$2"; shift 2
    local rec=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do rec+=("$1"); shift; done
    shift
    local log="$WORK/logs/$part.log" t0 t1 wall
    if [ "$t" -le 0 ]; then skip "$part" "no time left of the ${TOTAL}s total ($(elapsed)s elapsed)"; return; fi
    echo "[gpu_check] $part: running (time box ${t}s, $(elapsed)s elapsed): $*"
    t0=$(date +%s.%N)
    timeout -k 10 "$t" "$@" >"$log" 2>&1 </dev/null
    RC=$?
    t1=$(date +%s.%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    helper record --json "$JSON" --part "$part" --rc "$RC" --wall "$wall" --timeout "$t" --log "$log" --cmd "$*" "${rec[@]}"
    { printf '===== %s (exit %s, %ss, time box %ss): %s\n' "$part" "$RC" "$wall" "$t" "$*"; tail -n 300 "$log"; } >>"$LOGS"
}

# ---------------------------------------------------------------- setup: which python runs the project

PY=""
PY_SOURCE=""
py_has_torch() { [ -n "$1" ] && timeout 90 "$1" -c 'import torch' >/dev/null 2>&1; }
setup_log="$WORK/logs/setup.log"
: >"$setup_log"
t0=$(date +%s.%N)
setup_rc=0
setup_reason=""
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY="$GPU_CHECK_PYTHON"; PY_SOURCE="GPU_CHECK_PYTHON"
elif py_has_torch "$REPO/.venv/bin/python"; then
    PY="$REPO/.venv/bin/python"; PY_SOURCE=".venv (present)"
elif ! selected setup; then
    setup_reason="not selected (GPU_CHECK_ONLY)"
else
    t=$(budget setup 90)
    if [ "$t" -gt 0 ]; then
        echo "[gpu_check] setup: no usable .venv; bash scripts/setup.sh math,test,vllm (time box ${t}s)"
        timeout -k 10 "$t" bash scripts/setup.sh math,test,vllm >>"$setup_log" 2>&1 </dev/null
        setup_rc=$?
        if [ "$setup_rc" = 0 ] && py_has_torch "$REPO/.venv/bin/python"; then
            PY="$REPO/.venv/bin/python"; PY_SOURCE=".venv (installed now by scripts/setup.sh)"
        fi
    else
        setup_reason="no time left for scripts/setup.sh"
    fi
fi
if [ -z "$PY" ]; then
    for c in python3 python; do
        if command -v "$c" >/dev/null 2>&1 && py_has_torch "$(command -v "$c")"; then
            PY="$(command -v "$c")"; PY_SOURCE="system $c (repo on PYTHONPATH; the project is not installed)"; break
        fi
    done
fi
# Wheels carried in .whl/ (no network there): installed beside, never into, the chosen python.
if [ -n "$PY" ] && compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    echo "[gpu_check] setup: installing $(ls "$REPO"/.whl/*.whl | wc -l) wheel(s) from .whl/ into $WORK/site" | tee -a "$setup_log"
    if timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        "$REPO"/.whl/*.whl >>"$setup_log" 2>&1; then
        export PYTHONPATH="$WORK/site:$PYTHONPATH"; setup_reason="wheels from .whl/ installed on PYTHONPATH"
    else
        setup_reason="installing the wheels from .whl/ failed (see the log)"
    fi
fi
t1=$(date +%s.%N)
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
if [ -n "$PY" ]; then setup_status=ok; else setup_status=failed; fi
[ -n "$PY" ] && [ "$setup_rc" != 0 ] && setup_status=partial
if [ -n "$PY" ]; then setup_reason="python: $PY ($PY_SOURCE)${setup_reason:+; $setup_reason}"
else setup_reason="no python with torch found${setup_reason:+; $setup_reason}"; fi
[ "$setup_rc" != 0 ] && setup_reason="$setup_reason; scripts/setup.sh exited $setup_rc (see the tail)"
helper record --json "$JSON" --part setup --status "$setup_status" --rc "$setup_rc" --wall "$wall" --log "$setup_log" \
    --reason "$setup_reason" \
    --extra "python=\"$PY\"" --extra "python_source=\"$PY_SOURCE\"" --extra "setup_sh_rc=$setup_rc"
{ echo "===== setup: python=$PY ($PY_SOURCE), setup.sh exit $setup_rc"; tail -n 100 "$setup_log"; } >>"$LOGS"

# ---------------------------------------------------------------- facts

if t=$(budget facts 60) && [ "$t" -gt 0 ]; then
    run_part facts "$t" -- "${HPY:-python3}" "$REPO/scripts/gpu_check.py" facts --json "$JSON" --py "$PY" \
        --probe-timeout $((t > 15 ? t - 10 : t))
else
    skip facts "no time left"
fi
CUDA="$(helper get --json "$JSON" facts.python.cuda_available)"
VLLM="$(helper get --json "$JSON" facts.python.vllm_usable)"
[ "$ALLOW_CPU" = 1 ] && CUDA=1
no_cuda_reason="needs CUDA: torch.cuda.is_available() is False here (or no python with torch); GPU_CHECK_ALLOW_CPU=1 runs it anyway"

# gate PART DEFAULT_SECONDS [needs-cuda]: echo the time box, or record the skip and echo 0.
gate() {
    local t
    if ! selected "$1"; then skip "$1" "not selected (GPU_CHECK_ONLY=$ONLY)"; echo 0; return; fi
    if [ -z "$PY" ]; then skip "$1" "no python with torch"; echo 0; return; fi
    if [ "${3:-}" = cuda ] && [ "$CUDA" != 1 ]; then skip "$1" "$no_cuda_reason"; echo 0; return; fi
    t=$(budget "$1" "$2")
    if [ "$t" -le 0 ]; then skip "$1" "no time left of the ${TOTAL}s total ($(elapsed)s elapsed)"; echo 0; return; fi
    echo "$t"
}

# ---------------------------------------------------------------- pytest -m "gpu or vllm"

t=$(gate pytest_gpu 90 cuda)
if [ "$t" -gt 0 ]; then
    run_part pytest_gpu "$t" --parse pytest --artifact "$WORK/pytest.xml" -- \
        "$PY" -m pytest -m "gpu or vllm" tests -v -rA -p no:cacheprovider --continue-on-collection-errors \
        --junitxml="$WORK/pytest.xml"
fi

# ---------------------------------------------------------------- sampling throughput: transformers vs vLLM

t=$(gate sampling_throughput 90 cuda)
if [ "$t" -gt 0 ]; then
    if [ "$QUICK" = 1 ]; then
        sizes=(--hidden-size 64 --layers 2 --prompts 4 --n 2 --max-tokens 8)
    else
        sizes=(--hidden-size 512 --layers 8 --prompts 64 --n 8 --max-tokens 128 --batch-size 128)
    fi
    # One run per backend on the same model folder, prompts, seeds and parameters, so that a vLLM start that
    # outlasts the time box still leaves the transformers numbers.
    mkdir -p "$WORK/sampling"
    run_part sampling_throughput "$t" --parse sampling --artifact "$WORK/sampling" -- \
        bash -c 'py=$1 dir=$2; shift 2; rc=0
            for b in transformers vllm; do
                "$py" benchmarks/sampling_throughput.py "$@" --backends "$b" --out "$dir/$b.json" || rc=$?
            done
            exit $rc' gpu_check "$PY" "$WORK/sampling" "${sizes[@]}" --gpu-memory-utilization 0.5 --workdir "$WORK/sampling_model"
fi

# ---------------------------------------------------------------- star-graph paper preset: training and evaluation rates

t=$(gate stargraph_throughput 45 cuda)
if [ "$t" -gt 0 ]; then
    if [ "$QUICK" = 1 ]; then steps=(--steps 5 --warmup 2 --eval-prompts 256); else steps=(--steps 200 --warmup 20 --eval-prompts 5000); fi
    run_part stargraph_throughput "$t" --parse sg_throughput --artifact "$WORK/stargraph_throughput.json" -- \
        "$PY" benchmarks/stargraph_throughput.py --preset "${GPU_CHECK_SG_PRESET:-paper}" --device "${GPU_CHECK_SG_DEVICE:-auto}" \
        "${steps[@]}" --out "$WORK/stargraph_throughput.json"
fi

# ---------------------------------------------------------------- the tiny pipeline through part 2

t=$(gate pipeline_tiny 150 cuda)
if [ "$t" -gt 0 ]; then
    note=()
    if [ "$VLLM" = 1 ]; then backend=vllm; else
        backend=transformers
        note=(--reason "vLLM is not usable here (see facts.python.vllm): ran on the transformers backend instead")
    fi
    methods="sft,rft,per_step_dpo,dpo,awr"
    ov=(--set run_dir="$WORK/pipeline_tiny")
    for s in sample eval advantages; do
        ov+=(--set "$s.backend.backend=$backend" --set "$s.backend.gpu_memory_utilization=0.3" --set "$s.backend.max_model_len=512")
    done
    if [ "$QUICK" = 1 ]; then methods="sft,per_step_dpo"; ov+=(--set pref.train.epochs=1); fi
    run_part pipeline_tiny "$t" --parse pipeline --artifact "$WORK/pipeline_tiny" \
        --extra 'backend_requested="vllm"' --extra "backend_used=\"$backend\"" "${note[@]}" -- \
        "$PY" -m mathreason.cli pipeline --preset tiny --methods "$methods" --quiet "${ov[@]}"
fi

# ---------------------------------------------------------------- star-graph paper preset, steps cut

t=$(gate stargraph_paper_cut 150 cuda)
if [ "$t" -gt 0 ]; then
    if [ "$QUICK" = 1 ]; then cut=(--sft-factor 100 --post-factor 60 --seeds 0); else cut=(--sft-factor "${GPU_CHECK_SG_SFT_FACTOR:-10}" --post-factor "${GPU_CHECK_SG_POST_FACTOR:-6}"); fi
    mapfile -t sets < <(timeout 60 "$PY" scripts/gpu_check.py sg-sets --preset "${GPU_CHECK_SG_PRESET:-paper}" "${cut[@]}" \
        --plan-out "$WORK/sg_plan.json" 2>>"$WORK/logs/stargraph_paper_cut.sets.log")
    if [ "${#sets[@]}" -eq 0 ]; then
        cp "$WORK/logs/stargraph_paper_cut.sets.log" "$WORK/logs/stargraph_paper_cut.log" 2>/dev/null
        helper record --json "$JSON" --part stargraph_paper_cut --status failed --rc 1 \
            --reason "could not build the cut preset's overrides" --log "$WORK/logs/stargraph_paper_cut.log"
    else
        t=$(budget stargraph_paper_cut 150)
        rm -rf "$WORK/sg_paper_cut"
        run_part stargraph_paper_cut "$t" --parse sg_cut --artifact "$WORK/sg_paper_cut" --plan "$WORK/sg_plan.json" -- \
            "$PY" -m stargraph.cli reproduce "$WORK/sg_paper_cut" --preset "${GPU_CHECK_SG_PRESET:-paper}" "${sets[@]}" \
            ${GPU_CHECK_SG_DEVICE:+--set runtime.device=$GPU_CHECK_SG_DEVICE}
    fi
fi

helper finish --json "$JSON"
echo "[gpu_check] report: $JSON; logs: $LOGS; work folders: $WORK"
exit 0
