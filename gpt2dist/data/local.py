"""Local data files: which files an entry names, and their rows as texts -- read here, never through `datasets`.

`datasets.load_dataset` on a local file resolves the builder, may ask the hub about it (unless HF_*_OFFLINE is
set: compute nodes without internet hang in getaddrinfo) and costs ~20 ms per file even offline, so a folder
of 5,000 small files took minutes. A local file's rows are simple to read exactly as `datasets`' packaged
builders define them, so the row positions that cursors and prepared shards name stay the same:
- text (.txt): `sample_by` line (each line, its newline kept), paragraph (split on blank lines, empty pieces
  dropped) or document (the file), decoded with `data.encoding` and universal newlines, as datasets' `text`.
- .jsonl: one row per non-blank line (a JSON object, or a string); .json: a list of strings, a list of objects,
  one object holding such a list, or else JSON lines (as datasets' `json` reads a .json file that is not a list).
- .csv / .tsv: a header row, then records (quoted fields may span lines); `data.text_field` names the column.
- .parquet and the Arrow files of a `datasets.save_to_disk` folder: the text column in record batches.
- NAME.EXT.gz: NAME.EXT decompressed as it is read.
Nothing here touches the network, whatever the environment says (tests/data/test_local_inputs.py proves it).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gpt2dist.errors import UserError

FORMATS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet",
           ".csv": "csv", ".tsv": "csv", ".arrow": "arrow"}
COMPRESSED = {".gz"}
CHUNK_CHARS = 10 << 20  # text read per call, as datasets' text builder (a file is never in memory whole)
SAVED_DATASET = ("state.json", "dataset_info.json")  # what `Dataset.save_to_disk` writes beside its .arrow files


def data_format(path: Path | Any) -> str | None:
    """The reader a file name asks for ('text', 'json', 'csv', 'parquet', 'arrow'), None for an unknown type."""
    suffixes = [s.lower() for s in Path(str(getattr(path, "name", path))).suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
        if suffixes and FORMATS.get(suffixes[-1]) in ("parquet", "arrow"):
            return None  # already compressed inside; a .gz around them is not something we read
    return FORMATS.get(suffixes[-1]) if suffixes else None


def saved_dataset_files(folder: Path, key: str) -> list[Path]:
    """The .arrow files of a `save_to_disk` folder, in the dataset's row order (its state.json lists them)."""
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise UserError(f"config key {key}: {folder} is a saved DatasetDict with splits {splits}: name one split's "
                        f"folder (e.g. {folder / (splits[0] if splits else 'train')})")
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"config key {key}: {folder}/state.json is not a datasets save_to_disk state "
                        f"({type(exc).__name__}): save the dataset again with Dataset.save_to_disk") from None
    for name in names:
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith(".") \
                or (folder / name).is_symlink() or not (folder / name).is_file():
            raise UserError(f"config key {key}: {folder}/state.json names {name!r}, which is not a file there: "
                            "save the dataset again with Dataset.save_to_disk")
    return [folder / name for name in names]


def is_saved_dataset(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SAVED_DATASET) or (folder / "dataset_dict.json").is_file()


def walk_directory(folder: Path, key: str) -> list[Path]:
    """The data files under a directory: recursive, known types only, hidden files and folders skipped, symlinks
    not followed, sorted by relative path -- the same list every time, so a cursor's file index stays valid."""
    if is_saved_dataset(folder):
        return saved_dataset_files(folder, key)
    found: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        here = Path(root)
        keep = []
        for d in sorted(dirs):
            sub = here / d
            if d.startswith(".") or sub.is_symlink():
                continue
            if is_saved_dataset(sub):
                found += [(f.relative_to(folder).as_posix(), f) for f in saved_dataset_files(sub, key)]
                continue
            keep.append(d)
        dirs[:] = keep
        for name in names:
            path = here / name
            if name.startswith(".") or path.is_symlink() or data_format(path) is None:
                continue
            found.append((path.relative_to(folder).as_posix(), path))
    # code-point order of the relative paths: independent of the locale and of the order the OS lists files in
    return [path for _, path in sorted(found)]


# ------------------------------------------------------------------------------------------------ reading
def _open_text(path: Path, encoding: str, errors: str) -> IO[str]:
    raw = gzip.open(path, "rb") if path.suffix.lower() in COMPRESSED else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding=encoding, errors=errors)  # universal newlines, as open() in text mode


def read_rows(path: Path, data: Any, start: int = 0) -> Iterator[str]:
    """Raw texts of a local file from row `start` on, one per row (empty ones too: row indices are positions).
    `data` is the DataConfig (text_field, sample_by, encoding, encoding_errors). Decode errors propagate."""
    fmt = data_format(path)
    errors = "replace" if data.encoding_errors == "replace" else "strict"
    encoding = getattr(data, "encoding", "utf-8")
    if fmt == "text":
        rows = _text_rows(path, data.sample_by, encoding, errors)
    elif fmt == "json":
        rows = _json_rows(path, data.text_field, encoding, errors)
    elif fmt == "csv":
        rows = _csv_rows(path, data.text_field, encoding, errors)
    elif fmt in ("parquet", "arrow"):
        rows = _columnar_rows(path, data.text_field, fmt)
    else:
        raise UserError(f"{path}: unsupported file type; use " + ", ".join(sorted(FORMATS)) + " (or .gz text)")
    for _ in range(start):
        if next(rows, None) is None:
            return
    yield from rows


