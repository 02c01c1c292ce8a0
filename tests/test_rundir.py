"""The run directory's life on rank 0: fresh vs resume, a run dir that holds something else, a config that
changed under a run, and the run's own tokenizer."""

from __future__ import annotations

import pytest
from helpers import cfg_with

from gpt2dist.checkpoint import CheckpointManager
from gpt2dist.config import save_config
from gpt2dist.errors import UserError
from gpt2dist.rundir import TOKENIZER_DIR, build_run_tokenizer, prepare_run_dir, save_tokenizer


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
