"""Checkpoint metadata durability and export checks (issue 12, items 4 and 12): every file of a step dir is
fsynced before the rename; a manifest that is empty, truncated, not an object or names a missing file makes
resume and export fall back to the previous verified checkpoint with the bad-checksum warning; export refuses
a file as target and weights that do not cover the model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from helpers import STORY, copy_run, run_cli, tiny_config, write_yaml

from gpt2dist.config import load_config
from gpt2dist.errors import UserError
from gpt2dist.run.checkpoint import CheckpointManager
from gpt2dist.run.export import export
from gpt2dist.run.layout import EXPORT_PROVENANCE as PROVENANCE
from gpt2dist.run.layout import MANIFEST
from gpt2dist.run.rundir import prepare_run_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny torch run with checkpoints at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("trained")
    (tmp / "train.txt").write_text(STORY, encoding="utf-8")
    cfg = tiny_config(tmp / "run", [str(tmp / "train.txt")], train={"max_steps": 4},
                      checkpoint={"every": 2, "keep_last": 3})
    run_cli("train", str(write_yaml(tmp / "run.yaml", cfg)))
    return tmp / "run"


def damage_manifest(step: Path, kind: str) -> None:
    manifest = step / MANIFEST
    text = manifest.read_text()
    if kind == "empty":
        manifest.write_text("")
    elif kind == "truncated":
        manifest.write_text(text[: len(text) // 2])
    elif kind == "not-an-object":
        manifest.write_text(json.dumps([json.loads(text)]))
    elif kind == "missing-file":
        data = json.loads(text)
        data["files"]["engine-extra.pt"] = {"bytes": 10, "sha256": "0" * 64}
        manifest.write_text(json.dumps(data))
    elif kind == "lists-nothing":
        manifest.write_text(json.dumps({"step": 4, "files": {}}))
    else:
        raise ValueError(kind)


DAMAGE = ["empty", "truncated", "not-an-object", "missing-file", "lists-nothing"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_bad_manifest_falls_back_to_the_previous_checkpoint_for_resume_and_export(tmp_path, trained, caplog,
                                                                                       kind):
    run_dir, config = copy_run(trained, tmp_path)
    damage_manifest(run_dir / "checkpoints" / "step-00000004", kind)
    with caplog.at_level(logging.WARNING):
        resume_from = prepare_run_dir(load_config(config), CheckpointManager(run_dir, keep_last=3))
    assert resume_from.name == "step-00000002"
    assert "skipping checkpoint" in caplog.text and "step-00000004" in caplog.text and "corrupt" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        out = export(run_dir, tmp_path / "export")
    assert json.loads((out / PROVENANCE).read_text())["step"] == 2
    assert "skipping checkpoint" in caplog.text and "step-00000004" in caplog.text
    with pytest.raises(UserError, match="step-00000004 is corrupt"):  # named directly: refused in one line
        export(run_dir / "checkpoints" / "step-00000004", tmp_path / "export2")


@pytest.mark.slow
def test_train_and_export_commands_fall_back_past_an_empty_manifest(tmp_path, trained):
    run_dir, config = copy_run(trained, tmp_path)
    damage_manifest(run_dir / "checkpoints" / "step-00000004", "empty")
    out = run_cli("export", str(run_dir), str(tmp_path / "export"))
    assert "skipping checkpoint" in out.stderr and "Traceback" not in out.stderr
    resumed = run_cli("train", str(config), "train.max_steps=5")
    assert "resuming from step-00000002" in resumed.stdout and "skipping checkpoint" in resumed.stderr


def tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under `root` with its mode, and each file's size and mtime. Left out: the lock file (rank 0's
    flock, taken before the config is compared) and directories' mtimes (the preflight's writability probe
    creates and deletes a file in checkpoints/ before the comparison)."""
    return {str(p.relative_to(root)): (p.lstat().st_mode, *((p.lstat().st_size, p.lstat().st_mtime_ns)
                                                              if p.is_file() else (0, 0)))
            for p in root.rglob("*") if p.name != ".lock"}


def test_resume_with_a_changed_key_is_refused_and_writes_nothing(tmp_path, trained):
    """On a run WITH checkpoints (the case that matters: the refusal protects their weights and data cursor);
    test_rundir checks the comparison itself on a run without one."""
    run_dir, config = copy_run(trained, tmp_path)
    before = tree_state(run_dir)
    key = "data.block_size"
    out = run_cli("train", str(config), f"{key}=16", check=False)
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert f"config key {key} changed since this run started" in lines[0]
    assert tree_state(run_dir) == before, "a refused resume wrote into the run dir"


