"""The run directory's life on rank 0: fresh vs resume, a run dir that holds something else, a config that
changed under a run, and the run's own tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cfg_with, tiny_config, write_yaml

from gpt2dist.config import save_config
from gpt2dist.errors import UserError
from gpt2dist.run.checkpoint import CheckpointManager
from gpt2dist.run.layout import TOKENIZER_DIR
from gpt2dist.run.rundir import build_run_tokenizer, prepare_run_dir, save_tokenizer, tokenizer_source


def manager(cfg) -> CheckpointManager:
    return CheckpointManager(cfg.run_dir, cfg.checkpoint.keep_last)


def test_a_new_or_empty_run_dir_starts_fresh(tmp_path):
    cfg = cfg_with(tmp_path)
    assert prepare_run_dir(cfg, manager(cfg)) is None
    (tmp_path / "run").mkdir()
    assert prepare_run_dir(cfg, manager(cfg)) is None


def test_a_run_dir_of_something_else_is_refused(tmp_path):
    cfg = cfg_with(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no gpt2dist run"):
        prepare_run_dir(cfg, manager(cfg))


def test_a_started_run_without_checkpoint_restarts_but_keys_must_match(tmp_path, caplog):
    cfg = cfg_with(tmp_path)
    (tmp_path / "run").mkdir()
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert prepare_run_dir(cfg, manager(cfg)) is None
    assert "no complete checkpoint yet" in caplog.text
    changed = cfg_with(tmp_path, "data.block_size=64")
    with pytest.raises(UserError, match=r"config key data.block_size changed since this run started \(128 -> 64\)"):
        prepare_run_dir(changed, manager(changed))


def test_the_runs_tokenizer_is_saved_once_and_reused(tmp_path):
    cfg = cfg_with(tmp_path)
    tokenizer = build_run_tokenizer(cfg, [tmp_path / "train.txt"])
    folder = tmp_path / "run" / TOKENIZER_DIR
    folder.parent.mkdir()
    save_tokenizer(tokenizer, folder)
    assert (folder / "tokenizer_config.json").is_file()
    again = build_run_tokenizer(cfg, [tmp_path / "train.txt"])
    assert again.get_vocab() == tokenizer.get_vocab()


def test_no_resume_on_a_started_run_without_checkpoint_starts_fresh(tmp_path, caplog):
    """A gpt2dist run dir (config.yaml, tokenizer) whose first attempt failed before any checkpoint: --no-resume
    starts it afresh -- also with changed keys, since nothing depends on the old ones."""
    cfg = cfg_with(tmp_path)
    (tmp_path / "run").mkdir()
    save_config(cfg, tmp_path / "run" / "config.yaml")
    fresh = cfg_with(tmp_path, "train.resume=false", "data.block_size=64")
    assert prepare_run_dir(fresh, manager(fresh)) is None
    assert "without a complete checkpoint: --no-resume starts it afresh" in caplog.text


def test_launcher_files_do_not_make_a_run_dir_foreign(tmp_path):
    """The Slurm script creates RUN_DIR with .lock and status.json before the trainer decides: still a fresh run."""
    cfg = cfg_with(tmp_path)
    (tmp_path / "run").mkdir()
    for name in (".lock", "status.json", "STOP"):
        (tmp_path / "run" / name).write_text("{}")
    assert prepare_run_dir(cfg, manager(cfg)) is None


# ---- the saved tokenizer is reused only for the data that built it (issue 12, item 8) ----

def save_built(cfg, files):
    tokenizer = build_run_tokenizer(cfg, files)
    folder = Path(cfg.run_dir) / TOKENIZER_DIR
    folder.parent.mkdir(exist_ok=True)
    save_tokenizer(tokenizer, folder, tokenizer_source(cfg, files))
    return tokenizer


def test_a_stale_tokenizer_is_rebuilt_before_the_first_checkpoint(tmp_path, caplog):
    cfg = cfg_with(tmp_path, data="abc abc\n\nabc\n")
    files = [tmp_path / "train.txt"]
    first = save_built(cfg, files)
    assert "z" not in first.get_vocab()
    (tmp_path / "train.txt").write_text("abc xyz\n\nzzz\n")  # the corrected data, at the same path
    second = save_built(cfg, files)
    assert {"x", "y", "z"} <= set(second.get_vocab())
    assert "rebuilding tokenizer/" in caplog.text and "train.txt changed" in caplog.text
    reloaded = build_run_tokenizer(cfg, files)  # now saved with its new source: reused as it is
    assert reloaded.get_vocab() == second.get_vocab()
    assert caplog.text.count("rebuilding tokenizer/") == 1


@pytest.mark.parametrize("change", ["data.min_line_chars=3", "data.ascii_only=true", "tokenizer.kind=bpe"])
def test_changed_text_or_tokenizer_settings_rebuild_it(tmp_path, caplog, change):
    cfg = cfg_with(tmp_path)
    save_built(cfg, [tmp_path / "train.txt"])
    build_run_tokenizer(cfg_with(tmp_path, change), [tmp_path / "train.txt"])
    assert "rebuilding tokenizer/" in caplog.text and "settings changed" in caplog.text


def test_a_tokenizer_without_its_source_record_is_rebuilt(tmp_path, caplog):
    """Run dirs written before the record existed: rebuilt when nothing depends on them yet."""
    cfg = cfg_with(tmp_path)
    folder = tmp_path / "run" / TOKENIZER_DIR
    folder.parent.mkdir()
    save_tokenizer(build_run_tokenizer(cfg, [tmp_path / "train.txt"]), folder)
    build_run_tokenizer(cfg, [tmp_path / "train.txt"])
    assert "gpt2dist-source.json is missing" in caplog.text


def test_with_a_checkpoint_the_runs_tokenizer_is_always_kept(tmp_path, caplog):
    cfg = cfg_with(tmp_path, data="abc abc\n\nabc\n")
    files = [tmp_path / "train.txt"]
    first = save_built(cfg, files)
    (tmp_path / "train.txt").write_text("abc xyz\n\nzzz\n")
    step_dir = tmp_path / "run" / "checkpoints" / "step-00000005"  # resume_from names the step dir resumed
    kept = build_run_tokenizer(cfg, files, resume_from=step_dir)
    assert kept.get_vocab() == first.get_vocab()  # the checkpoint's embeddings are indexed by these ids
    save_tokenizer(kept, tmp_path / "run" / TOKENIZER_DIR, None)  # a resume saves no new source: folder untouched
    assert build_run_tokenizer(cfg, files, resume_from=step_dir).get_vocab() == first.get_vocab()
    assert "rebuilding" not in caplog.text


@pytest.mark.slow
def test_rerun_on_corrected_data_rebuilds_the_tokenizer(tmp_path, warm_cli):
    """The user story: a first attempt fails after writing tokenizer/ (here: validation text too short for one
    window) and before any checkpoint; the rerun on corrected data at the same paths must know the new characters."""
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    train.write_text("\n\n".join(["abc cab bca"] * 200))
    val.write_text("ab")
    cfg = tiny_config(tmp_path / "run", [str(train)], [str(val)],
                      train={"max_steps": 2, "eval_every": 1, "micro_batch_size": 2})
    config = write_yaml(tmp_path / "run.yaml", cfg)
    failed = warm_cli("train", str(config), cwd=tmp_path, check=False)
    assert failed.returncode == 2 and "validation data" in failed.stderr, failed.stderr
    assert (tmp_path / "run" / TOKENIZER_DIR).is_dir() and not (tmp_path / "run" / "checkpoints" / "latest").exists()

    train.write_text("\n\n".join(["abc xyz zyx"] * 200))  # corrected data, same paths
    val.write_text("\n\n".join(["xyz abc"] * 50))
    done = warm_cli("train", str(config), cwd=tmp_path)
    assert "rebuilding tokenizer/" in done.stderr and "train.txt changed" in done.stderr
    vocab = json.loads((tmp_path / "run" / TOKENIZER_DIR / "tokenizer.json").read_text())["model"]["vocab"]
    assert {"x", "y", "z"} <= set(vocab), sorted(vocab)
