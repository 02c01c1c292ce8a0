"""Durable writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every writer goes through here: write a temporary sibling, fsync it, rename it over the target, fsync the
folder so the rename itself survives a power cut (rename is atomic, but only durable once its directory entry
is on disk; see ext4's data=ordered notes and SQLite's "atomic commit" page). A directory is published the same
way: every file in it fsynced, then renamed into place.

Nothing we write follows a link a stranger planted: temporary names come from `mkstemp`/`mkdtemp` (never a fixed
name that could already exist), renames replace a link rather than write through it, and files we append to
are opened with O_NOFOLLOW. What we publish follows the umask, as `save_pretrained` does (safetensors and
mkstemp make 0600 files, mkdtemp 0700 folders, which a shared project folder could not read).

Nothing here imports more than the standard library, so
every layer -- config, data, checkpoints, the launcher -- can use it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

from gpt2dist.errors import UserError


def umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status; else set and restore)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def follow_umask(path: Path) -> None:
    """Give `path` (and everything below it) the permissions a plain create would: 0o666 (files, keeping their
    execute bits) or 0o777 (folders) less the umask. Links are left alone (there are none in what we write)."""
    mask = umask()
    for item in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else [])]:
        if item.is_symlink():
            continue
        mode = item.stat().st_mode
        base = 0o777 if item.is_dir() else 0o666 | (mode & 0o111)
        os.chmod(item, base & ~mask)


def make_temp_dir(parent: Path, prefix: str) -> Path:
    """A new folder of our own beside where the result goes (`mkdtemp`: a fresh name, created by us)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def open_append(path: str | Path) -> IO[str]:
    """Open a log file for appending without following a link planted at its name (O_NOFOLLOW)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LinkRefused(f"{path} is a symbolic link: gpt2dist never writes through one; remove it") from None
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


class LinkRefused(UserError):
    """A file we write is a link planted by someone else (the message says which and the fix)."""


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
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), (0o666 & ~umask()) if mode is None else mode)
            os.fsync(fh.fileno())
        tmp.replace(path)  # replaces a link at `path`; never writes through it
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
    removed once the new one is in place (it is parked in a fresh folder of ours during the swap). The new tree's
    permissions follow the umask."""
    follow_umask(tmp)
    fsync_tree(tmp)
    if final.exists():
        old = make_temp_dir(final.parent, f".old-{final.name}-")
        final.rename(old / final.name)
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
