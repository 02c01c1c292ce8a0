"""`gpt2dist prepare`'s output: many source files' tokens appended to shared shards, sealed a group at a time.

A group is one shard per part (NAME.train.bin, and NAME.heldout.bin once a file has a held-out part), written
under temporary names of ours. Files go in whole and in order, so each file's part is one stretch (offset,
tokens) of its group's shard. A group is sealed when its shards pass SHARD_BYTES together, and at the end:
fsync'ed, renamed into place, recorded in the manifest with its files, the manifest written. One shard and
one sync per group instead of a file, a rename and a sync per source file: 5,000 files of 1 kB cost about
what one 5 MB file costs (bench/many_files.py). Only sealed groups are in the manifest: an interrupted
prepare keeps them and re-tokenizes the rest. Shards that no file uses any more (files re-tokenized after a
change) are deleted once the manifest no longer names them -- only names of prepare's own shards. A killed
prepare's temporary shards are removed by the next one (remove_leftovers), under the prepare lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from stat import S_ISREG
from typing import IO, Any

from gpt2dist import atomic
from gpt2dist.data.manifest import SHARD_PATH, shard_name, write_manifest
from gpt2dist.run.lock import FolderLock

log = logging.getLogger(__name__)

TEMP_SHARD = re.compile(r"\.pack-\d{6}\.(train|heldout)\.bin\.[a-z0-9_]{8}\.tmp")  # start()'s mkstemp names
SHARD_BYTES = 64 << 20  # a group is sealed past this: an interrupt loses about this much tokenizing at most


class ShardWriter:
    """The open shard group: temporary files per part, and the files whose parts it holds."""

    def __init__(self, root: Path, manifest: dict[str, Any], itemsize: int):
        self.root, self.manifest, self.itemsize = root, manifest, itemsize
        self.open: dict[str, tuple[Path, IO[bytes]]] = {}  # part -> (our temporary file, its handle)
        self.tokens: dict[str, int] = {}  # part -> tokens written to the open group
        self.entries: dict[str, dict[str, Any]] = {}  # file key -> manifest entry, recorded when the group seals

    @property
    def number(self) -> int:
        return self.manifest.get("next_shard", 0)

    def start(self, part: str) -> dict[str, Any]:
        """Where a file's `part` begins: its manifest record ({path, offset, tokens}), counted up by write()."""
        if part not in self.open:
            final = self.root / shard_name(self.number, part)
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)  # ours
            os.fchmod(fd, 0o666 & ~atomic.umask())
            self.open[part] = (Path(name), os.fdopen(fd, "wb"))
            self.tokens[part] = 0
        return {"path": shard_name(self.number, part), "offset": self.tokens[part], "tokens": 0}

    def write(self, record: dict[str, Any], part: str, blob: bytes) -> None:
        self.open[part][1].write(blob)
        n = len(blob) // self.itemsize
        self.tokens[part] += n
        record["tokens"] += n

    def add(self, key: str, entry: dict[str, Any]) -> None:
        """A finished file; seals the group when it is big enough (files never straddle two groups)."""
        self.entries[key] = entry
        if sum(self.tokens.values()) * self.itemsize >= SHARD_BYTES:
            self.seal()

    def seal(self) -> None:
        """Sync and rename the group's shards, then record them and their files in the manifest."""
        if not self.open:
            return
        shards = self.manifest["shards"]
        for part, (tmp, fh) in self.open.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            name = shard_name(self.number, part)
            tmp.replace(self.root / name)  # a leftover of an interrupted seal (never recorded) is replaced
            shards[name] = {"tokens": self.tokens[part], "mtime_ns": (self.root / name).stat().st_mtime_ns}
        self.open = {}
        atomic.fsync_dir(self.root / "shards")
        replaced = set()
        for key, entry in self.entries.items():
            old = self.manifest["files"].get(key)
            if old is not None:
                replaced |= {p["path"] for p in old["parts"].values()}
            self.manifest["files"][key] = entry
        self.manifest["next_shard"] = self.number + 1
        self.entries, self.tokens = {}, {}
        used = {p["path"] for e in self.manifest["files"].values() for p in e["parts"].values()}
        unused = sorted(replaced - used)
        for name in unused:
            shards.pop(name, None)
        write_manifest(self.root, self.manifest)
        for name in unused:  # no longer named by the manifest; a shard of ours by its name and kind
            path = self.root / name
            if SHARD_PATH.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    if S_ISREG(os.lstat(path).st_mode):
                        path.unlink()

    def abort(self) -> None:
        """Remove the open group's temporary files (nothing in the manifest names them)."""
        for tmp, fh in self.open.values():
            fh.close()
            tmp.unlink(missing_ok=True)
        self.open, self.tokens, self.entries = {}, {}, {}


def remove_leftovers(root: Path, lock: FolderLock) -> None:
    """The temporary shards of a prepare that was killed (never in the manifest): ours by their exact name and
    kind. Only while we hold the lock: a running prepare's open group looks the same."""
    if not lock.held or (root / "shards").is_symlink():  # never delete through a link
        return
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root / "shards"):
            if TEMP_SHARD.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                removed += entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
    if removed:
        log.info("prepare: removed %.1f MB of temporary shards an interrupted prepare left in %s", removed / 1e6,
                 root / "shards")
