"""Streaming text -> cleaned documents -> tokens + EOS -> packed windows of block_size + 1, per rank.

Files are read with Hugging Face `datasets` in streaming mode, so the corpus is never in memory. The
stream's position is a small JSON-able cursor (the `datasets` state, our leftover tokens and the
epoch) saved in every checkpoint; resuming seeks to the file the cursor names and skips at most the
consumed part of that one file (or parquet row group) -- never the corpus prefix.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2dist.config import DataConfig
from gpt2dist.errors import UserError

FORMATS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
DOCS_PER_TOKENIZE_CALL = 64  # batching the tokenizer call amortizes its per-call overhead
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t]+")

log = logging.getLogger(__name__)


def resolve_files(patterns: list[str], key: str) -> list[Path]:
    """Expand files/globs in order (each glob sorted); errors name the config key and the pattern."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise UserError(f"config key {key}: {pattern!r} matches no file; check the path (relative to "
                            f"{Path.cwd()})")
        files.extend(Path(m) for m in matches)
    suffixes = {f.suffix.lower() for f in files}
    unknown = suffixes - set(FORMATS)
    if unknown:
        raise UserError(f"config key {key}: unsupported file type {sorted(unknown)[0]!r}; use "
                        ".txt, .jsonl, .json or .parquet")
    if len({FORMATS[s] for s in suffixes}) > 1:
        raise UserError(f"config key {key} mixes file types {sorted(suffixes)}: list one type per key")
    if all(f.stat().st_size == 0 for f in files):
        raise UserError(f"config key {key}: every matched file is empty ({files[0]}{' ...' if len(files) > 1 else ''})")
    return files


def clean_text(text: str, cfg: DataConfig) -> str:
    """The optional cleaning passes, in a fixed order so a config always means the same text."""
    if cfg.ascii_only:
        text = text.encode("ascii", "ignore").decode("ascii")
    if cfg.strip_control:
        text = _CONTROL.sub("", text)
    if cfg.collapse_whitespace:
        text = _SPACES.sub(" ", text)
    if cfg.min_line_chars > 0:
        text = "\n".join(line for line in text.split("\n") if len(line.strip()) >= cfg.min_line_chars)
    return text


def is_heldout(text: str, fraction: float) -> bool:
    """Content-hash split: the same document lands on the same side whatever the rank count or order."""
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def find_invalid_utf8(files: list[Path]) -> tuple[Path, int] | None:
    """First (file, byte offset) that is not valid UTF-8; only called after a decode error, to name it."""
    for path in files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    return path, offset + exc.start - len(decoder.getstate()[0])
                offset += len(chunk)
            try:
                decoder.decode(b"", final=True)  # a sequence cut off by the end of the file
            except UnicodeDecodeError as exc:
                return path, offset + exc.start - len(decoder.getstate()[0])
    return None


def open_stream(files: list[Path], cfg: DataConfig):
    """A streaming `datasets.IterableDataset` of {"text": ...} rows over all files, in order.

    Every rank opens the whole stream and keeps its share by row index (see `owns_row`): reading
    raw rows is cheap next to tokenizing them, and a position that means the same on every rank is what
    lets a checkpoint resume on a different number of ranks without repeating or skipping a document.
    """
    import datasets

    datasets.disable_progress_bars()
    builder = FORMATS[files[0].suffix.lower()]
    kwargs: dict[str, Any] = {}
    if builder == "text":
        kwargs = {"sample_by": cfg.sample_by, "keep_linebreaks": True,
                  "encoding_errors": "replace" if cfg.encoding_errors == "replace" else None}
    elif builder == "parquet":
        import pyarrow.parquet as pq

        for path in files:  # the reader's own error for a missing column is a pyarrow traceback
            names = pq.read_schema(path).names
            if cfg.text_field not in names:
                raise UserError(f"config key data.text_field={cfg.text_field!r}: {path} has columns "
                                f"{sorted(names)}; set data.text_field to the text column")
        kwargs = {"columns": [cfg.text_field]}
    try:
        return datasets.load_dataset(builder, data_files={"train": [str(f) for f in files]}, split="train",
                                     streaming=True, **kwargs)
    except Exception as exc:  # datasets wraps reader errors in many types; name the files either way
        raise UserError(f"could not open data files {files[0]}...: {str(exc).splitlines()[0]}") from None


