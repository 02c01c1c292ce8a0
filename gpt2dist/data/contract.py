"""The one interface the training loop reads data through, whatever the format or the process it runs in.

Four classes implement it: `stream.TextStream` (tokenize while training), `prefetch.PrefetchedStream` (the
same, in a DataLoader worker), `mixing.MixedStream` (weighted sources) and `packed.PackedBatches` (`gpt2dist
prepare`'s shards). The checkpoint manager stores what `state_dict()` returns, one JSON cursor per rank, and
hands every rank all saved cursors back through `load_cursors`: the stream itself decides whether that is its
own cursor (same world size) or a re-split one (another world size). Tokens trained are the loop's own count
(steps x tokens per step, the same on every rank), not the stream's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass
class Window:
    """One training sequence of block_size + 1 tokens and where it came from (for traces and no-repeat checks)."""

    tokens: list[int]
    epoch: int
    index: int  # position of this window in this rank's stream for this epoch (packed: its global window id)

    def digest(self) -> str:
        return hashlib.blake2b(np.asarray(self.tokens, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


class TrainStream(Protocol):
    """This rank's endless supply of training micro batches, with a resumable position."""

    @property
    def epoch(self) -> int:
        """Passes completed over the training data (0 during the first)."""

    def drain_pulled(self) -> list[tuple[int, str]]:
        """(epoch, "file:row") of the documents read since the last call (the window trace's `d` lines)."""

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, list[Window]]:
        """The next [batch_size, block_size + 1] token batch (int64, host memory) and its windows."""

    def state_dict(self) -> dict[str, Any]:
        """This rank's cursor after the last batch returned: JSON-able, no library internals."""

    def load_cursors(self, cursors: list[dict[str, Any]]) -> None:
        """Resume from every saved rank's cursor: its own one, or a re-split one after a world-size change."""


class ResumableStream(TrainStream, Protocol):
    """A streaming-path stream (TextStream, MixedStream) that can also be restored from its own cursor alone:
    what the prefetching worker rebuilds in its process."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's own cursor (same world size)."""


class PulledLog:
    """What a stream read since the trace last asked, handed over by `drain_pulled` (not a shared mutable list)."""

    _pulled: list[tuple[int, str]]

    def drain_pulled(self) -> list[tuple[int, str]]:
        pulled, self._pulled = self._pulled, []
        return pulled


# A callable giving a fresh, finite, in-order pass over the validation windows (the same at every evaluation).
ValFactory = Callable[[], Iterator[Window]]
