"""On one CUDA GPU, train.compile=auto compiles (Triton kernels appear in the inductor cache) on the torch engine
and on the DeepSpeed engine, and a compiler that fails at the first call leaves an eager run that finishes.
Each compiling run costs 20-60 s: these tests run in parallel with the others (bench/gpu/run.sh uses xdist).
Skipped without CUDA (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpu_runs import BROKEN_COMPILER, PY, assert_learns, gpu_config, start, write_config

pytestmark = pytest.mark.gpu


def compile_config(run_dir: Path, corpus, **sections) -> dict:
    # eval off: an evaluation in eval mode would compile a second graph
    return gpu_config(run_dir, corpus, train={"compile": "auto", "precision": "bf16", "eval_every": 0},
                      checkpoint={"every": 0}, **sections)


def triton_kernels(cache: Path) -> list[Path]:
    """Generated modules in the inductor cache that hold Triton kernels (what inductor writes for CUDA)."""
    return [p for p in cache.rglob("*.py") if "triton" in p.read_text(encoding="utf-8", errors="replace")]


@pytest.mark.parametrize("backend", ["torch", "deepspeed"])
def test_compile_auto_compiles_on_cuda(tmp_path, story_corpus, backend):
    run = tmp_path / "run"
    sections = {"distributed": {"backend": "deepspeed", "zero_stage": 1}} if backend == "deepspeed" else {}
    config = write_config(tmp_path / "run.yaml", compile_config(run, story_corpus, **sections))
    out = start([PY, "-m", "gpt2dist.train"], config, env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")},
                timeout=220)
    assert "torch.compile failed" not in out.stdout + out.stderr
    assert triton_kernels(tmp_path / "inductor"), "train.compile=auto on CUDA generated no Triton kernel"
    assert_learns(run, 20)


@pytest.mark.parametrize("backend", ["torch", "deepspeed"])
def test_a_failing_compiler_falls_back_to_eager_on_cuda(tmp_path, story_corpus, backend):
    run = tmp_path / "run"
    sections = {"distributed": {"backend": "deepspeed", "zero_stage": 1}} if backend == "deepspeed" else {}
    config = write_config(tmp_path / "run.yaml", compile_config(run, story_corpus, **sections))
    out = start([PY, "-c", BROKEN_COMPILER], config)
    assert "torch.compile failed" in out.stderr and "forced compiler failure" in out.stderr
    assert_learns(run, 20)
