"""train.num_epochs as a budget: the optimizer steps that many passes over the training data take.

The windows of one pass are counted, not estimated from bytes: the same stream the loop reads (same cleaning,
tokenizer, held-out split and block size), read once to its end on rank 0 -- or, for packed data, the shards'
window count. steps = ceil(num_epochs x windows / global batch), the HF Trainer's rounding, so every window of the
last pass is trained on. The count is saved in every checkpoint's train_state.json and a resume keeps it, also on
another world size (its global batch may differ; the step budget, hence the schedule, stays the run's own).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from gpt2dist.config import BatchPlan, RunConfig
from gpt2dist.errors import UserError
from gpt2dist.run.state import TrainState


def windows_per_epoch(cfg: RunConfig, encode, train_files: list) -> int:
    """Windows of block_size + 1 tokens one pass over the training data gives (all ranks together)."""
    if cfg.data.format == "packed":
        from gpt2dist.data.packed import open_train

        return open_train(cfg, 0, 1, 1, 1).schedule.total
    from gpt2dist.data.stream import TextStream

    heldout = False if (cfg.data.val_fraction > 0 and not cfg.data.val) else None
    stream = TextStream(train_files, cfg.data, encode, heldout=heldout, repeat=False, seed=cfg.seed)
    return sum(1 for _ in stream)


def saved_budget(resume_from: Path | None) -> dict[str, Any] | None:
    """The epoch budget a checkpoint recorded, or None (a fresh run, or a run budgeted in max_steps)."""
    if resume_from is None:
        return None
    return TrainState.read(resume_from).budget


def resolve_budget(cfg: RunConfig, plan: BatchPlan, encode, train_files: list,
                   resume_from: Path | None) -> dict[str, Any] | None:
    """Rank 0: the epoch budget of this run (None without train.num_epochs). A resume with the same num_epochs keeps
    the saved step count; a changed num_epochs reuses the saved window count with this launch's global batch."""
    epochs = cfg.train.num_epochs
    if epochs is None:
        return None
    if cfg.data.weights:
        raise UserError("config key train.num_epochs does not fit data.weights (each source repeats at its own rate): "
                        "give train.max_steps instead")
    saved = saved_budget(resume_from)
    if saved is not None and saved.get("num_epochs") == epochs:
        return saved
    windows = saved["windows_per_epoch"] if saved is not None else windows_per_epoch(cfg, encode, train_files)
    if windows == 0:
        raise UserError(f"the training data gives no window of data.block_size + 1 = {cfg.data.block_size + 1} "
                        "tokens: add data or lower data.block_size")
    steps = max(1, math.ceil(epochs * windows / plan.global_batch))
    return {"num_epochs": epochs, "windows_per_epoch": windows, "max_steps": steps}


def with_budget(cfg: RunConfig, budget: dict[str, Any] | None) -> RunConfig:
    """`cfg` with train.max_steps set to the budget's steps (the schedule and the loop read only max_steps)."""
    if budget is None:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=int(budget["max_steps"])))


def budget_kept(resume_from: Path | None, budget: dict[str, Any]) -> bool:
    return saved_budget(resume_from) == budget


def describe_budget(budget: dict[str, Any], plan: BatchPlan, *, kept: bool = False) -> str:
    """The derived step count, printed at start."""
    if kept:
        return (f"epochs: {budget['num_epochs']:g} -> {budget['max_steps']:,} steps, kept from the checkpoint "
                f"({budget['windows_per_epoch']:,} windows per epoch)")
    return (f"epochs: {budget['num_epochs']:g} x {budget['windows_per_epoch']:,} windows / global batch "
            f"{plan.global_batch:,} -> {budget['max_steps']:,} steps")


def finished_step(resume_from: Path | None, max_steps: int) -> int | None:
    """The checkpoint's step when it is already at (or past) max_steps: the run has nothing left to train."""
    if resume_from is None:
        return None
    step = int(TrainState.read(resume_from).step)
    return step if step >= max_steps else None
