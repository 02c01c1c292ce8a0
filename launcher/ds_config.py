"""Run config + world size -> the DeepSpeed config dict, with every value explicit (never "auto").

Why a pure function: the launcher writes this dict as JSON for people to read and keep, and the engine
calls the same function at start-up, so `deepspeed -m gpt2dist.train run.yaml` needs no launcher pre-step
and the JSON on disk is exactly what the engine used. It therefore imports neither deepspeed nor torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from gpt2dist.launcher.ds_user import merge_user_keys

from gpt2dist import atomic
from gpt2dist.config import BatchPlan, RunConfig, batch_plan, load_config
from gpt2dist.errors import UserError

# gpt2dist logs every step itself (metrics.jsonl, TensorBoard); DeepSpeed's own step printing stays silent.
STEPS_PER_PRINT = 1_000_000_000
ADAM_EPS = 1e-8


def build_ds_config(cfg: RunConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for `cfg` on `world_size` data-parallel ranks.

    There is deliberately no "scheduler" block: the engine hands gpt2dist's own LR schedule to DeepSpeed as
    a client scheduler, because DeepSpeed's WarmupCosineLR takes its first step at lr 0 and would not match
    the single-process (torch) backend step for step.
    """
    plan = _plan(cfg, world_size)
    _check_offload(cfg)
    ds: dict[str, Any] = {
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.micro,
        "gradient_accumulation_steps": plan.accum,
        "gradient_clipping": float(cfg.train.grad_clip),
        "optimizer": _optimizer(cfg),
        **_precision(cfg),
        "zero_optimization": _zero(cfg),
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
        # torch.optim.AdamW is on DeepSpeed's ZeRO list already; this only matters if a subclass is passed.
        "zero_allow_untested_optimizer": True,
    }
    if cfg.distributed.offload_optimizer == "cpu":
        # DeepSpeed refuses a non-DeepSpeedCPUAdam optimizer under ZeRO-Offload unless this is false.
        ds["zero_force_ds_cpu_optimizer"] = False
    return merge_user_keys(cfg, ds)  # distributed.deepspeed: the user's own keys (launcher/ds_user.py)


def _plan(cfg: RunConfig, world_size: int) -> BatchPlan:
    if world_size < 1:
        raise UserError(f"world size must be >= 1, got {world_size}")
    return batch_plan(cfg.train, world_size)


def _check_offload(cfg: RunConfig) -> None:
    """The same rules as config validation, re-checked because a RunConfig can be built without it."""
    dcfg = cfg.distributed
    if dcfg.offload_param == "cpu" and dcfg.zero_stage != 3:
        raise UserError(f"config key distributed.offload_param=cpu needs distributed.zero_stage=3 "
                        f"(got {dcfg.zero_stage})")
    if dcfg.offload_optimizer == "cpu" and dcfg.zero_stage == 0:
        raise UserError("config key distributed.offload_optimizer=cpu needs distributed.zero_stage >= 1")


def _optimizer(cfg: RunConfig) -> dict[str, Any]:
    """torch_adam makes DeepSpeed build torch.optim.AdamW: no JIT-compiled FusedAdam/CPUAdam op, runs on CPU."""
    train = cfg.train
    return {
        "type": "AdamW",
        "params": {
            "lr": float(train.lr),
            "betas": [float(train.beta1), float(train.beta2)],
            "eps": ADAM_EPS,
            "weight_decay": float(train.weight_decay),
            "torch_adam": True,
            "adam_w_mode": True,
        },
    }


def _precision(cfg: RunConfig) -> dict[str, Any]:
    """Both blocks always, exactly one enabled (or none for fp32), so the file says what it means."""
    precision = cfg.train.precision
    fp16: dict[str, Any] = _fp16_block(cfg) if precision == "fp16" else {"enabled": False}
    return {"bf16": {"enabled": precision == "bf16"}, "fp16": fp16}


def _fp16_block(cfg: RunConfig) -> dict[str, Any]:
    """Dynamic loss scaling (loss_scale 0) with the configured knobs; DeepSpeed wants whole numbers here."""
    train = cfg.train
    if train.fp16_hysteresis < 1:
        raise UserError(f"config key train.fp16_hysteresis must be >= 1, got {train.fp16_hysteresis}")
    if train.fp16_initial_scale_power < 0:
        raise UserError(f"config key train.fp16_initial_scale_power must be >= 0, got {train.fp16_initial_scale_power}")
    min_scale = train.fp16_min_loss_scale
    if min_scale < 1 or not float(min_scale).is_integer():
        raise UserError(f"config key train.fp16_min_loss_scale must be a whole number >= 1 (DeepSpeed takes an "
                        f"integer), got {min_scale}")
    return {
        "enabled": True,
        "loss_scale": 0,
        "initial_scale_power": train.fp16_initial_scale_power,
        "loss_scale_window": train.fp16_loss_scale_window,
        "hysteresis": train.fp16_hysteresis,
        "min_loss_scale": int(min_scale),
    }


def _zero(cfg: RunConfig) -> dict[str, Any]:
    dcfg = cfg.distributed
    if dcfg.zero_stage == 0:
        return {"stage": 0}
    zero: dict[str, Any] = {
        "stage": dcfg.zero_stage,
        "overlap_comm": dcfg.overlap_comm,
        "contiguous_gradients": dcfg.contiguous_gradients,
        "reduce_scatter": True,
        "reduce_bucket_size": dcfg.reduce_bucket_size,
    }
    if dcfg.zero_stage == 3:
        zero.update({
            "stage3_prefetch_bucket_size": dcfg.stage3_prefetch_bucket_size,
            "stage3_param_persistence_threshold": dcfg.stage3_param_persistence_threshold,
            "stage3_max_live_parameters": dcfg.stage3_max_live_parameters,
            "stage3_max_reuse_distance": dcfg.stage3_max_reuse_distance,
            "stage3_gather_16bit_weights_on_model_save": False,
        })
    else:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": dcfg.allgather_bucket_size})
    if dcfg.offload_optimizer == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if dcfg.offload_param == "cpu":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return zero


def describe_batch(cfg: RunConfig, world_size: int) -> str:
    """Two lines for people: the batch math in sequences and tokens, then ZeRO / offload / precision."""
    plan = _plan(cfg, world_size)
    block = cfg.data.block_size
    dcfg = cfg.distributed
    return (f"{plan.describe(block)}\n"
            f"deepspeed: ZeRO stage {dcfg.zero_stage}, offload optimizer={dcfg.offload_optimizer} "
            f"param={dcfg.offload_param}, precision {cfg.train.precision}")


def render_json(ds: dict[str, Any]) -> str:
    """The one JSON spelling used for files and goldens: indent 2, sorted keys, trailing newline."""
    return json.dumps(ds, indent=2, sort_keys=True) + "\n"


def ds_config_command(config_path: str, overrides: list[str], world_size: int, out: str | None) -> dict[str, Any]:
    """`gpt2dist ds-config`: load + validate the run config, build, print the batch math, write or print JSON.

    With `out` the summary goes to stdout and the JSON to the file; without it the JSON goes to stdout and
    the summary to stderr, so `... > ds.json` still yields a valid JSON file.
    """
    if world_size < 1:
        raise UserError(f"--world-size must be >= 1, got {world_size}")
    cfg = load_config(config_path, overrides)
    ds = build_ds_config(cfg, world_size)
    summary = describe_batch(cfg, world_size)
    if out is None:
        print(summary, file=sys.stderr)
        sys.stdout.write(render_json(ds))
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out, render_json(ds))
        print(summary)
        print(f"wrote {out}")
    return ds
