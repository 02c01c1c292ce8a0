"""The training objective, shared by both engines and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy in fp32 (logits may be bf16/fp16 under autocast)."""
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
