"""Durable writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every writer goes through here: write a temporary sibling, fsync it, rename it over the target, fsync the
folder so the rename itself survives a power cut (rename is atomic, but only durable once its directory entry
is on disk; see ext4's data=ordered notes and SQLite's "atomic commit" page). A directory is published the same
way: every file in it fsynced, then renamed into place. Nothing here imports more than the standard library, so
every layer -- config, data, checkpoints, the launcher -- can use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file below `path` and every folder in it (before the tree is renamed into place)."""
    for folder, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(folder))


def write_bytes(path: str | Path, data: bytes, *, mode: int | None = None) -> Path:
    """Write `data` to `path` atomically and durably; `mode` sets the permission bits (e.g. 0o755)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            tmp.chmod(mode)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str, *, mode: int | None = None) -> Path:
    return write_bytes(path, text.encode("utf-8"), mode=mode)


def write_json(path: str | Path, obj: Any, **dump_kwargs: Any) -> Path:
    return write_text(path, json.dumps(obj, **dump_kwargs))


def publish_dir(tmp: Path, final: Path) -> Path:
    """Rename a finished temporary folder to `final`, durably. An existing `final` is replaced, and is only
    removed once the new one is in place (it is parked under a temporary name during the swap)."""
    fsync_tree(tmp)
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    fsync_dir(final.parent)
    return final


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
