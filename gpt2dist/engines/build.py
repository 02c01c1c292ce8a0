"""The one place an engine is chosen and built, with the resume policy applied (`resume.py`)."""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from gpt2dist import dist
from gpt2dist.config import BatchPlan, RunConfig
from gpt2dist.engines.base import Engine
from gpt2dist.engines.resume import ResumeMode, ensure_universal, resume_mode, saved_world_size

log = logging.getLogger(__name__)


def build_engine(cfg: RunConfig, model: nn.Module, plan: BatchPlan, rank: dist.DistInfo, *, use_deepspeed: bool,
                 resume_from: Path | None = None) -> Engine:
    """TorchEngine or DeepSpeedEngine for this rank; a checkpoint to resume decides whether DeepSpeed must read
    the universal format (converted first, once, by rank 0)."""
    mode = ResumeMode.SAME
    if resume_from is not None:
        mode = resume_mode(resume_from, use_deepspeed=use_deepspeed, zero_stage=cfg.distributed.zero_stage,
                           world_size=rank.world_size)
    if not use_deepspeed:
        from gpt2dist.engines.torch_engine import TorchEngine

        return TorchEngine(model, cfg, plan, rank.local_rank)
    from gpt2dist.engines.deepspeed_engine import DeepSpeedEngine

    if mode is ResumeMode.UNIVERSAL:
        log.info("resuming %s saved on %d ranks on %d ranks via a universal checkpoint", resume_from.name,
                 saved_world_size(resume_from), rank.world_size)
        dist.on_writer(rank, lambda: ensure_universal(resume_from))
    return DeepSpeedEngine(model, cfg, plan, rank.local_rank, load_universal=mode is ResumeMode.UNIVERSAL)
