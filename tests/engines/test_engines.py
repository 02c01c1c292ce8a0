"""The engines' shared parts and the torch engine on CPU: LR schedule, fused AdamW, lazy step results, the
compile fallback, and the resume policy's one-line refusals. (DeepSpeed runs for real in test_multirank.py,
test_resume.py and test_compat.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gpt2dist.config import TrainConfig, load_config
from gpt2dist.engines.base import StepResult
from gpt2dist.engines.compile import wants_compile
from gpt2dist.engines.lr_schedule import lr_at
from gpt2dist.engines.optim import build_adamw
from gpt2dist.engines.torch_engine import TorchEngine
from gpt2dist.errors import UserError
from gpt2dist.model import FAST_GELU, build_model


def test_lr_schedule_warmup_cosine_constant():
    cfg = TrainConfig(max_steps=110, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)
    flat = dataclasses.replace(cfg, schedule="constant")
    assert lr_at(80, flat) == 1.0 and lr_at(4, flat) == pytest.approx(0.5)


def test_compile_auto_means_cuda_only():
    assert wants_compile("auto", torch.device("cuda", 0))
    assert not wants_compile("auto", torch.device("cpu"))
    assert wants_compile("true", torch.device("cpu"))
    assert not wants_compile("false", torch.device("cuda", 0))


def cpu_config(tmp_path, *overrides):
    return load_config(None, [f"data.train=[{tmp_path}/x.txt]", "train.device=cpu", "train.micro_batch_size=2",
                              *overrides])


def test_engine_uses_fused_adamw_on_cpu(tmp_path, story_corpus):
    from gpt2dist.tokenizer import train_char

    cfg = cpu_config(tmp_path)
    model = build_model(cfg, train_char([story_corpus[1].read_text(encoding="utf-8")]))
    assert model.config.activation_function == FAST_GELU
    assert model.config._attn_implementation == "sdpa"
    engine = TorchEngine(model, cfg)
    assert engine.optimizer.defaults["fused"] is True
    assert not engine.compiled  # auto on CPU
    batch = torch.randint(0, 10, (2, 9))
    engine.backward(engine.forward_loss(batch))
    result = engine.step(0)
    assert isinstance(result._grad_norm, torch.Tensor)  # not read (no host sync) until logged
    assert isinstance(result.grad_norm, float) and result.grad_norm > 0
    assert result.skipped is False


def test_step_result_reads_lazily():
    result = StepResult(lr=0.1, grad_norm=torch.tensor(2.5), skipped=torch.tensor(True))
    assert result.grad_norm == 2.5 and result.skipped is True
    assert StepResult(lr=0.1).grad_norm is None


def test_adamw_falls_back_when_fused_is_refused():
    """Integer parameters stand in for a device without the fused kernel: the foreach AdamW is built instead."""
    model = torch.nn.Linear(2, 2)
    cfg = load_config(None, ["data.train=[x.txt]"]).train
    assert build_adamw(model, cfg, fused=True).defaults["fused"] is True
    assert build_adamw(model, cfg, fused=False).defaults["foreach"] is True


def test_compile_refused_up_front_falls_back_to_eager(tmp_path, story_corpus, monkeypatch, caplog):
    """torch.compile itself can raise before any call -- torch 2.3 refuses Python 3.12 there, 2.4-2.5 refuse 3.13 --
    and that too leaves an eager run instead of ending it."""
    from gpt2dist.tokenizer import train_char

    def refuse(model, **kwargs):
        raise RuntimeError("Dynamo is not supported on Python 3.13+")

    monkeypatch.setattr(torch, "compile", refuse)
    cfg = cpu_config(tmp_path, "train.compile=true")
    engine = TorchEngine(build_model(cfg, train_char([story_corpus[1].read_text(encoding="utf-8")])), cfg)
    assert not engine.compiled and engine.forward_model is engine.model
    engine.backward(engine.forward_loss(torch.randint(0, 10, (2, 9))))
    engine.step(0)
    assert "torch.compile failed (RuntimeError: Dynamo is not supported" in caplog.text


def test_compile_failure_falls_back_to_eager(tmp_path, story_corpus, monkeypatch, caplog):
    """A compiler that raises on the first call (as a missing C++ toolchain does) leaves an eager run."""
    from gpt2dist.tokenizer import train_char

    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler found")

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=broken_backend))
    cfg = cpu_config(tmp_path, "train.compile=true")
    model = build_model(cfg, train_char([story_corpus[1].read_text(encoding="utf-8")]))
    engine = TorchEngine(model, cfg)
    assert engine.compiled
    loss = engine.forward_loss(torch.randint(0, 10, (2, 9)))
    engine.backward(loss)
    engine.step(0)
    assert not engine.compiled and engine.forward_model.fn is engine.model
    assert "torch.compile failed" in caplog.text


def fake_step_dir(tmp_path, *, deepspeed: bool, world_size: int):
    import json

    step = tmp_path / "step-00000010"
    (step / "deepspeed" if deepspeed else step).mkdir(parents=True)
    (step / "train_state.json").write_text(json.dumps({"step": 10, "tokens": 640, "world_size": world_size}))
    for rank in range(world_size):  # resume_mode checks the world size against the cursors saved (issue 23)
        (step / f"cursor-rank{rank:05d}.json").write_text("{}")
        (step / f"rng-rank{rank:05d}.pt").write_bytes(b"")
    return step


def test_resume_policy_by_engine_and_world_size(tmp_path):
    from gpt2dist.engines.resume import ResumeMode, resume_mode

    ds2 = fake_step_dir(tmp_path / "a", deepspeed=True, world_size=2)
    assert resume_mode(ds2, use_deepspeed=True, zero_stage=2, world_size=2) is ResumeMode.SAME
    assert resume_mode(ds2, use_deepspeed=True, zero_stage=2, world_size=1) is ResumeMode.UNIVERSAL
    assert resume_mode(ds2, use_deepspeed=True, zero_stage=0, world_size=1) is ResumeMode.SAME  # ZeRO-0: one full state
    plain = fake_step_dir(tmp_path / "b", deepspeed=False, world_size=1)
    assert resume_mode(plain, use_deepspeed=False, zero_stage=0, world_size=1) is ResumeMode.SAME
    with pytest.raises(UserError, match="written by the torch engine: resume it with distributed.backend=torch"):
        resume_mode(plain, use_deepspeed=True, zero_stage=0, world_size=2)
    with pytest.raises(UserError, match="written by the DeepSpeed engine: resume it with distributed.backend=deep"):
        resume_mode(ds2, use_deepspeed=False, zero_stage=0, world_size=1)
