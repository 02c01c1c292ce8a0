"""Shared fixtures (a small generated corpus); helpers live in helpers.py. Nothing touches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpt2dist.demo_corpus import write_demo_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def story_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(train.txt, val.txt) of the bundled story generator: ~0.7 MB train, ~36 kB val."""
    return write_demo_corpus(tmp_path_factory.mktemp("corpus"), train_stories=2000, val_stories=100, seed=7)
