"""Divergence (issue 12, item 3): a NaN/inf loss or gradient norm applies no update, a few in a row are
tolerated, more stop the run (exit 3, one line, status.json "diverged") and no non-finite weights are ever
saved -- so keep-last-K never prunes a good checkpoint for a bad one.

Runs are forced to diverge for real: a learning rate of 1e30 makes step 1's update overflow the next forward."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import STORY, read_metrics, tiny_config, write_yaml
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2dist.config import RunConfig, TrainConfig
from gpt2dist.engines.torch_engine import TorchEngine, skip_update
from gpt2dist.run.divergence import EXIT_DIVERGED, NonFiniteGuard
from gpt2dist.run.signals import EXIT_PREEMPTED

BATCHES = [torch.randint(0, 50, (2, 17), generator=torch.Generator().manual_seed(i)) for i in range(8)]


def test_guard_counts_consecutive_nonfinite_steps_and_resets_on_a_finite_one():
    guard = NonFiniteGuard(max_bad_steps=2)
    for step, bad in enumerate([False, True, True, False, True, True], start=1):
        guard.record(step, torch.tensor(bad) if step % 2 else bad)  # device flags and host bools alike
    assert guard.settle() == [2, 3, 5, 6] and guard.streak == 2 and guard.diverged_at is None
    guard.record(7, torch.tensor(True))
    assert guard.settle() == [7] and guard.diverged_at == 7
    assert "diverged at step 7" in guard.message("step-00000004") and "step-00000004" in guard.message("step-00000004")
    assert "no checkpoint was written" in guard.message(None)


def snapshot(engine: TorchEngine) -> list[torch.Tensor]:
    state = [p.detach().clone() for p in engine.model.parameters()]
    for per_param in engine.optimizer.state.values():
        state += [v.detach().clone() for v in per_param.values()]
    return state


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_torch_engine_applies_nothing_from_a_nonfinite_step_and_a_run_with_isolated_ones_continues(precision,
                                                                                                    grad_clip):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    cfg = RunConfig(train=TrainConfig(max_steps=8, warmup_steps=0, lr=1e-2, min_lr=1e-3, precision=precision,
                                      grad_clip=grad_clip))
    engine = TorchEngine(model, cfg)
    guard = NonFiniteGuard(max_bad_steps=1)
    poisoned = {2: float("nan"), 5: float("inf")}  # isolated bad steps: a NaN loss, an inf loss
    for step, batch in enumerate(BATCHES):
        before = snapshot(engine)
        loss = engine.forward_loss(batch) * poisoned.get(step, 1.0)
        engine.backward(loss)
        result = engine.step(step)
        guard.record(step, result.nonfinite)
        after = snapshot(engine)
        unchanged = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert unchanged == (step in poisoned), f"step {step}: update applied={not unchanged}"
        assert result.skipped == (step in poisoned)
    assert guard.settle() == sorted(poisoned) and guard.diverged_at is None
    assert engine.weights_finite() and engine.scheduler.last_epoch == len(BATCHES)


def test_a_checkpoint_of_nonfinite_weights_is_refused_and_prunes_nothing(tmp_path):
    from test_checkpoint import save, tiny_engine

    from gpt2dist.run.checkpoint import CheckpointManager
    from gpt2dist.run.divergence import Diverged

    manager, engine = CheckpointManager(tmp_path, keep_last=1), tiny_engine()
    save(manager, engine, 1)
    with torch.no_grad():
        next(engine.model.parameters())[0, 0] = float("nan")
    with pytest.raises(Diverged, match="step 2: the weights hold NaN/inf.*last good checkpoint is step-00000001"):
        save(manager, engine, 2)
    assert [p.name for p in manager.complete_steps()] == ["step-00000001"]
    assert manager.latest_verified().name == "step-00000001" and not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_the_foreach_fallback_skips_too():
    param = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([param], lr=0.1, foreach=True)
    param.grad = torch.full((4,), float("nan"))
    skip_update(optimizer, torch.tensor(True))
    assert torch.equal(param.detach(), torch.ones(4)) and not optimizer.state
    param.grad = torch.ones(4)
    skip_update(optimizer, torch.tensor(False))
    assert not torch.equal(param.detach(), torch.ones(4))


DS_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from gpt2dist import dist
    from gpt2dist.config import DistributedConfig, RunConfig, TrainConfig
    from gpt2dist.engines.deepspeed_engine import DeepSpeedEngine

    dist.init_process_group(dist.discover(), "cpu", 5, deepspeed=True)
    out = {}
    for stage, precision in [(0, "fp32"), (1, "bf16"), (3, "fp32")]:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))
        cfg = RunConfig(train=TrainConfig(max_steps=4, warmup_steps=0, lr=1e-2, min_lr=1e-3, micro_batch_size=2,
                                          precision=precision),
                        distributed=DistributedConfig(backend="deepspeed", zero_stage=stage))
        engine = DeepSpeedEngine(model, cfg)
        optimizer = engine.ds.basic_optimizer
        def state():
            weights = [p.detach().float().clone() for p in engine.ds.module.parameters()]
            if stage == 3:
                weights = [p.ds_tensor.detach().float().clone() for p in engine.ds.module.parameters()]
            moments = [v.detach().clone() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
            return weights + moments
        flags, changed, lrs = [], [], []
        for step in range(4):
            batch = torch.randint(0, 50, (2, 17), generator=torch.Generator().manual_seed(step))
            before = state()
            loss = engine.forward_loss(batch) * (float("nan") if step == 2 else 1.0)
            engine.backward(loss)
            result = engine.step(step)
            after = state()
            flags.append(bool(result.nonfinite))
            changed.append(not all(torch.equal(a, b) for a, b in zip(before, after)))
            lrs.append(engine.optimizer.param_groups[0]["lr"])
        out[f"{stage}-{precision}"] = {"nonfinite": flags, "changed": changed, "finite": engine.weights_finite(),
                                       "scheduler_steps": engine.scheduler.last_epoch}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_deepspeed_engine_applies_nothing_from_a_nonfinite_step(tmp_path):
    """ZeRO-0 fp32 (a plain torch optimizer: gpt2dist's own check), ZeRO-1 bf16 and ZeRO-3 fp32 (DeepSpeed's
    overflow check), one real rank each: the poisoned step changes neither weights nor moments."""
    from ranks import free_port

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-c", DS_SCRIPT], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, **env}, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-4000:]
    for name, got in json.loads(lines[0][len("RESULT "):]).items():
        assert got["nonfinite"] == [False, False, True, False], name
        assert got["changed"] == [True, True, False, True], name
        assert got["finite"] and got["scheduler_steps"] == 4, name  # the schedule counts the skipped step too


def diverging_config(tmp_path: Path, **train) -> Path:
    (tmp_path / "train.txt").write_text(STORY, encoding="utf-8")
    cfg = tiny_config(tmp_path / "run", [str(tmp_path / "train.txt")],
                      train={"max_steps": 12, "lr": 1e30, "min_lr": 0.0, "log_every": 1, "max_bad_steps": 2, **train},
                      checkpoint={"every": 1, "keep_last": 1})
    return write_yaml(tmp_path / "run.yaml", cfg)


ENGINES = {"torch": [], "deepspeed-zero0": ["distributed.backend=deepspeed", "distributed.zero_stage=0"],
           "deepspeed-zero2": ["distributed.backend=deepspeed", "distributed.zero_stage=2"]}


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "precision"), [("torch", "fp32"), ("torch", "bf16"),
                                                   ("deepspeed-zero0", "fp32"), ("deepspeed-zero2", "bf16")])
def test_a_diverging_run_stops_and_no_nonfinite_checkpoint_replaces_a_good_one(tmp_path, engine, precision, warm_cli):
    """Step 1 is finite (the 1e30 update is applied: the weights stay finite), steps 2-4 are NaN and skipped;
    with max_bad_steps=2 the third stops the run. Checkpoints are due at every step and keep_last=1, so a saved
    NaN checkpoint would have pruned step 1: it is the one that survives, and the one named."""
    config = diverging_config(tmp_path)
    run_dir = tmp_path / "run"
    out = warm_cli("train", str(config), f"train.precision={precision}", *ENGINES[engine], check=False)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == EXIT_DIVERGED != EXIT_PREEMPTED, out.stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "training diverged at step 4" in errors[0] and "the last good checkpoint is step-00000001" in errors[0]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "diverged" and status["last_good"] == "step-00000001" and status["step"] == 4

    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-00000001"]
    assert (checkpoints / "latest").read_text().strip() == "step-00000001"
    from safetensors.torch import load_file

    weights = load_file(checkpoints / "step-00000001" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())

    metrics = read_metrics(run_dir)
    assert metrics[1]["loss"] is not None and not metrics[1].get("nonfinite")
    for step in (2, 3, 4):
        assert metrics[step]["nonfinite"] is True and metrics[step]["skipped"] is True, metrics[step]
    raw = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("nonfinite") for r in raw if "loss" in r and r["loss"] is None), \
        "a NaN loss was logged as null without saying so"
