"""`gpt2dist demo`: the embedded default run -- write the bundled story corpus, train a tiny character-level
GPT-2 on CPU (about two minutes on two cores), export it and print samples. Set GPT2DIST_DEMO_STEPS to
train fewer steps (the test of the README command does)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from gpt2dist.config import RunConfig, apply_override, build_dataclass, validate

# Same run as examples/tiny-cpu.yaml (a test keeps the two equal).
DEMO_YAML = """\
run_dir: runs/tiny
seed: 1234
model:
  preset: tiny          # 2 layers x 64 wide, widened here to 4 x 128 (~0.8M parameters)
  n_layer: 4
  n_embd: 128
  n_head: 4
tokenizer:
  kind: char            # one token per character: the classic from-scratch setup
data:
  train: [data/demo/train.txt]
  val: [data/demo/val.txt]
  block_size: 256       # = the model's positions: samples are up to 256 characters
train:
  max_steps: 1000
  micro_batch_size: 8
  grad_accum_steps: 1
  lr: 2.0e-3
  min_lr: 2.0e-4
  warmup_steps: 50
  eval_every: 250
  eval_batches: 10
  log_every: 25
checkpoint:
  every: 250
  keep_last: 2
"""


def demo_config(corpus_dir: Path, run_dir: Path, overrides: list[str]) -> RunConfig:
    raw = yaml.safe_load(DEMO_YAML)
    raw["run_dir"] = str(run_dir)
    raw["data"]["train"] = [str(corpus_dir / "train.txt")]
    raw["data"]["val"] = [str(corpus_dir / "val.txt")]
    steps = os.environ.get("GPT2DIST_DEMO_STEPS")
    if steps:
        overrides = [f"train.max_steps={steps}", f"train.eval_every={max(1, int(steps) // 2)}",
                     f"checkpoint.every={steps}", f"train.log_every={max(1, int(steps) // 4)}", *overrides]
    for item in overrides:
        apply_override(raw, item)
    cfg = build_dataclass(RunConfig, raw, prefix="")
    validate(cfg)
    return cfg


def run_demo(corpus_dir: str = "data/demo", run_dir: str = "runs/demo", overrides: list[str] | None = None,
             prompt: str = "Once upon a time") -> list[str]:
    from gpt2dist.demo_corpus import write_demo_corpus
    from gpt2dist.generate import generate
    from gpt2dist.run.export import export
    from gpt2dist.train import train

    corpus, run = Path(corpus_dir), Path(run_dir)
    if not (corpus / "train.txt").is_file() or not (corpus / "val.txt").is_file():
        train_file, val_file = write_demo_corpus(corpus)
        print(f"demo corpus: {train_file} ({train_file.stat().st_size:,} bytes), {val_file}")
    cfg = demo_config(corpus, run, list(overrides or []))
    result = train(cfg)
    if not result.get("complete"):  # a rerun of a finished demo trains nothing and goes straight to the samples
        val = f", val loss {result['val_loss']:.3f}" if result.get("val_loss") is not None else ""
        print(f"trained to step {result['step']}: loss {result['loss']:.3f}{val}")
    exported = export(run, run / "export")
    print(f"exported to {exported}; samples (top-k 20, top-p 0.95, temperature 0.8):")
    samples = generate(str(exported), prompt, max_new_tokens=300, top_k=20, top_p=0.95, temperature=0.8,
                       num_samples=3, seed=1)
    for i, text in enumerate(samples, 1):
        print(f"--- sample {i} ---\n{text}")
    print(f"next: gpt2dist generate --model {run} --prompt \"{prompt}\" --num-return-sequences 3 | "
          f"gpt2dist eval --model {run} --data {corpus / 'val.txt'} | gpt2dist plot {run} -o curves.png")
    return samples
