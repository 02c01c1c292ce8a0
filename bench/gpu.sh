#!/usr/bin/env bash
# GPT-2 124M (12 x 768, T=1024), bf16, one GPU: gpt2dist's torch engine vs its DeepSpeed engine at ZeRO 1 and 2,
# torch.compile on and off, against the Hugging Face Trainer measured in the same invocation. Prints tokens/s and
# MFU per variant (MFU = tokens/s x 6N + 12LHQT over the GPU's bf16 peak, gpt2dist/metrics.py).
#
#   bash bench/gpu.sh                      # all variants, one line each + the full tables in $OUT_DIR
#   STEPS=40 MICRO=8 bash bench/gpu.sh     # shorter / smaller (e.g. a GPU with less memory)
#   DRY_RUN=1 bash bench/gpu.sh            # print the commands only (what CI checks; no GPU needed)
#
# The tokenizer is a byte-level BPE trained on the bundled story corpus with GPT-2's vocabulary size as its
# target; the corpus yields fewer merges than 50257, so the output layer is smaller than GPT-2's and the FLOPs
# per token are counted for the model actually trained (the table prints it). Nothing is downloaded.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
STEPS=${STEPS:-80}
WARMUP=${WARMUP:-30}
WINDOW=${WINDOW:-10}
MICRO=${MICRO:-16}
STORIES=${STORIES:-20000}
OUT_DIR=${OUT_DIR:-bench/out-gpu-$(date +%Y%m%d-%H%M%S)}
DRY_RUN=${DRY_RUN:-0}

if [[ "$DRY_RUN" != 1 ]]; then
    "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "bench/gpu.sh needs a CUDA GPU (DRY_RUN=1 prints the commands)")'
    mkdir -p "$OUT_DIR"
fi

common=(--preset gpt2 --precision bf16 --tokenizer bpe --vocab 50257 --steps "$STEPS" --warmup "$WARMUP"
        --window "$WINDOW" --micro "$MICRO" --stories "$STORIES")
# name | extra arguments for bench/train_throughput.py
variants=(
    "torch-compile|--compile true"
    "torch-eager|--compile false --only gpt2dist"
    "zero1-compile|--zero 1 --compile true --only gpt2dist"
    "zero1-eager|--zero 1 --compile false --only gpt2dist"
    "zero2-compile|--zero 2 --compile true --only gpt2dist"
    "zero2-eager|--zero 2 --compile false --only gpt2dist"
)

for entry in "${variants[@]}"; do
    name=${entry%%|*}
    read -r -a extra <<< "${entry#*|}"
    cmd=("$PYTHON" bench/train_throughput.py "${common[@]}" "${extra[@]}")
    if [[ "$DRY_RUN" == 1 ]]; then
        printf '%s\n' "${cmd[*]} --json $OUT_DIR/$name.json"
        continue
    fi
    echo "== $name: ${cmd[*]}"
    "${cmd[@]}" --json "$OUT_DIR/$name.json" | tee "$OUT_DIR/$name.txt"
done

if [[ "$DRY_RUN" != 1 ]]; then
    echo "== summary (median tokens/s, MFU) -> $OUT_DIR"
    "$PYTHON" - "$OUT_DIR" <<'EOF'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    data = json.loads(path.read_text())
    for name, res in data["results"].items():
        print(f"{path.stem:<14} {name:<11} {res['median']:>12,.0f} tok/s  MFU {res.get('mfu') or float('nan'):.1%}")
EOF
fi
