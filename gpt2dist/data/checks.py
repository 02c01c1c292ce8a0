"""The doctor's data checks: will every rank get data under the sharding rules, and is the prepared data there.

In example sharding (fewer files than ranks) the unit dealt to ranks is a document, or a piece of one longer
than pieces.PIECE_CHARS characters, so a corpus of one long document feeds every rank; only too few short
documents leave a rank without data (the error then names what works: data.format=packed).

Cheap on purpose (file sizes, small files' row counts, the packed manifest): `gpt2dist train` and the Slurm
renderer run them before any expensive work. Each returns (level, message) for the doctor to report.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from gpt2dist.config import RunConfig
from gpt2dist.data.encodings import decode_error
from gpt2dist.data.local import read_rows
from gpt2dist.data.pieces import PIECE_CHARS, piece_starts
from gpt2dist.data.sharding import shard_mode
from gpt2dist.data.sources import DataFile, RemoteFile, file_size, open_binary
from gpt2dist.errors import UserError
from gpt2dist.units import fmt_bytes

COUNT_ROWS_LIMIT = 64 * 2**20  # rows are counted only when the training files total less than this
BYTES_PER_TOKEN = {"char": 1.0, "bpe": 4.0, "pretrained": 4.0}  # rough: ~4 bytes of English per BPE token


def rows_per_file(files: list[DataFile], sample_by: str) -> list[int] | None:
    """Rows of each file as `data` reads them (what ranks shard by), or None when counting costs too much
    (large or remote text files: counting reads them whole)."""
    units = units_per_row(files, sample_by, None)
    return None if units is None else [len(rows) for rows in units]


def units_per_row(files: list[DataFile], sample_by: str, piece_chars: int | None,
                  text_field: str = "text", data: Any = None) -> list[list[int]] | None:
    """Per file, per row: how many sharding units (pieces, sharding.py) the row is -- 1, or more for a row over
    `piece_chars` characters (counted on the raw text: cleaning only shortens it, so this is an upper bound;
    parquet rows are counted as 1 unless the file is small). None when counting costs too much. With `data`
    (the DataConfig) local files are read as training reads them (every type, data.encoding, characters)."""
    small = sum(file_size(f) for f in files) <= COUNT_ROWS_LIMIT
    if data is not None and small and not any(isinstance(f, RemoteFile) for f in files):
        out = []
        for path in files:
            try:
                out.append([_text_units(text, piece_chars) for text in read_rows(path, data)])
            except UnicodeDecodeError:
                raise decode_error(path, data.encoding) from None
            except (OSError, EOFError, ValueError, csv.Error) as exc:  # a broken .gz, .csv, .parquet or .arrow
                raise UserError(f"{path} cannot be read ({type(exc).__name__}): fix or remove the file") from None
        return out
    out = []
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            with open_binary(path) as fh:
                meta = pq.ParquetFile(fh).metadata  # the footer only
                if piece_chars is None or not small or text_field not in meta.schema.names:
                    out.append([1] * meta.num_rows)
                    continue
                texts = pq.read_table(fh, columns=[text_field]).column(text_field).to_pylist()
            out.append([_units(str(t or "").encode(), piece_chars) for t in texts])
            continue
        if not small or suffix == ".json" or isinstance(path, RemoteFile):
            return None
        text = path.read_bytes().replace(b"\r\n", b"\n")
        if suffix == ".jsonl":
            rows = [line for line in text.split(b"\n") if line.strip()]
        elif sample_by == "document":
            rows = [text]
        elif sample_by == "line":
            rows = text.split(b"\n")
            if not text or text.endswith(b"\n"):
                rows.pop()
        else:  # paragraph: datasets' text builder splits on blank lines and drops empty pieces
            rows = [part for part in text.split(b"\n\n") if part]
        out.append([_units(row, piece_chars) for row in rows])
    return out


def _text_units(text: str, piece_chars: int | None) -> int:
    return 1 if piece_chars is None or len(text) <= piece_chars else len(piece_starts(text, piece_chars))


def _units(row: bytes, piece_chars: int | None) -> int:
    if piece_chars is None or len(row) <= piece_chars:  # bytes >= characters: short in bytes is short in text
        return 1
    return len(piece_starts(row.decode("utf-8", errors="replace"), piece_chars))


def stream_piece_chars(cfg: RunConfig) -> int | None:
    """The piece size the streaming path will split long documents at for this tokenizer (None: whole)."""
    if cfg.tokenizer.kind in ("char", "bpe"):
        return PIECE_CHARS
    try:
        from gpt2dist.data.pieces import splits_exactly
        from gpt2dist.tokenizer import load_tokenizer

        return PIECE_CHARS if splits_exactly(load_tokenizer(cfg.tokenizer.path)) else None
    except Exception:  # a missing or broken tokenizer folder is another check's finding
        return None


def count_rows(files: list[DataFile], sample_by: str) -> int | None:
    counts = rows_per_file(files, sample_by)
    return None if counts is None else sum(counts)


def _ranks(ranks: list[int]) -> str:
    """'rank 3', 'ranks 4-5' or 'ranks 1, 3, 6'."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    contiguous = ranks == list(range(ranks[0], ranks[-1] + 1))
    return f"ranks {ranks[0]}-{ranks[-1]}" if contiguous else "ranks " + ", ".join(map(str, ranks[:8]))


