"""The streaming path (data.format=stream): this rank's documents -> tokens + EOS -> windows of block_size + 1.

A rank reads only the files (or rows) it owns (`sharding.py`), one file at a time, tokenizes documents in small
batches and cuts windows from the token buffer. Its position is a small JSON-able cursor -- (epoch, file, row in
file), leftover tokens -- saved in every checkpoint; resuming opens the file the cursor names and skips the
consumed rows of that one file, never the corpus prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch

from gpt2dist.config import DataConfig
from gpt2dist.data.contract import Window
from gpt2dist.data.sharding import CURSOR_VERSION, owns_row, reshard_cursor, shard_mode, visit_order
from gpt2dist.data.sources import DataFile
from gpt2dist.data.text import iter_file_texts, keep_document
from gpt2dist.errors import UserError

DOCS_PER_TOKENIZE_CALL = 64  # batching the tokenizer call amortizes its per-call overhead

log = logging.getLogger(__name__)


class TextStream:
    """Endless stream of block_size + 1 token windows for one rank, tokenized as it reads, with an exact cursor.

    The rank reads its files (sharding.py: whole files when there are at least as many files as
    ranks, a row interleave otherwise) one at a time in the epoch's visit order. Position = (epoch,
    index in the visit order, row in that file); `consumed` holds rows other ranks took before a
    world-size change, skipped here. Documents are pulled in small batches, so the position always
    matches the token buffer. At the end of a pass the next epoch starts in a new file order; leftover
    tokens carry over, so no token is dropped.
    """

    def __init__(self, files: list[DataFile], cfg: DataConfig, encode, *, heldout: bool | None = None,
                 rank: int = 0, world_size: int = 1, repeat: bool = True, seed: int = 0):
        self.files, self.cfg, self.encode = files, cfg, encode
        self.heldout, self.rank, self.world_size, self.repeat, self.seed = heldout, rank, world_size, repeat, seed
        self.window = cfg.block_size + 1
        self.epoch, self.index, self.row = 0, 0, 0
        self.rows: dict[int, int] = {}  # row counts of files read to their end
        self.consumed: dict[tuple[int, int], tuple[int, set[int]]] = {}  # (epoch, file) -> (prefix, extra rows)
        self.windows_in_epoch = 0
        self.buffer: list[int] = []
        self.pulled: list[tuple[int, str]] = []  # (epoch, "file:row") of documents pulled; drained by tracers
        self._texts: Iterator[str] | None = None
        self._extra: set[int] = set()
        self._order: tuple[int, list[int]] = (-1, [])

    def visit(self) -> list[int]:
        """This epoch's files of this rank, in reading order."""
        if self._order[0] != self.epoch:
            self._order = (self.epoch, visit_order(len(self.files), self.seed, self.epoch, self.rank, self.world_size))
        return self._order[1]

    def _open_next(self) -> bool:
        """Open the file at `index` at `row`, past files and rows other ranks consumed; False after the last."""
        order = self.visit()
        while self.index < len(order):
            file = order[self.index]
            prefix, self._extra = self.consumed.get((self.epoch, file), (0, set()))
            if file in self.rows and prefix >= self.rows[file]:  # consumed whole before a world-size change
                self.index, self.row = self.index + 1, 0
                continue
            self.row = max(self.row, prefix)
            self._texts = iter_file_texts(self.files[file], self.cfg, self.row)
            return True
        return False

    def _pull_documents(self) -> bool:
        """Append the tokens of this rank's next few documents to the buffer; False at the end of a pass."""
        docs: list[str] = []
        n_files = len(self.files)
        while len(docs) < DOCS_PER_TOKENIZE_CALL:
            if self._texts is None and not self._open_next():
                break
            file = self.visit()[self.index]
            for text in self._texts:
                row, self.row = self.row, self.row + 1
                if row in self._extra or not owns_row(file, row, self.rank, self.world_size, n_files):
                    continue
                if (doc := keep_document(text, self.cfg, self.heldout)) is not None:
                    docs.append(doc)
                    self.pulled.append((self.epoch, f"{file}:{row}"))
                    if len(docs) == DOCS_PER_TOKENIZE_CALL:
                        break
            else:  # the file is done
                self.rows[file] = self.row
                self.index, self.row, self._texts, self._extra = self.index + 1, 0, None, set()
        for ids in self.encode(docs):
            self.buffer.extend(ids)
        return bool(docs)

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        while len(self.buffer) < self.window:
            if self._pull_documents():
                continue
            if not self.repeat:
                raise StopIteration
            if self.windows_in_epoch == 0 and not any(e == self.epoch for e, _ in self.consumed):
                raise UserError(f"the data in {self.files[0]}{' ...' if len(self.files) > 1 else ''} "
                                f"gives rank {self.rank} no full window of {self.window} tokens: add data "
                                "or lower data.block_size")
            self.epoch, self.index, self.row, self.windows_in_epoch = self.epoch + 1, 0, 0, 0
            self.consumed = {k: v for k, v in self.consumed.items() if k[0] >= self.epoch}
            log.info("data: rank %d starting epoch %d", self.rank, self.epoch)
        tokens, self.buffer = self.buffer[: self.window], self.buffer[self.window:]
        window = Window(tokens, self.epoch, self.windows_in_epoch)
        self.windows_in_epoch += 1
        return window

    def state_dict(self) -> dict[str, Any]:
        """The cursor: JSON-able, no `datasets` internals (a checkpoint outlives library versions)."""
        return {"version": CURSOR_VERSION, "files": [str(f) for f in self.files], "rank": self.rank,
                "world_size": self.world_size, "mode": shard_mode(len(self.files), self.world_size),
                "seed": self.seed, "epoch": self.epoch, "index": self.index, "row": self.row,
                "windows_in_epoch": self.windows_in_epoch, "buffer": list(self.buffer),
                "rows": {str(i): n for i, n in sorted(self.rows.items())},
                "consumed": [[e, i, p, sorted(x)] for (e, i), (p, x) in sorted(self.consumed.items())]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's own cursor (same world size)."""
        if state.get("version") != CURSOR_VERSION:
            raise UserError("the checkpoint's data cursor was written by an older gpt2dist (global row "
                            "positions): resume with that version or start a new run_dir")
        if state["files"] != [str(f) for f in self.files]:
            raise UserError("the training files differ from the checkpoint's (data.train changed): resume "
                            "with the same files or start a new run_dir")
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise UserError(f"checkpoint cursor is for rank {state['rank']} of {state['world_size']}, "
                            f"this is rank {self.rank} of {self.world_size}")
        self.seed, self.epoch, self.index, self.row = state["seed"], state["epoch"], state["index"], state["row"]
        self.windows_in_epoch = state["windows_in_epoch"]
        self.buffer = list(state["buffer"])
        self.rows = {int(i): n for i, n in state["rows"].items()}
        self.consumed = {(e, i): (p, set(x)) for e, i, p, x in state["consumed"]}
        self._texts, self._extra = None, set()

    def load_cursors(self, cursors: list[dict[str, Any]]) -> None:
        """Restore from every rank's saved cursor: our own one, or a re-split one after a world-size change."""
        if len(cursors) == self.world_size and all(c["world_size"] == self.world_size for c in cursors):
            self.load_state_dict(next(c for c in cursors if c["rank"] == self.rank))
        else:
            self.load_state_dict(reshard_cursor(cursors, self.rank, self.world_size))

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, list[Window]]:
        windows = [next(self) for _ in range(batch_size)]
        return torch.tensor([w.tokens for w in windows], dtype=torch.long), windows
