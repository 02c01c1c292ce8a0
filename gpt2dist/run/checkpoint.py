"""Checkpoint manager: step-NNNNNNNN/ directories written under a temporary name, a manifest written last,
an atomic rename, then `latest`; keep-last-K never deletes the newest complete one. Multi-rank aware:
every rank adds its own files, rank 0 commits.

A step directory holds the engine's files (model.safetensors, engine.pt), the model's config.json,
train_state.json and, per rank, the data cursor (cursor-rankNNNNN.json) and RNG state (rng-rankNNNNN.pt).
Loading uses safetensors and `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt2dist import atomic, dist
from gpt2dist.engines.base import Engine
from gpt2dist.errors import UserError
from gpt2dist.run.divergence import Diverged, diverged_message
from gpt2dist.run.layout import (
    CHECKPOINTS_DIR,
    CURSOR_GLOB,
    LATEST,
    MANIFEST,
    RNG_GLOB,
    TRAIN_STATE_FILE,
    cursor_file,
    rng_file,
    step_dir_name,
)
from gpt2dist.run.state import TrainState

log = logging.getLogger(__name__)

LOW_DISK_BYTES = 64 << 20  # below this, a failed write is taken for a full disk


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from (dropout uses torch's), in a form weights_only loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointManager:
    """Owns RUN_DIR/checkpoints: save, find the latest complete one, load, prune."""

    def __init__(self, run_dir: Path, keep_last: int, *, rank: int = 0, is_writer: bool = True):
        self.root = Path(run_dir) / CHECKPOINTS_DIR
        self.keep_last = keep_last
        self.rank = rank
        self.is_writer = is_writer

    # ---- finding ----
    def complete_steps(self) -> list[Path]:
        """Step directories whose manifest exists, oldest first (a manifest is written last)."""
        if not self.root.is_dir():
            return []
        dirs = [p for p in self.root.glob("step-*") if p.is_dir() and (p / MANIFEST).is_file()]
        return sorted(dirs, key=lambda p: p.name)

    def latest(self) -> Path | None:
        """The step dir `latest` names if it is complete, else the newest complete one (with a warning)."""
        pointer = self.root / LATEST
        if pointer.is_file():
            name = pointer.read_text(encoding="utf-8", errors="replace").strip()  # a damaged pointer is no crash
            candidate = self.root / name
            if name.startswith("step-") and candidate.parent == self.root and (candidate / MANIFEST).is_file():
                return candidate
            log.warning("checkpoint %s named by %s is incomplete; using the newest complete one", candidate, pointer)
        complete = self.complete_steps()
        return complete[-1] if complete else None

    def latest_verified(self) -> Path | None:
        """The newest checkpoint whose files match their manifest. A corrupt or truncated one is skipped
        with a warning naming it -- falling back to the previous complete one, never silently to step 0."""
        candidates = self.complete_steps()
        latest = self.latest()
        if latest is not None and latest in candidates:  # newest first, but never past what `latest` names
            candidates = candidates[: candidates.index(latest) + 1]
        for directory in reversed(candidates):
            try:
                self.verify(directory)
                return directory
            except UserError as exc:
                log.warning("skipping checkpoint %s: %s", directory, exc)
        if candidates:
            log.warning("no checkpoint in %s passed verification: starting from step 0", self.root)
        return None

    # ---- saving ----
    def save(self, step: int, engine: Engine, *, train_state: TrainState, cursor: dict[str, Any]) -> Path:
        """Write a complete step directory atomically; collective: every rank calls it with its own cursor.
        Weights holding NaN/inf are never saved (Diverged): the good checkpoints stay, none is pruned.

        Rank 0 makes the temporary directory; every rank writes its engine shards, data cursor and RNG
        state into it; rank 0 then writes the metadata and the manifest (last), renames the directory
        into place, points `latest` at it and prunes. A full disk or a read-only directory ends the run
        with one line; the temporary directory is removed and the previous checkpoint is untouched.
        """
        final = self.root / step_dir_name(step)
        tmp = self.root / f".tmp-{final.name}"
        if not engine.weights_finite():  # a collective; refused before anything is written or pruned
            previous = self.latest()
            raise Diverged(diverged_message(step, f"the weights hold NaN/inf, so {final.name} was not written",
                                            previous.name if previous else None))
        rng = rng_state()  # taken first and restored last: a save must not move any RNG (DeepSpeed's does)
        try:
            self._save(final, tmp, step, engine, train_state, cursor, rng)
        except Exception as exc:
            # torch.save reports a short write as RuntimeError ("unexpected pos"), safetensors as SafetensorError:
            # with the disk (nearly) full they are write errors; anything else is a real crash and goes up.
            if not isinstance(exc, OSError) and shutil.disk_usage(self.root).free > LOW_DISK_BYTES:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint"
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "disk full"
            raise UserError(f"could not write checkpoint {final.name} in {self.root} ({reason}); {kept}: free disk "
                            "space or fix the directory's permissions, then resume") from None
        set_rng_state(rng)
        return final

    def _save(self, final: Path, tmp: Path, step: int, engine: Engine, train_state: TrainState,
              cursor: dict[str, Any], rng: dict[str, Any]) -> None:
        if self.is_writer:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.is_symlink():  # a planted link: drop the name, never write into (or delete) its target
                tmp.unlink()
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        dist.barrier()
        engine.save(tmp)
        atomic.write_json(tmp / cursor_file(self.rank), cursor)
        torch.save(rng, tmp / rng_file(self.rank))
        dist.barrier()
        if self.is_writer:
            engine.model.config.to_json_file(str(tmp / "config.json"))
            atomic.write_json(tmp / TRAIN_STATE_FILE, train_state.to_json())
            self._write_manifest(tmp, step)
            # every file fsynced, then renamed; re-saving a step (a resumed run passing it again) keeps the
            # old directory until the new one is in place
            atomic.publish_dir(tmp, final)
            atomic.write_text(self.root / LATEST, final.name + "\n")
            self.prune()
        dist.barrier()

    def _write_manifest(self, directory: Path, step: int) -> None:
        files = {str(path.relative_to(directory)): {"bytes": path.stat().st_size, "sha256": atomic.file_sha256(path)}
                 for path in sorted(p for p in directory.rglob("*") if p.is_file())}
        atomic.write_json(directory / MANIFEST, {"step": step, "files": files})

    def prune(self) -> None:
        """Delete complete checkpoints beyond keep_last (oldest first) and stale temporaries."""
        complete = self.complete_steps()
        latest = self.latest()
        for old in complete[: max(0, len(complete) - self.keep_last)]:
            if old != latest:
                shutil.rmtree(old, ignore_errors=True)
        for stale in [*self.root.glob(".tmp-step-*"), *self.root.glob(".old-step-*")]:
            shutil.rmtree(stale, ignore_errors=True)

    # ---- loading ----
    def verify(self, directory: Path) -> None:
        """Check every file against the manifest (size and SHA-256) before trusting it. A manifest that cannot
        be read (empty, truncated, not JSON, not the expected object) or that leaves out a file every checkpoint
        has is the same as a corrupt file: UserError, so `latest_verified` falls back to the previous one."""
        files = read_manifest(directory)
        for name, meta in files.items():
            path = directory / name
            if not path.is_file() or path.stat().st_size != meta["bytes"] or atomic.file_sha256(path) != meta["sha256"]:
                raise corrupt(directory, f"{name} does not match its manifest")

    def load(self, directory: Path, engine: Engine, *, world_size: int = 1,
             ) -> tuple[TrainState, list[dict[str, Any]]]:
        """Restore engine + RNG (collective) from a checkpoint rank 0 verified (`latest_verified`); return
        (train_state, the data cursors of every saved rank)."""
        engine.load(directory)
        train_state = TrainState.read(directory)
        cursors = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob(CURSOR_GLOB))]
        if len(cursors) != train_state.world_size:
            raise UserError(f"checkpoint {directory} has {len(cursors)} data cursors for "
                            f"{train_state.world_size} ranks: it is incomplete; remove it to resume from "
                            "the previous one")
        rng_files = sorted(directory.glob(RNG_GLOB))
        same = directory / rng_file(self.rank)
        mine = same if world_size == len(rng_files) else rng_files[self.rank % len(rng_files)]
        set_rng_state(torch.load(mine, weights_only=True))
        return train_state, cursors


REQUIRED_FILES = ("model.safetensors", "config.json", TRAIN_STATE_FILE)  # every engine, every version writes them


def corrupt(directory: Path, why: str) -> UserError:
    return UserError(f"checkpoint {directory} is corrupt ({why}): delete that step directory to resume from the "
                     "previous one")


def read_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """The manifest's {file: {"bytes", "sha256"}}, or a UserError saying what is wrong with it."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(directory, f"{MANIFEST} is unreadable: {str(exc).splitlines()[0][:120]}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(meta, dict) and isinstance(meta.get("bytes"), int) and isinstance(meta.get("sha256"), str)
            and not Path(name).is_absolute() and ".." not in Path(name).parts for name, meta in files.items()):
        raise corrupt(directory, f"{MANIFEST} is not a gpt2dist manifest")
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise corrupt(directory, f"{MANIFEST} does not list {', '.join(missing)}")
    return files
