"""One run per run dir: rank 0 holds an exclusive flock on RUN_DIR/.lock for the run's lifetime.

A second run on the same run dir would prune the first one's temporary step dirs and interleave its
metrics, so it refuses in one line instead. flock(2) locks belong to the open file, so the kernel
drops the lock when the holder dies, however it dies (SIGKILL, OOM killer): no stale lock file to
clean up. Forked children (DataLoader workers) close their copy of the descriptor at once, or a
worker outliving its trainer would keep the run dir locked.

The lock file's content (pid, host) only serves the refusal message; it is written in place, because
replacing the file by rename would give the next run a different inode to lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
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


class RunLock:
    """The run dir's lock, taken as early as possible without writing into a folder that is not a run yet."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.enabled = enabled
        self.fd: int | None = None

    def acquire_existing(self) -> None:
        """Lock a run dir that already has a lock file (a run started here before), creating nothing."""
        if self.enabled and self.fd is None and self.path.is_file():
            self._acquire(create=False)

    def acquire(self) -> None:
        """Lock the run dir (which exists by now), creating the lock file if needed; refuse if held."""
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
                    raise UserError(f"run_dir {self.path.parent} is in use by another gpt2dist run{holder}: wait "
                                    "for it to end (or stop it), or choose another run_dir") from None
                # Some network file systems have no flock (Lustre without -o flock, old NFS): run unguarded.
                log.warning("run_dir %s: cannot lock %s (%s): a second run on this run dir would not be refused",
                            self.path.parent, self.path.name, exc.strerror or exc)
                return
            # The file may have been replaced between open and flock (a user deleting the run dir): lock the
            # file that is at the path now, or a later run would lock a different inode than ours.
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

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held_elsewhere(run_dir: str | Path) -> str | None:
    """' (pid N on HOST)' (or '') when another process holds RUN_DIR/.lock now, else None. Probes with a shared,
    non-blocking flock on a read-only descriptor: nothing is written, and the lock is not kept."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
