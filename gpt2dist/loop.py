"""The training loop as one object: `Trainer.run()` reads top to bottom, its state lives in attributes.

torchtitan keeps its loop's state on a Stateful trainer (`step`, tokens seen; `state_dict()` is what a checkpoint
stores); so does this one: `step`, `tokens`, the last losses, the non-finite guard and the timers are attributes,
`train_state()` is train_state.json, and each concern of a step -- accumulate and step, log, evaluate,
checkpoint, stop on a signal or divergence -- is one method the `while` calls in that order. `train.py` builds
what it needs (run dir, tokenizer, model, engine, data) and hands it over.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2dist import dist
from gpt2dist.config import BatchPlan, RunConfig
from gpt2dist.data.build import eval_batches
from gpt2dist.data.contract import TrainStream, ValFactory
from gpt2dist.data.trace import open_trace, write_trace
from gpt2dist.engines.base import Engine, StepResult
from gpt2dist.errors import UserError
from gpt2dist.observe.curves import CurveWriter
from gpt2dist.observe.metrics import MetricsLogger, Throughput, mfu
from gpt2dist.run.checkpoint import CheckpointManager
from gpt2dist.run.divergence import Diverged, NonFiniteGuard, diverged_message
from gpt2dist.run.layout import STOP_FILE
from gpt2dist.run.signals import StopRequest, write_status
from gpt2dist.run.state import TrainState


class Preempted(Exception):
    """Raised after the stop checkpoint; `train.main` turns it into exit code EXIT_PREEMPTED (requeue me)."""


class Trainer:
    """One rank's loop from the step it starts at (0, or the checkpoint's) to train.max_steps."""

    def __init__(self, cfg: RunConfig, rank: dist.DistInfo, plan: BatchPlan, *, engine: Engine,
                 stream: TrainStream, val_stream: ValFactory | None, ckpt: CheckpointManager, logger: MetricsLogger,
                 curves: CurveWriter, start: TrainState | None, data_files: list | None,
                 budget: dict[str, Any] | None, flops_per_token: float, peak_flops: float | None):
        self.cfg, self.tcfg, self.rank, self.plan = cfg, cfg.train, rank, plan
        self.engine, self.stream, self.val_stream, self.ckpt = engine, stream, val_stream, ckpt
        self.logger, self.curves = logger, curves
        self.data_files, self.budget = data_files, budget  # what every checkpoint's train_state.json carries
        self.fpt, self.peak = flops_per_token, peak_flops
        self.step, self.tokens = (start.step, start.tokens) if start is not None else (0, 0)
        self.tokens_per_step = plan.global_batch * cfg.data.block_size
        self.run_dir = Path(cfg.run_dir)
        self.trace = open_trace(self.run_dir, rank.rank, self.step) if cfg.logging.trace_windows else None
        self.stop = StopRequest(self.run_dir / STOP_FILE if rank.is_writer else None)
        self.guard = NonFiniteGuard(self.tcfg.max_bad_steps)  # a non-finite step is skipped; many in a row stop
        self.last_loss, self.last_val = float("nan"), None
        self.speed, self.first_step, self.started = Throughput(), self.step, 0.0  # run() starts the clock

    def train_state(self) -> TrainState:
        """What train_state.json records at this step (torchtitan's `state_dict`)."""
        return TrainState(self.step, self.tokens, self.stream.epoch, self.rank.world_size, self.data_files,
                          self.budget)

    # ------------------------------------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Train to train.max_steps; returns the final step, loss, val loss and tokens."""
        self.status("running")
        if self.step == 0:
            self.maybe_eval()
        self.speed, self.started = Throughput(), time.perf_counter()  # after the step-0 evaluation
        while self.step < self.tcfg.max_steps:
            loss_sum, result = self.train_step()
            self.log(loss_sum, result)
            if self.guard.diverged_at is not None:
                self.stop_diverged(self.guard.message(_name(self.ckpt.latest())))
            self.maybe_eval()
            stopping = self.stop.should_stop()  # a collective: every rank stops at this same step
            self.maybe_checkpoint(force=stopping)
            if stopping and self.step < self.tcfg.max_steps:
                self.preempt()
        return self.finish()

    def train_step(self) -> tuple[torch.Tensor, StepResult]:
        """Accumulate plan.accum micro batches, then one optimizer step; the loss stays on the device."""
        loss_sum = torch.zeros((), device=self.engine.device)
        for _ in range(self.plan.accum):
            batch, windows = self.stream.next_batch(self.plan.micro)
            if self.trace is not None:
                write_trace(self.trace, self.step + 1, windows, self.stream)
            loss = self.engine.forward_loss(batch)
            self.engine.backward(loss)
            loss_sum += loss.detach()
        result = self.engine.step(self.step)
        self.step += 1
        self.tokens += self.tokens_per_step
        self.speed.add(self.tokens_per_step)
        self.guard.record(self.step, result.nonfinite)
        return loss_sum, result

    def log(self, loss_sum: torch.Tensor, result: StepResult) -> None:
        """Every train.log_every steps and at the last: the one host sync of a step, then a metrics record."""
        step, max_steps = self.step, self.tcfg.max_steps
        if step % self.tcfg.log_every and step != max_steps:
            return
        bad = self.settle_nonfinite(logged_step=step)
        self.last_loss = dist.mean_over_ranks(loss_sum / self.plan.accum)
        rate = self.speed.report()
        elapsed = time.perf_counter() - self.started
        self.logger.log({"step": step, "loss": self.last_loss, "lr": result.lr, "grad_norm": result.grad_norm,
                         "tokens": self.tokens, "tokens_per_s": rate,
                         "mfu": mfu(rate, self.fpt, self.peak, self.rank.world_size), "epoch": self.stream.epoch,
                         "skipped": result.skipped or None, "nonfinite": step in bad or None,
                         "eta_s": elapsed / (step - self.first_step) * (max_steps - step)})

    def maybe_eval(self) -> None:
        """Validation loss at step 0, every train.eval_every steps and at the last (curves between, on budget)."""
        every, step, max_steps = self.tcfg.eval_every, self.step, self.tcfg.max_steps
        if not every or self.val_stream is None or (step % every and step != max_steps):
            return
        self.last_val = evaluate(self.engine, self.val_stream, self.plan.micro, self.tcfg.eval_batches)
        self.logger.log({"step": step, "val_loss": self.last_val, "val_ppl": float(np.exp(self.last_val))})
        if 0 < step < max_steps:
            self.curves.at_eval()  # within its time budget (curves.py); the end always draws

    def maybe_checkpoint(self, force: bool = False) -> None:
        every, step = self.cfg.checkpoint.every, self.step
        if force or (every and step % every == 0) or step == self.tcfg.max_steps:
            self.save_checkpoint()

    # ------------------------------------------------------------------------------------------------ its parts
    def save_checkpoint(self) -> None:
        """A checkpoint is never written in a run of skipped non-finite steps (the weights that just gave NaN/inf
        must not displace a good checkpoint), nor from NaN/inf weights (`ckpt.save` refuses them)."""
        self.settle_nonfinite()
        guard, step = self.guard, self.step
        if guard.diverged_at is not None:
            self.stop_diverged(guard.message(_name(self.ckpt.latest())))
        if guard.streak and step >= self.tcfg.max_steps:  # the run ends on skipped steps: no final checkpoint
            self.stop_diverged(diverged_message(
                step, f"the last {guard.streak} step(s) of the run had a NaN/inf loss or gradient norm and were "
                "skipped, so its final checkpoint was not written", _name(self.ckpt.latest())))
        if guard.streak:
            self.logger.print(f"no checkpoint at step {step}: the last {guard.streak} step(s) were non-finite and "
                              "skipped; the next one is written after a finite step", step=step)
            return
        try:
            saved = self.ckpt.save(step, self.engine, train_state=self.train_state(), cursor=self.stream.state_dict())
        except Diverged as exc:
            self.stop_diverged(str(exc))
        self.logger.print(f"checkpoint {saved}", step=step)

    def settle_nonfinite(self, logged_step: int | None = None) -> list[int]:
        """Read the engines' non-finite flags; log each skipped step (but `logged_step`, logged with its record)."""
        bad = self.guard.settle()
        for s in bad:
            if s != logged_step:
                self.logger.log({"step": s, "skipped": True, "nonfinite": True})
        return bad

    def status(self, state: str, **fields: Any) -> None:
        if self.rank.is_writer:
            write_status(self.run_dir, state, step=fields.pop("step", self.step), **fields)

    def stop_diverged(self, message: str) -> None:
        last_good = self.ckpt.latest()
        self.status("diverged", step=self.guard.diverged_at or self.step,
                    last_good=last_good.name if last_good else None)
        self.logger.close()
        raise Diverged(message)

    def preempt(self) -> None:
        """Stopped by a signal or STOP file (on any rank) after the stop checkpoint: every rank leaves here."""
        stop, step = self.stop, self.step
        self.logger.print(f"stopped by {stop.signal_name or 'another rank'} at step {step}: resume with the same "
                          "command", step=step)
        self.status("preempted", signal=stop.signal_name)
        if self.rank.is_writer:
            stop.acknowledge()
        self.logger.close()
        raise Preempted(step)

    def finish(self) -> dict[str, Any]:
        self.status("finished")
        self.stop.restore()
        drawn = self.curves.final()
        self.logger.print(f"done: step {self.step} | loss {self.last_loss:.4f}"
                          + (f" | val_loss {self.last_val:.4f}" if self.last_val is not None else "")
                          + f" | {self.tokens:,} tokens" + (f" | curves {drawn}" if drawn else ""))
        self.logger.close()
        if self.trace is not None:
            self.trace.close()
        return {"step": self.step, "loss": self.last_loss, "val_loss": self.last_val, "tokens": self.tokens}


def evaluate(engine: Engine, factory: ValFactory, batch_size: int, n_batches: int) -> float:
    """Mean loss over the first n_batches of the validation stream (the same windows every time, every rank)."""
    losses = [engine.eval_loss(batch) for batch in eval_batches(factory, batch_size, n_batches)]
    if not losses:
        raise UserError("the validation data gives no full window of data.block_size + 1 tokens: add "
                        "validation text or lower data.block_size")
    return float(np.mean(losses))


def _name(path: Path | None) -> str | None:
    return path.name if path is not None else None
