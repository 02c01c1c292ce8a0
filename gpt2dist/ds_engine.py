"""DeepSpeed behind the `Engine` seam: ZeRO 0-3, CPU offload, bf16/fp16, on gloo (CPU) or nccl (CUDA).

The DeepSpeed JSON is `launcher.ds_config.build_ds_config` -- the very dict `gpt2dist ds-config` writes.
The LR schedule is gpt2dist's (`lr_at`), handed to DeepSpeed as a client scheduler so both engines
follow one curve. `deepspeed` is imported here only, and this module only when the engine is chosen.

Checkpoints: every rank calls `save`, which writes DeepSpeed's shards under STEP/deepspeed/ and, at
stages 0-2 from rank 0 (at stage 3 after gathering the partitions), a full `model.safetensors` that
export and eval read. A different world size resumes through DeepSpeed's universal checkpoint format,
converted in-process by rank 0 into STEP/universal/ on first use.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpt2dist import dist
from gpt2dist.config import RunConfig
from gpt2dist.engine import (
    Engine,
    StepResult,
    compile_error,
    enable_tf32,
    lm_loss,
    lr_at,
    reapply_schedule,
    to_device,
    wants_compile,
)
from gpt2dist.errors import UserError

log = logging.getLogger(__name__)

TAG = "deepspeed"  # DeepSpeed's own sub-directory inside our step directory
UNIVERSAL = "universal"


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only, as TorchEngine's AdamW does."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


class DeepSpeedEngine(Engine):
    def __init__(self, model: nn.Module, cfg: RunConfig, world_size: int, *, load_universal: bool = False):
        import deepspeed

        from launcher.ds_config import build_ds_config

        self.cfg = cfg
        self.world_size = world_size
        ds_config = build_ds_config(cfg, world_size)
        if load_universal:
            ds_config["checkpoint"] = {"load_universal": True}
        if cfg.model.activation_checkpointing:
            model.gradient_checkpointing_enable()
        tcfg = cfg.train
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, model_parameters=param_groups(model, tcfg.weight_decay), config=ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, tcfg) / tcfg.lr))
        self.model = self.ds.module
        self.device = self.ds.device
        self.stage = cfg.distributed.zero_stage
        enable_tf32(self.device)
        # In-place nn.Module.compile (not torch.compile's wrapper): state_dict keys and DeepSpeed's hooks stay
        # as they are, and undoing it is dropping the compiled call.
        self.compiled = wants_compile(tcfg.compile, self.device)
        if self.compiled:
            # compile can refuse before any call too: torch 2.3 on Python 3.12, 2.4-2.5 on 3.13 ("Dynamo is not ...")
            try:
                self.model.compile()
            except Exception as exc:  # noqa: BLE001 - any compiler failure means "run eager"
                log.warning("torch.compile failed (%s); continuing without compilation", compile_error(exc))
                self.model._compiled_call_impl = None
                self.compiled = False
        self._compile_checked = not self.compiled

    def forward_loss(self, batch: torch.Tensor) -> torch.Tensor:
        batch = to_device(batch, self.device)
        if self._compile_checked:
            logits = self.ds(input_ids=batch[:, :-1], use_cache=False).logits
        else:
            try:  # compilation happens on the first call; a failure there must not end the run
                logits = self.ds(input_ids=batch[:, :-1], use_cache=False).logits
            except Exception as exc:  # noqa: BLE001 - any compiler failure means "run eager"
                log.warning("torch.compile failed (%s); continuing without compilation", compile_error(exc))
                self.model._compiled_call_impl = None  # what nn.Module.compile set: back to the eager call
                self.compiled = False
                logits = self.ds(input_ids=batch[:, :-1], use_cache=False).logits
            self._compile_checked = True
        return lm_loss(logits, batch[:, 1:])

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed divides by the accumulation steps itself and wants step() after every micro batch;
        # it only updates at the accumulation boundary, which `step` below is called at.
        at_boundary = self.ds.is_gradient_accumulation_boundary()
        self.ds.backward(loss)
        if not at_boundary:
            self.ds.step()

    def step(self, step: int) -> StepResult:
        lr = self.optimizer.param_groups[0]["lr"]
        skipped_before = self.ds.skipped_steps
        self.ds.step()
        norm = self.ds.get_global_grad_norm()  # read lazily: StepResult converts it only when logged
        grad_norm = norm if norm is not None and self.cfg.train.grad_clip > 0 else None
        return StepResult(lr=lr, grad_norm=grad_norm, skipped=self.ds.skipped_steps > skipped_before)

    @torch.no_grad()
    def eval_loss(self, batch: torch.Tensor) -> float:
        self.ds.eval()
        try:
            return float(self.forward_loss(batch))
        finally:
            self.ds.train()

    # ---- checkpoints ----
    def save(self, directory: Path) -> None:
        """Collective: every rank writes its shards; rank 0 also writes the full model.safetensors."""
        self.ds.save_checkpoint(str(directory), tag=TAG, client_state={}, save_latest=False)
        state = self._full_state_dict()
        if dist.discover().is_writer:
            from safetensors.torch import save_model

            module = type(self.model)(self.model.config)
            module.load_state_dict(state, strict=False)
            module.tie_weights()
            save_model(module, str(directory / "model.safetensors"))

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """Full fp32-or-training-dtype weights on CPU; at ZeRO-3 the partitions are gathered first."""
        if self.stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.model.parameters()), modifier_rank=None):
                return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load(self, directory: Path) -> None:
        if not (directory / TAG).is_dir():
            raise UserError(f"checkpoint {directory} was written by the torch engine: resume it with "
                            "distributed.backend=torch on one rank, or start a new run_dir")
        error = check_pickles(directory / TAG) if dist.discover().is_writer else None
        error = dist.broadcast_object(error)
        if error is not None:
            raise UserError(error)
        load_dir = directory / UNIVERSAL if self.ds.load_universal_checkpoint() else directory
        path, _ = self.ds.load_checkpoint(str(load_dir), tag=TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
        if path is None:
            raise UserError(f"DeepSpeed found no checkpoint in {load_dir}: it is incomplete; remove it to resume "
                            "from the previous one")
        reapply_schedule(self.scheduler, self.cfg.train)


def deepspeed_class(name: str) -> type | None:
    """The class `name` ("deepspeed.x.y.Cls") when it is one of DeepSpeed's own classes, else None."""
    import importlib
    import inspect

    module, _, attr = name.rpartition(".")
    if not module.startswith("deepspeed."):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return obj if inspect.isclass(obj) else None


