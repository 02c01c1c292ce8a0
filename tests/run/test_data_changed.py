"""Issue 23: a training file deleted or rewritten between a checkpoint and its resume is named in one line
(exit 2 through the CLI's UserError) instead of a silent resume into other data; a new mtime alone warns."""

from __future__ import annotations

import logging
import os

import pytest

from gpt2dist.data.stamps import check_unchanged, stamps
from gpt2dist.errors import UserError
from gpt2dist.run.state import TrainState


@pytest.fixture
def recorded(tmp_path):
    data = tmp_path / "train.txt"
    data.write_text("one document\n\nanother one\n")
    step = tmp_path / "step-00000004"
    return data, step, TrainState(4, 512, data_files=stamps([data, "https://example.org/remote.txt"])).data_files


def test_an_unchanged_file_resumes(recorded):
    data, step, state = recorded
    assert [entry[0] for entry in state] == [str(data.resolve())]  # URLs are not stamped
    check_unchanged(state, step)


def test_a_deleted_file_is_refused(recorded):
    data, step, state = recorded
    data.unlink()
    with pytest.raises(UserError, match=f"training file {data} was deleted or moved since checkpoint step-00000004"):
        check_unchanged(state, step)


def test_a_rewritten_file_is_refused(recorded):
    data, step, state = recorded
    before = data.stat().st_size
    data.write_text("entirely different and longer text\n")
    after = data.stat().st_size
    with pytest.raises(UserError, match=rf"changed since checkpoint step-00000004 \({before} -> {after} bytes\)"):
        check_unchanged(state, step)


def test_a_touched_file_warns_and_resumes(recorded, caplog):
    data, step, state = recorded
    os.utime(data, ns=(1, 1))
    with caplog.at_level(logging.WARNING):
        check_unchanged(state, step)
    assert "modified since checkpoint step-00000004 (same size)" in caplog.text


def test_an_old_checkpoint_without_the_record_is_not_checked(tmp_path):
    check_unchanged(TrainState.from_json({"step": 4, "tokens": 512}).data_files, tmp_path / "step-00000004")