def owns_row(row: int, rank: int, world_size: int) -> bool:
    """The sharding rule: rank r of W keeps rows r, r+W, r+2W, ... -- disjoint, complete, balanced to one row."""
    return row % world_size == rank


def iter_texts(ds, files: list[Path], cfg: DataConfig) -> Iterator[str]:
    """Rows -> raw texts, one per row (empty ones too: row indices are positions), reader failures -> UserError."""
    field = cfg.text_field
    try:
        for row in ds:
            if field not in row:
                raise UserError(f"config key data.text_field={field!r}: rows of {files[0]} have fields "
                                f"{sorted(row)}; set data.text_field to the text column")
            text = row[field]
            yield text if isinstance(text, str) else ("" if text is None else str(text))
    except UnicodeDecodeError:
        found = find_invalid_utf8(files)
        where = f"{found[0]} at byte {found[1]}" if found else "a data file"
        raise UserError(f"{where} is not valid UTF-8: fix the file or set data.encoding_errors=replace") from None


def iter_documents(files: list[Path], cfg: DataConfig, *, heldout: bool | None = None,
                   rank: int = 0, world_size: int = 1) -> Iterator[str]:
    """This rank's cleaned non-empty documents; heldout=True keeps only the val_fraction share, False drops it."""
    ds = open_stream(files, cfg)
    for row, text in enumerate(iter_texts(ds, files, cfg)):
        if not owns_row(row, rank, world_size):
            continue
        text = clean_text(text, cfg)
        if not text.strip():
            continue
        if heldout is not None and is_heldout(text, cfg.val_fraction) != heldout:
            continue
        yield text


@dataclass
class Window:
    """One packed training sequence and where it came from (for traces and no-repeat checks)."""

    tokens: list[int]
    epoch: int
    index: int  # position of this window in this rank's stream for this epoch

    def digest(self) -> str:
        return hashlib.blake2b(np.asarray(self.tokens, dtype=np.int64).tobytes(), digest_size=8).hexdigest()


