"""Preemption: SIGTERM / SIGUSR1 on any rank -> every rank stops at the same step boundary, after a checkpoint.

A handler only sets a flag; the loop asks `should_stop()` once per step, which all-reduces the flag
(MAX) so the ranks agree on the step to stop at. A second SIGTERM exits at once: checkpoints are
written under a temporary name and renamed, so an abrupt exit never leaves a half checkpoint behind.
The process then exits with EXIT_PREEMPTED and RUN_DIR/status.json says "preempted", which is what the
Slurm script reads to decide on `scontrol requeue`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from gpt2dist import atomic, startup_signals
from gpt2dist.run.layout import STATUS_FILE

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): "temporary failure, try again" -- requeue me
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """Catches the stop signals of this process and turns them into an agreed stop."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self.stop_file = stop_file  # RUN_DIR/STOP, touched by the Slurm script: reaches ranks under any launcher
        self.signal_name: str | None = None
        self._terms = 0
        self._group = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
            # a signal that came while the trainer started (startup_signals.py) counts as if it came now
            self.signal_name, self._terms = startup_signals.take()
        self._drop_stale_stop_file()

    def _drop_stale_stop_file(self) -> None:
        """A STOP file older than this process was left by a trainer that died before acting on it: honouring it
        would stop this run after one step. One touched while we started (Slurm's warning) is kept."""
        try:
            stale = self.stop_file is not None and self.stop_file.stat().st_mtime < startup_signals.STARTED
        except OSError:
            stale = False
        if stale:
            log.warning("removing %s left by an earlier run (older than this one's start)", self.stop_file)
            self.stop_file.unlink(missing_ok=True)

    def _handle(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGTERM:
            self._terms += 1
            if self._terms > 1:  # a second SIGTERM: the user or scheduler means it -- leave now
                os.write(2, b"second SIGTERM: exiting at once (the last complete checkpoint is intact)\n")
                os._exit(143)
        if self.signal_name is None:
            self.signal_name = name
            os.write(2, f"{name} received: checkpointing at the next step boundary, then exiting\n".encode())

    def should_stop(self) -> bool:
        """True on every rank as soon as any rank got a stop signal (a collective: call it on all ranks)."""
        if self.signal_name is None and self.stop_file is not None and self.stop_file.exists():
            self.signal_name = f"{self.stop_file.name} file"
        local = self.signal_name is not None
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return local
        import torch

        if self._group is None:  # a CPU (gloo) group: no device sync per step even when training on nccl
            self._group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
        flag = torch.tensor([1 if local else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(flag.item())

    def acknowledge(self) -> None:
        """Remove the STOP file once acted on, so the next start does not stop at once."""
        if self.stop_file is not None:
            self.stop_file.unlink(missing_ok=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def write_status(run_dir: Path, state: str, **fields) -> None:
    """RUN_DIR/status.json: running | preempted | finished | diverged (atomic; read by the Slurm script, which
    resets it to `starting` before each attempt so that only this attempt's `preempted` requeues the job)."""
    atomic.write_json(Path(run_dir) / STATUS_FILE, {"state": state, "time": round(time.time(), 3), **fields})
