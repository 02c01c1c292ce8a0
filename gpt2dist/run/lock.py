"""One job per folder: an exclusive flock held for the job's lifetime.

A run's rank 0 holds RUN_DIR/.lock (RunLock): a second run on the same run dir would prune the first one's
temporary step dirs and interleave its metrics, so it refuses in one line instead. `gpt2dist prepare` holds
PACKED_DIR/.prepare.lock the same way (data/prepare.py): two prepares would write the same shard numbers.
flock(2) locks belong to the open file, so the kernel drops the lock when the holder dies, however it dies
(SIGKILL, OOM killer): no stale lock file to clean up. Forked children (DataLoader and tokenizer workers)
close their copy of the descriptor at once, or a worker outliving its parent would keep the folder locked.

The lock file's content (pid, host) only serves the refusal message; it is written in place, because
replacing the file by rename would give the next job a different inode to lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from gpt2dist.errors import UserError
from gpt2dist.run.layout import LOCK_FILE

log = logging.getLogger(__name__)

_HELD: set[int] = set()  # descriptors of locks this process holds: closed in forked children


def _close_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)  # closes the child's copy only: the parent's lock stays held
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class FolderLock:
    """An exclusive lock on one file; `refusal(holder)` is the one-line error when another process holds it."""

    def __init__(self, path: Path, refusal: Callable[[str], str], enabled: bool = True) -> None:
        self.path, self.refusal, self.enabled = path, refusal, enabled
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        """False where it is disabled or the file system has no flock (then nothing is guarded)."""
        return self.fd is not None

    def acquire_existing(self) -> None:
        """Lock where a lock file already exists (a job ran here before), creating nothing."""
        if self.enabled and self.fd is None and self.path.is_file():
            self._acquire(create=False)

    def acquire(self) -> None:
        """Lock (the folder exists by now), creating the lock file if needed; refuse if held."""
        if self.enabled and self.fd is None:
            self._acquire(create=True)

    def _acquire(self, create: bool) -> None:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        while True:
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # a planted link: the lock's pid line would overwrite its target
                    raise UserError(f"{self.path} is a symbolic link: gpt2dist never writes through one; remove "
                                    "it and start again") from None
                if not create:  # gone, or not writable: acquire() meets it again at the first write and says so
                    return
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(self.refusal(holder)) from None
                # Some network file systems have no flock (Lustre without -o flock, old NFS): run unguarded.
                log.warning("cannot lock %s (%s): a second gpt2dist job on %s would not be refused", self.path,
                            exc.strerror or exc, self.path.parent)
                return
            # The file may have been replaced between open and flock (a user deleting the folder): lock the
            # file that is at the path now, or a later job would lock a different inode than ours.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        if self.fd is not None:
            _HELD.discard(self.fd)
            os.close(self.fd)  # closing the last descriptor releases the lock
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunLock(FolderLock):
    """The run dir's lock, taken as early as possible without writing into a folder that is not a run yet."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        folder = Path(run_dir)
        super().__init__(folder / LOCK_FILE, lambda holder: (
            f"run_dir {folder} is in use by another gpt2dist run{holder}: wait for it to end (or stop it), or "
            "choose another run_dir"), enabled)


def held_elsewhere(folder: str | Path, name: str = LOCK_FILE) -> str | None:
    """' (pid N on HOST)' (or '') when another process holds FOLDER/NAME (a run dir's .lock) now, else None.
    Probes with a shared, non-blocking flock on a read-only descriptor: nothing is written, nothing kept."""
    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return _read_holder(fd) if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
    finally:
        os.close(fd)
    return None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""
