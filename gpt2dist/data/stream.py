"""The streaming path (data.format=stream): this rank's documents -> tokens + EOS -> windows of block_size + 1.

A rank reads only the files (or units) it owns (`sharding.py`), one file at a time, tokenizes documents in
small batches -- a long document one piece at a time (`pieces.py`) -- and cuts windows from a token buffer
whose cuts cost O(window) (`tokens.py`). Its position is a small JSON-able cursor -- (epoch, file, row, piece)
of the next unit to read, and the units still in the buffer by name (with how many of their tokens are cut),
not their tokens -- saved in every checkpoint; resuming re-tokenizes those units (one piece each, for a long
document) and opens the file the cursor names at its row, never the corpus prefix.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from gpt2dist.config import DataConfig
from gpt2dist.data.contract import PulledLog, Window
from gpt2dist.data.pieces import piece_starts, piece_text
from gpt2dist.data.sharding import (
    CURSOR_VERSION,
    FILE_END,
    BufferedUnit,
    Consumed,
    Generation,
    deals_pieces,
    files_record,
    owns_unit,
    reshard_cursor,
    shard_mode,
    upgrade_cursor,
    visit_order,
)
from gpt2dist.data.sources import DataFile
from gpt2dist.data.text import iter_file_texts, keep_document
from gpt2dist.data.tokens import LITERAL, OWN, PARTIAL, Segment, TokenBuffer
from gpt2dist.errors import UserError

DOCS_PER_TOKENIZE_CALL = 64  # batching the tokenizer call amortizes its per-call overhead

log = logging.getLogger(__name__)


class TextStream(PulledLog):
    """Endless stream of block_size + 1 token windows for one rank, tokenized as it reads, with an exact cursor.

    The rank reads its files (sharding.py: whole files when there are at least as many files as ranks, a
    unit interleave otherwise) one at a time in the epoch's visit order. Read position = (epoch, index in the
    visit order, row in that file, piece in that row); units other ranks took before a world-size change
    (`history`: their positions; `consumed`: per-file entries of version-3 cursors) are skipped here. The
    cursor (state_dict) names the units whose tokens are still in the buffer instead of storing the tokens; a
    resume re-tokenizes them. At the end of a pass the next epoch
    starts in a new file order; leftover tokens carry over, so no token is dropped.

    `encode(texts)` gives each text's ids followed by EOS; its `piece_chars` attribute (pieces.DocumentEncoder)
    is the piece size at which it tokenizes long documents exactly, None (or absent): documents are read whole.
    """

    def __init__(self, files: list[DataFile], cfg: DataConfig, encode, *, heldout: bool | None = None,
                 rank: int = 0, world_size: int = 1, repeat: bool = True, seed: int = 0):
        self.files, self.cfg, self.encode = files, cfg, encode
        self.heldout, self.rank, self.world_size, self.repeat, self.seed = heldout, rank, world_size, repeat, seed
        self.window = cfg.block_size + 1
        self.piece_chars: int | None = getattr(encode, "piece_chars", None)
        self.deal = deals_pieces(len(files), world_size)  # pieces of a long document go to several ranks
        self.epoch, self.index, self.row, self.piece = 0, 0, 0, 0  # the next unit to read
        self.consumed: dict[tuple[int, int], Consumed] = {}  # (epoch, file) -> taken, as version-3 cursors said
        self.history: list[Generation] = []  # the ranks before each world-size change: what they read is taken
        self.windows_in_epoch = 0
        self.tokens = TokenBuffer()
        self._pulled: list[tuple[int, str]] = []  # (epoch, "file:row") of units read; see drain_pulled
        self._pending: list[BufferedUnit] = []  # units a cursor names as buffered: re-tokenized before reading on
        self._texts: Iterator[str] | None = None
        self._entry: Consumed | None = None  # consumed units of the open file
        self._doc: tuple[int, str, list[int]] | None = None  # (row, text, piece starts) of a long document
        self._order: tuple[int, list[int]] = (-1, [])

    @property
    def buffer(self) -> np.ndarray:
        """Tokens read but not yet cut into windows."""
        return self.tokens.remaining()

    def visit(self) -> list[int]:
        """This epoch's files of this rank, in reading order."""
        if self._order[0] != self.epoch:
            self._order = (self.epoch, visit_order(len(self.files), self.seed, self.epoch, self.rank, self.world_size))
        return self._order[1]

    # ------------------------------------------------------------------------------------------------ reading
    def _open_next(self) -> bool:
        """Open the file at `index` at the read position, past units other ranks consumed; False after the last."""
        order = self.visit()
        while self.index < len(order):
            file = order[self.index]
            entry = self._taken(file)
            if entry is not None and entry.prefix >= FILE_END:
                self.index, self.row, self.piece = self.index + 1, 0, 0  # consumed whole before a world-size change
                continue
            if entry is not None and entry.prefix > (self.row, self.piece):
                self.row, self.piece = entry.prefix
            self._entry = entry
            self._texts = iter_file_texts(self.files[file], self.cfg, self.row)
            return True
        return False

    def _taken(self, file: int) -> Consumed | None:
        """The units of `file` in this epoch that ranks took before a world-size change; None: none."""
        parts = [self.consumed.get((self.epoch, file))] + \
            [g.consumed(len(self.files), self.seed, self.epoch, file) for g in self.history]
        parts = [p for p in parts if p is not None and not p.empty()]
        if len(parts) < 2:
            return parts[0] if parts else None
        taken = Consumed(file, len(self.files))  # a new one: the cursor's own entries stay as they were
        for part in parts:
            taken.merge(part)
        return taken

    def _owns(self, file: int, row: int, piece: int) -> bool:
        return owns_unit(file, row, piece, self.rank, self.world_size, len(self.files)) and \
            (self._entry is None or (row, piece) not in self._entry)

    def _next_unit(self) -> tuple[str, bool, Segment] | None:
        """Text of this rank's next unit, whether it ends its document (gets EOS), and its segment; None at the
        end of the pass. Advances the read position past it."""
        while True:
            if self._doc is not None:  # inside a long document: its pieces, from self.piece on
                row, doc, starts = self._doc
                file = self.visit()[self.index]
                while self.piece < len(starts):
                    k = self.piece
                    self.piece += 1
                    if self._owns(file, row, k):
                        last = k == len(starts) - 1
                        return piece_text(doc, starts, k), last or self.deal, self._segment(file, row, k, True)
                self._doc, self.row, self.piece = None, row + 1, 0
                continue
            if self._texts is None and not self._open_next():
                return None
            file = self.visit()[self.index]
            text = next(self._texts, None)
            if text is None:  # the file is done: `index` past it says so (no row count kept)
                self.index, self.row, self.piece, self._texts, self._entry = self.index + 1, 0, 0, None, None
                continue
            if self.piece_chars is None or len(text) <= self.piece_chars:  # one unit: unowned rows stay uncleaned
                row, first = self.row, self.piece == 0
                self.row, self.piece = row + 1, 0
                if first and self._owns(file, row, 0) and (doc := keep_document(text, self.cfg, self.heldout)):
                    return doc, True, self._segment(file, row, 0, False)
                continue
            doc = keep_document(text, self.cfg, self.heldout)  # every rank cuts it: its pieces are the units
            if doc is None:
                self.row, self.piece = self.row + 1, 0
                continue
            self._doc = (self.row, doc, piece_starts(doc, self.piece_chars))

    def _segment(self, file: int, row: int, piece: int, multi: bool) -> Segment:
        seg = Segment(0, 0, OWN, self.epoch, self.index, file, row, piece, eos_each_piece=self.deal)
        self._pulled.append((self.epoch, f"{file}:{row}#{piece}" if multi else f"{file}:{row}"))
        return seg

    def _pull(self) -> bool:
        """Append the tokens of this rank's next few units to the buffer; False at the end of a pass."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._rebuild(pending)
            return True
        items: list[tuple[str, bool, Segment]] = []
        chars, budget = 0, self.piece_chars or 0
        while len(items) < DOCS_PER_TOKENIZE_CALL and not (budget and chars >= budget):
            item = self._next_unit()
            if item is None:
                break
            items.append(item)
            chars += len(item[0])
        if items:
            self._append(items)
        return bool(items)

    def _append(self, items: list[tuple[str, bool, Segment]]) -> None:
        """Tokenize the units in one call; a unit that does not end its document loses the EOS `encode` adds."""
        at = self.tokens.end
        parts, segments = [], []
        for (_, last, seg), ids in zip(items, self.encode([text for text, _, _ in items]), strict=True):
            end = len(ids) if last else len(ids) - 1
            if seg.skip > end:
                raise UserError(f"{self.files[seg.file]} row {seg.row} is shorter than the checkpoint says: the "
                                "data changed since; resume with the same data or start a new run_dir")
            if end > seg.skip:
                seg.start, seg.end = at, at + end - seg.skip
                at = seg.end
                parts.append(ids[seg.skip:end])
                segments.append(seg)
        self.tokens.append(np.fromiter(itertools.chain.from_iterable(parts), dtype=np.int64,
                                       count=at - self.tokens.end), segments)

    def _rebuild(self, entries: list[BufferedUnit]) -> None:
        """Re-tokenize the units a cursor names as buffered (minus their tokens already cut), in order: one pass
        over each run of entries in the same file, one tokenizer call."""
        items = []
        for file, group in itertools.groupby(entries, key=lambda unit: unit.file):
            texts, at, doc = None, 0, (-1, None, [])
            for unit in group:
                row, piece, deal = unit.row, unit.piece, unit.deal
                if doc[0] != row:
                    if texts is None or at > row:
                        texts, at = iter_file_texts(self.files[file], self.cfg, row), row
                    for _ in range(row - at + 1):
                        text = next(texts, None)
                    at = row + 1
                    kept = None if text is None else keep_document(text, self.cfg, self.heldout)
                    doc = (row, kept, piece_starts(kept, self.piece_chars) if kept else [])
                _, text, starts = doc
                if piece >= len(starts):
                    raise UserError(f"{self.files[file]} row {row} is not what the checkpoint's data cursor read: "
                                    "the data changed since; resume with the same data or start a new run_dir")
                last = piece == len(starts) - 1 or (len(starts) > 1 and deal)
                items.append((piece_text(text, starts, piece), last,
                              Segment(0, 0, PARTIAL, unit.epoch, 0, file, row, piece, skip=unit.skip,
                                      eos_each_piece=deal)))
        self._append(items)

    # ------------------------------------------------------------------------------------------------ windows
    def __iter__(self) -> Iterator[Window]:
        return self

    def _cut(self) -> np.ndarray:
        """The next window's tokens (a view of the buffer)."""
        while len(self.tokens) < self.window:
            if self._pull():
                continue
            if not self.repeat:
                raise StopIteration
            if self.windows_in_epoch == 0 and not any(e == self.epoch for e, _ in self.consumed) and \
                    not any(g.took_from(self.epoch) for g in self.history):
                packed = ", or use data.format=packed (ranks share windows, not documents)" \
                    if self.world_size > 1 else ""
                raise UserError(f"the data in {self.files[0]}{' ...' if len(self.files) > 1 else ''} "
                                f"gives rank {self.rank} no full window of {self.window} tokens: add data "
                                f"or lower data.block_size{packed}")
            self.epoch, self.index, self.row, self.piece, self.windows_in_epoch = self.epoch + 1, 0, 0, 0, 0
            self.consumed = {k: v for k, v in self.consumed.items() if k[0] >= self.epoch}
            self.history = [g for g in self.history if g.took_from(self.epoch)]
            log.info("data: rank %d starting epoch %d", self.rank, self.epoch)
        ids = self.tokens.take(self.window)
        self.tokens.drop_cut()
        return ids

    def __next__(self) -> Window:
        ids = self._cut()
        window = Window(ids.tolist(), self.epoch, self.windows_in_epoch)
        self.windows_in_epoch += 1
        return window

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, list[Window]]:
        arrays, windows = [], []
        for _ in range(batch_size):
            ids = self._cut()
            arrays.append(ids)
            windows.append(Window(ids.tolist(), self.epoch, self.windows_in_epoch))
            self.windows_in_epoch += 1
        return torch.from_numpy(np.stack(arrays)), windows

    # ------------------------------------------------------------------------------------------------ cursor
    def state_dict(self) -> dict[str, Any]:
        """The cursor: JSON-able, no `datasets` internals (a checkpoint outlives library versions), and no token
        ids but a version-2 cursor's leftovers: the units in the buffer are named, and re-tokenized on resume."""
        read_at = self.tokens.read_at
        literal: list[int] = []
        partial: list[BufferedUnit] = []
        for seg in self.tokens.segments:
            if seg.kind == LITERAL:
                literal += self.tokens.tokens(max(seg.start, read_at), seg.end).tolist()
            else:
                partial.append(BufferedUnit(seg.epoch, seg.file, seg.row, seg.piece,
                                            seg.skip + max(0, read_at - seg.start), seg.eos_each_piece))
        return {"version": CURSOR_VERSION, "files": files_record(self.files), "rank": self.rank,
                "world_size": self.world_size, "mode": shard_mode(len(self.files), self.world_size),
                "seed": self.seed, "epoch": self.epoch, "index": self.index, "row": self.row, "piece": self.piece,
                "windows_in_epoch": self.windows_in_epoch, "piece_chars": self.piece_chars,
                "buffer": literal, "partial": [p.to_json() for p in partial + self._pending],
                "consumed": [c.to_json(e) for (e, _), c in sorted(self.consumed.items(), key=lambda kv: kv[0])],
                "history": [g.to_json() for g in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's own cursor (same world size); a version-2 cursor resumes as its run read."""
        state = upgrade_cursor(state)
        if state["files"] != (files_record(self.files) if isinstance(state["files"], dict)
                              else [str(f) for f in self.files]):
            raise UserError("the training files differ from the checkpoint's (data.train changed): resume "
                            "with the same files or start a new run_dir")
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise UserError(f"checkpoint cursor is for rank {state['rank']} of {state['world_size']}, "
                            f"this is rank {self.rank} of {self.world_size}")
        self.seed, self.epoch, self.index = state["seed"], state["epoch"], state["index"]
        self.row, self.piece = state["row"], state["piece"]
        self.windows_in_epoch, self.piece_chars = state["windows_in_epoch"], state["piece_chars"]
        self.consumed = {}
        for entry in state["consumed"]:
            epoch, consumed = Consumed.from_json(entry, len(self.files))
            self.consumed[(epoch, consumed.file)] = consumed
        self.history = [Generation.from_json(g) for g in state["history"]]
        self.tokens = TokenBuffer()
        if state["buffer"]:
            literal = np.asarray(state["buffer"], dtype=np.int64)
            self.tokens.append(literal, [Segment(0, len(literal), LITERAL)])
        self._pending = [BufferedUnit.from_json(p) for p in state["partial"]]  # re-tokenized lazily: no file opened
        self._texts = self._entry = self._doc = None

    def load_cursors(self, cursors: list[dict[str, Any]]) -> None:
        """Restore from every rank's saved cursor: our own one, or a re-split one after a world-size change."""
        if len(cursors) == self.world_size and all(c["world_size"] == self.world_size for c in cursors):
            self.load_state_dict(next(c for c in cursors if c["rank"] == self.rank))
        else:
            self.load_state_dict(reshard_cursor(cursors, self.rank, self.world_size))
