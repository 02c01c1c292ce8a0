"""Plain PyTorch on CPU or one CUDA device: AMP bf16, fp16 with a GradScaler, fp32 (TF32 on CUDA); gradient
accumulation; clipping; AdamW (fused where the device has it); the shared LR schedule; optional torch.compile
(with an eager fallback) and activation checkpointing. Checkpoints: model.safetensors + engine.pt (optimizer,
scheduler, scaler), loaded with weights_only=True."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from gpt2dist.config import BatchPlan, RunConfig, batch_plan
from gpt2dist.engines.base import Engine, StepResult
from gpt2dist.engines.chunked_loss import head_for
from gpt2dist.engines.compile import FirstCallFallback, compiled_or_eager, wants_compile
from gpt2dist.engines.device import check_precision, enable_tf32, resolve_device, to_device
from gpt2dist.engines.loss import lm_loss
from gpt2dist.engines.lr_schedule import lr_at, reapply_schedule
from gpt2dist.engines.optim import build_adamw
from gpt2dist.errors import UserError


class TorchEngine(Engine):
    """Plain PyTorch on CPU or one CUDA device."""

    def __init__(self, model: nn.Module, cfg: RunConfig, plan: BatchPlan | None = None, local_rank: int = 0):
        tcfg = self.cfg = cfg.train
        self.grad_accum_steps = (plan or batch_plan(tcfg, 1)).accum
        self.device = resolve_device(tcfg.device, local_rank)
        check_precision(tcfg.precision, self.device)
        self.model = self.wrapper = model.to(self.device)
        enable_tf32(self.device)
        if cfg.model.activation_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.train()
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tcfg.precision)
        self.scaler = None
        if tcfg.precision == "fp16":
            self.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**tcfg.fp16_initial_scale_power,
                                               growth_interval=tcfg.fp16_loss_scale_window)
        self.optimizer = build_adamw(self.model, tcfg, fused=True)
        self._loss_bad: torch.Tensor | None = None  # any micro batch of this step had a non-finite loss
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_at(step, tcfg) / tcfg.lr)
        self.head = head_for(self.model, tcfg.chunked_loss, self.device, tcfg.precision)  # before compiling
        self.forward_model = self.model
        if wants_compile(tcfg.compile, self.device):
            self.forward_model = compiled_or_eager(lambda: torch.compile(self.model), self.model)

    @property
    def compiled(self) -> bool:
        return isinstance(self.forward_model, FirstCallFallback) and self.forward_model.compiled

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def forward_loss(self, batch: torch.Tensor) -> torch.Tensor:
        batch = to_device(batch, self.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with self._autocast():
            if self.head is not None:  # the loss over the vocabulary in chunks
                return self.head.loss(self.forward_model, inputs, targets)
            logits = self.forward_model(input_ids=inputs, use_cache=False).logits
        return lm_loss(logits, targets)

    def backward(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())  # on the device: no sync
        self._loss_bad = bad if self._loss_bad is None else self._loss_bad | bad
        loss = loss / self.grad_accum_steps
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, step: int) -> StepResult:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        # a tensor: clip_grad_norm_ itself does not sync (foreach norms, no .item()); the norm is taken without
        # clipping too, since a non-finite one means this step must not be applied
        norm = total_grad_norm(self.model, self.cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        loss_bad = self._loss_bad if self._loss_bad is not None else torch.zeros((), dtype=torch.bool,
                                                                                   device=self.device)
        self._loss_bad = None
        if self.scaler is not None:
            # fp16: an inf gradient is an overflow the scaler skips and scales down (normal); a NaN/inf *loss*
            # is divergence. Either way the scaler applies no update from non-finite gradients.
            nonfinite = loss_bad
            scale = self.scaler._scale.clone()  # get_scale() would be a .item() sync per step
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = (self.scaler._scale < scale) | nonfinite
        else:
            nonfinite = skipped = loss_bad | ~torch.isfinite(norm)
            skip_update(self.optimizer, nonfinite)
        self.scheduler.step()  # the schedule counts every step, applied or not (so does the DeepSpeed engine)
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(lr=lr, grad_norm=norm if self.cfg.grad_clip > 0 else None, skipped=skipped,
                          nonfinite=nonfinite)

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_model

        save_model(self.model, str(directory / "model.safetensors"))  # handles the tied wte/lm_head
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        torch.save(state, directory / "engine.pt")

    def load(self, directory: Path) -> None:
        from safetensors.torch import load_model

        missing, unexpected = load_model(self.model, str(directory / "model.safetensors"), strict=False,
                                         device=str(self.device))
        if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
            raise UserError(f"checkpoint {directory} does not match the configured model (missing "
                            f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]}): resume with the same "
                            "model config")
        state = torch.load(directory / "engine.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        reapply_schedule(self.scheduler, self.cfg)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def total_grad_norm(model: nn.Module, clip: float) -> torch.Tensor:
    """The global gradient norm (a device tensor), clipping to `clip` when it is > 0."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm([p.grad for p in params])
    return torch.nn.utils.clip_grad_norm_(params, float("inf"))  # scales by 1.0: the norm alone


def skip_update(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """optimizer.step(), or no update at all where `skip` (a device bool) is true -- as for an fp16 overflow.

    The fused AdamW kernel takes the skip on the device (`found_inf`, what GradScaler passes it: parameters,
    moments and step count stay as they were), so the host never waits for the GPU; the foreach fallback has no
    such input and reads the flag (one sync per step, only where the fused kernel is missing)."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = skip.to(torch.float32)
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bool(skip):
        optimizer.step()