def check_pickles(folder: Path) -> str | None:
    """DeepSpeed's loader unpickles its shards with weights_only=False, which runs any code a crafted file
    carries. Each shard must first load with weights_only=True, allowing beyond tensors and containers only
    DeepSpeed's own classes (ZeroStageEnum, LossScaler, fragment_address, ...) -- never a function. The
    cost is one extra read of the checkpoint on rank 0. Returns an error line, or None when all are safe."""
    import torch.serialization

    for path in sorted(folder.glob("*.pt")):
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        classes = [deepspeed_class(name) for name in names]
        refused = [name for name, cls in zip(names, classes, strict=True) if cls is None]
        reason = f"it pickles {', '.join(refused[:3])}" if refused else ""
        if not refused:
            try:
                with torch.serialization.safe_globals(classes):
                    torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any refusal of the safe unpickler means "not plain data"
                reason = str(exc).strip().splitlines()[0][:200]
        if reason:
            return (f"refusing to load {path}: {reason}, beyond tensors and DeepSpeed's own classes; only resume "
                    "checkpoints you trust")
    return None


def saved_world_size(directory: Path) -> int | None:
    """World size a step directory was saved with (train_state.json), or None if unknown."""
    import json

    state_file = directory / "train_state.json"
    if not state_file.is_file():
        return None
    return json.loads(state_file.read_text(encoding="utf-8")).get("world_size")


def ensure_universal(directory: Path) -> Path:
    """Convert STEP/deepspeed into STEP/universal once (rank 0; others wait at the caller's barrier).

    Runs DeepSpeed's own converter (`deepspeed.checkpoint.ds_to_universal`) in-process; written to a
    temporary name and renamed, so an interrupted conversion is redone, never half-used.
    """
    target = directory / UNIVERSAL
    if (target / TAG).is_dir():
        return target
    import argparse

    from deepspeed.checkpoint.ds_to_universal import main as to_universal

    tmp = directory / (UNIVERSAL + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    args = argparse.Namespace(input_folder=str(directory / TAG), output_folder=str(tmp / TAG), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    chatter = io.StringIO()  # the converter prints progress and tqdm bars; keep them for errors only
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            to_universal(args)
    except Exception as exc:
        raise RuntimeError(f"converting {directory} to a universal checkpoint failed: {exc}\n"
                           f"{chatter.getvalue()[-2000:]}") from exc
    log.info("converted %s to a universal checkpoint", directory.name)
    (tmp / "latest_universal").write_text(TAG)
    tmp.rename(target)
    return target
