"""Real 2-rank DeepSpeed runs on CPU/gloo: every ZeRO stage, CPU offload and activation checkpointing, kill and
resume at ZeRO 1-3, world-size changes, every launcher, ZeRO-3 export. No mocks: each test starts the launchers a
user would. The uninterrupted runs (one per stage and precision) and the runs killed after checkpoint 4 are made
once and shared: each is the reference or the starting point of several tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from helpers import copy_run, read_metrics, run_cli, tiny_config, write_yaml
from ranks import kill_after_checkpoint, read_trace_docs, run_ranks

pytestmark = pytest.mark.slow

SHM = Path("/dev/shm")


def ds_config(tmp_path: Path, corpus, name: str, **train) -> tuple[Path, Path]:
    """A tiny run with a fixed global batch (16 sequences), so any world size trains the same batch size; dropout
    on, so that every resume must restore each rank's RNG to match."""
    run_dir = tmp_path / name
    cfg = tiny_config(run_dir, [str(corpus[0])], [str(corpus[1])], data={"block_size": 32},
                      model={"preset": "tiny", "dropout": 0.1},
                      train={"max_steps": 8, "global_batch_size": 16, "micro_batch_size": 4, "eval_every": 0,
                             "warmup_steps": 2, **train},
                      checkpoint={"every": 4, "keep_last": 3},
                      logging={"tensorboard": False, "progress": "lines", "trace_windows": True})
    return write_yaml(tmp_path / f"{name}.yaml", cfg), run_dir


def stage_args(stage: int, precision: str = "fp32") -> list[str]:
    return ["distributed.backend=deepspeed", f"distributed.zero_stage={stage}", f"train.precision={precision}"]


def losses(run_dir: Path, steps) -> list[float]:
    metrics = read_metrics(run_dir)
    return [metrics[s]["loss"] for s in steps]


def new_records(run_dir: Path, run: Callable[[], object]) -> list[dict]:
    """The metrics records a run appends (metrics.jsonl is appended across resumes): what it trained itself."""
    path = run_dir / "metrics.jsonl"
    offset = path.stat().st_size if path.is_file() else 0
    run()
    return [json.loads(line) for line in path.read_bytes()[offset:].decode().splitlines() if line.strip()]


# The fp32 reference of each stage starts through its own launcher: every launcher a user has runs a full 2-rank
# run (and exits cleanly) as part of the suite's reference runs, not in runs of its own.
LAUNCHER = {0: "launch", 1: "deepspeed", 2: "mpirun", 3: "torchrun"}


@dataclass
class Run:
    stdout: str
    stderr: str
    dir: Path
    launcher: str
    new_shm_buffers: set[Path]  # /dev/shm files DeepSpeed's shm comm op would have left behind


@pytest.fixture(scope="module")
def runs(tmp_path_factory, story_corpus) -> Callable[..., Run]:
    """An uninterrupted 8-step 2-rank run at (stage, precision, *more overrides), made on first use and shared: the
    reference every stage, resume and world-size change is held to. Each starts with a stale lock in its torch
    extensions folder, as a killed JIT build of DeepSpeed's CPU shm op leaves it."""
    made: dict[tuple, Run] = {}

    def get(stage: int, precision: str = "fp32", *more: str) -> Run:
        key = (stage, precision, more)
        if key not in made:
            tmp = tmp_path_factory.mktemp(f"zero{stage}-{precision}")
            config, run_dir = ds_config(tmp, story_corpus, "run")
            launcher = LAUNCHER[stage] if (precision, more) == ("fp32", ()) else "torchrun"
            extensions = tmp / "torch_extensions"
            (extensions / "deepspeed_shm_comm").mkdir(parents=True)
            (extensions / "deepspeed_shm_comm" / "lock").touch()
            before = set(SHM.glob("deepspeed_allreduce_buffer_*"))
            out = run_ranks(launcher, config, [*stage_args(stage, precision), *more], timeout=180,
                            env={"TORCH_EXTENSIONS_DIR": str(extensions)})
            made[key] = Run(out.stdout, out.stderr, run_dir, launcher,
                            set(SHM.glob("deepspeed_allreduce_buffer_*")) - before)
        return made[key]

    return get


@pytest.fixture(scope="module")
def killed(tmp_path_factory, story_corpus) -> Callable[[int], Path]:
    """The run dir of the same 2-rank fp32 run at `stage`, SIGKILLed (all ranks) once checkpoint 4 is complete;
    tests resume private copies of it (helpers.copy_run), on 2 ranks or on 1."""
    made: dict[int, Path] = {}

    def get(stage: int) -> Path:
        if stage not in made:
            tmp = tmp_path_factory.mktemp(f"killed-zero{stage}")
            config, run_dir = ds_config(tmp, story_corpus, "run")
            kill_after_checkpoint("launch", config, run_dir, step=4, overrides=stage_args(stage))
            # the precondition of every resume below: the kill landed before checkpoint 8 was published
            assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-00000004", "killed too late"
            made[stage] = run_dir
        return made[stage]

    return get


