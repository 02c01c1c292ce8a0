"""The learning-rate schedule both engines follow, step for step."""

from __future__ import annotations

import math

import torch

from gpt2dist.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, then cosine or linear to the floor, or flat.

    Both engines use this one function (DeepSpeed gets it as a client scheduler): DeepSpeed's own
    WarmupCosineLR runs its first step at lr 0, since its get_lr() returns 0 before the first step().
    """
    warmup = warmup_steps(cfg)
    if warmup and step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    floor = min_lr(cfg)
    progress = min(1.0, (step - warmup) / max(1, cfg.max_steps - warmup))
    if cfg.schedule == "linear":  # the HF Trainer's default, ending at the floor instead of 0
        return cfg.lr - progress * (cfg.lr - floor)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - floor)


def min_lr(cfg: TrainConfig) -> float:
    """The schedule's floor: train.min_lr when given, else train.min_lr_ratio of the peak (any lr is accepted)."""
    return cfg.min_lr if cfg.min_lr is not None else cfg.min_lr_ratio * cfg.lr


def warmup_steps(cfg: TrainConfig) -> int:
    """train.warmup_ratio of max_steps (rounded up, as the HF Trainer does) when given, else train.warmup_steps."""
    return math.ceil(cfg.warmup_ratio * cfg.max_steps) if cfg.warmup_ratio is not None else cfg.warmup_steps


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
