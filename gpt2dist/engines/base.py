"""The backend seam: the loop calls forward_loss / backward / step and never asks which backend runs.

Two engines implement it -- `torch_engine.TorchEngine` (one process: CPU or one GPU) and
`deepspeed_engine.DeepSpeedEngine` (ZeRO 0-3 over any number of ranks) -- with one constructor shape:
`Engine(model, cfg, plan, local_rank)`. `build.build_engine` picks one and applies the resume policy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn


class StepResult:
    """What one optimizer step reports. grad_norm, skipped and nonfinite may be device tensors, read (a host-device
    sync) only when the loop logs them -- every step's `float(norm)` would stall a GPU once per step."""

    def __init__(self, lr: float, grad_norm: torch.Tensor | float | None = None,
                 skipped: torch.Tensor | bool = False, nonfinite: torch.Tensor | bool = False) -> None:
        self.lr = lr
        self._grad_norm = grad_norm  # None when clipping is off
        self._skipped = skipped  # no update was applied (fp16 overflow, or a non-finite step)
        # the loss or the gradient norm was NaN/inf: the engine applied no update (same value on every rank)
        self.nonfinite = nonfinite

    @property
    def grad_norm(self) -> float | None:
        return None if self._grad_norm is None else float(self._grad_norm)

    @property
    def skipped(self) -> bool:
        return bool(self._skipped)


class Engine(ABC):
    """What the training loop needs from a backend, and nothing more."""

    model: nn.Module  # the unwrapped model: for eval, export and checkpoint metadata
    wrapper: nn.Module  # what train()/eval() is called on (the model, or DeepSpeed's engine around it)
    device: torch.device

    @abstractmethod
    def forward_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean loss of a [B, T+1] token batch (inputs are batch[:, :-1], targets batch[:, 1:])."""

    @abstractmethod
    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of one micro batch (scaled for accumulation inside)."""

    @abstractmethod
    def step(self, step: int) -> StepResult:
        """One optimizer update for global step `step`, then zero the gradients."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write model + optimizer + scheduler (+ scaler) state into a step directory."""

    @abstractmethod
    def load(self, directory: Path) -> None:
        """Restore what `save` wrote."""

    @torch.no_grad()
    def weights_finite(self) -> bool:
        """True when no weight is NaN/inf (a collective where the engine has several ranks). Checked before every
        checkpoint: a non-finite model is never saved."""
        flags = [torch.isfinite(p).all() for p in self.model.parameters()]
        return bool(torch.stack(flags).all()) if flags else True

    @torch.no_grad()
    def eval_loss(self, batch: torch.Tensor) -> float:
        self.wrapper.eval()
        try:
            return float(self.forward_loss(batch))
        finally:
            self.wrapper.train()
