"""Small CUDA runs for the GPU tests (tests/test_gpu_*.py), driven through the CLI and the per-rank entry point
as a user starts them, in subprocesses: what they check is the run's own output (stdout, metrics.jsonl, the
checkpoint), so they hold however the package is laid out inside."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import read_metrics, run_cli, tiny_config, write_yaml

PY = sys.executable

# A tiny char-level GPT-2 on the GPU: 20 steps of 8 x 64 tokens, eval at 10 and 20. train.compile=false unless a
# test is about compiling (auto would compile on CUDA: 20-60 s per process).
GPU_TRAIN = {"device": "cuda", "compile": "false", "max_steps": 20, "micro_batch_size": 8, "log_every": 1,
             "eval_every": 10, "eval_batches": 2, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2}

# `python -c DETERMINISTIC CONFIG ...`: gpt2dist's per-rank entry point with PyTorch's deterministic algorithms
# on (there is no config key for them). cuBLAS needs a fixed workspace for reproducible matmuls
# (CUBLAS_WORKSPACE_CONFIG, PyTorch "Reproducibility" notes); SDPA then picks a deterministic attention backward.
DETERMINISTIC = ("import os, sys; os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8'); import torch; "
                 "torch.use_deterministic_algorithms(True); from gpt2dist.train import main; main(sys.argv[1:])")

# `python -c BROKEN_COMPILER CONFIG ...`: the entry point with a compiler backend that raises at the first call,
# as a failing Triton or ptxas build does; the run must fall back to eager and finish.
BROKEN_COMPILER = ("import sys, torch; real = torch.compile\n"
                   "def broken(gm, example_inputs): raise RuntimeError('forced compiler failure (test)')\n"
                   "torch.compile = lambda model=None, **kw: real(model, backend=broken)\n"
                   "from gpt2dist.train import main; main(sys.argv[1:])")


def gpu_config(run_dir: Path, corpus: tuple[Path, Path], **sections) -> dict:
    """tiny_config on CUDA (GPU_TRAIN, block 64); keyword sections update it key by key."""
    merged: dict[str, dict] = {"train": dict(GPU_TRAIN), "data": {"block_size": 64}}
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    return tiny_config(run_dir, [str(corpus[0])], [str(corpus[1])], **merged)


def write_config(path: Path, cfg: dict) -> Path:
    return write_yaml(path, cfg)


def train(config: Path, *overrides: str, env: dict | None = None, timeout: float = 200):
    """`gpt2dist train CONFIG OVERRIDES` (fails the test with the output when it fails)."""
    return run_cli("train", str(config), *overrides, env=env, timeout=timeout)


def start(prefix: list[str], config: Path, *overrides: str, env: dict | None = None, timeout: float = 200):
    """`PREFIX CONFIG OVERRIDES`, e.g. [python, -m, gpt2dist.train] or [python, -c, DETERMINISTIC]."""
    cmd = [*prefix, str(config), *overrides]
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)[:300]} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def kill_after_checkpoint(cmd: list[str], run_dir: Path, step: int, timeout: float = 200) -> None:
    """Start `cmd` and SIGKILL its process group once checkpoint `step` is complete (a preemption, no warning)."""
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if latest.is_file() and latest.read_text().strip() == f"step-{step:08d}":
                os.killpg(proc.pid, signal.SIGKILL)
                return
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before the kill: {proc.stderr.read().decode()[-4000:]}")
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"checkpoint {step} never appeared")
    finally:
        proc.wait(timeout=60)


def losses(run_dir: Path, steps: range) -> list[float]:
    metrics = read_metrics(run_dir)
    return [metrics[s]["loss"] for s in steps]


def assert_learns(run_dir: Path, steps: int) -> dict[int, dict]:
    """Every logged loss finite, and the last well below the first (a char model starts near ln(vocab))."""
    metrics = read_metrics(run_dir)
    values = [metrics[s]["loss"] for s in range(1, steps + 1)]
    assert all(v is not None and math.isfinite(v) for v in values), values
    assert values[-1] < values[0] - 0.5, f"loss went {values[0]:.3f} -> {values[-1]:.3f}"
    return metrics


def latest_step_dir(run_dir: Path) -> Path:
    root = run_dir / "checkpoints"
    return root / (root / "latest").read_text().strip()


def read_trace(run_dir: Path) -> dict[int, list[str]]:
    """step -> digests of the windows it consumed (logging.trace_windows), as the surviving runs consumed them."""
    per_step: dict[int, list[str]] = {}
    for line in (run_dir / "trace" / "windows-rank00000.txt").read_text().splitlines():
        if line.startswith("# start "):  # a (re)start: what a killed run traced after this step is void
            start = int(line.split()[2])
            per_step = {s: w for s, w in per_step.items() if s <= start}
            continue
        kind, step, *rest = line.split()
        if kind == "w":
            per_step.setdefault(int(step), []).append(rest[-1])
    return per_step


def nccl_seen(proc: subprocess.CompletedProcess) -> bool:
    """NCCL_DEBUG=VERSION makes NCCL print its version when a communicator starts (stdout)."""
    return re.search(r"NCCL version \d", proc.stdout + proc.stderr) is not None


def flops_per_token(step_dir: Path, block_size: int) -> float:
    """What train.py divides by: 6N + 12LHQT of the checkpointed model (gpt2dist.model's convention)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2dist import model as gpt2dist_model

    config = GPT2Config.from_json_file(str(step_dir / "config.json"))
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    n_params = gpt2dist_model.count_parameters(model, non_embedding=True)
    return gpt2dist_model.flops_per_token(n_params, config.n_layer, config.n_embd, block_size)


def assert_mfu_uses_the_peak(run_dir: Path, precision: str, *, tf32: bool = False) -> None:
    """Every logged MFU is tokens/s x FLOPs per token over this GPU's peak for the run's precision (TF32's for
    fp32: the torch engine allows TF32 matmuls on CUDA). The GPU must be in the peak table; an H200 (SXM) and an
    H100 by name get their datasheet figures."""
    from gpt2dist.observe.metrics import peak_flops

    name = torch.cuda.get_device_name(0)
    peak = peak_flops(name, precision, tf32=tf32)
    assert peak is not None, f"{name!r} is not in gpt2dist.planning.hardware.GPUS: add its datasheet peak"
    if re.search(r"\bH200\b", name) and "NVL" not in name:
        assert peak == {"bf16": 989e12, "fp16": 989e12, "fp32": 494.7e12}[precision]
    if re.search(r"\bH100\b", name) and not re.search(r"PCIe|NVL", name):
        assert peak == {"bf16": 989e12, "fp16": 989e12, "fp32": 494.7e12}[precision]
    fpt = flops_per_token(latest_step_dir(run_dir), block_size=64)
    logged = [r for r in read_metrics(run_dir).values() if r.get("tokens_per_s")]
    assert logged
    for record in logged:
        assert record["mfu"] == pytest.approx(record["tokens_per_s"] * fpt / peak, rel=1e-9), record
