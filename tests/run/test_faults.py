"""Fault injection: SIGKILL a real training run at random moments (also inside a checkpoint write), resume,
and check it restarts from the last complete checkpoint with the uninterrupted run's losses; a full disk
during a save is a one-line error that leaves the previous checkpoint intact."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import mount_tmpfs, read_metrics, tiny_config, write_yaml
from ranks import assert_none_survive, process_tree

from gpt2dist.run.checkpoint import CheckpointManager

TRIALS = 6  # half inside a checkpoint write (odd seeds), half between steps
FAST_TRIALS = 1  # in the default `-m "not slow"` subset; CI runs all TRIALS


def fault_config(tmp_path: Path, corpus, name: str) -> Path:
    run_dir = tmp_path / name
    cfg = tiny_config(run_dir, [str(corpus[0])], model={"preset": "tiny", "dropout": 0.1},
                      train={"max_steps": 30, "micro_batch_size": 4, "log_every": 1},
                      checkpoint={"every": 3, "keep_last": 2})
    return write_yaml(tmp_path / f"{name}.yaml", cfg)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, story_corpus, warm_cli) -> dict[int, dict]:
    tmp = tmp_path_factory.mktemp("reference")
    warm_cli("train", str(fault_config(tmp, story_corpus, "run")))
    return read_metrics(tmp / "run")


def stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP has landed): it can write nothing more until it is killed."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def kill_at_random(config: Path, run_dir: Path, rng: random.Random, inside_save: bool, cli) -> int:
    """SIGKILL the run at a random step (plus a random fraction of one), or the instant the temporary
    directory of a randomly chosen checkpoint write appears -- i.e. inside that write. Returns the step of the
    checkpoint `latest` named at the kill (0: none), read while the run is frozen (SIGSTOP) so that no save can
    complete between the read and the kill: the test's own record, not what the code under test would pick."""
    proc = cli.start("train", str(config))  # forked warm: a real process, without 5 s of imports per trial
    ckpt_root, metrics = run_dir / "checkpoints", run_dir / "metrics.jsonl"
    target_step, target_save = rng.randint(1, 28), rng.randint(0, 8)
    seen: set[str] = set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if inside_save:
            temps = {p.name for p in ckpt_root.glob(".tmp-step-*")} if ckpt_root.is_dir() else set()
            seen |= temps
            if len(seen) > target_save:
                break
            time.sleep(0.0005)
        else:
            if metrics.is_file() and metrics.read_text().count('"loss"') >= target_step:
                time.sleep(rng.uniform(0.0, 0.03))
                break
            time.sleep(0.002)
    assert proc.poll() is None, "the run ended before the fault could be injected"
    proc.send_signal(signal.SIGSTOP)
    while not stopped(proc.pid):
        time.sleep(0.0005)
    latest = ckpt_root / "latest"
    seen_latest = latest.read_text().strip() if latest.is_file() else None  # written by rename: whole or absent
    tree = process_tree(proc.pid)  # the trainer and its DataLoader worker, once started
    proc.send_signal(signal.SIGKILL)  # the trainer alone, as the OOM killer does
    proc.wait(timeout=30)
    assert_none_survive(tree)
    return int(seen_latest.removeprefix("step-")) if seen_latest else 0


def trial(tmp_path: Path, corpus, reference: dict[int, dict], seed: int, cli) -> None:
    rng = random.Random(seed)
    config = fault_config(tmp_path, corpus, "run")
    run_dir = tmp_path / "run"
    saved = kill_at_random(config, run_dir, rng, inside_save=seed % 2 == 1, cli=cli)
    metrics_file = run_dir / "metrics.jsonl"
    logged_before = metrics_file.stat().st_size if metrics_file.is_file() else 0
    resumed = cli("train", str(config))
    if saved:
        assert f"resuming from step-{saved:08d}" in resumed.stdout, resumed.stdout[-2000:]
    elif (run_dir / "config.yaml").is_file():
        assert "fresh run" in resumed.stdout
    # The resumed run's own records (appended after the killed run's): a restart from step 0, or from any other
    # checkpoint than the one `latest` named at the kill, fails here.
    new = [json.loads(line) for line in metrics_file.read_bytes()[logged_before:].splitlines()]
    steps = [r["step"] for r in new if "loss" in r]
    assert steps[0] == saved + 1 and steps[-1] == 30, f"trial {seed}: resumed at {steps[0]}, expected {saved + 1}"
    metrics = read_metrics(run_dir)
    for step in range(saved + 1, 31):
        assert metrics[step]["loss"] == reference[step]["loss"], f"trial {seed}: step {step} differs after resume"
    assert not list((run_dir / "checkpoints").glob(".tmp-*")), "a stale temporary checkpoint survived"


