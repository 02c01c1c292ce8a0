"""Reading, tokenizing and packing in a `torch.utils.data.DataLoader` worker, ahead of the training loop.

The worker runs a TextStream (or MixedStream) and sends each micro batch together with the stream's cursor *after* that
batch, so `state_dict()` is exactly what the loop consumed, never what was prefetched: a checkpoint taken
while batches wait in the queue resumes at the first batch the loop did not take. One worker, because
packing is sequential (a window's tokens depend on every document before it); tokenization, the expensive
part, runs there off the training process. `data.num_workers=0` keeps everything in-process
(`build.make_train_stream` returns the stream itself); both paths give the same windows.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from gpt2dist.data.contract import PulledLog, ResumableStream, Window
from gpt2dist.errors import UserError


class _Batches(IterableDataset):
    """What the worker runs: micro batches of a stream restored from `state`, each with its cursor."""

    def __init__(self, make_stream: Callable[[], ResumableStream], state: dict[str, Any], batch_size: int):
        self.make_stream, self.state, self.batch_size = make_stream, state, batch_size

    def __iter__(self) -> Iterator[tuple]:
        try:
            stream = self.make_stream()
            stream.load_state_dict(self.state)
            while True:
                batch, windows = stream.next_batch(self.batch_size)
                yield batch, windows, stream.drain_pulled(), stream.state_dict()
        except UserError as exc:  # the DataLoader would wrap it in a traceback: pass the one line on
            yield UserError, str(exc), None, None


def _as_is(item: Any) -> Any:
    return item


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, worker_id: int = 0) -> None:
    """The worker's first act (worker_init_fn): ask Linux to SIGKILL it when its trainer dies, whatever kills the
    trainer (SIGKILL, the OOM killer). Without it a worker outlives a SIGKILLed trainer: torch's watchdog ends its
    loop, but the exit then waits forever to flush its result queue into a pipe nobody reads (prctl(2))."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: torch's watchdog still ends the loop
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the trainer died before the request was in place
        os._exit(1)


def pass_stop_signals_to(parent: int, closing) -> None:
    """A stop signal (SIGTERM/SIGUSR1) sent to the worker -- `pkill -f gpt2dist`, a TERM to the process group --
    would kill it and crash its trainer with a traceback before any checkpoint. Instead the worker asks its
    trainer to stop (SIGUSR1: a stop request that, unlike a second SIGTERM, never means "exit at once") and
    keeps serving batches until the trainer has checkpointed and ends it. Once the trainer is closing the
    stream (`closing`, shared memory), a TERM is the DataLoader's own shutdown (it terminates a worker that does
    not leave in time): the worker then dies as asked, and the trainer, past its loop, is not disturbed."""

    def ask_trainer(signum: int, _frame) -> None:
        if closing.value:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        os.write(2, f"data worker got {signal.Signals(signum).name}: asking its trainer (pid {parent}) to "
                    "stop\n".encode())
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent, signal.SIGUSR1)

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, ask_trainer)


def init_worker(parent: int, closing, worker_id: int = 0) -> None:
    """worker_init_fn: die with the trainer, stop it (not crash it) on a stop signal, and leave the trainer's
    W&B run alone (its import hooks, inherited through fork, would report this process's first
    `import datasets` to a run they may not touch from here)."""
    die_with_parent(parent, worker_id)
    pass_stop_signals_to(parent, closing)
    if "wandb" in sys.modules:
        from wandb.sdk.lib import import_hooks

        import_hooks.unregister_all_post_import_hooks()


def _mark(flag) -> None:
    """Set a worker's shutdown flag (close() does it; at interpreter exit, atexit does)."""
    flag.value = 1


class PrefetchedStream(PulledLog):
    """A streaming-path stream run in a prefetching DataLoader worker (the contract, from another process)."""

    def __init__(self, make_stream: Callable[[], ResumableStream], *, prefetch_factor: int = 2,
                 pin_memory: bool = False):
        self._closing = multiprocessing.RawValue("b", 0)  # shared with the worker: set while shutting it down
        self._make, self.prefetch_factor, self.pin_memory = make_stream, prefetch_factor, pin_memory
        self._state = make_stream().state_dict()  # opens no file
        self.epoch = self._state["epoch"]
        self._pulled: list[tuple[int, str]] = []  # documents of the batches the loop took; see drain_pulled
        self._batches: Iterator | None = None
        self._batch_size = 0
        self._exit_hook: Callable[[], None] | None = None

    def load_cursors(self, cursors: list[dict[str, Any]]) -> None:
        """Restore (or re-split, after a world-size change) in this process; the worker starts from the result."""
        stream = self._make()
        stream.load_cursors(cursors)
        self.load_state_dict(stream.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._make().load_state_dict(state)  # validates files, rank and version here, as a one-line error
        self.close()
        self._state, self.epoch = copy.deepcopy(state), state["epoch"]

    def state_dict(self) -> dict[str, Any]:
        """The cursor after the last batch `next_batch` returned (prefetched batches are not in it)."""
        return copy.deepcopy(self._state)

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, list[Window]]:
        if self._batches is None or batch_size != self._batch_size:
            self._start(batch_size)
        batch, windows, pulled, state = next(self._batches)
        if batch is UserError:
            self.close()
            raise UserError(windows)
        self._state, self.epoch = state, state["epoch"]
        self._pulled.extend(pulled)
        return batch, windows

    def _start(self, batch_size: int) -> None:
        self.close()
        self._closing = multiprocessing.RawValue("b", 0)  # this worker's own: the closed one's flag stays set
        # An exit without close() (an exception left the stream in a traceback): multiprocessing's own exit hook
        # terminates the worker and then joins it; this hook, registered later, runs first, so that TERM is a
        # shutdown too -- a worker that forwarded it instead would be joined forever.
        self._exit_hook = functools.partial(_mark, self._closing)  # its own object: unregistered by close() alone
        atexit.register(self._exit_hook)
        # Rust tokenizers warn (and may deadlock) when forked after using their thread pool.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        loader = DataLoader(_Batches(self._make, self._state, batch_size), batch_size=None, num_workers=1,
                            prefetch_factor=self.prefetch_factor, pin_memory=self.pin_memory, collate_fn=_as_is,
                            worker_init_fn=functools.partial(init_worker, os.getpid(), self._closing),
                            # its own generator: the DataLoader draws a worker seed, which must not move the
                            # global torch RNG (dropout) -- else a resumed run would diverge from an unbroken one
                            generator=torch.Generator().manual_seed(0))
        self._batches, self._batch_size = iter(loader), batch_size

    def close(self) -> None:
        """Stop the worker (its prefetched batches are dropped; the cursor does not include them)."""
        self._closing.value = 1  # from here a TERM to the worker is the DataLoader's shutdown, not a stop request
        if self._exit_hook is not None:  # the flag is set: the hook has nothing left to do (one per worker started)
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        self._batches = None  # the DataLoader iterator shuts its worker down when collected

    def __del__(self) -> None:
        self.close()
