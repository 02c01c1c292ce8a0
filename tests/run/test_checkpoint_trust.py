"""Hostile and foreign checkpoints (issue 12, items 1 and 11): a crafted pickle never runs -- not on the same
world size, not through the N->M universal conversion, not from a planted STEP/universal/ -- and a DeepSpeed
checkpoint resumed by the torch engine is refused in one line with nothing written.

Real 2-rank runs (torchrun, gloo) made once per module and copied per test; a payload that ran would create a
marker file."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import Payload, copy_run, tiny_config, write_yaml
from ranks import run_ranks

pytestmark = pytest.mark.slow

STEPS = 2



def trained_run(tmp: Path, corpus, stage: int) -> Path:
    """A tiny 2-rank DeepSpeed run at `stage`, checkpointed at step 2."""
    run_dir = tmp / "run"
    cfg = tiny_config(run_dir, [str(corpus[0])], train={"max_steps": STEPS, "global_batch_size": 8,
                                                        "micro_batch_size": 4, "warmup_steps": 1},
                      checkpoint={"every": STEPS, "keep_last": 2})
    cfg["distributed"] = {"backend": "deepspeed", "zero_stage": stage}
    run_ranks("torchrun", write_yaml(tmp / "run.yaml", cfg), [])
    return run_dir


@pytest.fixture(scope="module")
def zero1_run(tmp_path_factory, story_corpus) -> Path:
    return trained_run(tmp_path_factory.mktemp("zero1"), story_corpus, stage=1)


def step_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / f"step-{STEPS:08d}"


def plant(step: Path, target: Path, marker: Path) -> None:
    """Replace `target` with a crafted pickle and re-sign the manifest (a crafted checkpoint brings its own)."""
    torch.save({"optimizer_state_dict": Payload(marker)}, target)
    manifest = json.loads((step / "manifest.json").read_text())
    name = str(target.relative_to(step))
    if name in manifest["files"]:
        manifest["files"][name] = {"bytes": target.stat().st_size,
                                   "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
        (step / "manifest.json").write_text(json.dumps(manifest))


def assert_refused(out: subprocess.CompletedProcess, marker: Path, path: Path) -> None:
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert errors and all("refusing to load" in line and str(path) in line for line in errors), out.stderr[-3000:]
    assert not marker.exists(), "the crafted pickle ran"


def test_crafted_shard_never_runs_on_the_world_size_change(tmp_path, zero1_run, warm_cli):
    """2 ranks -> 1 rank: DeepSpeed's ds_to_universal converter would torch.load the shard with
    weights_only=False; the gate reads it first, on rank 0, before the conversion."""
    run_dir, config = copy_run(zero1_run, tmp_path)
    step, marker = step_dir(run_dir), tmp_path / "PWNED"
    shard = step / "deepspeed" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    plant(step, shard, marker)
    out = warm_cli("train", str(config), f"train.max_steps={STEPS + 2}", check=False)
    assert_refused(out, marker, shard)
    assert not (step / "universal").exists() and not (step / "universal.tmp").exists()


def test_crafted_shard_never_runs_on_the_same_world_size(tmp_path, zero1_run):
    run_dir, config = copy_run(zero1_run, tmp_path)
    step, marker = step_dir(run_dir), tmp_path / "PWNED"
    shard = step / "deepspeed" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    plant(step, shard, marker)
    out = run_ranks("torchrun", config, [f"train.max_steps={STEPS + 2}"], check=False)
    assert out.returncode != 0 and not marker.exists(), "the crafted pickle ran"
    assert f"refusing to load {shard}" in out.stderr, out.stderr[-3000:]
    assert not re.search(r'File ".*gpt2dist/', out.stderr), "a rank crashed instead of refusing"  # torchrun's own
    # report of the failed ranks is the only traceback


def test_crafted_file_planted_in_an_existing_universal_folder_never_runs(tmp_path, zero1_run, warm_cli):
    """A STEP/universal/ left by an earlier resume is reused, not re-converted: its files pass the gate too
    (they are not covered by the step's manifest)."""
    from gpt2dist.engines.resume import ensure_universal

    run_dir, config = copy_run(zero1_run, tmp_path)
    step, marker = step_dir(run_dir), tmp_path / "PWNED"
    universal = ensure_universal(step)  # what a 2 -> 1 resume leaves behind
    target = universal / "deepspeed" / "zero" / "transformer.wte.weight" / "exp_avg.pt"
    assert target.is_file()
    plant(step, target, marker)
    out = warm_cli("train", str(config), f"train.max_steps={STEPS + 2}", check=False)
    assert_refused(out, marker, target)


def test_allow_list_names_exact_classes_not_all_of_deepspeed(tmp_path):
    """A class under deepspeed.* that does something when built -- TorchBackend opens a process group, here
    with a file store -- is refused by name, before the safe unpickler would call it. (Its shm op is marked
    unbuildable first, as every gpt2dist rank does, so building one goes straight on.)"""
    marker = tmp_path / "PWNED"
    folder = tmp_path / "deepspeed"
    folder.mkdir()
    script = f"""
import torch
from deepspeed.comm.torch import TorchBackend
from gpt2dist.dist import skip_cpu_shm_comm_op
skip_cpu_shm_comm_op()

class Builds:
    def __reduce__(self):
        return (TorchBackend, ("gloo", None, "file://{marker}", 0, 1))

torch.save({{"optimizer_state_dict": Builds()}}, "{folder / 'mp_rank_00_model_states.pt'}")
from pathlib import Path
from gpt2dist.engines.pickle_gate import check_pickles
print(check_pickles(Path("{folder}")))
print("process group opened:", torch.distributed.is_initialized())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refusing to load" in out.stdout and "deepspeed.comm.torch.TorchBackend" in out.stdout, out.stdout
    assert "process group opened: False" in out.stdout and not marker.exists(), "the gate built a TorchBackend"


def test_legitimate_checkpoints_pass_the_gate(zero1_run, tmp_path):
    """The allow-list is exact, not too tight: a real ZeRO-1 checkpoint and its universal conversion pass."""
    from gpt2dist.engines.pickle_gate import check_pickles, pickled_files
    from gpt2dist.engines.resume import ensure_universal

    run_dir, _ = copy_run(zero1_run, tmp_path)
    step = step_dir(run_dir)
    assert check_pickles(step / "deepspeed") is None
    universal = ensure_universal(step)
    assert len(pickled_files(universal)) > 10 and check_pickles(universal) is None


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file's mtime and bytes but RUN_DIR/.lock's, which each run that takes the lock stamps with its pid."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_deepspeed_checkpoint_resumed_by_the_torch_engine_is_refused_before_anything_is_written(tmp_path,
                                                                                                  zero1_run, warm_cli):
    """2-rank ZeRO-1 run resumed on 1 rank with backend auto at ZeRO-0 (= the torch engine there): one line naming
    the fix, exit 2, the run dir untouched; with distributed.backend=deepspeed the run resumes (2 -> 1)."""
    run_dir, config = copy_run(zero1_run, tmp_path)
    before = snapshot(run_dir)
    out = warm_cli("train", str(config), "distributed.backend=auto", "distributed.zero_stage=0",
                   f"train.max_steps={STEPS + 2}", check=False)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1, out.stderr[-3000:]
    assert "written by the DeepSpeed engine" in errors[0] and "distributed.backend=deepspeed" in errors[0]
    assert "Traceback" not in out.stderr
    assert snapshot(run_dir) == before, "a refused resume wrote to the run dir"

    resumed = warm_cli("train", str(config), "distributed.backend=deepspeed", f"train.max_steps={STEPS + 2}")
    assert f"resuming from step-{STEPS:08d}" in resumed.stdout
    state = json.loads((run_dir / "checkpoints" / f"step-{STEPS + 2:08d}" / "train_state.json").read_text())
    assert state["step"] == STEPS + 2 and state["world_size"] == 1