def check_two_rank_run(run: Run, stage: int) -> list[float]:
    """The run trained on 2 ranks at `stage`, its loss went down, and its checkpoint holds both ranks' cursors."""
    assert f"deepspeed ZeRO-{stage}" in run.stdout and "data-parallel 2 =" in run.stdout
    run_dir = run.dir
    curve = losses(run_dir, range(1, 9))
    assert curve[-1] < curve[0] - 0.1, f"loss did not go down: {curve}"
    assert sorted(p.name for p in (run_dir / "checkpoints" / "step-00000008").glob("cursor-rank*.json")) == [
        "cursor-rank00000.json", "cursor-rank00001.json"]
    return curve


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_zero0_trains_on_two_ranks(runs, precision):
    check_two_rank_run(runs(0, precision), stage=0)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_every_zero_stage_trains_and_matches_zero0(runs, stage, precision):
    curve = check_two_rank_run(runs(stage, precision), stage=stage)
    tolerance = 1e-4 if precision == "fp32" else 3e-2
    reference = losses(runs(0, precision).dir, range(1, 9))
    assert curve == pytest.approx(reference, rel=tolerance), f"ZeRO-{stage} diverges from ZeRO-0"


def test_cpu_offload_and_activation_checkpointing_train_like_zero0(runs):
    """One run proves both: ZeRO-2 with the optimizer state and step on the host (DeepSpeed's offload path, torch
    AdamW) and activations recomputed in the backward give ZeRO-0's losses (no offload, no recompute)."""
    run = runs(2, "fp32", "distributed.offload_optimizer=cpu", "model.activation_checkpointing=true")
    run_dir = run.dir
    # the DeepSpeed config the engine ran with, as DeepSpeed itself saved it beside the weights
    states = next((run_dir / "checkpoints" / "step-00000008" / "deepspeed").rglob("*model_states.pt"))
    ds = torch.load(states, map_location="cpu", weights_only=True)["ds_config"]
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["activation_checkpointing"] is True
    curve = check_two_rank_run(run, stage=2)
    assert curve == pytest.approx(losses(runs(0, "fp32").dir, range(1, 9)), rel=1e-4)


def test_fp16_on_cpu_is_a_clear_error(tmp_path, story_corpus, warm_cli):
    config, run_dir = ds_config(tmp_path, story_corpus, "run")
    out = warm_cli("train", str(config), "distributed.zero_stage=2", "train.precision=fp16", check=False)
    assert out.returncode == 2
    assert "train.precision=fp16 needs a CUDA device" in out.stderr and "Traceback" not in out.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_kill_two_rank_run_and_resume_gives_identical_losses(tmp_path, runs, killed, stage):
    run_dir, config = copy_run(killed(stage), tmp_path)
    records = new_records(run_dir, lambda: run_ranks("launch", config, stage_args(stage)))
    steps = [r["step"] for r in records if "loss" in r]
    # expected from the kill (checkpoint 4 published, 8 not), not from the code under test: a restart from
    # step 0 fails `steps[0] == 5`, a lost optimizer state, RNG or data cursor the loss comparison
    assert steps == [5, 6, 7, 8], steps
    assert losses(run_dir, range(5, 9)) == losses(runs(stage).dir, range(5, 9))


