"""Training from `gpt2dist prepare`'s token shards: memory-mapped, shuffled, rank-disjoint, resumable in O(1).

Each source (one per data.train entry when data.weights is set, else all entries together) is one long
token sequence: its files' parts end to end, in file order (a part is a stretch of a shard that many files may
share, or a whole shard of its own in format 1: the sequence, so the windows, are the same either way).
Window w of a source is tokens [w*T, w*T + T + 1): stride T, so every token but the first is a target exactly
once per pass. The run's schedule is a pure function:

  global sample g -> source s (a fixed interleave following data.weights) -> the source's j-th sample
                  -> epoch e = j // N_s, window = permute_e(j % N_s)

where permute_e is a keyed bijection of [0, N_s) (a Feistel network, `schedule.py`) seeded by (seed, source,
epoch): every epoch is a different shuffle, computed per index, so there is no order array to build or store. Optimizer
step k trains samples [k*G, (k+1)*G) (G = global batch) whatever the world size; rank r takes its own
slices of them. The cursor is just g: resuming -- on any number of ranks -- reads nothing it skips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2dist.config import RunConfig
from gpt2dist.data.contract import Window
from gpt2dist.data.manifest import (
    MANIFEST,
    PREPARE_LOCK,
    TOKENIZER_DIR,
    check_manifest_matches,
    check_part,
    file_key,
    load_manifest,
    packed_root,
    tokenizer_fingerprint,
)
from gpt2dist.data.schedule import PackedSchedule
from gpt2dist.data.sources import require_local
from gpt2dist.data.text import resolve_files
from gpt2dist.errors import UserError
from gpt2dist.run.lock import held_elsewhere

log = logging.getLogger(__name__)


class TokenShards:
    """A source's files' parts -- stretches of shard files -- memory-mapped and read as one token sequence."""

    def __init__(self, root: Path, parts: list[dict[str, Any]], dtype: np.dtype, shards: dict[str, Any]):
        """`parts` in file order ({path, offset, tokens}); `shards`: the manifest's record of each shard file."""
        checked: set[str] = set()
        stretches: list[list] = []  # [shard, start, end]: a run of files stored one after another is one stretch
        for p in parts:
            if p["tokens"] == 0:  # an empty part is never read
                continue
            check_part(root, shards, p, dtype.itemsize, checked)
            start = p.get("offset", 0)
            if stretches and stretches[-1][0] == p["path"] and stretches[-1][2] == start:
                stretches[-1][2] = start + p["tokens"]
            else:
                stretches.append([p["path"], start, start + p["tokens"]])
        # Plain ndarray views of the maps: slicing an np.memmap subclass costs a Python-level finalizer per window.
        maps = {name: np.memmap(root / name, dtype=dtype, mode="r").view(np.ndarray) for name, _, _ in stretches}
        self.maps = [maps[name][start:end] for name, start, end in stretches]
        lengths = [len(m) for m in self.maps]
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.total = int(self.starts[-1])
        self.tokens_read = 0  # what windows cost: the resume tests count it

    def windows(self, block_size: int) -> int:
        return max(0, (self.total - 1) // block_size)

    def read(self, offsets: np.ndarray, length: int) -> np.ndarray:
        """Rows of `length` tokens starting at each offset (int64, ready for the model), across shard ends."""
        out = np.empty((len(offsets), length), dtype=np.int64)
        shard_of = np.searchsorted(self.starts, offsets, side="right") - 1
        for row, (offset, shard) in enumerate(zip(offsets.tolist(), shard_of.tolist(), strict=True)):
            filled, local = 0, offset - int(self.starts[shard])
            while filled < length:
                piece = self.maps[shard][local: local + length - filled]
                out[row, filled: filled + len(piece)] = piece
                filled += len(piece)
                shard, local = shard + 1, 0
        self.tokens_read += len(offsets) * length
        return out


class PackedBatches:
    """This rank's micro batches over the packed shards, with the same interface as the streaming TextStream."""

    def __init__(self, sources: list[TokenShards], weights: list[float], *, block_size: int, seed: int, rank: int,
                 world_size: int, micro: int, accum: int, names: list[str]):
        self.sources, self.block_size = sources, block_size
        windows = [s.windows(block_size) for s in sources]
        for name, n, w in zip(names, windows, weights, strict=True):
            if n == 0 and w > 0:
                raise UserError(f"data.train {name} holds fewer than {block_size + 1} prepared tokens (no full "
                                "window): add data or lower data.block_size")
        self.schedule = PackedSchedule(windows, weights, seed)
        self.rank, self.world_size, self.micro, self.accum = rank, world_size, micro, accum
        self.samples = 0  # global samples consumed by completed optimizer steps
        self.micro_in_step = 0

    @property
    def epoch(self) -> int:
        return self.schedule.epoch_of(self.samples)

    def drain_pulled(self) -> list[tuple[int, str]]:
        """Nothing: packed data has no document reads to trace, only windows."""
        return []

    def sample_ids(self, batch_size: int) -> np.ndarray:
        """Global indices of this rank's next micro batch: slice (micro_step x W + rank) of the step's samples."""
        first = self.samples + (self.micro_in_step * self.world_size + self.rank) * batch_size
        return np.arange(first, first + batch_size, dtype=np.int64)

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, list[Window]]:
        ids = self.sample_ids(batch_size)
        source, epoch, window = self.schedule.locate(ids)
        rows = np.empty((batch_size, self.block_size + 1), dtype=np.int64)
        for s in np.unique(source).tolist():
            sel = source == s
            rows[sel] = self.sources[s].read(window[sel] * self.block_size, self.block_size + 1)
        self.micro_in_step += 1
        if self.micro_in_step == self.accum:  # a step is done on every rank: advance by the global batch
            self.samples += self.accum * self.world_size * batch_size
            self.micro_in_step = 0
        global_ids = self.schedule.window_offset[source] + window
        windows = [Window(row, int(e), int(w)) for row, e, w in zip(rows, epoch, global_ids, strict=True)]
        return torch.from_numpy(rows), windows

    def state_dict(self) -> dict[str, Any]:
        return {"format": "packed", "samples": self.samples, "micro_in_step": self.micro_in_step,
                "windows": list(self.schedule.windows), "rank": self.rank, "world_size": self.world_size}

    def load_cursors(self, cursors: list[dict[str, Any]]) -> None:
        """Every rank saved the same global position; any world size resumes from it without reading the data."""
        if any(c.get("format") != "packed" for c in cursors):
            raise UserError("the checkpoint's data cursor is from data.format=stream: resume with data.format=stream,"
                            " or start a new run_dir")
        positions = {(c["samples"], c["micro_in_step"]) for c in cursors}
        if len(positions) != 1 or cursors[0]["micro_in_step"] != 0:
            raise UserError(f"checkpoint cursors disagree or stop mid-step ({sorted(positions)}): the checkpoint is "
                            "damaged; resume from an earlier one")
        if cursors[0]["windows"] != list(self.schedule.windows):
            log.warning("the prepared data changed since this checkpoint (windows per source %s -> %s): continuing "
                        "at sample %d of the new data's order", cursors[0]["windows"], self.schedule.windows,
                        cursors[0]["samples"])
        self.samples, self.micro_in_step = cursors[0]["samples"], 0


