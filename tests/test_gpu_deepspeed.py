"""On one CUDA GPU, gpt2dist's DeepSpeed engine: one rank over NCCL at ZeRO 0, 1, 2 and 3, in bf16 and in fp16
(DeepSpeed's own loss scaler), learning and checkpointing. Skipped without CUDA (tests/conftest.py);
bench/gpu/run.sh runs them on a GPU."""

from __future__ import annotations

import math

import pytest
from gpu_runs import PY, assert_learns, gpu_config, latest_step_dir, nccl_seen, start, write_config
from helpers import read_metrics

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_trains_one_rank_over_nccl(tmp_path, story_corpus, stage, precision):
    run = tmp_path / "run"
    cfg = gpu_config(run, story_corpus, train={"precision": precision},
                     distributed={"backend": "deepspeed", "zero_stage": stage}, checkpoint={"every": 10})
    # One process, no launcher: gpt2dist joins a one-rank NCCL group itself (dist.init_process_group).
    out = start([PY, "-m", "gpt2dist.train"], write_config(tmp_path / "run.yaml", cfg), env={"NCCL_DEBUG": "VERSION"})
    assert f"deepspeed ZeRO-{stage} on cuda:0 {precision}" in out.stdout
    assert nccl_seen(out), "no NCCL communicator was started (NCCL_DEBUG=VERSION printed nothing)"
    metrics = read_metrics(run)
    if precision == "fp16":  # the first steps may overflow at DeepSpeed's initial scale 2**16 and be skipped
        kept = [metrics[s]["loss"] for s in range(1, 21) if not metrics[s].get("skipped")]
        assert len(kept) >= 15 and all(math.isfinite(v) for v in kept) and kept[-1] < kept[0] - 0.5, kept
    else:
        assert_learns(run, 20)
    assert metrics[20]["val_loss"] < metrics[0]["val_loss"] - 0.5
    step_dir = latest_step_dir(run)
    assert step_dir.name == "step-00000020"
    assert (step_dir / "deepspeed").is_dir() and (step_dir / "model.safetensors").is_file()
