"""Starting real multi-rank runs from tests: every launcher a user has, on CPU with gloo, no mocks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_command(launcher: str, config: Path, overrides: list[str], nproc: int) -> list[str]:
    """The command line a user would type, for each supported launcher."""
    entry = [str(config), *overrides]
    if launcher == "launch":
        return [PY, "-m", "gpt2dist.cli", "launch", str(config), "--nproc", str(nproc), *overrides]
    if launcher == "torchrun":
        return [PY, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
                str(free_port()), "-m", "gpt2dist.train", *entry]
    if launcher == "deepspeed":
        return [shutil.which("deepspeed") or "deepspeed", "--num_gpus", str(nproc), "--master_port",
                str(free_port()), "--module", "gpt2dist.train", *entry]
    if launcher == "mpirun":
        return [shutil.which("mpirun") or "mpirun", "-np", str(nproc), "--oversubscribe", "-x", "OMP_NUM_THREADS",
                "-x", "MASTER_PORT", PY, "-m", "gpt2dist.train", *entry]
    if launcher == "single":
        return [PY, "-m", "gpt2dist.train", *entry]
    raise ValueError(launcher)


def rank_env(launcher: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
    if launcher != "single":  # several ranks on 2 cores: one thread each (a single process keeps its default)
        env["OMP_NUM_THREADS"] = "1"
    if launcher == "mpirun":
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", MASTER_PORT=str(free_port()))
    return env


def run_ranks(launcher: str, config: Path, overrides: list[str] = (), nproc: int = 2, *, timeout: float = 300,
              check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = rank_command(launcher, config, list(overrides), nproc)
    with subprocess.Popen(cmd, env=rank_env(launcher, env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as popen:
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # kill the ranks too, not only the launcher: orphans would eat the CPUs
            os.killpg(popen.pid, signal.SIGKILL)
            stdout, stderr = popen.communicate()
            raise AssertionError(f"{' '.join(cmd)} ran past {timeout} s\n{stdout[-4000:]}\n{stderr[-4000:]}") from None
    proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants alive now (from /proc: parent of each process)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def alive(pid: int) -> bool:
    """Running or sleeping (a zombie has released its memory and waits only for its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_none_survive(pids: list[int], within: float = 5.0) -> None:
    """Every process of a killed run must be gone within seconds: a DataLoader worker orphaned by a SIGKILLed
    trainer used to live on (parent 1, ~350 MB) until someone killed it by hand."""
    deadline = time.monotonic() + within
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    names = {p: Path(f"/proc/{p}/comm").read_text().strip() for p in left if alive(p)}
    assert not left, f"processes of the killed run still alive {within} s later: {names}"


def kill_after_checkpoint(launcher: str, config: Path, run_dir: Path, step: int, overrides: list[str] = (),
                          nproc: int = 2, timeout: float = 300, warm=None) -> None:
    """Start a run and SIGKILL its whole process group once checkpoint `step` is complete (a preemption); every
    process of the run must then be gone. `warm` (the warm_cli fixture) starts a one-rank run forked warm."""
    if warm is not None:
        assert launcher == "single", "the warm harness starts one process"
        proc = warm.start("train", str(config), *overrides)
    else:
        cmd = rank_command(launcher, config, list(overrides), nproc)
        proc = subprocess.Popen(cmd, env=rank_env(launcher), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout
    tree: list[int] = []
    try:
        while time.monotonic() < deadline:
            if latest.is_file() and latest.read_text().strip() == f"step-{step:08d}":
                tree = process_tree(proc.pid)
                os.killpg(proc.pid, signal.SIGKILL)
                break
            if proc.poll() is not None:
                err = proc.stderr() if warm is not None else proc.stderr.read().decode()
                raise AssertionError(f"the run ended before the kill: {err[-4000:]}")
            time.sleep(0.005)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"checkpoint {step} never appeared")
    finally:
        proc.wait(timeout=60)
    assert_none_survive(tree)


def read_trace_docs(run_dir: Path, world_size: int | None = None) -> list[tuple[int, str]]:
    """Documents (epoch, "file:row") pulled by all ranks, dropping what killed runs pulled after their checkpoint.
    A rank that the last run (`world_size` ranks) no longer has never writes a `# start` line after its kill:
    what it pulled after the step the last run resumed from (rank 0's last start) is void too."""
    files = sorted((run_dir / "trace").glob("windows-rank*.txt"))
    last_start = None
    docs: list[tuple[int, int, str]] = []
    for rank, path in enumerate(files):
        per_file: list[tuple[int, int, str]] = []
        for line in path.read_text().splitlines():
            if line.startswith("# start "):
                start = int(line.split()[2])
                per_file = [d for d in per_file if d[0] <= start]
                if rank == 0:
                    last_start = start
            elif line.startswith("d "):
                _, step, epoch, row = line.split()
                per_file.append((int(step), int(epoch), row))
        if world_size is not None and rank >= world_size and last_start is not None:
            per_file = [d for d in per_file if d[0] <= last_start]
        docs += per_file
    return [(epoch, row) for _, epoch, row in docs]
