"""Which device a rank trains on, what it can run, and how batches get there."""

from __future__ import annotations

import torch

from gpt2dist.errors import UserError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` picks this rank's GPU when there is one (cuda:LOCAL_RANK), else the CPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is visible: use train.device=cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse precisions the device cannot run, before anything is built."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA device (loss-scaled fp16 is a GPU format): "
                        "use train.precision=bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("train.precision=bf16 is not supported by this GPU: use fp16 or fp32")


def enable_tf32(device: torch.device) -> None:
    """fp32 matmuls on CUDA may use TF32 tensor cores (Ampere+; nanoGPT and llm.c do the same): ~8x the FP32 peak
    for a 10-bit mantissa in the products, accumulation stays fp32. bf16/fp16 runs are unaffected."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host batch -> device. On CUDA the copy goes through pinned memory and is asynchronous, so the host
    prepares the next micro batch while the GPU still computes; on CPU the batch is used where it is."""
    if device.type != "cuda":
        return batch
    if not batch.is_pinned():
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)
