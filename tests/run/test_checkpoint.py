"""Checkpoint manager: atomic step dirs, `latest`, keep-last-K, manifest verification, exact state round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2dist.config import RunConfig, TrainConfig
from gpt2dist.engines.lr_schedule import lr_at
from gpt2dist.engines.torch_engine import TorchEngine
from gpt2dist.run.checkpoint import CheckpointManager
from gpt2dist.run.layout import MANIFEST
from gpt2dist.run.state import TrainState


def tiny_engine(seed: int = 0) -> TorchEngine:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    return TorchEngine(model, RunConfig(train=TrainConfig(max_steps=10, warmup_steps=2, lr=1e-2, min_lr=1e-3)))


BATCHES = [torch.randint(0, 50, (2, 17), generator=torch.Generator().manual_seed(i)) for i in range(6)]


def train_steps(engine: TorchEngine, start: int, stop: int) -> list[float]:
    losses = []
    for step in range(start, stop):
        loss = engine.forward_loss(BATCHES[step])
        engine.backward(loss)
        engine.step(step)
        losses.append(float(loss.detach()))
    return losses


def reseed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save(manager: CheckpointManager, engine: TorchEngine, step: int):
    return manager.save(step, engine, train_state=TrainState(step, step * 10),
                        cursor={"step": step})


def test_save_writes_complete_dir_and_latest_then_prunes(tmp_path):
    manager, engine = CheckpointManager(tmp_path, keep_last=2), tiny_engine()
    for step in (1, 2, 3):
        save(manager, engine, step)
    names = [p.name for p in manager.complete_steps()]
    assert names == ["step-00000002", "step-00000003"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    files = {p.name for p in (tmp_path / "checkpoints" / "step-00000003").iterdir()}
    assert {"model.safetensors", "engine.pt", "config.json", "train_state.json", "cursor-rank00000.json",
            "rng-rank00000.pt", MANIFEST} <= files
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_incomplete_dirs_are_never_loaded(tmp_path):
    manager, engine = CheckpointManager(tmp_path, keep_last=3), tiny_engine()
    save(manager, engine, 1)
    # A crash mid-save leaves a temporary dir and perhaps a step dir without manifest: both are invisible.
    (tmp_path / "checkpoints" / ".tmp-step-00000002-999").mkdir()
    (tmp_path / "checkpoints" / "step-00000003").mkdir()
    assert manager.latest().name == "step-00000001"
    # `latest` naming an incomplete dir falls back to the newest complete one.
    (tmp_path / "checkpoints" / "latest").write_text("step-00000003\n")
    assert manager.latest().name == "step-00000001"


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped byte", "truncated file", "deleted manifest"])
def test_damaged_latest_falls_back_to_previous_with_a_warning(tmp_path, caplog, damage):
    manager, engine = CheckpointManager(tmp_path, keep_last=3), tiny_engine()
    save(manager, engine, 1)
    newest = save(manager, engine, 2)
    if damage == "flipped byte":
        flip_byte(newest / "engine.pt")
    elif damage == "truncated file":
        (newest / "model.safetensors").write_bytes((newest / "model.safetensors").read_bytes()[:100])
    else:
        (newest / MANIFEST).unlink()
    with caplog.at_level("WARNING"):
        assert manager.latest_verified().name == "step-00000001"
    if damage == "deleted manifest":  # without its manifest the dir is incomplete, hence never a candidate
        assert newest not in manager.complete_steps()
    else:
        assert "skipping checkpoint" in caplog.text and "step-00000002" in caplog.text


def test_round_trip_restores_model_optimizer_schedule_and_rng(tmp_path):
    # Dropout is on (GPT2Config default 0.1), so the torch RNG state matters as much as the weights.
    reference = tiny_engine()
    train_steps(reference, 0, 3)
    reseed(5)
    expected = train_steps(reference, 3, 6)

    engine = tiny_engine()
    train_steps(engine, 0, 3)
    manager = CheckpointManager(tmp_path, keep_last=1)
    reseed(5)
    step_dir = save(manager, engine, 3)
    reseed(77)  # whatever happens after the save must not leak into the resume

    restored = tiny_engine(seed=99)  # a different init: everything must come from the checkpoint
    train_state, cursors = manager.load(step_dir, restored)
    assert train_state == TrainState(3, 30) and cursors == [{"step": 3}]
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(lr_at(3, restored.cfg))
    assert train_steps(restored, 3, 6) == expected