def _text_rows(path: Path, sample_by: str, encoding: str, errors: str) -> Iterator[str]:
    with _open_text(path, encoding, errors) as fh:
        if sample_by == "document":
            yield fh.read()
            return
        rest = ""
        while chunk := fh.read(CHUNK_CHARS):
            chunk = rest + chunk + fh.readline()  # finish the current line
            if sample_by == "line":
                yield from io.StringIO(chunk).readlines()  # splits on "\n" only and keeps it, as datasets
                continue
            parts = chunk.split("\n\n")
            yield from (part for part in parts[:-1] if part)
            rest = parts[-1]
        if rest:
            yield rest


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _field_of(row: Any, field: str, path: Path, where: str) -> str:
    if isinstance(row, str):
        return row
    if isinstance(row, dict):
        if field not in row:
            raise UserError(f"config key data.text_field={field!r}: {path} {where} has fields {sorted(row)}; set "
                            "data.text_field to the text column")
        return _as_text(row[field])
    raise UserError(f"{path} {where} is a JSON {type(row).__name__}: rows must be strings or objects")


def _json_rows(path: Path, field: str, encoding: str, errors: str) -> Iterator[str]:
    with _open_text(path, encoding, errors) as fh:
        first = fh.read(1 << 16).lstrip("\ufeff \t\r\n")[:1]
        fh.seek(0)
        if first == "[" or (first == "{" and path.suffix.lower() != ".jsonl" and _one_object(fh, field)):
            fh.seek(0)
            try:
                doc = json.loads(fh.read().lstrip("\ufeff"))
            except ValueError as exc:
                raise UserError(f"{path} is not valid JSON ({exc}): fix the file") from None
            yield from _json_document(doc, field, path)
            return
        fh.seek(0)
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise UserError(f"{path} line {number} is not JSON ({exc}): fix the line") from None
                yield _field_of(row, field, path, f"line {number}")


def _one_object(fh: IO[str], field: str) -> bool:
    """Is this .json file one object (pretty-printed, or one line holding the list) rather than JSON lines? Decided
    from its first line, so a large JSON-lines file is never read whole to find out."""
    first = fh.readline()
    while first and not first.strip():
        first = fh.readline()
    try:
        row = json.loads(first.lstrip("\ufeff"))
    except ValueError:
        return True  # the first line is not a whole object: a pretty-printed document (or broken, named later)
    rest = fh.readline()
    while rest and not rest.strip():
        rest = fh.readline()
    return not rest and isinstance(row, dict) and field not in row


def _json_document(doc: Any, field: str, path: Path) -> Iterator[str]:
    """A list of strings or objects, or one object holding the list (under text_field, or its only list)."""
    if isinstance(doc, dict):
        lists = {k: v for k, v in doc.items() if isinstance(v, list)}
        if isinstance(doc.get(field), list):
            doc = doc[field]
        elif len(lists) == 1:
            doc = next(iter(lists.values()))
        elif field in doc:
            doc = [doc]
        else:
            raise UserError(f"{path} is one JSON object with list fields {sorted(lists)}: set data.text_field to "
                            "the list of texts (or to the text field of a single object)")
    for i, row in enumerate(doc):
        yield _field_of(row, field, path, f"item {i}")


def _csv_rows(path: Path, field: str, encoding: str, errors: str) -> Iterator[str]:
    tab = path.name.lower().removesuffix(".gz").endswith(".tsv")
    with _open_text(path, encoding, errors) as fh:
        fh.reconfigure(newline="")  # the csv module handles line ends itself (quoted fields may hold newlines)
        reader = csv.reader(fh, delimiter="\t" if tab else ",")
        header = next(reader, None)
        if header is None:
            return
        header[0] = header[0].lstrip("\ufeff")  # Excel writes a BOM before the first column name
        if field not in header:
            raise UserError(f"config key data.text_field={field!r}: {path} has columns {header}; set "
                            "data.text_field to the text column")
        column = header.index(field)
        for record in reader:
            yield record[column] if column < len(record) else ""


def _columnar_rows(path: Path, field: str, fmt: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        pfile = pq.ParquetFile(path)
        names = pfile.schema_arrow.names
        batches = pfile.iter_batches(columns=[field], batch_size=1024) if field in names else iter(())
    else:
        source = pa.memory_map(str(path))
        try:  # save_to_disk writes the IPC stream format; an Arrow file written otherwise may be the file format
            reader: Any = pa.ipc.open_stream(source)
            every = iter(reader)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            every = (reader.get_batch(i) for i in range(reader.num_record_batches))
        names = reader.schema.names
        batches = (b.select([field]) for b in every) if field in names else iter(())
    if field not in names:
        raise UserError(f"config key data.text_field={field!r}: {path} has columns {sorted(names)}; set "
                        "data.text_field to the text column")
    for batch in batches:
        for value in batch.column(0).to_pylist():
            yield _as_text(value)
