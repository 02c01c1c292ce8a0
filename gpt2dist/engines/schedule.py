"""The learning-rate schedule both engines follow, step for step."""

from __future__ import annotations

import math

import torch

from gpt2dist.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, then cosine to min_lr, or flat.

    Both engines use this one function (DeepSpeed gets it as a client scheduler): DeepSpeed's own
    WarmupCosineLR runs its first step at lr 0, since its get_lr() returns 0 before the first step().
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def reapply_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, cfg: TrainConfig) -> None:
    """After a resume, set the LR of the next step from the *current* config: the optimizer state holds the
    LR of the old schedule, which is stale when train.max_steps (or the LR keys) changed between runs. The
    scheduler's base LR is the current train.lr too: LambdaLR multiplies it by lr_at(step)/train.lr at every
    later step, and its saved state restored the old one."""
    lr = lr_at(scheduler.last_epoch, cfg)
    for group in scheduler.optimizer.param_groups:
        group["lr"] = lr
        group["initial_lr"] = cfg.lr
    scheduler.base_lrs = [cfg.lr for _ in scheduler.optimizer.param_groups]
    scheduler._last_lr = [lr for _ in scheduler.optimizer.param_groups]
