"""logging.wandb in wandb's offline mode (no network): the run's files hold every metrics.jsonl record under
grouped tags and the resolved config, a resumed run continues the same W&B run id; TensorBoard's tags are
grouped the same way; the 2-rank run logs from rank 0 only (and shows a passed-through DeepSpeed key at work)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from helpers import read_metrics, run_cli, tiny_config, write_yaml
from ranks import run_ranks
from wandb_records import history, run_config

from gpt2dist.observe.metrics import metric_tag


def wandb_env(tmp_path: Path) -> dict[str, str]:
    """Offline, and every wandb folder inside the test's tmp dir."""
    home = tmp_path / "wandb-home"
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(home / "config"),
            "WANDB_CACHE_DIR": str(home / "cache"), "WANDB_DATA_DIR": str(home / "data")}


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_tags_group_the_metrics_jsonl_keys():
    assert [metric_tag(k) for k in ("loss", "val_loss", "lr", "tokens_per_s", "mfu", "val_ppl", "bad_steps")] == [
        "train/loss", "eval/loss", "train/lr", "perf/tokens_per_s", "perf/mfu", "eval/ppl", "train/bad_steps"]


def assert_logged(run_dir: Path, wandb_file: Path, steps: range) -> None:
    """Every number of every metrics.jsonl record in `steps` is in the W&B history under its tag."""
    logged: dict[int, dict] = {}
    for row in history(wandb_file):
        logged.setdefault(row["step"], {}).update(row)
    for step, record in read_metrics(run_dir).items():
        if step not in steps:
            continue
        for key, value in record.items():
            if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                assert math.isclose(logged[step][metric_tag(key)], value, rel_tol=1e-9), (step, key)


@pytest.mark.slow
def test_wandb_offline_run_holds_the_metrics_and_resumes_the_same_run(tmp_path, story_corpus):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    cfg = tiny_config(run, [str(story_corpus[0])], [str(story_corpus[1])],
                      train={"max_steps": 6, "log_every": 2, "eval_every": 3, "eval_batches": 2},
                      checkpoint={"every": 3},
                      logging={"tensorboard": True, "progress": "lines", "wandb": True, "curves": True})
    config = write_yaml(tmp_path / "run.yaml", cfg)
    out = run_cli("train", str(config), env=wandb_env(tmp_path)).stdout
    run_id = (run / "wandb_id").read_text().strip()
    (first,) = offline_runs(run)
    assert first.name.endswith(f"-{run_id}")
    wandb_file = first / f"run-{run_id}.wandb"
    assert_logged(run, wandb_file, range(0, 7))
    logged_id, config_logged = run_config(wandb_file)
    assert logged_id == run_id and config_logged["train"]["max_steps"] == 6 and config_logged["run_dir"] == str(run)
    done = [line for line in out.splitlines() if line.startswith("done:")]
    assert done and f"curves {run / 'curves.png'}" in done[-1]  # the run's summary line names the plot

    tb = EventAccumulator(str(run / "tensorboard"))
    tb.Reload()
    assert {"train/loss", "train/lr", "eval/loss", "eval/ppl", "perf/tokens_per_s"} <= set(tb.Tags()["scalars"])

    run_cli("train", str(config), "train.max_steps=8", env=wandb_env(tmp_path))  # a restart: the same W&B run
    second = [p for p in offline_runs(run) if p != first]
    assert len(second) == 1 and second[0].name.endswith(f"-{run_id}")
    assert run_config(second[0] / f"run-{run_id}.wandb")[0] == run_id
    assert_logged(run, second[0] / f"run-{run_id}.wandb", range(7, 9))


@pytest.mark.slow
def test_two_ranks_log_once_and_pass_deepspeed_keys_through(tmp_path, story_corpus):
    """A real 2-rank ZeRO-2 run (gloo): one W&B run (rank 0), and DeepSpeed's flops profiler, which gpt2dist never
    configures, switched on by distributed.deepspeed, writes its report at step 2."""
    run = tmp_path / "run"
    profile = tmp_path / "flops.txt"
    cfg = tiny_config(run, [str(story_corpus[0])], train={"max_steps": 3, "log_every": 1},
                      checkpoint={"every": 0}, logging={"tensorboard": False, "progress": "lines", "wandb": True},
                      distributed={"zero_stage": 2, "deepspeed": {
                          "flops_profiler": {"enabled": True, "profile_step": 2, "output_file": str(profile)}}})
    proc = run_ranks("launch", write_yaml(tmp_path / "run.yaml", cfg), env=wandb_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (only,) = offline_runs(run)
    assert_logged(run, only / f"run-{(run / 'wandb_id').read_text().strip()}.wandb", range(1, 4))
    assert "DeepSpeed Flops Profiler" in profile.read_text()
