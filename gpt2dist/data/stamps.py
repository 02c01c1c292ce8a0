"""What the training files were when a checkpoint was written, so a resume does not silently go on with other data.

A data cursor is a position in the files as they were (a row of a file, a window of the stream): if a file was
deleted, or rewritten to another size, since the checkpoint, resuming would read other documents from that
position on. Each checkpoint's train_state.json records every local training file's path, size and mtime
(no hashing: a checkpoint must stay cheap); a resume refuses a missing or resized file in one line and warns
about one that only has a new mtime. Remote files (URLs) and checkpoints from before this record are not checked.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gpt2dist.errors import UserError

log = logging.getLogger(__name__)



def stamps(files: list[Any]) -> list[list[Any]]:
    """[[path, size, mtime_ns], ...] of the local files (URLs are skipped)."""
    out = []
    for file in files:
        if isinstance(file, Path):
            stat = file.stat()
            out.append([str(file.resolve()), stat.st_size, stat.st_mtime_ns])
    return out


def check_unchanged(recorded: Any, checkpoint: Path) -> None:
    """UserError when a training file `recorded` (TrainState.data_files) is gone or has another size now."""
    if not isinstance(recorded, list):
        return
    for entry in recorded:
        if not (isinstance(entry, list) and len(entry) == 3):
            continue
        path, size, mtime = Path(entry[0]), entry[1], entry[2]
        try:
            stat = path.stat()
        except OSError:
            raise UserError(f"training file {path} was deleted or moved since checkpoint {checkpoint.name}: resuming "
                            "would read other data from the saved position; restore it, or start a new run_dir") \
                from None
        if stat.st_size != size:
            raise UserError(f"training file {path} changed since checkpoint {checkpoint.name} ({size} -> "
                            f"{stat.st_size} bytes): resuming would read other data from the saved position; "
                            "restore it, or start a new run_dir") from None
        if stat.st_mtime_ns != mtime:
            log.warning("training file %s was modified since checkpoint %s (same size): resuming from its saved "
                        "position", path, checkpoint.name)