def test_every_file_of_a_step_dir_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    """fsync is observed (and still done) for real: each file is flushed under its temporary name, then the
    folder is renamed and its parent fsynced."""
    from test_checkpoint import save, tiny_engine

    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    manager = CheckpointManager(tmp_path, keep_last=2)
    final = save(manager, tiny_engine(), 3)
    tmp = final.with_name(f".tmp-{final.name}")
    files = [p.relative_to(final) for p in final.rglob("*") if p.is_file()]
    assert {"model.safetensors", "engine.pt", MANIFEST, "train_state.json", "config.json"} <= {str(f) for f in files}
    for rel in files:
        assert str(tmp / rel) in synced, f"{rel} was not fsynced before the rename"
    assert str(tmp) in synced  # the folder's entries
    assert synced.index(str(final.parent)) > max(synced.index(str(tmp / rel)) for rel in files)  # the rename


def resign(step: Path, name: str) -> None:
    manifest = json.loads((step / MANIFEST).read_text())
    data = (step / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("change", ["drop a tensor", "wrong shape"])
def test_export_refuses_weights_that_do_not_cover_the_model(tmp_path, trained, change):
    from safetensors.torch import load_file, save_file

    run_dir, _ = copy_run(trained, tmp_path)
    step = run_dir / "checkpoints" / "step-00000004"
    weights = load_file(step / "model.safetensors")
    if change == "drop a tensor":
        del weights["transformer.h.0.mlp.c_fc.weight"]
    else:
        weights["transformer.ln_f.weight"] = weights["transformer.ln_f.weight"][:-1].clone()
    save_file(weights, step / "model.safetensors")
    resign(step, "model.safetensors")  # verified, yet not the whole model
    with pytest.raises(UserError, match="model.safetensors does not (cover|fit)") as info:
        export(run_dir, tmp_path / "export")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "export").exists()


def test_export_refuses_an_existing_file_as_target(tmp_path, trained):
    target = tmp_path / "model.bin"
    target.write_bytes(b"not a folder")
    out = run_cli("export", str(trained), str(target), check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.count("error:") == 1 and f"export target {target} is a file" in out.stderr
    assert target.read_bytes() == b"not a folder"


def test_export_refuses_nan_weights_and_eval_refuses_a_folder_missing_weights(tmp_path, trained):
    """Siblings: a NaN checkpoint written before divergence was caught is not exported; an HF folder whose
    weights do not cover the model is not evaluated with random tensors in their place."""
    from safetensors.torch import load_file, save_file

    from gpt2dist.evaluate import load_hf_model

    run_dir, _ = copy_run(trained, tmp_path)
    exported = export(run_dir, tmp_path / "export")
    weights = load_file(exported / "model.safetensors")
    del weights["transformer.h.0.mlp.c_fc.weight"]
    save_file(weights, exported / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match="weights do not cover the model"):
        load_hf_model(exported, "cpu")

    step = run_dir / "checkpoints" / "step-00000004"
    weights = load_file(step / "model.safetensors")
    weights["transformer.ln_f.bias"][0] = float("nan")
    save_file(weights, step / "model.safetensors")
    resign(step, "model.safetensors")
    with pytest.raises(UserError, match="holds NaN/inf weights"):
        export(step, tmp_path / "export2")


def test_a_changed_lr_holds_after_a_resume_not_only_for_the_first_step(tmp_path):
    """reapply_schedule set the next step's LR from the new config, but LambdaLR's saved base LR brought the
    old one back from the second resumed step on."""
    from test_checkpoint import save, tiny_engine, train_steps
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2dist.config import RunConfig, TrainConfig
    from gpt2dist.engines.lr_schedule import lr_at
    from gpt2dist.engines.torch_engine import TorchEngine

    engine = tiny_engine()
    train_steps(engine, 0, 3)
    manager = CheckpointManager(tmp_path, keep_last=1)
    step_dir = save(manager, engine, 3)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    resumed = TorchEngine(model, RunConfig(train=TrainConfig(max_steps=10, warmup_steps=2, lr=5e-2, min_lr=5e-3)))
    manager.load(step_dir, resumed)  # saved with train.lr=1e-2
    lrs = []
    for step in range(3, 6):
        lrs.append(resumed.optimizer.param_groups[0]["lr"])
        train_steps(resumed, step, step + 1)
    assert lrs == pytest.approx([lr_at(s, resumed.cfg) for s in range(3, 6)])
