"""What a resume reads is ours: no link anywhere in a step dir, a train_state.json that makes sense, and a
STEP/universal/ folder that gpt2dist built (or none).

The pickle gate (pickle_gate.py) reads every file DeepSpeed will unpickle; it only protects if it sees the same
files as DeepSpeed's loaders. Those follow symbolic links (`os.listdir` + `torch.load`), `Path.rglob` does not
descend into linked folders, so a linked folder carried files past the gate. Hence: anything below a step dir
that is not a plain file or folder (a link, a FIFO, a device) refuses the checkpoint, and the gate walks the tree
with `os.walk(followlinks=False)`. A folder DeepSpeed reads that the step's manifest does not cover
(STEP/universal/) carries its own manifest, written when we convert; one without it, or not matching it, is
refused. train_state.json is covered by the manifest, but a crafted checkpoint re-signs it: its world size
decides the load path (same vs universal), so it must equal the number of saved cursors.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from gpt2dist import atomic
from gpt2dist.errors import UserError
from gpt2dist.run.layout import TRAIN_STATE_FILE
from gpt2dist.run.state import TrainState

UNIVERSAL_MANIFEST = "gpt2dist-universal.json"  # inside STEP/universal/, written before it is published


def odd_entries(root: Path) -> list[Path]:
    """Everything at or below `root` that is neither a plain file nor a plain folder (links first of all),
    found without following any link."""
    try:
        mode = os.lstat(root).st_mode
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(mode):
        return [] if stat.S_ISREG(mode) else [root]
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(folder, name)
            mode = os.lstat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                found.append(path)
    return sorted(found)


def refuse_odd_entries(root: Path) -> None:
    """UserError naming the first link (or other non-file) at or below `root`."""
    odd = odd_entries(root)
    if odd:
        kind = "a symbolic link" if odd[0].is_symlink() else "not a regular file"
        raise UserError(f"refusing to load checkpoint {root}: {odd[0]} is {kind}, and nothing a resume reads may be "
                        "reached through a link; remove it (or that step directory) -- only resume checkpoints you "
                        "trust")


def check_train_state(directory: Path) -> TrainState:
    """train_state.json of a step dir, checked for sense: its step is the one the directory is named for, its
    token count is a count, and its world size equals the number of data cursors and RNG files saved."""
    path = directory / TRAIN_STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _insane(directory, f"train_state.json is unreadable ({str(exc).splitlines()[0][:100]})") from None
    if not isinstance(state, dict):
        raise _insane(directory, "train_state.json is not an object")
    match = re.fullmatch(r"step-(\d+)", directory.name)
    step, tokens, world = state.get("step"), state.get("tokens"), state.get("world_size", 1)
    if not _count(step) or (match and step != int(match.group(1))):
        raise _insane(directory, f"train_state.json says step {step!r}, the directory is {directory.name}")
    if not _count(tokens):
        raise _insane(directory, f"train_state.json says tokens {tokens!r}")
    cursors = len(list(directory.glob("cursor-rank*.json")))
    rngs = len(list(directory.glob("rng-rank*.pt")))
    if not _count(world) or world < 1 or world != cursors or world != rngs:
        raise _insane(directory, f"train_state.json says world_size {world!r} but {cursors} data cursors and "
                                 f"{rngs} RNG files were saved")
    return TrainState.from_json(state)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _insane(directory: Path, why: str) -> UserError:
    return UserError(f"refusing to load checkpoint {directory}: {why}; remove that step directory to resume from the "
                     "previous one -- only resume checkpoints you trust")


def universal_files(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} of every file below a universal folder but its own manifest."""
    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": atomic.file_sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != UNIVERSAL_MANIFEST}


def sign_universal(folder: Path) -> None:
    """Record what the conversion wrote (called on the temporary folder, before it is published)."""
    atomic.write_json(folder / UNIVERSAL_MANIFEST, {"files": universal_files(folder)})


def check_universal(folder: Path) -> None:
    """A STEP/universal/ we are about to reuse is the one gpt2dist built: no links, and exactly the files its
    manifest lists, unchanged."""
    refuse_odd_entries(folder)
    fix = f"remove {folder} and resume again: it is rebuilt from the step's own shards"
    try:
        signed = json.loads((folder / UNIVERSAL_MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise UserError(f"refusing to load {folder}: gpt2dist did not build it (no readable {UNIVERSAL_MANIFEST}); "
                        f"{fix}") from None
    found = universal_files(folder)
    if signed != found:
        name = sorted(set(signed) ^ set(found) or {n for n in found if signed.get(n) != found[n]})[0]
        raise UserError(f"refusing to load {folder / name}: it differs from {folder.name}/{UNIVERSAL_MANIFEST} "
                        f"(gpt2dist did not write it); {fix}")
