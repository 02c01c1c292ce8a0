#!/usr/bin/env bash
# The GPU kit's one command: on a fresh, offline GPU machine, install what it lacks, run the GPU tests, measure
# GPT-2 124M, and leave everything under OUT_DIR. Nothing is downloaded there.
#
#   bash bench/gpu/fetch_wheels.sh            # here, beforehand: the wheels the machine lacks, in .whl/
#   bash bench/gpu/run.sh OUT_DIR             # there (carry .whl): give it the call's limit, LIMIT_S=<timeout_s>
#   DRY_RUN=1 bash bench/gpu/run.sh OUT_DIR   # anywhere: print every command it would run, run none
#
# Stages, each timed, logged with a timestamp and recorded; a failed stage does not stop the next. The headline
# benchmark runs as soon as the imports work, before the tests, so a short call still returns the figure it is for:
#   env        nvidia-smi, python -VV, pip list (the machine's real versions, for machine-packages.txt)
#   wheels     .whl/*.whl into $WORK/site with --target
#   upgrades   .whl/if-older/: a package the machine has, installed only when its copy is older than the carried
#              wheels need (wheels-if-older.txt: typing_extensions >= 4.14.1 for pydantic 2.13.5)
#   project    gpt2dist itself into $WORK/project (no network, no build isolation); both go first on PYTHONPATH,
#              and tests and bench import that copy, never the checkout (they run from $WORK)
#   imports    versions, DeepSpeed's accelerator, the GPU's name
#   check      check_wheels.py --installed: every wheel's requirements against what really imports there
#   matmul     the bf16 matmul ceiling of this GPU (MFU's real denominator beside the datasheet's)
#   bench-torch-compile   the headline: GPT-2 124M (12x768, T=1024, vocab 50,257), bf16, one GPU, torch compiled,
#              and the HF Trainer in the same process
#   tests      pytest -m gpu -v over tests/test_gpu_*.py (parallel workers when pytest-xdist is there)
#   bench-*    torch eager at micro batch 16, 8 and 32, ZeRO-1, ZeRO-2 (packed data), torch eager on streamed data;
#              each JSON holds the doctor's prediction beside the measured tokens/s
#   chunked-ce chunked vs full cross-entropy: peak memory and time at vocab 50,257, T=1024
#   summary    OUT_DIR/summary.md and OUT_DIR/results.json
# OUT_DIR holds four files (a device call returns at most 8, none deeper than 2 folders): run.log (this
# stage log), summary.md, results.json and logs.tar.gz (every stage log, the JUnit XML, the bench JSON, each
# gpt2dist run's metrics.jsonl).
#
# Time: the whole run has a budget, BUDGET_S = LIMIT_S (the device call's limit, default 600 s) minus RESERVE_S
# (20 s: the summary and the archive). Every stage has a limit and a typical time (estimates from the issue's
# account of the last runs, ~430-570 s for all: correct them from stages.tsv); a stage whose typical time no
# longer fits what is left is skipped and recorded as such, so the later, shorter stages still run and the
# summary is always written.
set -uo pipefail

OUT=${1:?usage: bash bench/gpu/run.sh OUT_DIR (DRY_RUN=1 to print the commands only)}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
WORK=${WORK:-/tmp/gpt2dist-gpu-kit}
SITE=$WORK/site
PROJECT=$WORK/project  # its own folder: --target would not merge its bin/ into the wheels' one
LOGS=$WORK/logs
LIMIT_S=${LIMIT_S:-600}
RESERVE_S=${RESERVE_S:-20}
BUDGET_S=${BUDGET_S:-$((LIMIT_S - RESERVE_S))}
TEST_WORKERS=${TEST_WORKERS:-8}
# The benchmark's size: 80 steps of 16 x 1024 tokens; windows of 10 steps after 30 warm-up steps (compilation).
STEPS=${STEPS:-80}
WARMUP=${WARMUP:-30}
WINDOW=${WINDOW:-10}
MICRO=${MICRO:-16}
STORIES=${STORIES:-20000}
START=$SECONDS

log() {
    local line
    line="$(date -u +%H:%M:%S) +$((SECONDS - START))s $*"
    echo "$line"
    [[ $DRY_RUN == 1 ]] || echo "$line" >>"$OUT/run.log"
}

# stage NAME TYPICAL_S LIMIT_S COMMAND...: run COMMAND with its output in $LOGS/NAME.log, within LIMIT_S and the
# budget; skipped when less than TYPICAL_S (what it usually takes) is left.
stage() {
    local name=$1 typical=$2 limit=$3
    shift 3
    if [[ $DRY_RUN == 1 ]]; then
        echo "$name: $*"
        return 0
    fi
    local left=$((BUDGET_S - (SECONDS - START)))
    if ((left < typical || left < 15)); then
        log "$name: skipped (it typically takes ${typical} s; ${left} s of the ${BUDGET_S} s budget are left)"
        printf '%s\tskipped\t0\t-\n' "$name" >>"$LOGS/stages.tsv"
        return 0
    fi
    ((limit > left)) && limit=$left
    log "$name: start (limit ${limit} s): $*"
    local t0=$SECONDS rc=0 status
    timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status="timed out" ;;
        *) status=failed ;;
    esac
    log "$name: $status (exit $rc) in $((SECONDS - t0)) s; last lines:"
    tail -n 3 "$LOGS/$name.log" | sed 's/^/    /' | tee -a "$OUT/run.log"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" "$rc" >>"$LOGS/stages.tsv"
    tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs 2>/dev/null  # after every stage: a killed run still returns logs
    return 0
}

