"""The two calls the training loop makes for data: this rank's training stream and the validation windows.

Both formats (and, for streaming, in-process vs a DataLoader worker, mixed vs not) sit behind them, so the
loop never branches on the format.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator

import torch

from gpt2dist.config import DataConfig, RunConfig
from gpt2dist.data.contract import TrainStream, ValFactory
from gpt2dist.data.sources import DataFile
from gpt2dist.data.stream import TextStream

log = logging.getLogger(__name__)

Encode = Callable[[list[str]], list[list[int]]]


def build_train_stream(cfg: RunConfig, *, rank: int, world_size: int, micro: int, accum: int, encode: Encode,
                       train_files: list[DataFile], pin_memory: bool = False) -> TrainStream:
    """data.format=packed: `gpt2dist prepare`'s shards; stream: tokenized as read (with data.val_fraction,
    the held-out documents are skipped)."""
    if cfg.data.format == "packed":
        from gpt2dist.data.packed import open_train

        return open_train(cfg, rank, world_size, micro, accum)
    heldout = False if (cfg.data.val_fraction > 0 and not cfg.data.val) else None
    return make_train_stream(train_files, cfg.data, encode, heldout=heldout, rank=rank, world_size=world_size,
                             seed=cfg.seed, pin_memory=pin_memory)


def make_train_stream(files: list[DataFile], cfg: DataConfig, encode: Encode, *, heldout: bool | None = None,
                      rank: int = 0, world_size: int = 1, seed: int = 0, pin_memory: bool = False) -> TrainStream:
    """The streaming path: in a DataLoader worker (data.num_workers=1) or in-process (0); with data.weights, one
    source per data.train entry, mixed (`mixing.py`)."""
    if cfg.weights:
        from gpt2dist.data.mixing import MixedStream
        from gpt2dist.data.text import resolve_files

        sources = [resolve_files([entry], "data.train") for entry in cfg.train]
        make = functools.partial(MixedStream, sources, cfg.weights, cfg, encode, heldout=heldout, rank=rank,
                                 world_size=world_size, seed=seed)
    else:
        make = functools.partial(TextStream, files, cfg, encode, heldout=heldout, rank=rank,
                                 world_size=world_size, seed=seed)
    if cfg.num_workers == 0:
        return make()
    from gpt2dist.data.prefetch import PrefetchedStream

    return PrefetchedStream(make, prefetch_factor=cfg.prefetch_factor, pin_memory=pin_memory)


def build_val(cfg: RunConfig, *, encode: Encode, train_files: list[DataFile],
              val_files: list[DataFile] | None) -> ValFactory | None:
    """A callable giving a fresh, finite pass over the validation windows, or None when there is no val data."""
    if cfg.data.format == "packed":
        from gpt2dist.data.packed import val_factory

        return val_factory(cfg)
    if val_files is not None:
        return lambda: TextStream(val_files, cfg.data, encode, repeat=False)
    if cfg.data.val_fraction > 0:
        return lambda: TextStream(train_files, cfg.data, encode, heldout=True, repeat=False)
    log.warning("no validation data (data.val empty and data.val_fraction=0): evaluation is off")
    return None


def eval_batches(factory: ValFactory, batch_size: int, n_batches: int) -> Iterator[torch.Tensor]:
    """The first n_batches of a fresh validation pass: the same windows at every evaluation, on every rank."""
    stream = factory()
    for _ in range(n_batches):
        windows = []
        for window in stream:
            windows.append(window.tokens)
            if len(windows) == batch_size:
                break
        if not windows:
            return
        yield torch.tensor(windows, dtype=torch.long)
        if len(windows) < batch_size:
            return