# 2->1 at every stage (each from the run killed at that stage); 1->2 at ZeRO-2 and ZeRO-3, the two flat-buffer
# layouts DeepSpeed's universal conversion handles (ZeRO-1's is ZeRO-2's)
@pytest.mark.parametrize(("stage", "before", "after"), [(1, 2, 1), (2, 2, 1), (3, 2, 1), (2, 1, 2), (3, 1, 2)])
def test_world_size_change_continues_training(tmp_path, story_corpus, runs, killed, warm_cli, stage, before, after):
    def on(ranks: int, steps: int):
        """One rank: `gpt2dist train` itself, as a single-GPU user starts it (forked warm), but for one case that
        keeps `torchrun --nproc_per_node 1`; more ranks: torchrun."""
        overrides = [*stage_args(stage), f"train.max_steps={steps}"]
        if ranks == 1 and (stage, before, after) != (3, 2, 1):
            return warm_cli("train", str(config), *overrides)
        return run_ranks("torchrun", config, overrides, nproc=ranks)

    if before == 2:
        run_dir, config = copy_run(killed(stage), tmp_path)
    else:
        config, run_dir = ds_config(tmp_path, story_corpus, "run")
        on(before, 4)
    resumed = on(after, 8)
    assert "via a universal checkpoint" in resumed.stderr + resumed.stdout
    assert "resuming from step-00000004" in resumed.stdout

    ref, got = read_metrics(runs(stage).dir), read_metrics(run_dir)
    # Continues from the saved model, not from scratch: the first resumed loss is near the uninterrupted 2-rank
    # run's (the windows differ after a re-split, so not bit-equal), far below the step-1 loss.
    assert got[5]["loss"] == pytest.approx(ref[5]["loss"], rel=0.05)
    assert got[5]["loss"] < got[1]["loss"] - 0.1
    assert got[5]["lr"] == pytest.approx(ref[5]["lr"], rel=1e-9), "the LR schedule (optimizer step) must continue"
    assert got[8]["tokens"] == ref[8]["tokens"]
    state = json.loads((run_dir / "checkpoints" / "step-00000008" / "train_state.json").read_text())
    assert state == {**state, "step": 8, "world_size": after}

    docs = read_trace_docs(run_dir, world_size=after)
    assert len(docs) == len(set(docs)), "a document was consumed twice across the world-size change"
    cursors = [json.loads(p.read_text()) for p in (run_dir / "checkpoints" / "step-00000008").glob("cursor-*.json")]
    # One file, still in epoch 0: a rank has taken every row below max(its row, the row of the slowest rank
    # before the change, from the cursor's `history` of old positions [epoch, index, row, piece]) -- a resumed
    # rank living on inherited leftover tokens has not read yet.
    assert all((c["epoch"], c["index"]) == (0, 0) for c in cursors)
    assert all(p[:2] == [0, 0] for c in cursors for _, positions in c["history"] for p in positions)
    slowest = min(max([c["row"]] + [min(p[2] for p in positions) for _, positions in c["history"]])
                  for c in cursors)
    assert slowest > 0
    missing = {(0, f"0:{r}") for r in range(slowest)} - set(docs)
    assert not missing, f"documents skipped across the change: {sorted(missing)[:10]}"


@pytest.mark.parametrize("stage", [3])
def test_cpu_run_builds_no_shm_op_so_a_stale_build_lock_cannot_hang_it(runs, stage):
    """A killed JIT build of DeepSpeed's CPU shm op leaves `lock` behind and every later run waited on it forever
    (a whole CI run timed out so); the op also left a 66 MB /dev/shm buffer per rank. Training never needs it: the
    reference runs start with such a lock (the `runs` fixture) and must neither wait on it nor leave a buffer."""
    run = runs(stage)
    assert "data-parallel 2 =" in run.stdout and "deepspeed_shm_comm" not in run.stdout + run.stderr
    assert not run.new_shm_buffers


@pytest.mark.parametrize(("launcher", "stage"), [(name, stage) for stage, name in LAUNCHER.items()])
def test_every_launcher_runs_two_ranks_and_exits_cleanly(runs, launcher, stage):
    """Each launcher starts one fp32 reference run (it was one run each of their own, and three before that:
    DeepSpeed's gloo shutdown crash was intermittent, ~20% of runs before the fix; the suite's ~25 other 2-rank
    runs must each exit 0 too, so a regression still shows within one CI run)."""
    run = runs(stage)
    assert run.launcher == launcher
    assert "data-parallel 2 =" in run.stdout, run.stdout
    assert "terminate called" not in run.stderr
    assert (run.dir / "checkpoints" / "step-00000004" / "cursor-rank00001.json").is_file()


def test_zero3_export_equals_deepspeeds_own_consolidation(tmp_path, runs):
    run_dir = runs(3).dir
    run_cli("export", str(run_dir), str(tmp_path / "export"))

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoTokenizer, GPT2LMHeadModel

    step_dir = run_dir / "checkpoints" / "step-00000008"
    exported = GPT2LMHeadModel.from_pretrained(str(tmp_path / "export")).eval()
    reference = GPT2LMHeadModel.from_pretrained(str(tmp_path / "export")).eval()
    state = get_fp32_state_dict_from_zero_checkpoint(str(step_dir), tag="deepspeed")
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("lm_head.weight") for k in missing)
    ids = torch.tensor([AutoTokenizer.from_pretrained(str(tmp_path / "export"))("Once upon a time")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, reference(ids).logits, rtol=0, atol=0)


def test_saving_a_checkpoint_does_not_change_the_run(tmp_path, story_corpus, runs):
    """A run stopped at step 3 and resumed equals one that never saved at step 3 (the shared ZeRO-0 run: dropout
    on, checkpoints at 4 and 8): DeepSpeed's save used to consume torch RNG, so resumes from an extra checkpoint
    drifted."""
    config, run_dir = ds_config(tmp_path, story_corpus, "b")
    run_ranks("torchrun", config, [*stage_args(0), "checkpoint.every=8", "train.max_steps=3"])
    run_ranks("torchrun", config, [*stage_args(0), "checkpoint.every=8"])
    assert losses(run_dir, range(1, 9)) == losses(runs(0).dir, range(1, 9))