class PackedStream:
    """Endless stream of block_size + 1 token windows for one rank, with an exact, cheap cursor.

    Position = (epoch, row): the next raw row of the file stream. This rank tokenizes the rows it owns
    (`owns_row`) and not in `skip` (rows another rank consumed before a world-size change). The cursor
    holds the position, the `datasets` state at it, and the tokens pulled but not yet emitted; documents
    are pulled in small batches, so the saved state always matches the buffer. When a pass ends the
    next epoch starts from the first file; leftover tokens carry over, so no token is dropped.
    """

    def __init__(self, files: list[Path], cfg: DataConfig, encode, *, heldout: bool | None = None,
                 rank: int = 0, world_size: int = 1, repeat: bool = True):
        self.files, self.cfg, self.encode = files, cfg, encode
        self.heldout, self.rank, self.world_size, self.repeat = heldout, rank, world_size, repeat
        self.window = cfg.block_size + 1
        self.epoch, self.row = 0, 0
        self.epoch_rows: int | None = None  # rows in one pass, known once a pass has ended
        self.skip: set[tuple[int, int]] = set()
        self.windows_in_epoch = 0
        self.buffer: list[int] = []
        self.pulled: list[tuple[int, int]] = []  # (epoch, row) of documents pulled; drained by tracers
        self._ds = None
        self._rows: Iterator[str] | None = None
        self._pending_state: dict | None = None

    def _open(self) -> None:
        self._ds = open_stream(self.files, self.cfg)
        if self._pending_state is not None:
            self._ds.load_state_dict(self._pending_state)
            self._pending_state = None
        self._rows = iter_texts(self._ds, self.files, self.cfg)

    def _pull_documents(self) -> bool:
        """Append the tokens of this rank's next few documents to the buffer; False at the end of a pass."""
        if self._rows is None:
            self._open()
        docs: list[str] = []
        for text in self._rows:
            row, self.row = self.row, self.row + 1
            if not owns_row(row, self.rank, self.world_size) or (self.epoch, row) in self.skip:
                continue
            text = clean_text(text, self.cfg)
            if not text.strip():
                continue
            if self.heldout is not None and is_heldout(text, self.cfg.val_fraction) != self.heldout:
                continue
            docs.append(text)
            self.pulled.append((self.epoch, row))
            if len(docs) == DOCS_PER_TOKENIZE_CALL:
                return self._append(docs)
        return self._append(docs)

    def _append(self, docs: list[str]) -> bool:
        for ids in self.encode(docs):
            self.buffer.extend(ids)
        return bool(docs)

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        while len(self.buffer) < self.window:
            if self._pull_documents():
                continue
            if not self.repeat or self.windows_in_epoch == 0:
                if self.windows_in_epoch == 0 and self.repeat:
                    raise UserError(f"the data in {self.files[0]}{' ...' if len(self.files) > 1 else ''} "
                                    f"gives rank {self.rank} no full window of {self.window} tokens: add data "
                                    "or lower data.block_size")
                raise StopIteration
            self.epoch_rows = self.row
            self.epoch, self.row, self.windows_in_epoch = self.epoch + 1, 0, 0
            self._ds, self._rows, self._pending_state = None, None, None
            log.info("data: rank %d starting epoch %d", self.rank, self.epoch)
        tokens, self.buffer = self.buffer[: self.window], self.buffer[self.window:]
        window = Window(tokens, self.epoch, self.windows_in_epoch)
        self.windows_in_epoch += 1
        return window

    def state_dict(self) -> dict[str, Any]:
        ds_state = self._ds.state_dict() if self._ds is not None else self._pending_state
        here = (self.epoch, self.row)
        return {"epoch": self.epoch, "row": self.row, "epoch_rows": self.epoch_rows,
                "skip": sorted([e, r] for e, r in self.skip if (e, r) >= here),
                "windows_in_epoch": self.windows_in_epoch, "buffer": list(self.buffer), "dataset": ds_state,
                "files": [str(f) for f in self.files], "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's own cursor (same world size)."""
        if state["files"] != [str(f) for f in self.files]:
            raise UserError("the training files differ from the checkpoint's (data.train changed): resume "
                            "with the same files or start a new run_dir")
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            raise UserError(f"checkpoint cursor is for rank {state['rank']} of {state['world_size']}, "
                            f"this is rank {self.rank} of {self.world_size}")
        self.epoch, self.row, self.epoch_rows = state["epoch"], state["row"], state["epoch_rows"]
        self.skip = {(e, r) for e, r in state["skip"]}
        self.windows_in_epoch = state["windows_in_epoch"]
        self.buffer = list(state["buffer"])
        self._pending_state = state["dataset"]
        self._ds, self._rows = None, None

    def load_cursors(self, cursors: list[dict[str, Any]]) -> None:
        """Restore from every rank's saved cursor: our own one, or a re-split one after a world-size change."""
        if len(cursors) == self.world_size and all(c["world_size"] == self.world_size for c in cursors):
            self.load_state_dict(cursors[self.rank])
        else:
            from gpt2dist.cursor import reshard_cursor

            self.load_state_dict(reshard_cursor(cursors, self.rank, self.world_size))

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, list[Window]]:
        windows = [next(self) for _ in range(batch_size)]
        return torch.tensor([w.tokens for w in windows], dtype=torch.long), windows


def eval_batches(stream_factory, batch_size: int, n_batches: int) -> Iterator[torch.Tensor]:
    """The first n_batches of a fresh, non-repeating stream: the same val set at every evaluation."""
    stream = stream_factory()
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