@pytest.mark.parametrize("seed", [pytest.param(s, marks=[] if s < FAST_TRIALS else [pytest.mark.slow])
                                  for s in range(TRIALS)])
def test_sigkill_anywhere_then_resume(tmp_path, story_corpus, reference, seed, warm_cli):
    trial(tmp_path, story_corpus, reference, seed, warm_cli)


@pytest.mark.slow
def test_a_sigkilled_trainer_takes_its_data_worker_with_it(tmp_path, story_corpus):
    """SIGKILL the training process alone (not its group), as the OOM killer or a user's `kill -9 PID` does: its
    streaming DataLoader worker (`pt_data_worker`) must die with it instead of living on with parent 1."""
    config = fault_config(tmp_path, story_corpus, "run")
    # Batches of 16 x 513 token ids, 8 prefetched: more than a pipe holds (64 KiB), so at the kill the worker has
    # results queued that nobody will read -- the state in which orphaned workers were found blocked.
    proc = subprocess.Popen([sys.executable, "-m", "gpt2dist.train", str(config), "train.max_steps=100000",
                             "data.num_workers=1", "data.prefetch_factor=8", "data.block_size=512",
                             "model.n_positions=512", "train.micro_batch_size=16"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        while not (metrics.is_file() and metrics.read_text().count('"loss"') >= 3):
            assert proc.poll() is None, "the run ended early"
            time.sleep(0.01)
        tree = process_tree(proc.pid)
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in tree[1:]}
        assert "pt_data_worker" in names, f"the run has no DataLoader worker to test: {names}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert_none_survive(tree, within=5.0)


@pytest.mark.slow
def test_a_stop_signal_to_the_data_worker_stops_the_run_like_one_to_the_trainer(tmp_path, story_corpus):
    """SIGTERM to the DataLoader worker alone (`pkill -f gpt2dist` hits it too: same command line) used to kill
    it and crash the trainer with a traceback before any checkpoint. Now the worker asks its trainer to stop:
    a checkpoint at the next step boundary, exit 75, status preempted, and no process left."""
    config = fault_config(tmp_path, story_corpus, "run")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gpt2dist.train", str(config), "train.max_steps=100000",
                             "data.num_workers=1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    try:
        while not (metrics.is_file() and metrics.read_text().count('"loss"') >= 2):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.01)
        tree = process_tree(proc.pid)
        workers = [p for p in tree[1:] if Path(f"/proc/{p}/comm").read_text().strip() == "pt_data_worker"]
        assert workers, "the run has no DataLoader worker to test"
        os.kill(workers[0], signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert proc.returncode == 75 and "Traceback" not in err, err[-3000:]
    assert "data worker got SIGTERM" in err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "preempted"
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step-{status['step']:08d}"
    assert_none_survive(tree, within=5.0)


@pytest.mark.slow
def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path, story_corpus):
    # A real full disk: an 8 MB tmpfs (room for two checkpoints, so the doctor lets the run start) that another
    # "process" fills up after the first checkpoint.
    mount = mount_tmpfs(tmp_path / "small", "8m")
    try:
        run_dir = mount / "run"
        cfg = tiny_config(run_dir, [str(story_corpus[0])], train={"max_steps": 40, "micro_batch_size": 4},
                          checkpoint={"every": 20, "keep_last": 3})
        config = write_yaml(tmp_path / "run.yaml", cfg)
        proc = subprocess.Popen([sys.executable, "-m", "gpt2dist.train", str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        while not (run_dir / "checkpoints" / "latest").is_file():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.01)
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        (mount / "filler").write_bytes(b"\0" * max(0, free - 64 * 1024))
        proc.wait(timeout=300)
        err = proc.stderr.read()
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2, err[-3000:]
        assert len(lines) == 1 and "could not write checkpoint step-00000040" in lines[0], err[-3000:]
        assert "step-00000020 is intact" in lines[0] and "Traceback" not in err
        assert CheckpointManager(run_dir, keep_last=3).latest_verified().name == "step-00000020"
        assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_sigterm_checkpoints_and_a_second_sigterm_exits_at_once(tmp_path, story_corpus, reference, warm_cli):
    config = fault_config(tmp_path, story_corpus, "run")
    run_dir = tmp_path / "run"
    for second in (False, True):
        proc = subprocess.Popen([sys.executable, "-m", "gpt2dist.train", str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count('"loss"') >= (4 if not second else 12)):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        if second:  # signals of one kind do not queue: send the second once the first has been handled
            while "SIGTERM received" not in proc.stderr.readline():
                assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if second:  # at once, whatever it was doing; nothing half-written is ever loaded
            assert proc.returncode == 143
        else:  # one SIGTERM: a checkpoint at the next step boundary, then exit 75 ("requeue me")
            assert proc.returncode == 75, proc.stderr.read()
            assert '"state": "preempted"' in (run_dir / "status.json").read_text()
    # the run is dead: what `latest` names now is what a resume must pick (the test's record, not the code's)
    start = int((run_dir / "checkpoints" / "latest").read_text().strip().removeprefix("step-"))
    logged_before = (run_dir / "metrics.jsonl").stat().st_size
    resumed = warm_cli("train", str(config))
    assert f"resuming from step-{start:08d}" in resumed.stdout
    first = json.loads((run_dir / "metrics.jsonl").read_bytes()[logged_before:].splitlines()[0])
    assert first["step"] == start + 1
    metrics = read_metrics(run_dir)
    assert all(metrics[s]["loss"] == reference[s]["loss"] for s in range(start + 1, 31))


class _Payload:
    """A pickle that would run code when unpickled without weights_only -- the attack to refuse."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_crafted_deepspeed_shard_is_refused_not_unpickled(tmp_path, story_corpus, warm_cli):
    import hashlib
    import json

    import torch

    config = fault_config(tmp_path, story_corpus, "run")
    warm_cli("train", str(config), "train.max_steps=3", "distributed.backend=deepspeed", "distributed.zero_stage=1")
    step = tmp_path / "run" / "checkpoints" / "step-00000003"
    shard = next((step / "deepspeed").glob("*optim_states.pt"))
    marker = tmp_path / "PWNED"
    torch.save({"optimizer_state_dict": _Payload(str(marker))}, shard)
    manifest = json.loads((step / "manifest.json").read_text())  # a crafted checkpoint brings a matching manifest
    name = str(shard.relative_to(step))
    manifest["files"][name] = {"bytes": shard.stat().st_size, "sha256": hashlib.sha256(shard.read_bytes()).hexdigest()}
    (step / "manifest.json").write_text(json.dumps(manifest))

    out = warm_cli("train", str(config), "train.max_steps=6", "distributed.backend=deepspeed",
                   "distributed.zero_stage=1", check=False)
    assert out.returncode == 2 and "refusing to load" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists(), "the crafted pickle ran"


@pytest.mark.slow
def test_read_only_run_dir_is_a_one_line_error(tmp_path, story_corpus, warm_cli):
    mount = mount_tmpfs(tmp_path / "ro", "20m")
    try:
        cfg = tiny_config(mount / "run", [str(story_corpus[0])], train={"max_steps": 3}, checkpoint={"every": 3})
        config = write_yaml(tmp_path / "run.yaml", cfg)
        warm_cli("train", str(config))
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        out = warm_cli("train", str(config), "train.max_steps=6", check=False)
        lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 2 and len(lines) == 1 and "Read-only file system" in lines[0], out.stderr[-2000:]
        assert "Traceback" not in out.stderr
        assert CheckpointManager(mount / "run", keep_last=3).latest_verified().name == "step-00000003"
    finally:
        subprocess.run(["umount", str(mount)], check=False)
