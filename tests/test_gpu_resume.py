"""On one CUDA GPU: a run SIGKILLed after a checkpoint and resumed gives the unbroken run's losses -- bit for bit in
fp32 with PyTorch's deterministic algorithms, within a stated tolerance in bf16 -- and the very same windows; a
checkpoint written on the GPU resumes on the CPU and the reverse; fp32 on CUDA runs TF32 matmuls and its MFU uses
the TF32 peak. Skipped without CUDA (tests/conftest.py); bench/gpu/run.sh runs them on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpu_runs import (
    DETERMINISTIC,
    PY,
    assert_mfu_uses_the_peak,
    gpu_config,
    kill_after_checkpoint,
    losses,
    read_trace,
    start,
    train,
    write_config,
)
from helpers import read_metrics

pytestmark = pytest.mark.gpu

# bf16 kernels are not deterministic (attention backward, split-K matmuls reduce in a varying order) and bf16
# rounds the activations to 8 bits: a resumed bf16 run starts from the identical state but drifts by rounding
# noise. 0.02 is ~0.7% of these losses (~3), far below what a wrong resume costs (a lost optimizer state or a
# skipped batch moves the loss by 0.1-1); the data is checked exactly through the trace.
BF16_TOLERANCE = 0.02
# fp32 on CUDA multiplies in TF32 (10-bit mantissa) and the CPU in full fp32: the same weights give losses
# ~1e-3 apart, and a few steps of training on either side keep them within this.
CROSS_DEVICE_TOLERANCE = 0.02


def resume_config(run_dir: Path, corpus, **train) -> dict:
    """40 steps with a checkpoint at 20, dropout on (so the CUDA RNG state must come back too), windows traced."""
    return gpu_config(run_dir, corpus, model={"dropout": 0.1},
                      train={"max_steps": 40, "eval_every": 20, **train}, checkpoint={"every": 20, "keep_last": 3},
                      logging={"trace_windows": True})


def killed_and_resumed(tmp_path: Path, corpus, prefix: list[str], **train_keys) -> tuple[Path, Path]:
    """Run A unbroken; run B SIGKILLed after its step-20 checkpoint, then resumed by the same command."""
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    config_a = write_config(tmp_path / "a.yaml", resume_config(run_a, corpus, **train_keys))
    config_b = write_config(tmp_path / "b.yaml", resume_config(run_b, corpus, **train_keys))
    start(prefix, config_a)
    kill_after_checkpoint([*prefix, str(config_b)], run_b, step=20)
    killed_at = max(read_metrics(run_b))
    assert 20 <= killed_at < 40, f"the kill must land between the checkpoint and the end, got step {killed_at}"
    resumed = start(prefix, config_b)
    assert "resuming from step-00000020" in resumed.stdout
    assert sorted(read_trace(run_a)) == list(range(1, 41))
    assert read_trace(run_b) == read_trace(run_a), "the resumed run consumed different windows"
    return run_a, run_b


@pytest.mark.xdist_group("deterministic")
def test_fp32_resume_on_gpu_repeats_the_unbroken_losses_bit_for_bit(tmp_path, story_corpus):
    run_a, run_b = killed_and_resumed(tmp_path, story_corpus, [PY, "-c", DETERMINISTIC], precision="fp32")
    assert losses(run_b, range(21, 41)) == losses(run_a, range(21, 41))
    assert read_metrics(run_b)[40]["val_loss"] == read_metrics(run_a)[40]["val_loss"]


@pytest.mark.xdist_group("bf16-resume")
def test_bf16_resume_on_gpu_stays_within_tolerance(tmp_path, story_corpus):
    run_a, run_b = killed_and_resumed(tmp_path, story_corpus, [PY, "-m", "gpt2dist.train"], precision="bf16")
    for step, (a, b) in enumerate(zip(losses(run_a, range(21, 41)), losses(run_b, range(21, 41)), strict=True), 21):
        assert b == pytest.approx(a, abs=BF16_TOLERANCE), f"step {step}: {b} after resume, {a} unbroken"
    assert read_metrics(run_b)[40]["val_loss"] == pytest.approx(read_metrics(run_a)[40]["val_loss"],
                                                                  abs=BF16_TOLERANCE)


# ---- fp32 across devices: constant LR, so a 10-step run is the first half of a 20-step one ----
def fp32_config(run_dir: Path, corpus, device: str) -> dict:
    return gpu_config(run_dir, corpus, train={"precision": "fp32", "device": device, "schedule": "constant"},
                      checkpoint={"every": 10, "keep_last": 3}, logging={"trace_windows": True})


@pytest.fixture(scope="module")
def gpu_fp32_run(tmp_path_factory, story_corpus) -> tuple[Path, str]:
    """20 unbroken fp32 steps on the GPU: the reference of this group (xdist: one worker)."""
    tmp = tmp_path_factory.mktemp("fp32")
    out = train(write_config(tmp / "run.yaml", fp32_config(tmp / "run", story_corpus, "cuda")))
    return tmp / "run", out.stdout


@pytest.mark.xdist_group("fp32")
def test_fp32_on_cuda_multiplies_in_tf32_and_logs_mfu_against_the_tf32_peak(gpu_fp32_run):
    run_dir, stdout = gpu_fp32_run
    assert "torch on cuda:0 fp32" in stdout
    assert_mfu_uses_the_peak(run_dir, "fp32", tf32=True)


def resumed_on(tmp_path: Path, corpus, first: str, then: str) -> Path:
    """10 steps on `first`, then the same run resumed on `then` to step 20."""
    run = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", fp32_config(run, corpus, first))
    train(config, "train.max_steps=10")
    out = train(config, f"train.device={then}")
    assert "resuming from step-00000010" in out.stdout and f"torch on {then}" in out.stdout
    return run


def assert_continues(run: Path, reference: Path) -> None:
    """Same windows (exact), same tokens, losses within CROSS_DEVICE_TOLERANCE of the unbroken GPU run."""
    assert read_trace(run) == read_trace(reference)
    ours, theirs = read_metrics(run), read_metrics(reference)
    for step in range(1, 21):
        assert ours[step]["tokens"] == theirs[step]["tokens"]
        assert ours[step]["loss"] == pytest.approx(theirs[step]["loss"], abs=CROSS_DEVICE_TOLERANCE), step
    assert ours[20]["val_loss"] == pytest.approx(theirs[20]["val_loss"], abs=CROSS_DEVICE_TOLERANCE)


@pytest.mark.xdist_group("fp32")
def test_a_gpu_checkpoint_resumes_on_the_cpu(gpu_fp32_run, tmp_path, story_corpus):
    assert_continues(resumed_on(tmp_path, story_corpus, "cuda", "cpu"), gpu_fp32_run[0])


@pytest.mark.xdist_group("fp32")
def test_a_cpu_checkpoint_resumes_on_the_gpu(gpu_fp32_run, tmp_path, story_corpus):
    assert_continues(resumed_on(tmp_path, story_corpus, "cpu", "cuda"), gpu_fp32_run[0])
