"""Text in: data files (local or URL) -> rows -> cleaned documents, the same for every data path.

Files are read with Hugging Face `datasets` in streaming mode, one file at a time, so a corpus is never in
memory; rows come as Arrow batches. Both the streaming path (`stream.py`) and `gpt2dist prepare`
(`prepare.py`) read documents through here, so a config means the same text on either. A file may be a URL
(a hub dataset's files: `sources.py`).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt2dist.config import DataConfig
from gpt2dist.data.encodings import bad_offset, bad_offset_in, decode_error
from gpt2dist.data.local import FORMATS, data_format, read_rows, walk_directory
from gpt2dist.data.sharding import owns_row, visit_order
from gpt2dist.data.sources import DataFile, RemoteFile, expand_url, file_size, is_url, open_binary
from gpt2dist.errors import UserError

ROWS_PER_READ = 1024  # rows per Arrow batch read from a file
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t]+")
# data.halfwidth: full-width ASCII forms U+FF01-FF5E -> U+0021-007E and the ideographic space U+3000 -> " "
# (the Unicode Halfwidth and Fullwidth Forms block; NFKC would also rewrite other characters, e.g. ligatures)
HALFWIDTH = {**{code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}, 0x3000: 0x20}


def resolve_files(patterns: list[str], key: str) -> list[DataFile]:
    """Expand files, globs and directories in order (each glob sorted, each directory walked in a stable order:
    local.walk_directory), local or URL; errors name the config key and the pattern."""
    files: list[DataFile] = []
    for pattern in patterns:
        if is_url(pattern):
            matches: list[DataFile] = list(expand_url(pattern, key))
        else:
            found = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
            matches = []
            for match in map(Path, found):
                if match.is_dir() and not glob.has_magic(pattern):
                    matches += walk_directory(match, key)
                elif match.is_file():
                    matches.append(match)
        if not matches:
            where = "check the URL" if is_url(pattern) else f"check the path (relative to {Path.cwd()})"
            if not is_url(pattern) and Path(pattern).is_dir():
                where = "the directory holds no " + ", ".join(sorted(FORMATS)) + " or .gz text file"
            raise UserError(f"config key {key}: {pattern!r} matches no file; {where}")
        files.extend(matches)
    unknown = [f for f in files if data_format(f) is None]
    if unknown:
        raise UserError(f"config key {key}: unsupported file type {unknown[0].suffix.lower()!r} ({unknown[0]}); use "
                        ".txt, .jsonl, .json, .csv, .tsv, .parquet, .gz text or a directory of them")
    if any(data_format(f) == "arrow" for f in files if isinstance(f, RemoteFile)):
        raise UserError(f"config key {key}: .arrow files are read locally only: download them first")
    if all(file_size(f) == 0 for f in files):
        raise UserError(f"config key {key}: every matched file is empty ({files[0]}{' ...' if len(files) > 1 else ''})")
    return files


def clean_text(text: str, cfg: DataConfig) -> str:
    """The optional cleaning passes, in a fixed order so a config always means the same text."""
    if getattr(cfg, "halfwidth", False):
        text = text.translate(HALFWIDTH)
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


def find_invalid_utf8(files: list[DataFile], encoding: str = "utf-8") -> tuple[DataFile, int] | None:
    """First (file, byte offset) that does not decode with `encoding` (local files: read uncompressed)."""
    for path in files:
        if isinstance(path, Path):
            offset = bad_offset(path, encoding)
            if offset is not None:
                return path, offset
            continue
        with open_binary(path) as fh:
            offset = bad_offset_in(fh, encoding)
        if offset is not None:
            return path, offset
    return None


def open_stream(files: list[DataFile], cfg: DataConfig):
    """A streaming `datasets.IterableDataset` of rows over remote files (URLs), in order. Local files never come
    here: local.read_rows reads them without `datasets`, so without the network."""
    import datasets

    assert all(isinstance(f, RemoteFile) for f in files), "local files are read by gpt2dist.data.local"
    datasets.disable_progress_bars()
    # its JSON reader logs a parse failure at ERROR before raising it; we report it ourselves in one line
    logging.getLogger("datasets.packaged_modules.json.json").setLevel(logging.CRITICAL)
    builder = data_format(files[0])
    kwargs: dict[str, Any] = {}
    if builder == "text":
        kwargs = {"sample_by": cfg.sample_by, "keep_linebreaks": True, "encoding": cfg.encoding,
                  "encoding_errors": "replace" if cfg.encoding_errors == "replace" else None}
    elif builder == "csv":
        kwargs = {"sep": "\t" if files[0].name.lower().removesuffix(".gz").endswith(".tsv") else ",",
                  "encoding": cfg.encoding, "usecols": [cfg.text_field], "dtype": str, "keep_default_na": False}
    elif builder == "parquet":
        import pyarrow.parquet as pq

        for path in files:  # the reader's own error for a missing column is a pyarrow traceback
            try:
                with open_binary(path) as fh:
                    names = pq.read_schema(fh).names
            except Exception as exc:  # noqa: BLE001 - a corrupt or truncated file: pyarrow's own error types
                raise _unreadable(path, exc) from None
            if cfg.text_field not in names:
                raise UserError(f"config key data.text_field={cfg.text_field!r}: {path} has columns "
                                f"{sorted(names)}; set data.text_field to the text column")
        kwargs = {"columns": [cfg.text_field]}
    try:
        return datasets.load_dataset(builder, data_files={"train": [str(f) for f in files]}, split="train",
                                     streaming=True, **kwargs)
    except Exception as exc:  # datasets wraps reader errors in many types; name the files either way
        raise UserError(f"could not open data files {files[0]}...: {str(exc).splitlines()[0]}") from None


def iter_file_texts(path: DataFile, cfg: DataConfig, start: int = 0) -> Iterator[str]:
    """Raw texts of one file from row `start` on (one per row, empty ones too: row indices are positions).

    A local file is read by local.read_rows (no `datasets`, no network, no per-file set-up cost). A URL streams
    through `datasets`: rows come as Arrow batches and only the text column becomes Python objects; `skip(start)`
    drops whole Arrow batches, so a resume re-reads the consumed part of this one file but converts none of it.
    """
    if isinstance(path, Path):
        try:
            yield from read_rows(path, cfg, start)
        except UnicodeDecodeError:
            raise _decode_error(path, cfg) from None
        except (OSError, EOFError, ValueError, csv.Error) as exc:  # a broken .gz, .csv, .parquet or .arrow file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path} cannot be read ({first}): fix or remove the file") from None
        return
    try:
        ds = open_stream([path], cfg)
        if start:
            ds = ds.skip(start)
        field = cfg.text_field
        for table in ds.with_format("arrow").iter(batch_size=ROWS_PER_READ):
            if field not in table.column_names:
                raise UserError(f"config key data.text_field={field!r}: rows of {path} have fields "
                                f"{sorted(table.column_names)}; set data.text_field to the text column")
            for text in table.column(field).to_pylist():
                yield _as_text(text)
    except UnicodeDecodeError:
        raise _decode_error(path, cfg) from None
    except (UserError, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed line or corrupt file: the reader's own error types
        raise _unreadable(path, exc) from None


def _unreadable(path: Any, exc: Exception) -> UserError:
    first = " ".join(str(exc).split())[:160] or type(exc).__name__
    return UserError(f"data file {path} could not be read ({first}): fix or remove it")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _decode_error(path: DataFile, cfg: DataConfig) -> UserError:
    if isinstance(path, Path):
        return decode_error(path, cfg.encoding)
    found = find_invalid_utf8([path], cfg.encoding)
    where = f"{found[0]} at byte {found[1]}" if found else str(path)
    return UserError(f"{where} is not valid {cfg.encoding.upper()}: fix the file, set data.encoding to its "
                     "encoding or data.encoding_errors=replace")


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