if [[ $DRY_RUN != 1 ]]; then
    mkdir -p "$OUT"
    rm -rf "$SITE" "$PROJECT" "$LOGS" "$WORK/bench-tmp" "$WORK/pytest"
    mkdir -p "$SITE" "$PROJECT" "$LOGS" "$WORK/bench-tmp" "$WORK/pytest"
    : >"$OUT/run.log"
    printf 'stage\tstatus\tseconds\texit\n' >"$LOGS/stages.tsv"
    cd "$WORK" || exit 1  # never the checkout: python must import the installed gpt2dist, not the source tree
fi
log "gpt2dist GPU kit: repo $REPO, out $OUT, work $WORK, budget ${BUDGET_S} s (limit ${LIMIT_S} s)"

stage env 5 60 bash -c "nvidia-smi; $PY -VV; $PY -m pip list --format=freeze"
stage wheels 10 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$REPO"/.whl/*.whl
stage upgrades 5 60 "$PY" "$REPO/bench/gpu/install_if_older.py" --list "$REPO/bench/gpu/wheels-if-older.txt" \
    --wheels "$REPO/.whl/if-older" --target "$SITE"
stage project 10 120 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
    --target "$PROJECT" "$REPO"
export PYTHONPATH="$PROJECT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
stage imports 15 120 "$PY" "$REPO/bench/gpu/env_report.py"
stage check 5 60 "$PY" "$REPO/bench/gpu/check_wheels.py" --installed --wheels "$REPO/.whl" \
    --project "$REPO/pyproject.toml" -v
stage matmul 15 60 "$PY" "$REPO/bench/gpu/matmul_ceiling.py" --json "$LOGS/matmul.json"

bench=("$PY" "$REPO/bench/train_throughput.py" --preset gpt2 --precision bf16 --tokenizer bpe --pad-vocab --vocab 50257
       --stories "$STORIES" --steps "$STEPS" --warmup "$WARMUP" --window "$WINDOW" --micro "$MICRO"
       --workdir "$WORK/bench-tmp")
packed=(--set data.format=packed --prepare-workers 8)  # tokenized once up front, as the HF Trainer recipe does
# The headline first: gpt2dist compiled and the HF Trainer, one process (each trainer's JSON as it finishes)
stage bench-torch-compile 150 240 "${bench[@]}" "${packed[@]}" --compile true --json "$LOGS/bench-torch-compile.json"

pytest_args=(-m gpu -v -p no:cacheprovider -rA --junitxml "$LOGS/gpu-tests.xml" --basetemp "$WORK/pytest")
if "$PY" -c "import xdist" 2>/dev/null; then
    pytest_args+=(-n "$TEST_WORKERS" --dist loadgroup)  # one GPU, many small runs: they overlap well
fi
if "$PY" -c "import pytest_timeout" 2>/dev/null; then
    pytest_args+=(--timeout 200)
fi
# 8 workers x (a run + its data worker + inductor's compile workers) on 16 cores: a few threads each
stage tests 120 240 env OMP_NUM_THREADS=2 TORCHINDUCTOR_COMPILE_THREADS=4 PYTHONUNBUFFERED=1 \
    "$PY" -m pytest "${pytest_args[@]}" "$REPO"/tests/test_gpu_*.py

stage bench-torch-eager 50 120 "${bench[@]}" "${packed[@]}" --compile false --only gpt2dist \
    --json "$LOGS/bench-torch-eager.json"
for micro in 8 32; do  # micro batch 16 is the one above: tokens/s and MFU against micro batch
    stage "bench-torch-eager-micro$micro" $((micro == 8 ? 40 : 70)) 120 "${bench[@]}" "${packed[@]}" \
        --compile false --only gpt2dist --micro "$micro" --json "$LOGS/bench-torch-eager-micro$micro.json"
done
stage chunked-ce 20 60 "$PY" "$REPO/bench/chunked_ce.py" --json "$LOGS/chunked-ce.json"
stage bench-zero1 60 120 "${bench[@]}" "${packed[@]}" --zero 1 --compile false --only gpt2dist \
    --json "$LOGS/bench-zero1.json"
stage bench-zero2 60 120 "${bench[@]}" "${packed[@]}" --zero 2 --compile false --only gpt2dist \
    --json "$LOGS/bench-zero2.json"
# The streaming path tokenizes in one DataLoader worker while the GPU trains: does it keep up?
stage bench-torch-eager-stream 50 120 "${bench[@]}" --compile false --only gpt2dist \
    --json "$LOGS/bench-torch-eager-stream.json"

if [[ $DRY_RUN == 1 ]]; then
    echo "summary: $PY $REPO/bench/gpu/summarize.py $LOGS $OUT"
    exit 0
fi
log "summary: $PY $REPO/bench/gpu/summarize.py $LOGS $OUT"
"$PY" "$REPO/bench/gpu/summarize.py" "$LOGS" "$OUT" >>"$OUT/run.log" 2>&1 || log "summary: failed (see run.log)"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
log "done in $((SECONDS - START)) s: $OUT/summary.md"
cat "$OUT/summary.md" 2>/dev/null  # the end of the console output is what a remote-run tool shows first
