"""Streaming text -> cleaned documents -> tokens + EOS -> packed windows of block_size + 1, per rank.

Files are read with Hugging Face `datasets` in streaming mode, one file at a time, so the corpus is never
in memory and a rank opens only the files it owns (`gpt2dist.cursor` has the sharding rules). The
stream's position is a small JSON-able cursor -- (epoch, file, row in file), leftover tokens -- saved in
every checkpoint; resuming opens the file the cursor names and skips the consumed rows of that one file,
never the corpus prefix. A file may be a URL (a hub dataset's files: `gpt2dist.sources`).
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
from gpt2dist.cursor import CURSOR_VERSION, owns_row, reshard_cursor, shard_mode, visit_order
from gpt2dist.errors import UserError
from gpt2dist.sources import DataFile, expand_url, file_size, is_url, open_binary

FORMATS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
DOCS_PER_TOKENIZE_CALL = 64  # batching the tokenizer call amortizes its per-call overhead
ROWS_PER_READ = 1024  # rows per Arrow batch read from a file
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t]+")

log = logging.getLogger(__name__)


def resolve_files(patterns: list[str], key: str) -> list[DataFile]:
    """Expand files/globs in order (each glob sorted), local or URL; errors name the config key and the pattern."""
    files: list[DataFile] = []
    for pattern in patterns:
        if is_url(pattern):
            matches: list[DataFile] = list(expand_url(pattern, key))
        else:
            found = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
            matches = [Path(m) for m in found if Path(m).is_file()]
        if not matches:
            where = "check the URL" if is_url(pattern) else f"check the path (relative to {Path.cwd()})"
            raise UserError(f"config key {key}: {pattern!r} matches no file; {where}")
        files.extend(matches)
    suffixes = {f.suffix.lower() for f in files}
    unknown = suffixes - set(FORMATS)
    if unknown:
        raise UserError(f"config key {key}: unsupported file type {sorted(unknown)[0]!r}; use "
                        ".txt, .jsonl, .json or .parquet")
    if len({FORMATS[s] for s in suffixes}) > 1:
        raise UserError(f"config key {key} mixes file types {sorted(suffixes)}: list one type per key")
    if all(file_size(f) == 0 for f in files):
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


def find_invalid_utf8(files: list[DataFile]) -> tuple[DataFile, int] | None:
    """First (file, byte offset) that is not valid UTF-8; only called after a decode error, to name it."""
    for path in files:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open_binary(path) as fh:
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


def open_stream(files: list[DataFile], cfg: DataConfig):
    """A streaming `datasets.IterableDataset` of rows over the files, in order (PackedStream opens one file
    at a time, so positions are per file and opening costs a few milliseconds)."""
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
            with open_binary(path) as fh:
                names = pq.read_schema(fh).names
            if cfg.text_field not in names:
                raise UserError(f"config key data.text_field={cfg.text_field!r}: {path} has columns "
                                f"{sorted(names)}; set data.text_field to the text column")
        kwargs = {"columns": [cfg.text_field]}
    try:
        return datasets.load_dataset(builder, data_files={"train": [str(f) for f in files]}, split="train",
                                     streaming=True, **kwargs)
    except Exception as exc:  # datasets wraps reader errors in many types; name the files either way
        raise UserError(f"could not open data files {files[0]}...: {str(exc).splitlines()[0]}") from None


def iter_texts(ds, files: list[DataFile], cfg: DataConfig) -> Iterator[str]:
    """Rows -> raw texts, one per row (empty ones too: row indices are positions), reader failures -> UserError."""
    field = cfg.text_field
    try:
        for row in ds:
            if field not in row:
                raise UserError(f"config key data.text_field={field!r}: rows of {files[0]} have fields "
                                f"{sorted(row)}; set data.text_field to the text column")
            yield _as_text(row[field])
    except UnicodeDecodeError:
        raise _utf8_error(files) from None


def iter_file_texts(path: DataFile, cfg: DataConfig, start: int = 0) -> Iterator[str]:
    """Raw texts of one file from row `start` on (one per row, empty ones too: row indices are positions).

    Rows come as Arrow batches and only the text column becomes Python objects (3-4x faster than row
    dicts for .jsonl); `skip(start)` drops whole Arrow batches, so a resume re-reads (and, for .jsonl,
    re-parses) the consumed part of this one file but converts none of it.
    """
    ds = open_stream([path], cfg)
    if start:
        ds = ds.skip(start)
    field = cfg.text_field
    try:
        for table in ds.with_format("arrow").iter(batch_size=ROWS_PER_READ):
            if field not in table.column_names:
                raise UserError(f"config key data.text_field={field!r}: rows of {path} have fields "
                                f"{sorted(table.column_names)}; set data.text_field to the text column")
            for text in table.column(field).to_pylist():
                yield _as_text(text)
    except UnicodeDecodeError:
        raise _utf8_error([path]) from None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _utf8_error(files: list[DataFile]) -> UserError:
    found = find_invalid_utf8(files)
    where = f"{found[0]} at byte {found[1]}" if found else "a data file"
    return UserError(f"{where} is not valid UTF-8: fix the file or set data.encoding_errors=replace")


def keep_document(text: str, cfg: DataConfig, heldout: bool | None) -> str | None:
    """The cleaned document, or None when it is empty after cleaning or on the other side of the val split."""
    text = clean_text(text, cfg)
    if not text.strip():
        return None
    if heldout is not None and is_heldout(text, cfg.val_fraction) != heldout:
        return None
    return text


def iter_documents(files: list[DataFile], cfg: DataConfig, *, heldout: bool | None = None,
                   rank: int = 0, world_size: int = 1) -> Iterator[str]:
    """This rank's cleaned non-empty documents of one pass (epoch 0); heldout as in `keep_document`."""
    n_files = len(files)
    for i in visit_order(n_files, 0, 0, rank, world_size):
        for row, text in enumerate(iter_file_texts(files[i], cfg)):
            if owns_row(i, row, rank, world_size, n_files) and (doc := keep_document(text, cfg, heldout)) is not None:
                yield doc


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

    The rank reads its files (gpt2dist.cursor: whole files when there are at least as many files as
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
