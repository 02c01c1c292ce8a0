"""Shared fixtures (a small generated corpus); helpers live in helpers.py. Nothing touches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_fork import WarmCli

from gpt2dist.demo_corpus import write_demo_corpus

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def story_corpus(tmp_path_factory) -> tuple[Path, Path]:
    """(train.txt, val.txt) of the bundled story generator: ~0.7 MB train, ~36 kB val."""
    return write_demo_corpus(tmp_path_factory.mktemp("corpus"), train_stories=2000, val_stories=100, seed=7)


@pytest.fixture(scope="session")
def warm_cli(tmp_path_factory):
    """Like helpers.run_cli (`python -m gpt2dist.cli ARGS`, each command its own process, its own cwd), but forked
    from one process of the session that imported the trainer, export, eval and generate once (tests/cli_fork.py;
    tests/test_cli_fork.py holds it to real `python -m` runs): ~5 s of imports less per command. The environment
    is the session's (restore_environ gives every test that one): a command that needs its own env keeps run_cli.
    DeepSpeed is imported too (~2 s of each single-rank DeepSpeed run): its import starts no thread."""
    warm = WarmCli(tmp_path_factory.mktemp("warm-cli"), ["gpt2dist.cli", "gpt2dist.train", "gpt2dist.run.export",
                                                         "gpt2dist.generate", "gpt2dist.evaluate",
                                                         "gpt2dist.planning.doctor", "deepspeed"])
    yield warm  # called as warm_cli(*args); warm_cli.start(*args) for a run the test signals
    warm.close()


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are collected everywhere and skipped where no CUDA device is visible (CI, laptops)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (bench/gpu/run.sh runs the GPU tests on one)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def restore_environ():
    """Each test starts from the session's environment: a test that sets up a process group in-process exports
    RANK/WORLD_SIZE/MASTER_PORT (dist.export_env), and a later CLI subprocess would inherit a 2-rank world."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
