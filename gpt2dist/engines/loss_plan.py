"""Which loss a run computes, without torch: the doctor plans with it on a login node, the engines apply it."""

from __future__ import annotations

DEFAULT_CHUNK = 2048  # tokens per chunk: 2048 x 50,257 fp32 logits = 393 MiB; large enough for full-speed matmuls


def unsupported(precision: str, zero_stage: int | None) -> str | None:
    """Why the chunked loss cannot run here (None when it can). fp16: the fused gradients are formed before the
    loss scale reaches them and would underflow. (`zero_stage` is for future limits: ZeRO 0-3 all chunk.)"""
    if precision == "fp16":
        return "fp16 (the loss scale would come after the fused gradients)"
    return None


def planned_chunk(setting: str, precision: str, zero_stage: int | None, *, cuda: bool = True) -> int | None:
    """Tokens per chunk of the loss a run computes (train.chunked_loss: auto chunks on CUDA, where the logits
    are the memory that matters; on CPU the chunked loss measured 1.09x slower), None for full logits."""
    if setting == "false" or (setting == "auto" and not cuda) or unsupported(precision, zero_stage) is not None:
        return None
    return DEFAULT_CHUNK
