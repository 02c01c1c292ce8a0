"""One run per run dir (issue 12, item 6): a second `gpt2dist train` on a run dir whose run is still going
refuses in one line and writes nothing; a SIGKILLed holder (and a forked child it leaves behind) blocks nobody."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import tiny_config, write_yaml

from gpt2dist.errors import UserError
from gpt2dist.run.layout import LOCK_FILE
from gpt2dist.run.lock import RunLock

HOLD = """
import sys, time
from gpt2dist.run.lock import RunLock
lock = RunLock(sys.argv[1]); lock.acquire(); print("held", flush=True); time.sleep(120)
"""


def holder(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run dir's lock (as a running trainer's rank 0 does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_run_dir_is_refused_and_a_killed_holders_is_not(tmp_path):
    (tmp_path / "run").mkdir()
    proc = holder(tmp_path / "run")
    try:
        with pytest.raises(UserError, match=rf"run_dir {tmp_path / 'run'} is in use by another gpt2dist run "
                                            rf"\(pid {proc.pid} on .*\): wait for it to end"):
            RunLock(tmp_path / "run").acquire_existing()
    finally:
        proc.kill()
        proc.wait()
    with RunLock(tmp_path / "run") as lock:  # the kernel released the SIGKILLed holder's lock
        lock.acquire_existing()
        assert lock.fd is not None


def test_acquire_existing_creates_nothing(tmp_path):
    RunLock(tmp_path / "absent").acquire_existing()
    (tmp_path / "run").mkdir()
    RunLock(tmp_path / "run").acquire_existing()
    assert not (tmp_path / "absent").exists() and not list((tmp_path / "run").iterdir())


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """A DataLoader worker is a fork of rank 0: if it outlives its trainer (SIGKILL), the run dir must not stay
    locked by the worker's inherited descriptor."""
    (tmp_path / "run").mkdir()
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child says it runs (the at-fork hooks ran), sleeps, leaves
        os.write(ready_w, b"1")
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        lock.release()  # the parent lets go; the child is alive and still has its own copy of everything
        with RunLock(tmp_path / "run") as again:
            again.acquire()
            assert again.fd is not None
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(ready_r)
        os.close(ready_w)


def tree(root: Path) -> dict[str, tuple]:
    """Every path under root -> (size, mtime_ns) for files, None for folders."""
    return {str(p.relative_to(root)): (None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns))
            for p in sorted(root.rglob("*"))}


def start_training(tmp_path: Path, story_corpus) -> tuple[subprocess.Popen, Path, Path]:
    run_dir = tmp_path / "run"
    cfg = tiny_config(run_dir, [str(story_corpus[0])], train={"max_steps": 100000, "log_every": 1},
                      checkpoint={"every": 2, "keep_last": 2})
    config = write_yaml(tmp_path / "run.yaml", cfg)
    proc = subprocess.Popen([sys.executable, "-m", "gpt2dist.cli", "train", str(config)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "latest").is_file():
        assert proc.poll() is None, "the first run died"
        assert time.monotonic() < deadline, "the first run never wrote a checkpoint"
        time.sleep(0.2)
    return proc, run_dir, config


@pytest.mark.slow
def test_second_train_on_a_running_run_dir_refuses_and_a_sigkilled_one_does_not_block(tmp_path, story_corpus, warm_cli):
    first, run_dir, config = start_training(tmp_path, story_corpus)
    try:
        first.send_signal(signal.SIGSTOP)  # frozen mid-run: it still holds the lock, and writes nothing meanwhile
        before = tree(run_dir)
        second = warm_cli("train", str(config), cwd=tmp_path, check=False)
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert lines[0] == (f"error: run_dir {run_dir} is in use by another gpt2dist run (pid {first.pid} on "
                            f"{os.uname().nodename}): wait for it to end (or stop it), or choose another run_dir")
        assert "Traceback" not in second.stdout + second.stderr
        assert tree(run_dir) == before  # nothing created, removed or rewritten
        assert (run_dir / LOCK_FILE).is_file()
    finally:
        first.kill()  # SIGKILL, also of a stopped process: no cleanup runs, only the kernel releases the lock
        first.wait()
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()  # how far the first run got varies
    target = int(latest.removeprefix("step-")) + 2  # past it, so the run resumes
    resumed = warm_cli("train", str(config), f"train.max_steps={target}", cwd=tmp_path)
    assert f"resuming from {latest}" in resumed.stdout + resumed.stderr