def source_files(cfg: RunConfig) -> list[tuple[str, list[Path]]]:
    """(name, files) per source: one per data.train entry when mixing, else one for all entries."""
    def local(patterns: list[str]) -> list[Path]:
        return require_local(resolve_files(patterns, "data.train"), "data.train", "data.format=packed")

    if cfg.data.weights:
        return [(entry, local([entry])) for entry in cfg.data.train]
    return [(", ".join(cfg.data.train), local(cfg.data.train))]


def checked_manifest(cfg: RunConfig) -> tuple[Path, dict[str, Any]]:
    root = packed_root(cfg)
    holder = held_elsewhere(root, PREPARE_LOCK)
    if holder is not None:  # its manifest and shards are changing under us
        raise UserError(f"data.packed_dir {root} is being prepared by a running gpt2dist prepare{holder}: train "
                        "when it has finished")
    manifest = load_manifest(root)
    if manifest is None:
        raise UserError(f"data.format=packed but {root / MANIFEST} does not exist: run `gpt2dist prepare` with this "
                        "config first (or set data.packed_dir)")
    check_manifest_matches(manifest, cfg, root)
    return root, manifest


def file_parts(manifest: dict[str, Any], root: Path, files: list[Path], part: str) -> list[dict[str, Any]]:
    """The prepared parts of `files`, refusing files that are missing from the manifest or changed since."""
    parts, folders = [], {}
    for path in files:
        entry = manifest["files"].get(file_key(path, folders))
        stat = path.stat()
        if entry is None or (entry["size"], entry["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
            state = "is not prepared" if entry is None else "changed since it was prepared"
            raise UserError(f"{path} {state} in {root}: run `gpt2dist prepare` again (it only tokenizes what changed)")
        if part in entry["parts"]:
            parts.append(entry["parts"][part])
    return parts


def open_train(cfg: RunConfig, rank: int, world_size: int, micro: int, accum: int) -> PackedBatches:
    root, manifest = checked_manifest(cfg)
    dtype = np.dtype(manifest["dtype"])
    names, sources = [], []
    for name, files in source_files(cfg):
        names.append(name)
        sources.append(TokenShards(root, file_parts(manifest, root, files, "train"), dtype, manifest["shards"]))
    weights = cfg.data.weights or [1.0]
    return PackedBatches(sources, weights, block_size=cfg.data.block_size, seed=cfg.seed, rank=rank,
                         world_size=world_size, micro=micro, accum=accum, names=names)


def val_factory(cfg: RunConfig):
    """A callable giving the validation windows in order (data.val files, or the held-out part), or None."""
    root, manifest = checked_manifest(cfg)
    if cfg.data.val:
        parts = file_parts(manifest, root, resolve_files(cfg.data.val, "data.val"), "train")
    elif cfg.data.val_fraction > 0:
        parts = file_parts(manifest, root, resolve_files(cfg.data.train, "data.train"), "heldout")
    else:
        return None
    shards = TokenShards(root, parts, np.dtype(manifest["dtype"]), manifest["shards"])
    block = cfg.data.block_size

    def windows() -> Iterator[Window]:
        for w in range(shards.windows(block)):
            yield Window(shards.read(np.array([w * block]), block + 1)[0].tolist(), 0, w)

    return windows


def packed_tokenizer(cfg: RunConfig, run_tokenizer_dir: Path):
    """The prepared dir's tokenizer, checked against the run's own when the run already has one (resume)."""
    from gpt2dist.tokenizer import load_tokenizer

    root, manifest = checked_manifest(cfg)
    tokenizer = load_tokenizer(root / TOKENIZER_DIR)
    if tokenizer_fingerprint(tokenizer) != manifest["tokenizer"]["fingerprint"]:
        raise UserError(f"{root / TOKENIZER_DIR} does not match {root / MANIFEST}: prepare again into a new "
                        "data.packed_dir")
    if (run_tokenizer_dir / "tokenizer_config.json").is_file():
        own = load_tokenizer(run_tokenizer_dir)
        if tokenizer_fingerprint(own) != manifest["tokenizer"]["fingerprint"]:
            raise UserError(f"the run's tokenizer {run_tokenizer_dir} differs from the one that made {root}: "
                            "train from shards prepared with this run's tokenizer, or use a new run_dir")
    return tokenizer


def packed_summary(cfg: RunConfig) -> tuple[str, str]:
    """(level, message) for the doctor: is the prepared data there, current, and big enough?"""
    try:
        root, manifest = checked_manifest(cfg)
        block = cfg.data.block_size
        counts = []
        for name, files in source_files(cfg):
            parts = file_parts(manifest, root, files, "train")
            checked: set[str] = set()
            for part in parts:  # a truncated or rewritten shard stops the run before it writes anything
                check_part(root, manifest["shards"], part, np.dtype(manifest["dtype"]).itemsize, checked)
            tokens = sum(p["tokens"] for p in parts)
            if tokens <= block:
                return "error", (f"data.train {name}: {tokens} prepared tokens, fewer than one window of "
                                 f"{block + 1}: add data or lower data.block_size")
            counts.append((tokens - 1) // block)
    except UserError as exc:
        return "error", str(exc)
    return "ok", (f"data: packed in {root} ({manifest['dtype']}), {sum(counts):,} windows of {block + 1} tokens "
                  f"in {len(counts)} source{'s' if len(counts) > 1 else ''}")
