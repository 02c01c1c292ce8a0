"""Source mixing on the streaming path: with `data.weights`, each window comes from one `data.train` entry.

Every entry (a file, a glob or a URL glob) is one source with its own TextStream, sharded, cursored and
resumed exactly like an unmixed stream. This rank's n-th window comes from source `pattern[n % period]`, the
smooth round robin the packed path uses (`schedule.mixing_pattern`): weights 70/30 give 7 of every 10 windows
from the first source, interleaved, in an order fixed by the weights alone. A source that runs out starts its
next epoch by itself, so a small source repeats while a large one is still in its first pass: the weights
are shares of the windows trained on, not of passes over the data.
"""

from __future__ import annotations

from typing import Any

import torch

from gpt2dist.config import DataConfig
from gpt2dist.data.contract import PulledLog, Window
from gpt2dist.data.schedule import mixing_pattern
from gpt2dist.data.sharding import CURSOR_VERSION
from gpt2dist.data.sources import DataFile
from gpt2dist.data.stream import TextStream
from gpt2dist.errors import UserError


class MixedStream(PulledLog):
    """TextStream's interface (next, next_batch, state_dict, load_cursors, epoch, drain_pulled), weighted sources."""

    def __init__(self, sources: list[list[DataFile]], weights: list[float], cfg: DataConfig, encode, *,
                 heldout: bool | None = None, rank: int = 0, world_size: int = 1, seed: int = 0):
        # config.check_weights gave one weight per source; seed + i: each source its own file order per epoch
        self.streams = [TextStream(files, cfg, encode, heldout=heldout, rank=rank, world_size=world_size,
                                     seed=seed + i) for i, files in enumerate(sources)]
        self.weights, self.rank, self.world_size = list(weights), rank, world_size
        self.pattern = mixing_pattern(weights).tolist()
        self.drawn = 0  # windows this rank has taken, all sources together
        self._pulled: list[tuple[int, str]] = []  # (epoch, "source/file:row"); see drain_pulled

    @property
    def epoch(self) -> int:
        """Complete passes over every weighted source: the epoch of the least-repeated one."""
        return min(s.epoch for s, w in zip(self.streams, self.weights, strict=True) if w > 0)

    def __iter__(self) -> MixedStream:
        return self

    def __next__(self) -> Window:
        source = self.pattern[self.drawn % len(self.pattern)]
        stream = self.streams[source]
        window = next(stream)
        self.drawn += 1
        self._pulled.extend((epoch, f"{source}/{row}") for epoch, row in stream.drain_pulled())
        return window

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, list[Window]]:
        windows = [next(self) for _ in range(batch_size)]
        return torch.tensor([w.tokens for w in windows], dtype=torch.long), windows

    def state_dict(self) -> dict[str, Any]:
        return {"version": CURSOR_VERSION, "format": "mixed", "weights": self.weights, "rank": self.rank,
                "world_size": self.world_size, "epoch": self.epoch, "drawn": self.drawn,
                "sources": [s.state_dict() for s in self.streams]}

    def _check(self, state: dict[str, Any]) -> None:
        if state.get("format") != "mixed" or len(state["sources"]) != len(self.streams):
            raise UserError("the checkpoint's data cursor is not one of these mixed sources (data.train or "
                            "data.weights changed): resume with the same data settings or start a new run_dir")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's own cursor (same world size); each source checks its files, rank and version."""
        self._check(state)
        for stream, source_state in zip(self.streams, state["sources"], strict=True):
            stream.load_state_dict(source_state)
        self.drawn = state["drawn"]

    def load_cursors(self, cursors: list[dict[str, Any]]) -> None:
        """Our own cursor, or after a world-size change each source's cursors re-split as an unmixed stream's."""
        for state in cursors:
            self._check(state)
        if len(cursors) == self.world_size and all(c["world_size"] == self.world_size for c in cursors):
            self.load_state_dict(next(c for c in cursors if c["rank"] == self.rank))
            return
        for i, stream in enumerate(self.streams):
            stream.load_cursors([c["sources"][i] for c in cursors])
        self.drawn = sum(c["drawn"] for c in cursors) // self.world_size  # any phase keeps the shares
