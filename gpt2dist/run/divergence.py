"""Divergence: a NaN/inf loss or gradient norm never reaches a checkpoint.

The engines apply no update from a non-finite step (as for an fp16 overflow) and say so in
`StepResult.nonfinite`; this module counts such steps. A few in a row are tolerated (an isolated spike);
more than `train.max_bad_steps` consecutive ones stop the run: one line naming the step and the last good
checkpoint, status.json "diverged", exit EXIT_DIVERGED -- not 75, so the Slurm script never requeues it. No
checkpoint is written while a run of skipped steps is in progress, and none from non-finite weights.

The flags may be device tensors: they are read together when the loop syncs anyway (log steps, checkpoints),
so a step costs no extra host-device sync. A divergence is therefore acted on at the next such point; the
steps in between are skipped ones (no update), so nothing is lost by the wait.
"""

from __future__ import annotations

from typing import Any

EXIT_DIVERGED = 3  # the run went non-finite: fix the config (LR, warm-up, precision) before resuming


class Diverged(Exception):
    """Raised on every rank at the same step; `train.main` turns it into exit code EXIT_DIVERGED."""


class NonFiniteGuard:
    """Consecutive non-finite steps, from flags recorded per step and read in batches."""

    def __init__(self, max_bad_steps: int) -> None:
        self.max_bad_steps = max_bad_steps
        self.streak = 0  # consecutive non-finite steps up to the last settled one
        self.diverged_at: int | None = None  # the step whose non-finite streak went past max_bad_steps
        self._pending: list[tuple[int, Any]] = []

    def record(self, step: int, nonfinite: Any) -> None:
        """`nonfinite` of optimizer step `step` (a bool or a 0-dim bool tensor, possibly on a GPU)."""
        self._pending.append((step, nonfinite))

    def settle(self) -> list[int]:
        """Read the recorded flags (one transfer) and return the non-finite steps among them."""
        if not self._pending:
            return []
        steps = [step for step, _ in self._pending]
        flags = read_flags([flag for _, flag in self._pending])
        self._pending.clear()
        bad = []
        for step, flag in zip(steps, flags, strict=True):
            if not flag:
                self.streak = 0
                continue
            bad.append(step)
            self.streak += 1
            if self.streak > self.max_bad_steps and self.diverged_at is None:
                self.diverged_at = step
        return bad

    def message(self, last_good: str | None) -> str:
        return diverged_message(self.diverged_at, f"{self.max_bad_steps + 1} steps in a row had a NaN/inf loss or "
                                f"gradient norm (train.max_bad_steps={self.max_bad_steps}), none of them applied",
                                last_good)


def diverged_message(step: int | None, what: str, last_good: str | None) -> str:
    """The one line a diverged run ends with: the step, what went wrong, the checkpoint to resume and the fix."""
    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written before it"
    return (f"training diverged at step {step}: {what}; {where}: lower train.lr or raise train.warmup_steps, "
            "then run again (it resumes from that checkpoint)")


def read_flags(flags: list[Any]) -> list[bool]:
    """bools as they are; tensors stacked and copied to the host at once (one sync, not one per step)."""
    tensors = [f for f in flags if hasattr(f, "reshape")]
    if not tensors:
        return [bool(f) for f in flags]
    import torch

    values = iter(torch.stack([t.reshape(()).to(torch.bool) for t in tensors]).tolist())
    return [next(values) if hasattr(f, "reshape") else bool(f) for f in flags]
