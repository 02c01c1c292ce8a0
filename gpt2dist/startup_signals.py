"""Stop signals that arrive while a trainer starts (imports, model build, checkpoint load) are kept, not fatal.

SIGUSR1's default action kills a process (exit 138), and SIGTERM's too: before the loop's StopRequest installs its
handler, a signal from Slurm (whose warning can come at any moment) or from a launcher killed the trainer -- no
checkpoint, no `preempted` status, so no requeue. `gpt2dist/__init__.py` calls `install()` first thing when the
process is a trainer (`python -m gpt2dist.train`, or `gpt2dist train`); the handler only records the signal, and
StopRequest takes it over, so the run checkpoints at its first step boundary and exits 75 as for a signal during
training. A second SIGTERM still means "now". Standard library only: this runs before anything else is imported.
"""

from __future__ import annotations

import os
import signal
import sys
import time

TRAINER_MODULE = "gpt2dist.train"
CLI_MODULE = "gpt2dist.cli"
STARTED = time.time()  # when this process began importing gpt2dist: a STOP file older than this is stale

_received: list[str] = []  # names of the stop signals received before StopRequest took over
_terms = 0


def is_trainer(argv: list[str]) -> bool:
    """True for `python [flags] -m gpt2dist.train ...` (how every launcher starts a rank) and for a one-process
    `gpt2dist train ...` (the console script, or `python -m gpt2dist.cli train ...`)."""
    for i, (a, b) in enumerate(zip(argv, argv[1:], strict=False)):
        if a == "-m":
            return b == TRAINER_MODULE or (b == CLI_MODULE and argv[i + 2:i + 3] == ["train"])
    return len(argv) > 2 and os.path.basename(argv[1]) == "gpt2dist" and argv[2] == "train"


def _record(signum: int, _frame) -> None:
    global _terms
    if signum == signal.SIGTERM:
        _terms += 1
        if _terms > 1:
            os.write(2, b"second SIGTERM during start-up: exiting at once\n")
            os._exit(143)
    name = signal.Signals(signum).name
    if not _received:
        os.write(2, f"{name} received during start-up: checkpointing at the first step boundary, then "
                    "exiting\n".encode())
    _received.append(name)


def install() -> None:
    """Record SIGTERM/SIGUSR1 from now on (main thread only; a no-op where signals cannot be set)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        try:
            signal.signal(sig, _record)
        except (ValueError, OSError):  # not the main thread, or a platform without the signal
            return


def take() -> tuple[str | None, int]:
    """(the first stop signal received during start-up or None, the number of SIGTERMs), and forget them."""
    global _terms
    first, terms = (_received[0] if _received else None), _terms
    _received.clear()
    _terms = 0
    return first, terms


def install_if_trainer() -> None:
    if is_trainer(getattr(sys, "orig_argv", [])):
        install()
