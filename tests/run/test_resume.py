"""Exact resume: a run SIGKILLed after its step-12 checkpoint and resumed reproduces the uninterrupted
run's per-step losses bit for bit and consumes the very same windows (none repeated, none skipped)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import read_metrics, tiny_config, write_yaml
from ranks import kill_after_checkpoint

pytestmark = pytest.mark.slow


def resume_config(run_dir: Path, corpus: tuple[Path, Path]) -> dict:
    # Wide enough that a step takes ~10 ms or more, so the kill lands between steps 12 and 24.
    return tiny_config(run_dir, [str(corpus[0])], [str(corpus[1])],
                       model={"preset": "tiny", "n_embd": 128, "n_layer": 4, "n_head": 4, "dropout": 0.1},
                       data={"block_size": 64},
                       train={"max_steps": 24, "micro_batch_size": 8, "grad_accum_steps": 2, "eval_every": 12},
                       checkpoint={"every": 12, "keep_last": 3},
                       logging={"tensorboard": False, "progress": "lines", "trace_windows": True})


def read_trace(run_dir: Path) -> dict[int, list[tuple[int, int, str]]]:
    """step -> (epoch, index, digest) of its windows, as the surviving runs consumed them."""
    per_step: dict[int, list[tuple[int, int, str]]] = {}
    for line in (run_dir / "trace" / "windows-rank00000.txt").read_text().splitlines():
        if line.startswith("# start "):  # a (re)start: what a killed run traced after this step is void
            start = int(line.split()[2])
            per_step = {s: w for s, w in per_step.items() if s <= start}
            continue
        kind, step, epoch, index, *digest = line.split()
        if kind == "w":
            per_step.setdefault(int(step), []).append((int(epoch), int(index), digest[0]))
    return per_step


def test_sigkill_then_resume_gives_identical_losses_and_windows(tmp_path, story_corpus, warm_cli):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    config_a = write_yaml(tmp_path / "a.yaml", resume_config(run_a, story_corpus))
    config_b = write_yaml(tmp_path / "b.yaml", resume_config(run_b, story_corpus))
    warm_cli("train", str(config_a))

    kill_after_checkpoint("single", config_b, run_b, step=12, warm=warm_cli)
    killed_at = max(read_metrics(run_b))
    assert 12 <= killed_at < 24, f"the kill must land between the checkpoint and the end, got step {killed_at}"
    resumed = warm_cli("train", str(config_b))
    assert "resuming from step-00000012" in resumed.stdout

    losses_a, losses_b = read_metrics(run_a), read_metrics(run_b)
    for step in range(13, 25):
        assert losses_b[step]["loss"] == losses_a[step]["loss"], f"step {step} differs after resume"
        assert losses_b[step]["tokens"] == losses_a[step]["tokens"]
    assert losses_b[24]["val_loss"] == losses_a[24]["val_loss"]

    trace_a, trace_b = read_trace(run_a), read_trace(run_b)
    assert sorted(trace_a) == list(range(1, 25)) == sorted(trace_b)
    assert trace_a == trace_b, "the resumed run consumed different windows"
    consumed = [(epoch, index) for step in sorted(trace_a) for epoch, index, _ in trace_a[step]]
    assert consumed == [(0, i) for i in range(24 * 2 * 8)], "windows were repeated or skipped"
