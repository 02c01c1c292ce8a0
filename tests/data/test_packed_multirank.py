"""Packed shards under real DeepSpeed ranks: a killed 2-rank run resumed on 1 rank trains every window of
an epoch exactly once, across the epoch boundary, and per-step losses agree at 1, 2 and 4 ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import read_metrics, tiny_config, write_yaml
from ranks import kill_after_checkpoint, run_ranks
from test_packed import write_docs

from gpt2dist.config import load_config
from gpt2dist.data.packed import open_train
from gpt2dist.data.prepare import prepare

pytestmark = pytest.mark.slow

GLOBAL = 12


def packed_run(tmp_path: Path, name: str, files: list[str], **train) -> tuple[Path, Path]:
    run_dir = tmp_path / name
    raw = tiny_config(run_dir, files, data={"block_size": 32, "format": "packed"},
                      train={"global_batch_size": GLOBAL, "micro_batch_size": 2, "warmup_steps": 2, **train},
                      checkpoint={"every": 8, "keep_last": 3}, distributed={"backend": "deepspeed"},
                      logging={"tensorboard": False, "progress": "lines", "trace_windows": True})
    config = write_yaml(tmp_path / f"{name}.yaml", raw)
    prepare(load_config(config), workers=1)
    return config, run_dir


def trained_windows(run_dir: Path) -> dict[int, list[tuple[int, int]]]:
    """step -> (epoch, window) trained by all ranks, from the last run that trained that step.

    Every run writes `# start N` to each of its ranks' trace files, and a resume has a start >= the runs
    before it; a killed run's lines past its last checkpoint are superseded by the run that resumed.
    """
    segments: list[tuple[str, int, dict[int, list[tuple[int, int]]]]] = []  # (file, start, step -> windows)
    for path in sorted((run_dir / "trace").glob("windows-rank*.txt")):
        for line in path.read_text().splitlines():
            if line.startswith("# start "):
                segments.append((path.name, int(line.split()[2]), {}))
            elif line.startswith("w "):
                _, step, epoch, index, _ = line.split()
                segments[-1][2].setdefault(int(step), []).append((int(epoch), int(index)))
    steps: dict[int, list[tuple[int, int]]] = {}
    for step in sorted({s for _, _, seg in segments for s in seg}):
        latest = max(start for _, start, seg in segments if step in seg)
        last_per_file = {name: seg for name, start, seg in segments if start == latest and step in seg}
        steps[step] = [w for seg in last_per_file.values() for w in seg[step]]
    return steps


def test_kill_two_ranks_resume_on_one_trains_every_window_once_across_epochs(tmp_path, warm_cli):
    files = write_docs(tmp_path / "data", 3, 20)
    config, run_dir = packed_run(tmp_path, "run", files)
    cfg = load_config(config)
    n_windows = open_train(cfg, 0, 1, 1, 1).schedule.total
    max_steps = int(np.ceil(1.5 * n_windows / GLOBAL))
    assert max_steps > 16, "the corpus must outlast the first checkpoint"
    overrides = [f"train.max_steps={max_steps}", "model.n_embd=128", "model.n_layer=4", "model.n_head=4"]
    kill_after_checkpoint("launch", config, run_dir, step=8, overrides=overrides)
    assert max(read_metrics(run_dir)) < max_steps, "the kill came too late to test a resume"
    out = warm_cli("train", str(config), *overrides)
    assert "resuming from step-00000008" in out.stdout and "data-parallel 1 =" in out.stdout, out.stdout[-2000:]

    steps = trained_windows(run_dir)
    assert sorted(steps) == list(range(1, max_steps + 1))
    seen = [w for s in sorted(steps) for w in steps[s]]
    assert len(seen) == max_steps * GLOBAL and len(seen) == len(set(seen)), "a window was trained twice"
    assert sorted(i for e, i in seen if e == 0) == list(range(n_windows)), "epoch 0 skipped a window"
    assert {e for e, _ in seen} == {0, 1}
    reference = open_train(cfg, 0, 1, GLOBAL, 1)  # the schedule on one rank, uninterrupted
    for step in range(1, max_steps + 1):
        expected = sorted((w.epoch, w.index) for w in reference.next_batch(GLOBAL)[1])
        assert sorted(steps[step]) == expected, f"step {step} trained other windows"


def test_per_step_losses_agree_at_one_two_and_four_ranks(tmp_path, warm_cli):
    files = write_docs(tmp_path / "data", 3, 40)
    curves = {}
    for world in (1, 2, 4):
        config, run_dir = packed_run(tmp_path, f"w{world}", files, max_steps=6, global_batch_size=8)
        if world == 1:
            warm_cli("train", str(config))
        else:
            run_ranks("launch", config, nproc=world)
        metrics = read_metrics(run_dir)
        curves[world] = [metrics[s]["loss"] for s in range(1, 7)]
    assert curves[2] == pytest.approx(curves[1], rel=1e-4)
    assert curves[4] == pytest.approx(curves[1], rel=1e-4)
    assert curves[1][-1] < curves[1][0]
