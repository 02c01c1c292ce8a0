"""Shared fixtures: a small generated corpus and a way to write run configs; nothing touches the network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpt2dist.demo_corpus import write_demo_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def story_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(train.txt, val.txt) of the bundled story generator: ~0.7 MB train, ~36 kB val."""
    return write_demo_corpus(tmp_path_factory.mktemp("corpus"), train_stories=2000, val_stories=100, seed=7)


def tiny_config(run_dir: Path, train_files: list[str], val_files: list[str] | None = None, **sections) -> dict:
    """A tiny fp32 CPU run; keyword sections (model=..., train=...) update the defaults."""
    cfg = {
        "run_dir": str(run_dir),
        "seed": 1,
        "model": {"preset": "tiny"},
        "tokenizer": {"kind": "char"},
        "data": {"train": train_files, "val": val_files or [], "block_size": 32},
        "train": {"max_steps": 10, "micro_batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
                  "log_every": 1, "eval_every": 0, "eval_batches": 4},
        "checkpoint": {"every": 5, "keep_last": 2},
        "logging": {"tensorboard": False, "progress": "lines"},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m gpt2dist.cli ARGS` the way a user would; fail with its output when it fails."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "gpt2dist.cli", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"gpt2dist {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl merged per step, the last record of a step winning (resumed runs re-log steps)."""
    from gpt2dist.plot import read_metrics as read

    records, _ = read(run_dir / "metrics.jsonl")
    return {r["step"]: r for r in records}


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are collected everywhere and skipped where no CUDA device is visible (CI, laptops)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bench/gpu/run.sh runs the GPU tests on one)")
    for item in gpu_items:
        item.add_marker(skip)
