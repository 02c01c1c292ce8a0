"""`gpt2dist prepare`: tokenize the configured corpus once, in worker processes, into packed token shards.

Layout of data.packed_dir (default RUN_DIR/data):
  tokenizer/                 the tokenizer that made the tokens (training copies it into the run dir)
  shards/KEY.train.bin       one source file's documents, cleaned, each followed by EOS: raw uint16/uint32
  shards/KEY.heldout.bin     its documents held out by data.val_fraction (only when data.val is empty)
  manifest.json              rewritten atomically as files finish (every 2 s, shards synced first): dtype,
                             tokenizer fingerprint, text settings, and per source file its size, mtime, sha256,
                             documents and tokens
Re-running is incremental: a file whose size and mtime (or else its sha256) match the manifest is not read
again, a changed one is re-tokenized, a new one added. Reading raw text is one process (streaming, in file
order, so shards are deterministic); cleaning and tokenizing, the expensive part, run in `workers` processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpt2dist import atomic
from gpt2dist.atomic import file_sha256
from gpt2dist.config import RunConfig
from gpt2dist.data.manifest import (
    MANIFEST,
    TOKENIZER_DIR,
    VERSION,
    check_manifest_matches,
    check_shard,
    file_key,
    heldout_fraction,
    load_manifest,
    packed_root,
    shard_name,
    text_settings,
    token_dtype,
    tokenizer_fingerprint,
    tokenizer_record,
    write_manifest,
)
from gpt2dist.data.sources import require_local
from gpt2dist.data.text import clean_text, is_heldout, iter_documents, iter_file_texts, resolve_files
from gpt2dist.errors import UserError
from gpt2dist.run.layout import CHECKPOINTS_DIR, CONFIG_FILE, LOCK_FILE, METRICS_FILE, STATUS_FILE

log = logging.getLogger(__name__)

CHUNK_CHARS = 1 << 20  # text per task sent to a worker: big enough to amortize IPC, small enough to stream
SMALL_CHUNK_CHARS = 1 << 14  # below this, documents are encoded one by one (encode_batch costs ~3 ms a call)
MANIFEST_EVERY_S = 2.0  # finished files are recorded (made durable, then written to the manifest) this often


@dataclass
class PrepareReport:
    root: str
    files: int
    tokenized: int  # files tokenized in this call (the others were up to date)
    tokens: int  # tokens in the files tokenized in this call
    total_tokens: int  # all parts of all files the config names
    seconds: float
    workers: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def prepare(cfg: RunConfig, workers: int | None = None, *, progress: bool | None = None) -> PrepareReport:
    """Tokenize every data.train and data.val file not yet (or no longer) in the manifest."""
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}: pass the number of tokenizer processes (or leave "
                        "it out for one per CPU core)")
    workers = workers if workers is not None else (os.cpu_count() or 1)
    train_files = require_local(resolve_files(cfg.data.train, "data.train"), "data.train", "prepare")
    val_files = require_local(resolve_files(cfg.data.val, "data.val"), "data.val", "prepare") if cfg.data.val else []
    root = packed_root(cfg)
    refuse_foreign_root(root)
    manifest = load_manifest(root)
    if manifest is not None:
        check_manifest_matches(manifest, cfg, root)
    tokenizer = prepare_tokenizer(cfg, root, train_files, manifest)  # built or loaded before anything is written
    make_root(root)
    _WORKER.clear()  # the in-process tokenizer is loaded once per prepare call (map_chunks)
    if manifest is None:
        manifest = {"version": VERSION, "dtype": token_dtype(len(tokenizer)).name, "vocab_size": len(tokenizer),
                    "eos_id": tokenizer.eos_token_id, "text": text_settings(cfg), "files": {},
                    "tokenizer": {"config": tokenizer_record(cfg), "fingerprint": tokenizer_fingerprint(tokenizer)}}
        write_manifest(root, manifest)
    jobs = [(f, heldout_fraction(cfg)) for f in train_files] + [(f, 0.0) for f in val_files if f not in train_files]
    started, new_tokens, tokenized = time.perf_counter(), 0, 0
    recorded, unrecorded = started, 0  # when the manifest was last written, files finished since
    from tqdm import tqdm

    bar = tqdm(unit="tok", unit_scale=True, desc="prepare", disable=(not progress) if progress is not None else None,
               dynamic_ncols=True)
    try:
        for path, fraction in jobs:
            if up_to_date(manifest, root, path, fraction):
                continue
            file_started = time.perf_counter()
            entry = tokenize_file(cfg, root, path, fraction, manifest, workers, bar)
            manifest["files"][file_key(path)] = entry
            unrecorded += 1
            if time.perf_counter() - recorded >= MANIFEST_EVERY_S:  # finished files survive an interrupted prepare
                commit_manifest(root, manifest)
                unrecorded, recorded = 0, time.perf_counter()
            file_tokens = sum(part["tokens"] for part in entry["parts"].values())
            new_tokens += file_tokens
            tokenized += 1
            log.info("prepare: %s: %d documents, %d tokens, %.0f tokens/s", path, entry["docs"], file_tokens,
                     file_tokens / max(1e-9, time.perf_counter() - file_started))
    finally:
        bar.close()
        if unrecorded:
            commit_manifest(root, manifest)
    total = sum(p["tokens"] for f, _ in jobs for p in manifest["files"][file_key(f)]["parts"].values())
    return PrepareReport(str(root), len(jobs), tokenized, new_tokens, total, time.perf_counter() - started, workers)


def commit_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Make every shard written so far durable, then record them. One os.sync() and one manifest write per
    MANIFEST_EVERY_S instead of three fsyncs and a rewrite of the (growing) manifest per file: 5,000 small files
    cost about what one file of their text costs (bench/many_files.py), not minutes."""
    os.sync()
    write_manifest(root, manifest)


