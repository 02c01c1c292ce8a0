"""nanoGPT's `train.py` as a throughput baseline for bench/train_throughput.py (`--nanogpt DIR`), and the corpora.

nanoGPT is never vendored: pass a checkout (github.com/karpathy/nanoGPT; measured at commit 3adf61e). It imports
only numpy and torch (train.py, model.py, configurator.py); wandb is off by default and compile is set from the
bench's own setting. It trains from `DIR/train.bin` + `val.bin` (uint16 token ids) and `meta.pkl` (vocab_size),
which `write_nanogpt_data` writes from exactly the tokens gpt2dist trains on: the same tokenizer (the run config's:
gpt2dist's own, built from the data as a run builds it, or with `--tokenizer bpe` the bench's one shared BPE) and
the same documents + EOS in the same order (a one-rank pass of the streaming path). nanoGPT then draws random
windows from them, its own loader. Its model is its own GPT (bias=True to match GPT-2, dropout 0); its
per-iteration `time ...ms` log line (the time from one iteration's end to the next, data loading included) gives
the step end times.

Corpora (`write_corpus`): "short" is the bundled story generator's train.txt (documents of ~350 characters,
blank-line separated); "long" is the same stories concatenated into `long_docs` files of one document each,
read with data.sample_by=document -- the corpus shape (books, code files, dumps) where a document is far
longer than a window.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ITER_LINE = re.compile(r"^iter (\d+): loss ([0-9.naninf]+), time ([0-9.]+)ms")


@dataclass
class Corpus:
    name: str  # short | long
    patterns: list[str]  # data.train
    sample_by: str
    text_file: Path  # all of the text in one file (the HF Trainer baseline reads one file)


def write_corpus(kind: str, folder: Path, stories: int, seed: int, long_docs: int = 2) -> Corpus:
    from gpt2dist.demo_corpus import generate_stories, write_demo_corpus

    train, _ = write_demo_corpus(folder, train_stories=stories, val_stories=10, seed=seed)
    if kind == "short":
        return Corpus("short", [str(train)], "paragraph", train)
    texts = generate_stories(stories, seed=seed)
    long_dir = folder / "long"
    long_dir.mkdir(exist_ok=True)
    per = -(-len(texts) // long_docs)
    for i in range(long_docs):  # stories joined by single newlines: one document per file
        (long_dir / f"part{i:02d}.txt").write_text("\n".join(texts[i * per:(i + 1) * per]) + "\n", encoding="utf-8")
    return Corpus("long", [str(long_dir / "*.txt")], "document", train)


def write_nanogpt_data(cfg, out: Path) -> tuple[int, int]:
    """train.bin / val.bin / meta.pkl from the tokens a one-rank gpt2dist run trains on; (vocab size, tokens)."""
    from gpt2dist.data.pieces import DocumentEncoder
    from gpt2dist.data.stream import TextStream
    from gpt2dist.data.text import resolve_files
    from gpt2dist.run.rundir import build_run_tokenizer

    files = resolve_files(cfg.data.train, "data.train")
    tokenizer = build_run_tokenizer(cfg, files)  # deterministic: the tokenizer the gpt2dist run builds
    if len(tokenizer) > 65536:
        raise SystemExit(f"nanoGPT stores uint16 token ids: vocabulary {len(tokenizer)} is too large")
    stream = TextStream(files, cfg.data, DocumentEncoder(tokenizer), repeat=False)
    parts = [np.asarray(w.tokens, dtype=np.uint16) for w in stream]
    parts.append(stream.buffer.astype(np.uint16))
    ids = np.concatenate(parts)
    out.mkdir(parents=True, exist_ok=True)
    ids.tofile(out / "train.bin")
    ids[: max(len(ids) // 10, cfg.data.block_size * 4)].tofile(out / "val.bin")  # only read by its step-0 eval
    with open(out / "meta.pkl", "wb") as fh:
        pickle.dump({"vocab_size": len(tokenizer)}, fh)
    return len(tokenizer), len(ids)


def nanogpt_command(nanogpt: Path, spec, data: Path, out_dir: Path, device: str, compile_model: bool) -> list[str]:
    """nanoGPT's documented command-line overrides (configurator.py: --key=value)."""
    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[spec.precision]
    args = {"dataset": str(data), "out_dir": str(out_dir), "device": device, "compile": compile_model,
            "dtype": dtype, "batch_size": spec.micro, "block_size": spec.block_size, "n_layer": spec.n_layer,
            "n_head": spec.n_head, "n_embd": spec.n_embd, "dropout": 0.0, "bias": True,
            "gradient_accumulation_steps": spec.accum, "max_iters": spec.steps - 1,  # iterations 0..max_iters
            "eval_interval": 10**9, "eval_iters": 1, "log_interval": 1, "learning_rate": spec.lr,
            "min_lr": spec.lr / 10, "warmup_iters": 10, "lr_decay_iters": spec.steps, "weight_decay": 0.1,
            "grad_clip": 1.0, "always_save_checkpoint": False, "wandb_log": False}
    return [sys.executable, str(nanogpt / "train.py"), *(f"--{k}={v}" for k, v in args.items())]


def run_nanogpt(nanogpt: Path, spec, data: Path, workdir: Path, threads: int | None, device: str,
                compile_model: bool, process_cpu) -> tuple[list[float], list[float], float | None, float]:
    """Run nanoGPT's train.py (cwd: the checkout, which its `exec(open('configurator.py'))` needs); returns the
    step end times (seconds, cumulative from its per-iteration times), its CPU seconds as each iteration's line
    arrives (`process_cpu(pid)`, the caller's meter), the last loss and the setup seconds (start to the end of
    iteration 0)."""
    out_dir = workdir / f"nanogpt-out-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    proc = subprocess.Popen(nanogpt_command(nanogpt, spec, data, out_dir, device, compile_model), cwd=nanogpt,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ends, cpu, last_loss, setup, total, tail = [], [], None, 0.0, 0.0, []
    for line in proc.stdout:
        tail = (tail + [line])[-20:]
        if match := ITER_LINE.match(line):
            total += float(match.group(3)) / 1000
            ends.append(total)
            cpu.append(process_cpu(proc.pid))
            last_loss = float(match.group(2))
            if len(ends) == 1:
                setup = time.perf_counter() - started
    if proc.wait() != 0 or len(ends) != spec.steps:
        raise SystemExit(f"nanoGPT exited {proc.returncode} after {len(ends)} iterations:\n{''.join(tail)}")
    return ends, cpu, last_loss, setup
