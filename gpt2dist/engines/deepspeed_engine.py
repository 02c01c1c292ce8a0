"""DeepSpeed behind the `Engine` seam: ZeRO 0-3, CPU offload, bf16/fp16, on gloo (CPU) or nccl (CUDA).

The DeepSpeed JSON is `gpt2dist.launcher.ds_config.build_ds_config` -- the very dict `gpt2dist ds-config`
writes. The LR schedule is gpt2dist's (`schedule.lr_at`), handed to DeepSpeed as a client scheduler so both
engines follow one curve. `deepspeed` is imported here only, and this module only when the engine is chosen.

Checkpoints: every rank calls `save`, which writes DeepSpeed's shards under STEP/deepspeed/ and, at
stages 0-2 from rank 0 (at stage 3 after gathering the partitions), a full `model.safetensors` that
export and eval read. Every DeepSpeed file passes the pickle gate before DeepSpeed reads it; a different world
size resumes through DeepSpeed's universal checkpoint format (`resume.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpt2dist import dist
from gpt2dist.config import BatchPlan, RunConfig
from gpt2dist.engines.base import Engine, StepResult
from gpt2dist.engines.chunked_loss import head_for
from gpt2dist.engines.compile import FirstCallFallback, compiled_or_eager, wants_compile
from gpt2dist.engines.device import enable_tf32, to_device
from gpt2dist.engines.loss import lm_loss
from gpt2dist.engines.lr_schedule import lr_at, reapply_schedule
from gpt2dist.engines.optim import param_groups
from gpt2dist.engines.pickle_gate import check_pickles
from gpt2dist.engines.resume import TAG
from gpt2dist.errors import UserError
from gpt2dist.run.layout import UNIVERSAL_DIR as UNIVERSAL

DeepSpeedEngineType = Any  # deepspeed.DeepSpeedEngine, imported lazily


class DeepSpeedEngine(Engine):
    def __init__(self, model: nn.Module, cfg: RunConfig, plan: BatchPlan | None = None, local_rank: int = 0, *,
                 load_universal: bool = False):
        import deepspeed

        from gpt2dist.launcher.ds_config import build_ds_config

        self.cfg = cfg
        self.world_size = plan.world_size if plan is not None else dist.discover().world_size
        ds_config = build_ds_config(cfg, self.world_size)
        if load_universal:
            ds_config["checkpoint"] = {"load_universal": True}
        if cfg.model.activation_checkpointing:
            model.gradient_checkpointing_enable()
        tcfg = cfg.train
        self.ds, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, model_parameters=param_groups(model, tcfg.weight_decay), config=ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, tcfg) / tcfg.lr))
        self.model, self.wrapper = self.ds.module, self.ds
        self.device = self.ds.device
        self.stage = cfg.distributed.zero_stage
        self._loss_bad: torch.Tensor | None = None  # any micro batch of this step had a non-finite loss
        # only DeepSpeed's ZeRO/bf16/fp16 optimizers carry an overflow check (and an `overflow` attribute)
        self._unguarded = not hasattr(self.ds.optimizer, "overflow")
        enable_tf32(self.device)
        # In-place nn.Module.compile (not torch.compile's wrapper): state_dict keys and DeepSpeed's hooks stay
        # as they are, and undoing it is dropping the compiled call (what nn.Module.compile set).
        self.head = head_for(self.model, tcfg.chunked_loss, self.device, tcfg.precision, self.stage)
        self.forward_model: FirstCallFallback | DeepSpeedEngineType = self.ds
        if wants_compile(tcfg.compile, self.device):
            def compile_in_place() -> DeepSpeedEngineType:
                self.model.compile()
                return self.ds

            self.forward_model = compiled_or_eager(compile_in_place, self.ds,
                                                   undo=lambda: setattr(self.model, "_compiled_call_impl", None))

    @property
    def compiled(self) -> bool:
        return isinstance(self.forward_model, FirstCallFallback) and self.forward_model.compiled

    def forward_loss(self, batch: torch.Tensor) -> torch.Tensor:
        batch = to_device(batch, self.device)
        if self.head is not None:  # the loss over the vocabulary in chunks
            return self.head.loss(self.forward_model, batch[:, :-1], batch[:, 1:])
        logits = self.forward_model(input_ids=batch[:, :-1], use_cache=False).logits
        return lm_loss(logits, batch[:, 1:])

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed divides by the accumulation steps itself and wants step() after every micro batch;
        # it only updates at the accumulation boundary, which `step` below is called at.
        bad = ~torch.isfinite(loss.detach())
        self._loss_bad = bad if self._loss_bad is None else self._loss_bad | bad
        at_boundary = self.ds.is_gradient_accumulation_boundary()
        self.ds.backward(loss)
        if not at_boundary:
            self.ds.step()

    def step(self, step: int) -> StepResult:
        """One DeepSpeed step; a non-finite one applies no update on any rank.

        DeepSpeed's ZeRO 1-3, bf16 and fp16 optimizers already skip a step whose all-reduced gradient norm is
        NaN/inf (stage_1_and_2.py / stage3.py `step`: `is_invalid_grad_norm` -> overflow; BF16_Optimizer and
        FP16_Optimizer likewise), the same decision on every rank. ZeRO-0 in fp32 steps the plain torch optimizer
        with no such check (engine._take_model_step), so there the gradients -- already averaged over the ranks,
        hence equal on all of them -- are checked here first."""
        lr = self.optimizer.param_groups[0]["lr"]
        skipped_before = self.ds.skipped_steps
        loss_bad, self._loss_bad = self._loss_bad, None
        if self._unguarded and not self._grads_finite():
            self._step_without_update()
            skipped = True
        else:
            self.ds.step()
            skipped = self.ds.skipped_steps > skipped_before
            if skipped:  # DeepSpeed holds its LR scheduler on a skipped step; gpt2dist's schedule counts every
                self.scheduler.step()  # step, applied or not, as the torch engine does
        nonfinite = skipped
        if skipped and self.cfg.train.precision == "fp16":  # an overflow is normal in fp16; a NaN/inf loss is not
            nonfinite = dist.any_rank(loss_bad is not None and bool(loss_bad.any()))
        norm = self.ds.get_global_grad_norm()  # read lazily: StepResult converts it only when logged
        grad_norm = norm if norm is not None and self.cfg.train.grad_clip > 0 else None
        return StepResult(lr=lr, grad_norm=grad_norm, skipped=skipped, nonfinite=nonfinite)

    @torch.no_grad()
    def _grads_finite(self) -> bool:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True

    def _step_without_update(self) -> None:
        """ds.step() with the optimizer's update left out: DeepSpeed still zeroes the gradients and advances its
        step counters and the LR schedule, as after any step."""
        optimizer = self.ds.optimizer
        optimizer.step = lambda *args, **kwargs: None  # an instance attribute shadowing the method, for one call
        try:
            self.ds.step()
        finally:
            del optimizer.step

    @torch.no_grad()
    def weights_finite(self) -> bool:
        """Every rank checks what it holds (at ZeRO-3 its partition of each parameter); all must be finite."""
        params = list(self.model.parameters())
        tensors = [getattr(p, "ds_tensor", p) for p in params] if self.stage == 3 else params
        local = all(bool(torch.isfinite(t).all()) for t in tensors if t.numel())
        return not dist.any_rank(not local)

    # ---- checkpoints ----
    def save(self, directory: Path) -> None:
        """Collective: every rank writes its shards; rank 0 also writes the full model.safetensors."""
        self.ds.save_checkpoint(str(directory), tag=TAG, client_state={}, save_latest=False)
        state = self._full_state_dict()
        if state is not None:
            from safetensors.torch import save_model

            module = type(self.model)(self.model.config)
            module.load_state_dict(state, strict=False)
            module.tie_weights()
            save_model(module, str(directory / "model.safetensors"))

    @torch.no_grad()
    def _full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The full weights in the training dtype, on CPU, on rank 0 only (None on the other ranks).

        At ZeRO-3 the parameters are gathered one module at a time -- every rank takes part in each all-gather
        and frees it again, only rank 0 copies -- so no rank holds the whole gathered model and only rank 0 a
        CPU copy (the layer-by-layer scheme of DeepSpeed's own `_zero3_consolidated_16bit_state_dict`). A tied
        parameter is copied once (lm_head.weight is re-tied on load)."""
        writer = dist.discover().is_writer
        if self.stage != 3:
            return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()} if writer else None
        import deepspeed

        state: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for prefix, module in self.model.named_modules():
            params = [p for p in module.parameters(recurse=False) if id(p) not in seen]
            if not params:
                continue
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                if writer:
                    for name, param in module.named_parameters(recurse=False):
                        if id(param) not in seen:
                            state[f"{prefix}.{name}" if prefix else name] = param.detach().cpu().clone()
            seen.update(id(p) for p in params)
        if writer:  # buffers are never partitioned
            skip = {f"{prefix}.{name}" if prefix else name for prefix, module in self.model.named_modules()
                    for name in module._non_persistent_buffers_set}
            state.update({k: v.detach().cpu().clone() for k, v in self.model.named_buffers() if k not in skip})
        return state if writer else None

    def load(self, directory: Path) -> None:
        if not (directory / TAG).is_dir():
            raise UserError(f"checkpoint {directory} was written by the torch engine: resume it with "
                            "distributed.backend=torch on one rank, or start a new run_dir")
        load_dir = directory / UNIVERSAL if self.ds.load_universal_checkpoint() else directory
        # every file DeepSpeed reads below (the shards, or the whole universal tree) passes the gate first
        error = check_pickles(load_dir / TAG) if dist.discover().is_writer else None
        error = dist.broadcast_object(error)
        if error is not None:
            raise UserError(error)
        path, _ = self.ds.load_checkpoint(str(load_dir), tag=TAG, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
        if path is None:
            raise UserError(f"DeepSpeed found no checkpoint in {load_dir}: it is incomplete; remove it to resume "
                            "from the previous one")
        reapply_schedule(self.scheduler, self.cfg.train)
