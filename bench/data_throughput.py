"""Data-path throughput against what training consumes, measured in the same run on this machine.

Prints tokens/s of
  (a) streaming tokenize+pack: the in-process `TextStream` and `gpt2dist prepare` with 1..N workers,
  (b) packed-shard reading: `PackedBatches.next_batch` (memmap, shuffled windows, int64 tensors),
each as a ratio to the tokens/s of one training step of the `gpt2` preset (124M, T=1024) on this
machine -- the data path must never be what a run waits on -- and the resume time (open the data,
restore the cursor, produce the first batch) at 0%, 50% and 99% of the corpus for both paths.

    python bench/data_throughput.py                  # ~7 MB corpus, byte-level BPE, T=1024
    python bench/data_throughput.py --stories 4000 --gpt2-steps 1 --block-size 256   # quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gpt2dist.config import RunConfig, load_config
from gpt2dist.data.packed import open_train
from gpt2dist.data.pieces import DocumentEncoder
from gpt2dist.data.prepare import prepare
from gpt2dist.data.stream import TextStream
from gpt2dist.data.text import resolve_files
from gpt2dist.demo_corpus import write_demo_corpus
from gpt2dist.tokenizer import load_tokenizer


def gpt2_step_tokens_per_s(block_size: int, micro: int, steps: int) -> float:
    """Tokens/s of forward+backward+AdamW on the gpt2 preset (GPT-2 124M, vocab 50257) in fp32 on this device."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randint(0, 50257, (micro, block_size + 1))
    times = []
    for i in range(steps + 1):  # the first step (allocations, lazy init) is warm-up
        started = time.perf_counter()
        loss = model(batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - started)
    return micro * block_size / statistics.median(times)


def config(tmp: Path, train: Path, block_size: int, packed_dir: Path) -> RunConfig:
    return load_config(None, [f"run_dir={tmp / 'run'}", f"data.train=[{train}]", f"data.block_size={block_size}",
                              "tokenizer.kind=bpe", "tokenizer.vocab_size=8192", f"data.packed_dir={packed_dir}",
                              "model.n_positions=1024"])


def streaming_tokens_per_s(cfg: RunConfig, encode, seconds: float) -> tuple[float, int]:
    stream = TextStream(resolve_files(cfg.data.train, "data.train"), cfg.data, encode)
    tokens, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch, _ = stream.next_batch(8)
        tokens += batch.numel()
    return tokens / (time.perf_counter() - started), tokens


def packed_tokens_per_s(cfg: RunConfig, micro: int, seconds: float) -> float:
    stream = open_train(cfg, 0, 1, micro, 1)
    tokens, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        batch, _ = stream.next_batch(micro)
        tokens += batch.numel()
    return tokens / (time.perf_counter() - started)


def streaming_resume_seconds(cfg: RunConfig, encode, positions: list[float], total_tokens: int) -> dict[float, float]:
    """Consume the corpus once, keeping the cursor at each position; then time open + restore + first batch."""
    stream = TextStream(resolve_files(cfg.data.train, "data.train"), cfg.data, encode)
    cursors, consumed = {}, 0
    for fraction in sorted(positions):
        while consumed < fraction * total_tokens:
            consumed += stream.next_batch(8)[0].numel()
        cursors[fraction] = stream.state_dict()
    out = {}
    for fraction, cursor in cursors.items():
        started = time.perf_counter()
        fresh = TextStream(resolve_files(cfg.data.train, "data.train"), cfg.data, encode)
        fresh.load_cursors([cursor])
        fresh.drain_pulled()
        while not fresh.drain_pulled():  # the saved leftover tokens come first: time until a new document is read
            fresh.next_batch(8)
        out[fraction] = time.perf_counter() - started
    return out


def packed_resume_seconds(cfg: RunConfig, positions: list[float]) -> dict[float, float]:
    total = open_train(cfg, 0, 1, 8, 1).schedule.total
    out = {}
    for fraction in positions:
        started = time.perf_counter()
        stream = open_train(cfg, 0, 1, 8, 1)
        stream.load_cursors([{"format": "packed", "samples": int(fraction * total) // 8 * 8, "micro_in_step": 0,
                              "windows": [total], "rank": 0, "world_size": 1}])
        stream.next_batch(8)
        out[fraction] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=20000, help="corpus size in generated stories (~350 B each)")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="most prepare workers to try")
    parser.add_argument("--gpt2-steps", type=int, default=2, help="measured gpt2-preset training steps")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each read measurement")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        train, _ = write_demo_corpus(tmp / "corpus", train_stories=args.stories, val_stories=10, seed=3)
        print(f"corpus: {train.stat().st_size / 1e6:.1f} MB of text")

        gpt2 = gpt2_step_tokens_per_s(args.block_size, 1, args.gpt2_steps)
        print(f"gpt2 preset training step (124M, T={args.block_size}, micro 1, fp32): {gpt2:,.0f} tokens/s  [baseline]")

        prepared = {}
        for workers in sorted({1, max(1, args.workers)}):
            cfg = config(tmp, train, args.block_size, tmp / f"packed-{workers}")
            report = prepare(cfg, workers, progress=False)
            prepared[workers] = report
            label = "1 process (tokenizer threads on)" if workers == 1 else f"{workers} worker processes"
            print(f"(a) prepare, {label}: {report.tokens_per_s:12,.0f} tokens/s "
                  f"({report.tokens_per_s / workers:,.0f} per worker, {report.tokens:,} tokens in "
                  f"{report.seconds:.1f} s) = {report.tokens_per_s / gpt2:,.0f}x gpt2 step")
        cfg = config(tmp, train, args.block_size, tmp / "packed-1")
        tokenizer = load_tokenizer(tmp / "packed-1" / "tokenizer")

        encode = DocumentEncoder(tokenizer)
        rate, _ = streaming_tokens_per_s(cfg, encode, args.seconds)
        print(f"(a) streaming TextStream, in-process: {rate:12,.0f} tokens/s = {rate / gpt2:,.0f}x gpt2 step")
        for micro in (8, 32):
            rate = packed_tokens_per_s(cfg, micro, args.seconds)
            print(f"(b) packed reading, micro {micro:2d}, T={args.block_size}: {rate:14,.0f} tokens/s = "
                  f"{rate / gpt2:,.0f}x gpt2 step")
        positions = [0.0, 0.5, 0.99]
        total = prepared[1].total_tokens
        stream_resume = streaming_resume_seconds(cfg, encode, positions, total)
        packed_resume = packed_resume_seconds(cfg, positions)
        for fraction in positions:
            print(f"resume at {fraction:4.0%}: streaming {stream_resume[fraction]:7.3f} s | packed "
                  f"{packed_resume[fraction]:7.4f} s")
        growth = np.array([packed_resume[p] for p in positions])
        print(f"packed resume 99%/0% time ratio: {growth[-1] / growth[0]:.2f} (O(1): no replay)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