RUN_MARKERS = (CONFIG_FILE, CHECKPOINTS_DIR, METRICS_FILE, STATUS_FILE, LOCK_FILE)  # what a run dir holds


def refuse_foreign_root(root: Path) -> None:
    """data.packed_dir must not be a run dir (its tokenizer/ is the run's, replacing it breaks its resume), nor
    inside one a running training holds: prepare writes and replaces files there."""
    from gpt2dist.run.lock import held_elsewhere

    markers = [name for name in RUN_MARKERS if os.path.lexists(root / name)]
    if markers:
        raise UserError(f"data.packed_dir {root} is a training run's dir (it holds {markers[0]}): prepare would "
                        "replace that run's tokenizer; set data.packed_dir to a folder of its own (e.g. RUN_DIR/data)")
    for folder in (root, root.parent):
        holder = held_elsewhere(folder)
        if holder is not None:
            raise UserError(f"data.packed_dir {root}: the run dir {folder} is in use by a running gpt2dist "
                            f"run{holder}; prepare when it has stopped, or use another data.packed_dir")


def make_root(root: Path) -> None:
    try:
        (root / "shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to data.packed_dir {root} ({exc.strerror or exc}): check that it is "
                        "writable") from None


def up_to_date(manifest: dict[str, Any], root: Path, path: Path, fraction: float) -> bool:
    """Size + mtime say "unchanged" for free; when they differ (a copy, a touch) the sha256 decides."""
    entry = manifest["files"].get(file_key(path))
    if entry is None or entry["val_fraction"] != fraction:
        return False
    try:  # a shard truncated or rewritten since is made again
        for part in entry["parts"].values():
            check_shard(root, part, np.dtype(manifest["dtype"]).itemsize)
    except UserError:
        return False
    stat = path.stat()
    if (entry["size"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
        return True
    if entry["size"] == stat.st_size and entry["sha256"] == file_sha256(path):
        entry["mtime_ns"] = stat.st_mtime_ns
        write_manifest(root, manifest)
        return True
    return False


def prepare_tokenizer(cfg: RunConfig, root: Path, train_files: list[Path], manifest: dict[str, Any] | None):
    """The prepared dir's tokenizer; built from the config (training bpe/char on the data) the first time."""
    from gpt2dist.tokenizer import build_tokenizer, load_tokenizer

    folder = root / TOKENIZER_DIR
    t = cfg.tokenizer
    if manifest is not None:
        tokenizer = load_tokenizer(folder)
        if tokenizer_fingerprint(tokenizer) != manifest["tokenizer"]["fingerprint"]:
            raise UserError(f"{folder} does not match the fingerprint in {root / MANIFEST}: the folder was "
                            "changed; delete the prepared dir and prepare again")
        if t.kind == "pretrained":
            configured = load_tokenizer(t.path or cfg.model.pretrained)
            if tokenizer_fingerprint(configured) != manifest["tokenizer"]["fingerprint"]:
                raise UserError(f"the tokenizer at {t.path or cfg.model.pretrained} differs from the one that made "
                                f"the shards in {root}: use a new data.packed_dir and prepare again")
        return tokenizer
    texts = None
    if t.kind != "pretrained":
        texts = iter_documents(train_files, cfg.data, heldout=False if heldout_fraction(cfg) > 0 else None)
    tokenizer = build_tokenizer(t.kind, path=t.path or cfg.model.pretrained, vocab_size=t.vocab_size, texts=texts)
    make_root(root)
    tmp = atomic.make_temp_dir(root, f".{TOKENIZER_DIR}-")  # ours; a tokenizer/ without a manifest (an
    try:  # interrupted first call) is replaced by publish_dir
        tokenizer.save_pretrained(str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic.publish_dir(tmp, folder)
    return tokenizer


def _temp_file(final: Path) -> Path:
    """A new empty file of ours beside `final`, with the umask's permissions (mkstemp alone gives 0600)."""
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.fchmod(fd, 0o666 & ~atomic.umask())
    os.close(fd)
    return Path(name)


def tokenize_file(cfg: RunConfig, root: Path, path: Path, fraction: float, manifest: dict[str, Any], workers: int,
                  bar) -> dict[str, Any]:
    """One source file -> its shard(s), written under temporary names and renamed when complete."""
    dtype = np.dtype(manifest["dtype"])
    parts = ["train", "heldout"] if fraction > 0 else ["train"]
    tmp_paths = {part: _temp_file(root / shard_name(path, part)) for part in parts}  # ours (mkstemp)
    counts = {part: 0 for part in parts}
    docs = 0
    stat_before, sha256 = path.stat(), file_sha256(path)  # what the manifest vouches for: the bytes read next
    init_args = (str(root / TOKENIZER_DIR / "tokenizer.json"), manifest["eos_id"], asdict(cfg.data), fraction,
                 dtype.name)
    outs = {part: open(tmp_paths[part], "wb") for part in parts}  # noqa: SIM115 - closed below, also on errors
    try:
        pool = workers if stat_before.st_size > CHUNK_CHARS else 1  # one chunk: a process pool is pure overhead
        for train_bytes, heldout_bytes, n_docs in map_chunks(read_chunks(path, cfg), init_args, pool):
            for part, blob in (("train", train_bytes), ("heldout", heldout_bytes)):
                if part in outs and blob:
                    outs[part].write(blob)
                    counts[part] += len(blob) // dtype.itemsize
            docs += n_docs
            bar.update((len(train_bytes) + len(heldout_bytes)) // dtype.itemsize)
            bar.set_postfix_str(path.name, refresh=False)
    except BaseException as exc:  # nothing half-written stays behind; finished files keep their shards
        for fh in outs.values():
            fh.close()
        for tmp in tmp_paths.values():
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot read {path} or write its shards under {root} ({exc.strerror or exc}): check the "
                            "file's permissions and the free space") from None
        raise
    for fh in outs.values():  # made durable (commit_manifest) before the manifest vouches for them
        fh.close()
    stamps = {}
    for part in parts:
        tmp_paths[part].replace(root / shard_name(path, part))
        stamps[part] = (root / shard_name(path, part)).stat().st_mtime_ns  # a shard rewritten later is refused
    return {"source": str(path), "size": stat_before.st_size, "mtime_ns": stat_before.st_mtime_ns,
            "sha256": sha256, "val_fraction": fraction, "docs": docs,
            "parts": {part: {"path": shard_name(path, part), "tokens": counts[part], "mtime_ns": stamps[part]}
                      for part in parts}}


def read_chunks(path: Path, cfg: RunConfig) -> Iterator[list[str]]:
    """The file's raw rows (as the streaming path reads them), in chunks of about CHUNK_CHARS characters."""
    chunk: list[str] = []
    size = 0
    for text in iter_file_texts(path, cfg.data):
        chunk.append(text)
        size += len(text)
        if size >= CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def map_chunks(chunks: Iterator[list[str]], init_args: tuple, workers: int) -> Iterator[tuple[bytes, bytes, int]]:
    """Tokenize chunks in order; with workers > 1 in a process pool, at most 2 x workers chunks in flight."""
    if workers <= 1:
        if _WORKER.get("args") != init_args:  # loaded once for a run of files, not per file
            _init_worker(*init_args, parallel=True)
            _WORKER["args"] = init_args
        yield from map(_tokenize_chunk, chunks)
        return
    # fork (as DataLoader workers do): a worker starts in milliseconds instead of re-importing the stack.
    # The tokenizer's Rust thread pool must not be live across the fork; workers tokenize single-threaded.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=init_args) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_tokenize_chunk, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_json: str, eos_id: int, data_cfg: dict, fraction: float, dtype: str, *,
                 parallel: bool = False) -> None:
    """Per process: load the raw `tokenizers` pipeline once (the same one the HF wrapper runs)."""
    if not parallel:  # one process per core already; Rust threads on top would oversubscribe
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    from gpt2dist.config import DataConfig

    _WORKER.update(args=None, tokenizer=Tokenizer.from_file(tokenizer_json), eos=eos_id, cfg=DataConfig(**data_cfg),
                   fraction=fraction, dtype=np.dtype(dtype))


def _tokenize_chunk(texts: list[str]) -> tuple[bytes, bytes, int]:
    """Clean, split off held-out documents, tokenize, append EOS: (train bytes, held-out bytes, documents)."""
    cfg, fraction, eos = _WORKER["cfg"], _WORKER["fraction"], _WORKER["eos"]
    docs = [t for t in (clean_text(text, cfg) for text in texts) if t.strip()]
    sides = [is_heldout(doc, fraction) for doc in docs] if fraction > 0 else [False] * len(docs)
    out: dict[bool, list[int]] = {False: [], True: []}
    tok = _WORKER["tokenizer"]
    if sum(map(len, docs)) < SMALL_CHUNK_CHARS:  # a small file's text: the batch call's thread fan-out costs more
        encoded = [tok.encode(doc, add_special_tokens=False) for doc in docs]
    else:
        encoded = tok.encode_batch(docs, add_special_tokens=False)
    for held, enc in zip(sides, encoded, strict=True):
        out[held].extend(enc.ids)
        out[held].append(eos)
    dtype = _WORKER["dtype"]
    return (np.asarray(out[False], dtype=dtype).tobytes(), np.asarray(out[True], dtype=dtype).tobytes(), len(docs))
