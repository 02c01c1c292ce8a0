"""The process tree of a local launch: who the ranks are, forwarding stop signals to them, and never leaving
any of them behind.

`gpt2dist launch` -> deepspeed's runner -> deepspeed's launch.py -> one process per rank -> DataLoader workers.
The runner has no handler for SIGTERM (its own only serves pdsh), so a TERM, USR1 or KILL to the launcher or the
runner used to orphan launch.py and every rank: they trained on, holding the run dir's lock. So the runner starts
in a process group of its own, which every process below it inherits:
- TERM/USR1 to the launcher go to the ranks only, as SIGUSR1 (checkpoint at the next step boundary, exit 75);
  TERM is not forwarded as TERM because launch.py TERMs the other ranks when one exits, which would be their
  second TERM ("exit now") while they finish the same checkpoint. A second TERM to the launcher kills the group.
- Whatever ends the runner, the launcher then gives what is left of the group GRACE_S to stop and kills it.
- A watchdog in its own session holds a pipe from the launcher: when the launcher dies, even by SIGKILL, the pipe
  closes and the watchdog kills the group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 5.0  # for ranks left when the runner is gone: their checkpoint-then-exit, then SIGKILL

WATCHDOG = """
import os, signal, sys
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)  # only the launcher's end (EOF on stdin) or SIGKILL ends this process
sys.stdin.buffer.read()
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except (ProcessLookupError, PermissionError):
    pass
"""


def start_watchdog(pgid: int) -> subprocess.Popen:
    """A process that SIGKILLs group `pgid` once this process is gone (it reads our pipe until EOF)."""
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, str(pgid)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def rank_pids(pgid: int, module: str) -> list[int]:
    """The rank processes of the group: `python -m MODULE` whose parent is not one too (that would make it a
    DataLoader worker, a fork of a rank)."""
    def runs_module(pid: int) -> bool:
        argv = _cmdline(pid)
        return any(a == "-m" and b == module for a, b in zip(argv, argv[1:], strict=False))

    ranks = []
    for pid in group_members(pgid):
        fields = _stat(pid)
        if fields and runs_module(pid) and not runs_module(int(fields[1])):
            ranks.append(pid)
    return ranks


def signal_ranks(pgid: int, module: str, signum: int) -> None:
    for pid in rank_pids(pgid, module):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def reap_group(pgid: int, module: str, grace: float = GRACE_S) -> None:
    """The runner is gone: ranks still running get SIGUSR1 (checkpoint, exit 75) and `grace` seconds; then
    everything left of the group is killed."""
    if not group_members(pgid):
        return
    signal_ranks(pgid, module, signal.SIGUSR1)
    deadline = time.monotonic() + grace
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode
