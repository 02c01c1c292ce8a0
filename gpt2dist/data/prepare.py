"""`gpt2dist prepare`: tokenize the configured corpus once, in worker processes, into packed token shards.

Layout of data.packed_dir (default RUN_DIR/data):
  tokenizer/                 the tokenizer that made the tokens (training copies it into the run dir)
  shards/pack-N.train.bin    many source files' documents end to end (shardwriter.py), cleaned, each followed
                             by EOS: raw uint16/uint32, up to ~64 MiB a shard (a bigger file has one of its own)
  shards/pack-N.heldout.bin  their documents held out by data.val_fraction (only when data.val is empty)
  shards/HASH.*.bin          format 1's one shard per file (an older prepare's; still read, replaced when changed)
  .prepare.lock              flocked while a prepare writes: one prepare at a time, no training meanwhile
  manifest.json              rewritten atomically as each shard is sealed (shards synced first): dtype,
                             tokenizer fingerprint, text settings, per shard its tokens and mtime, and per
                             source file its size, mtime, sha256, documents and per part (shard, offset, tokens)
Re-running is incremental: a file whose size and mtime (or else its sha256) match the manifest is not read
again, a changed one is re-tokenized, a new one added. Reading raw text is one process (streaming, in file
order, so shards are deterministic); cleaning and tokenizing, the expensive part, run in `workers` processes,
many small files to a chunk. Each source's token sequence is its files' parts in file order, whichever shards
hold them: the windows training reads do not depend on how files were grouped into shards.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
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
    PREPARE_LOCK,
    TOKENIZER_DIR,
    VERSION,
    check_manifest_matches,
    check_part,
    file_key,
    heldout_fraction,
    load_manifest,
    packed_root,
    text_settings,
    token_dtype,
    tokenizer_fingerprint,
    tokenizer_record,
    write_manifest,
)
from gpt2dist.data.shardwriter import ShardWriter, remove_leftovers
from gpt2dist.data.sources import require_local
from gpt2dist.data.text import clean_text, is_heldout, iter_documents, iter_file_texts, resolve_files
from gpt2dist.errors import UserError
from gpt2dist.run.layout import CHECKPOINTS_DIR, CONFIG_FILE, LOCK_FILE, METRICS_FILE, STATUS_FILE
from gpt2dist.run.lock import FolderLock, held_elsewhere

log = logging.getLogger(__name__)

CHUNK_CHARS = 1 << 20  # text per task sent to a worker: big enough to amortize IPC, small enough to stream
SMALL_CHUNK_CHARS = 1 << 14  # below this, documents are encoded one by one (encode_batch costs ~3 ms a call)


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


@dataclass
class Job:
    """One source file to tokenize: what the manifest will vouch for (stat and sha256 taken before reading)."""

    path: Path
    key: str  # manifest.file_key(path), computed once
    fraction: float
    stat: os.stat_result | None = None
    sha256: str = ""
    docs: int = 0
    parts: dict[str, dict[str, Any]] | None = None  # part -> {path, offset, tokens} in the open shard group

    def entry(self) -> dict[str, Any]:
        assert self.stat is not None and self.parts is not None
        return {"source": str(self.path), "size": self.stat.st_size, "mtime_ns": self.stat.st_mtime_ns,
                "sha256": self.sha256, "val_fraction": self.fraction, "docs": self.docs, "parts": self.parts}


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
    with prepare_lock(root) as lock:
        if load_manifest(root) != manifest:
            raise UserError(f"data.packed_dir {root} changed while this prepare read it (another prepare finished "
                            "meanwhile): run `gpt2dist prepare` again")
        remove_leftovers(root, lock)
        if manifest is None:
            publish_tokenizer(tokenizer, root)
            manifest = {"version": VERSION, "dtype": token_dtype(len(tokenizer)).name, "vocab_size": len(tokenizer),
                        "eos_id": tokenizer.eos_token_id, "text": text_settings(cfg), "files": {}, "shards": {},
                        "next_shard": 0, "tokenizer": {"config": tokenizer_record(cfg),
                                                       "fingerprint": tokenizer_fingerprint(tokenizer)}}
            write_manifest(root, manifest)
        return prepare_files(cfg, root, manifest, train_files, val_files, workers, progress)


def prepare_files(cfg: RunConfig, root: Path, manifest: dict[str, Any], train_files: list[Path],
                  val_files: list[Path], workers: int, progress: bool | None) -> PrepareReport:
    """Tokenize the files the manifest lacks or records differently (the caller holds the prepare lock)."""
    folders: dict[str, str] = {}
    jobs = [Job(f, file_key(f, folders), heldout_fraction(cfg)) for f in train_files]
    listed = set(train_files)
    jobs += [Job(f, file_key(f, folders), 0.0) for f in val_files if f not in listed]
    started = time.perf_counter()
    checked: set[str] = set()
    fresh = [up_to_date(manifest, root, job, checked) for job in jobs]
    if "touched" in fresh:  # new mtimes, same bytes: recorded once, not once per file
        write_manifest(root, manifest)
    todo = list({job.key: job for job, state in zip(jobs, fresh, strict=True) if not state}.values())  # once each
    new_tokens = tokenize(cfg, root, todo, manifest, workers, progress)
    total = sum(p["tokens"] for job in jobs for p in manifest["files"][job.key]["parts"].values())
    return PrepareReport(str(root), len(jobs), len(todo), new_tokens, total, time.perf_counter() - started, workers)


def tokenize(cfg: RunConfig, root: Path, jobs: list[Job], manifest: dict[str, Any], workers: int,
             progress: bool | None) -> int:
    """Tokenize `jobs` in order into shared shards (ShardWriter); returns the tokens written."""
    if not jobs:
        return 0
    from tqdm import tqdm

    dtype = np.dtype(manifest["dtype"])
    writer = ShardWriter(root, manifest, dtype.itemsize)
    init_args = (str(root / TOKENIZER_DIR / "tokenizer.json"), manifest["eos_id"], asdict(cfg.data), dtype.name)
    pool = workers if text_bytes(jobs) > CHUNK_CHARS else 1  # a pool only pays for itself past one chunk
    bar = tqdm(unit="tok", unit_scale=True, desc="prepare", disable=(not progress) if progress is not None else None,
               dynamic_ncols=True)
    new_tokens, file_started = 0, time.perf_counter()
    try:
        for results in map_chunks(read_chunks(jobs, cfg), init_args, pool):
            for n, train_bytes, heldout_bytes, docs, last in results:
                job = jobs[n]
                if job.parts is None:  # its first piece: where its tokens begin in the open group
                    job.parts = {part: writer.start(part) for part in (("train", "heldout") if job.fraction > 0
                                                                       else ("train",))}
                for part, blob in (("train", train_bytes), ("heldout", heldout_bytes)):
                    if blob:
                        writer.write(job.parts[part], part, blob)
                job.docs += docs
                bar.update((len(train_bytes) + len(heldout_bytes)) // dtype.itemsize)
                if last:
                    file_tokens = sum(part["tokens"] for part in job.parts.values())
                    new_tokens += file_tokens
                    log.info("prepare: %s: %d documents, %d tokens, %.0f tokens/s", job.path, job.docs, file_tokens,
                             file_tokens / max(1e-9, time.perf_counter() - file_started))
                    bar.set_postfix_str(job.path.name, refresh=False)
                    writer.add(job.key, job.entry())
                    file_started = time.perf_counter()
        writer.seal()
    except BaseException as exc:  # nothing half-written stays behind; sealed groups keep their files
        writer.abort()
        if isinstance(exc, OSError):
            raise UserError(f"cannot write shards under {root} ({exc.strerror or exc}): check that it is writable "
                            "and the free space") from None
        raise
    finally:
        bar.close()
    return new_tokens


RUN_MARKERS = (CONFIG_FILE, CHECKPOINTS_DIR, METRICS_FILE, STATUS_FILE, LOCK_FILE)  # what a run dir holds


def refuse_foreign_root(root: Path) -> None:
    """data.packed_dir must not be a run dir (its tokenizer/ is the run's, replacing it breaks its resume), nor
    inside one a running training holds: prepare writes and replaces files there."""
    markers = [name for name in RUN_MARKERS if os.path.lexists(root / name)]
    if markers:
        raise UserError(f"data.packed_dir {root} is a training run's dir (it holds {markers[0]}): prepare would "
                        "replace that run's tokenizer; set data.packed_dir to a folder of its own (e.g. RUN_DIR/data)")
    for folder in (root, root.parent):
        holder = held_elsewhere(folder)
        if holder is not None:
            raise UserError(f"data.packed_dir {root}: the run dir {folder} is in use by a running gpt2dist "
                            f"run{holder}; prepare when it has stopped, or use another data.packed_dir")


def prepare_lock(root: Path) -> FolderLock:
    """Held while prepare writes: a second prepare on the same dir would seal the same shard numbers. A dir we
    cannot write to is not locked: an up-to-date one is still checked, and the first write says what is wrong."""
    lock = FolderLock(root / PREPARE_LOCK, lambda holder: (
        f"data.packed_dir {root} is being prepared by another gpt2dist prepare{holder}: wait for it to end, or "
        "use another data.packed_dir"))
    try:
        lock.acquire()
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    return lock


def make_root(root: Path) -> None:
    try:
        (root / "shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to data.packed_dir {root} ({exc.strerror or exc}): check that it is "
                        "writable") from None


def up_to_date(manifest: dict[str, Any], root: Path, job: Job, checked: set[str]) -> bool | str:
    """Size + mtime say "unchanged" for free; when they differ (a copy, a touch) the sha256 decides ("touched":
    the entry's mtime is updated, the caller writes the manifest). `checked` collects the shards found intact."""
    entry = manifest["files"].get(job.key)
    if entry is None or entry["val_fraction"] != job.fraction:
        return False
    try:  # a shard truncated or rewritten since is made again
        for part in entry["parts"].values():
            check_part(root, manifest["shards"], part, np.dtype(manifest["dtype"]).itemsize, checked)
    except UserError:
        return False
    stat = job.path.stat()
    if (entry["size"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
        return True
    if entry["size"] == stat.st_size and entry["sha256"] == file_sha256(job.path):
        entry["mtime_ns"] = stat.st_mtime_ns
        return "touched"
    return False


def prepare_tokenizer(cfg: RunConfig, root: Path, train_files: list[Path], manifest: dict[str, Any] | None):
    """The prepared dir's tokenizer; built from the config (training bpe/char on the data) the first time,
    written by publish_tokenizer once the prepare lock is held."""
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
    return build_tokenizer(t.kind, path=t.path or cfg.model.pretrained, vocab_size=t.vocab_size, texts=texts)


def publish_tokenizer(tokenizer, root: Path) -> None:
    """The first prepare's tokenizer/; one without a manifest (an interrupted first call) is replaced."""
    tmp = atomic.make_temp_dir(root, f".{TOKENIZER_DIR}-")  # ours
    try:
        tokenizer.save_pretrained(str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic.publish_dir(tmp, root / TOKENIZER_DIR)


def text_bytes(jobs: list[Job]) -> int:
    try:
        return sum(job.path.stat().st_size for job in jobs)
    except OSError:  # read_chunks names the file
        return 1 << 62


def read_chunks(jobs: list[Job], cfg: RunConfig) -> Iterator[list[tuple[int, float, list[str], bool]]]:
    """The files' raw rows (as the streaming path reads them) in chunks of about CHUNK_CHARS characters, many
    small files to a chunk: pieces (job index, held-out fraction, texts, whether the file ends there)."""
    chunk: list[tuple[int, float, list[str], bool]] = []
    size = 0
    for n, job in enumerate(jobs):
        try:  # what the manifest vouches for: the bytes read next
            job.stat, job.sha256 = job.path.stat(), file_sha256(job.path)
        except OSError as exc:
            raise UserError(f"cannot read {job.path} ({exc.strerror or exc}): check the file's permissions") from None
        texts: list[str] = []
        for text in iter_file_texts(job.path, cfg.data):
            texts.append(text)
            size += len(text)
            if size >= CHUNK_CHARS:
                yield [*chunk, (n, job.fraction, texts, False)]
                chunk, texts, size = [], [], 0
        chunk.append((n, job.fraction, texts, True))
        if size >= CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def map_chunks(chunks: Iterator[list], init_args: tuple, workers: int) -> Iterator[list[tuple]]:
    """Tokenize chunks in order; with workers > 1 in a process pool, at most 2 x workers chunks in flight."""
    if workers <= 1:  # in this process, with state of its own: prepares in two threads share nothing
        state = _load_worker(*init_args, parallel=True)
        yield from (_tokenize_chunk(chunk, state) for chunk in chunks)
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


_WORKER: dict[str, Any] = {}  # a pool worker process's state (_init_worker)


def _load_worker(tokenizer_json: str, eos_id: int, data_cfg: dict, dtype: str, *,
                 parallel: bool = False) -> dict[str, Any]:
    """What tokenizing a chunk needs: the raw `tokenizers` pipeline (the one the HF wrapper runs), loaded once."""
    if not parallel:  # one process per core already; Rust threads on top would oversubscribe
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    from gpt2dist.config import DataConfig

    return {"tokenizer": Tokenizer.from_file(tokenizer_json), "eos": eos_id, "cfg": DataConfig(**data_cfg),
            "dtype": np.dtype(dtype)}


def _init_worker(*init_args: Any) -> None:
    """A pool worker's initializer: its state, loaded once per process."""
    _WORKER.update(_load_worker(*init_args))


def _tokenize_chunk(pieces: list[tuple[int, float, list[str], bool]],
                    state: dict[str, Any] | None = None) -> list[tuple[int, bytes, bytes, int, bool]]:
    """Clean, split off held-out documents, tokenize (all pieces' documents in one call), append EOS: per piece
    (job index, train bytes, held-out bytes, documents, whether its file ends here). `state`: _load_worker's (the
    pool worker's own when None)."""
    state = state if state is not None else _WORKER
    cfg, eos, tok, dtype = state["cfg"], state["eos"], state["tokenizer"], state["dtype"]
    docs: list[str] = []
    owners: list[tuple[int, bool]] = []  # (piece, held out) per document
    for i, (_, fraction, texts, _) in enumerate(pieces):
        for doc in (clean_text(text, cfg) for text in texts):
            if doc.strip():
                docs.append(doc)
                owners.append((i, fraction > 0 and is_heldout(doc, fraction)))
    if sum(map(len, docs)) < SMALL_CHUNK_CHARS:  # little text: the batch call's thread fan-out costs more
        encoded = [tok.encode(doc, add_special_tokens=False) for doc in docs]
    else:
        encoded = tok.encode_batch(docs, add_special_tokens=False)
    out: list[dict[bool, list[int]]] = [{False: [], True: []} for _ in pieces]
    counts = [0] * len(pieces)
    for (i, held), enc in zip(owners, encoded, strict=True):
        out[i][held].extend(enc.ids)
        out[i][held].append(eos)
        counts[i] += 1
    return [(n, np.asarray(out[i][False], dtype=dtype).tobytes(), np.asarray(out[i][True], dtype=dtype).tobytes(),
             counts[i], last) for i, (n, _, _, last) in enumerate(pieces)]
