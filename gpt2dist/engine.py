"""The backend seam: the loop calls forward_loss / backward / step and never asks which backend runs.

`TorchEngine` is the single-process engine (CPU or one CUDA device): AMP bf16, fp16 with a
GradScaler, fp32; gradient accumulation; clipping; AdamW (fused on CUDA); warm-up + cosine or
constant LR; optional torch.compile and activation checkpointing. The DeepSpeed engine implements
the same interface so the loop stays one loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpt2dist.config import TrainConfig
from gpt2dist.errors import UserError

log = logging.getLogger(__name__)


class StepResult:
    """What one optimizer step reports. grad_norm and skipped may be device tensors, read (a host-device sync)
    only when the loop logs them -- every step's `float(norm)` would stall a GPU once per step."""

    def __init__(self, lr: float, grad_norm: torch.Tensor | float | None = None,
                 skipped: torch.Tensor | bool = False) -> None:
        self.lr = lr
        self._grad_norm = grad_norm  # None when clipping is off
        self._skipped = skipped  # fp16 overflow: the scaler skipped this update

    @property
    def grad_norm(self) -> float | None:
        return None if self._grad_norm is None else float(self._grad_norm)

    @property
    def skipped(self) -> bool:
        return bool(self._skipped)


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
    LR of the old schedule, which is stale when train.max_steps (or the LR keys) changed between runs."""
    lr = lr_at(scheduler.last_epoch, cfg)
    for group in scheduler.optimizer.param_groups:
        group["lr"] = lr
    scheduler._last_lr = [lr for _ in scheduler.optimizer.param_groups]


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


def wants_compile(setting: str, device: torch.device) -> bool:
    """train.compile: `auto` compiles on CUDA only, where fusing GPT-2's elementwise ops pays (nanoGPT, llm.c).
    On CPU, with GELU already one fused kernel, compiled steps measured no faster (0.9-1.0x, bench/RESULTS.md)
    after 4-20 s of compiling on two cores; `true` still compiles there."""
    return setting == "true" or (setting == "auto" and device.type == "cuda")


def enable_tf32(device: torch.device) -> None:
    """fp32 matmuls on CUDA may use TF32 tensor cores (Ampere+; nanoGPT and llm.c do the same): ~8x the FP32 peak
    for a 10-bit mantissa in the products, accumulation stays fp32. bf16/fp16 runs are unaffected."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def compile_error(exc: BaseException) -> str:
    """One line naming why compilation failed: the root cause (dynamo's BackendCompilerFailed says in its first
    line only which backend raised; the reason is its inner_exception)."""
    root, seen = exc, {id(exc)}
    while (inner := root.__cause__ or getattr(root, "inner_exception", None)) is not None and id(inner) not in seen:
        root = inner
        seen.add(id(inner))
    lines = str(root).strip().splitlines()
    return f"{type(root).__name__}: {lines[0] if lines else ''}"


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross entropy in fp32 (logits may be bf16/fp16 under autocast)."""
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))


class Engine(ABC):
    """What the training loop needs from a backend, and nothing more."""

    model: nn.Module  # the unwrapped model: for eval, export and checkpoint metadata
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
    def eval_loss(self, batch: torch.Tensor) -> float:
        self.model.eval()
        try:
            return float(self.forward_loss(batch))
        finally:
            self.model.train()


class TorchEngine(Engine):
    """Plain PyTorch on CPU or one CUDA device."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, grad_accum_steps: int = 1, local_rank: int = 0,
                 activation_checkpointing: bool = False):
        self.cfg = cfg
        self.grad_accum_steps = grad_accum_steps
        self.device = resolve_device(cfg.device, local_rank)
        check_precision(cfg.precision, self.device)
        self.model = model.to(self.device)
        enable_tf32(self.device)
        if activation_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.model.train()
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.scaler = None
        if cfg.precision == "fp16":
            self.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**cfg.fp16_initial_scale_power,
                                               growth_interval=cfg.fp16_loss_scale_window)
        self.optimizer = build_adamw(self.model, cfg, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_at(step, cfg) / cfg.lr)
        self.compiled = wants_compile(cfg.compile, self.device)
        self.forward_model: nn.Module = self.model
        if self.compiled:
            # torch.compile can refuse before any call too: torch 2.3 on Python 3.12, 2.4-2.5 on 3.13 ("Dynamo is not
            # supported"); the engine then runs eager, as after a failure at the first call
            try:
                self.forward_model = torch.compile(self.model)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means "run eager"
                log.warning("torch.compile failed (%s); continuing without compilation", compile_error(exc))
                self.compiled = False
        self._compile_checked = not self.compiled

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def forward_loss(self, batch: torch.Tensor) -> torch.Tensor:
        batch = to_device(batch, self.device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with self._autocast():
            logits = self._forward(inputs)
        return lm_loss(logits, targets)

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self._compile_checked:
            return self.forward_model(input_ids=inputs, use_cache=False).logits
        try:  # compilation happens on the first call; a failure there must not end the run
            logits = self.forward_model(input_ids=inputs, use_cache=False).logits
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "run eager"
            log.warning("torch.compile failed (%s); continuing without compilation", compile_error(exc))
            self.forward_model, self.compiled = self.model, False
            logits = self.model(input_ids=inputs, use_cache=False).logits
        self._compile_checked = True
        return logits

    def backward(self, loss: torch.Tensor) -> None:
        loss = loss / self.grad_accum_steps
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, step: int) -> StepResult:
        grad_norm = None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip > 0:  # a tensor: clip_grad_norm_ itself does not sync (foreach norms, no .item())
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        skipped: torch.Tensor | bool = False
        if self.scaler is not None:
            scale = self.scaler._scale.clone()  # get_scale() would be a .item() sync per step
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler._scale < scale
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(lr=lr, grad_norm=grad_norm, skipped=skipped)

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


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host batch -> device. On CUDA the copy goes through pinned memory and is asynchronous, so the host
    prepares the next micro batch while the GPU still computes; on CPU the batch is used where it is."""
    if device.type != "cuda":
        return batch
    if not batch.is_pinned():
        batch = batch.pin_memory()
    return batch.to(device, non_blocking=True)


def build_adamw(model: nn.Module, cfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (biases and LayerNorm gains are not decayed, as in GPT-2).

    fused=True updates every parameter in one kernel: on CUDA, and on CPU from torch 2.4 (measured 1.1-1.3x
    faster tiny-model steps than the per-tensor loop, bench/RESULTS.md); torch 2.3 falls back to foreach."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": cfg.weight_decay},
                                    {"params": no_decay, "weight_decay": 0.0}]
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": 1e-8}
    if fused:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except RuntimeError:  # a device or torch version without the fused kernel
            pass
    return torch.optim.AdamW(groups, foreach=True, **kwargs)