def shard_check(files: list[DataFile], cfg: RunConfig, world_size: int, label: str = "data.train") -> tuple[str, str]:
    """File mode (files >= ranks): each rank's files must hold data. Example mode: every rank must get a row.
    With data.weights each source is sharded on its own: `label` names the source."""
    sizes = [file_size(f) for f in files]
    where = f"{label}: {len(files)} file{'s' if len(files) > 1 else ''}, {fmt_bytes(sum(sizes))}"
    per_token = bytes_per_token(files, cfg)
    window = cfg.data.block_size + 1
    if shard_mode(len(files), world_size) == "file":
        shares = [sum(sizes[r::world_size]) for r in range(world_size)]
        empty = [r for r, size in enumerate(shares) if size == 0]
        if empty:
            return "error", (f"{where}: {_ranks(empty)} would read only empty files (rank r reads files r, "
                             f"r+{world_size}, ...): remove the empty files, add data, or use fewer ranks")
        if min(shares) / per_token < window:
            return "warn", (f"{where}: the smallest rank share is ~{min(shares) / per_token:.0f} tokens, less than "
                            f"one window of {window}: add data or lower data.block_size")
        return "ok", (f"{where}: file sharding, {len(files) // world_size}+ files per rank, shares "
                      f"{fmt_bytes(min(shares))}-{fmt_bytes(max(shares))}")
    piece_chars = stream_piece_chars(cfg)
    try:
        units = units_per_row(files, cfg.data.sample_by, piece_chars, cfg.data.text_field, cfg.data)
    except UserError as exc:  # reading names the file and the fix (a decode error: the likely encoding)
        return "error", str(exc)
    if units is None:
        why = "remote files" if any(isinstance(f, RemoteFile) for f in files) else \
            f"above {fmt_bytes(COUNT_ROWS_LIMIT)}"
        return "ok", f"{where} (rows not counted: {why})"
    rows, pieces = sum(len(u) for u in units), sum(sum(u) for u in units)
    # unit (row j, piece k) of file i goes to rank (i + j + k) % W: enough units per file cover every rank
    covered = {(i + j + k) % world_size for i, per_row in enumerate(units) for j, n in enumerate(per_row)
               for k in range(min(n, world_size))}
    missing = sorted(set(range(world_size)) - covered)
    if missing:
        how = (f"a row over {piece_chars:,} characters is dealt in pieces" if piece_chars else
               "this tokenizer cannot split long documents exactly, so each is read whole")
        return "error", (f"{where}, {rows} rows (documents) for {world_size} ranks: {_ranks(missing)} would "
                         f"get none (rank r keeps row j of file i when (i + j) % {world_size} == r; {how}): add "
                         "data, use data.sample_by=line or paragraph, fewer ranks, or data.format=packed (`gpt2dist "
                         "prepare`: ranks share windows, not documents)")
    tokens_per_rank = sum(sizes) / per_token / world_size
    if tokens_per_rank < window:
        return "warn", (f"{where}: ~{tokens_per_rank:.0f} tokens per rank, less than one window of {window}: add "
                        "data or lower data.block_size")
    if pieces > rows:
        return "ok", f"{where}, {rows:,} rows in {pieces:,} pieces -> ~{pieces // world_size:,} per rank"
    return "ok", f"{where}, {rows:,} rows -> ~{rows // world_size:,} per rank"


def sample_text(files: list[DataFile], cfg: RunConfig, chars: int = 1 << 16) -> str:
    """Up to `chars` characters of the first local files' rows as training reads them ("" when unreadable)."""
    out, n = [], 0
    try:
        for path in files:
            if isinstance(path, RemoteFile):
                continue
            for text in read_rows(path, cfg.data):
                out.append(text)
                n += len(text)
                if n >= chars:
                    return "".join(out)
    except (UserError, OSError, EOFError, ValueError, csv.Error):
        pass  # decode, field and broken-file errors are other checks' findings
    return "".join(out)


def bytes_per_token(files: list[DataFile], cfg: RunConfig) -> float:
    """Rough file bytes per token: a table by tokenizer kind, times the UTF-8 bytes per character the char
    tokenizer sees (3 for Chinese: one token per character, not per byte)."""
    per_token = BYTES_PER_TOKEN[cfg.tokenizer.kind]
    if cfg.tokenizer.kind == "char" and cfg.data.encoding.startswith("utf-8"):
        sample = sample_text(files, cfg)
        if sample:
            per_token *= len(sample.encode("utf-8")) / len(sample)
    return per_token


def ascii_only_check(files: list[DataFile], cfg: RunConfig) -> tuple[str, str] | None:
    """data.ascii_only on a mostly non-ASCII corpus (Chinese, say) would train on what little is left."""
    if not cfg.data.ascii_only:
        return None
    sample = "".join(sample_text(files, cfg).split())
    dropped = sum(ord(c) > 0x7F for c in sample) / len(sample) if sample else 0.0
    if dropped <= 0.5:
        return None
    return "warn", (f"data.ascii_only would drop {dropped:.0%} of the characters of data.train (a sample of "
                    f"{files[0]}): set data.ascii_only=false for non-English text")


def packed_check(cfg: RunConfig, base: Path | None) -> tuple[str, str]:
    """format=packed: the manifest must exist, match the config and cover every (unchanged) file. `cfg`'s
    relative paths must already be relative to the job's directory `base` (preflight.rebased)."""
    from gpt2dist.data.packed import packed_summary

    if base is not None and not base.is_dir():
        return "warn", f"data: packed data not checked: the job's directory {base} is not on this machine"
    return packed_summary(cfg)
