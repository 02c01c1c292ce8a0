"""`gpt2dist launch --nproc N`: N local ranks through the `deepspeed` launcher (CPU ranks use gloo).

The launcher never imports the training code: it builds a command line, runs it in a process group of its
own, forwards stop signals to the ranks, leaves no process of the run behind (tree.py), and returns the exit
code.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys

from gpt2dist.launcher import tree

from gpt2dist.dist import free_port
from gpt2dist.errors import UserError

MODULES = ("gpt2dist.train", "gpt2dist.commbench")  # per-rank entry points: training, bench-comm


def launch_command(config: str, overrides: list[str], nproc: int, *, master_port: int | None = None,
                   no_resume: bool = False, module: str = "gpt2dist.train") -> list[str]:
    """`python -m deepspeed.launcher.runner --num_gpus N --module MODULE CONFIG ...` (absolute python)."""
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if not os.path.isfile(config):
        raise UserError(f"config file {config} not found: pass the path of a YAML run config")
    if module not in MODULES:
        raise UserError(f"--module {module} is not a gpt2dist entry point: use one of {', '.join(MODULES)}")
    if no_resume and module != "gpt2dist.train":
        raise UserError("--no-resume is a training flag: drop it with --module gpt2dist.commbench")
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc),
           "--master_port", str(master_port or free_port()), "--module", module, config, *overrides]
    return cmd + (["--no-resume"] if no_resume else [])


def launch(config: str, overrides: list[str], nproc: int, *, no_resume: bool = False,
           module: str = "gpt2dist.train") -> int:
    """Run the ranks and wait; returns the launcher's exit code."""
    cmd = launch_command(config, overrides, nproc, no_resume=no_resume, module=module)
    env = dict(os.environ)
    # Each rank otherwise starts one thread per core: N ranks x cores threads oversubscribe a CPU node
    # 2-3x (measured in ../shared/DEEPSPEED-ON-CPU.md). torchrun sets this itself; deepspeed does not.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    print("launch:", shlex.join(cmd), flush=True)
    # The runner leads a process group of its own (tree.py says why); the kernel also TERMs it if we die.
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_own_group_and_term_when_parent_dies)
    pgid = proc.pid
    watchdog = tree.start_watchdog(pgid)  # kills the group if this process dies, however it dies
    terms = 0

    def forward(signum, _frame):  # a stop signal to this process goes on to the ranks as SIGUSR1
        nonlocal terms
        if signum == signal.SIGINT:  # Ctrl-C reaches only our group now: pass it on as the terminal would
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGINT)
            return
        terms += signum == signal.SIGTERM
        if terms > 1:  # a second SIGTERM: the user or scheduler means it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            return
        tree.signal_ranks(pgid, module, signal.SIGUSR1)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        code = proc.wait()
        tree.reap_group(pgid, module)  # whatever ended the runner, nothing of the run outlives it
        return tree.exit_code(code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(OSError):
            watchdog.stdin.close()  # the group is gone: the watchdog's kill finds nothing
        with contextlib.suppress(subprocess.TimeoutExpired):
            watchdog.wait(timeout=5)


def _own_group_and_term_when_parent_dies() -> None:
    """In the child: lead a new process group; prctl(PR_SET_PDEATHSIG, SIGTERM) (Linux; elsewhere skipped)."""
    os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
