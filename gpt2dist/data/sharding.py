"""Who reads what (the sharding rules) and re-splitting the data cursor when a run resumes on other ranks.

Positions are per (epoch, file, unit), so a cursor never depends on the rows of files a rank does not read.
A unit is a document (a row of a file), or one piece of a document longer than pieces.PIECE_CHARS
characters: unit (row, piece); a short document is the single unit (row, 0). Rank r of W reads files r,
r+W, ... when there are at least as many files as ranks ("file" mode: a rank never opens another rank's
file, and reads every unit of its files); with fewer files every rank reads every file and keeps unit
(row j, piece k) of file i when (i + j + k) % W == r ("example" mode): short documents are dealt round
robin as before, and a long document's pieces are dealt round robin too, so one long document (or fewer
documents than ranks) still feeds every rank. Epoch 0 visits the files in `data.train` order, every later
epoch in a permutation drawn from (seed, epoch); rows inside a file stay in order.

A cursor (TextStream.state_dict, version 4) says: epoch, how far into this rank's visit order (`index`,
`row`, `piece`: the next unit to read), the units read but not yet wholly cut into windows (`partial`: [epoch,
file, row, piece, tokens already cut, pieces-end-with-EOS], re-tokenized on resume), and after a world-size
change the old ranks' positions (`history`: one Generation per change). It holds no token ids (but for the
leftover `buffer` a version-2 cursor carried, kept until trained on) and nothing per file: its size is bounded
by the units one refill reads and the ranks, whatever the documents' length or the number of files.

Which units an old rank had taken follows from its position alone: the visit order is a pure function of
(file count, seed, epoch, rank, world size) in both modes (each data.weights source has its own cursor and
seed; sample_by changes what a row is, not the order), so a file before its `index` was read to its end
(FILE_END, past every unit: no row count is needed), the file at `index` up to (row, piece), later ones not at
all. `reshard_cursor` turns the N old cursors into one more Generation and hands old rank r's buffered units
to new rank r % M; each new rank derives, per file it opens, the units taken before (Generation.consumed):
across the change no unit is read twice and none is left out, in either mode, when the mode switches, and over
several changes (tests: N->M over 1, 3, 16 and 300 files, N->M->K). A file taken whole is not opened.
Version-3 cursors (a row count per finished file, a `consumed` entry per (epoch, file) after a change) and
version-2 ones are upgraded on load and resume exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpt2dist.errors import UserError

CURSOR_VERSION = 4
Unit = tuple[int, int]  # (row, piece)
FILE_END: Unit = (1 << 62, 0)  # past every unit of any file: "read to its end", whatever its row count


def shard_mode(n_files: int, world_size: int) -> str:
    """'file' when every rank can get whole files of its own, 'example' (unit interleave) otherwise."""
    return "file" if n_files >= world_size else "example"


def deals_pieces(n_files: int, world_size: int) -> bool:
    """Are a long document's pieces spread over several ranks (then each piece ends with EOS: a rank's next piece
    of it is not the text that follows)?"""
    return shard_mode(n_files, world_size) == "example" and world_size > 1


def owns_file(file: int, rank: int, world_size: int, n_files: int) -> bool:
    """Does this rank read this file at all? (file mode: files r, r+W, ...; example mode: all of them)."""
    return shard_mode(n_files, world_size) == "example" or file % world_size == rank


def owns_unit(file: int, row: int, piece: int, rank: int, world_size: int, n_files: int) -> bool:
    """Does this rank train on piece `piece` of row `row` of file `file`? Disjoint and complete over the ranks."""
    if shard_mode(n_files, world_size) == "file":
        return file % world_size == rank
    return (file + row + piece) % world_size == rank


def owns_row(file: int, row: int, rank: int, world_size: int, n_files: int) -> bool:
    """Does this rank own (the first piece of) row `row`? For whole documents: does it train on that row."""
    return owns_unit(file, row, 0, rank, world_size, n_files)


def epoch_order(n_files: int, seed: int, epoch: int) -> list[int]:
    """File order of one pass: `data.train` order in epoch 0, a permutation from (seed, epoch) afterwards."""
    if epoch == 0 or n_files < 2:
        return list(range(n_files))
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch])
    return [int(i) for i in rng.permutation(n_files)]


def visit_order(n_files: int, seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """The files this rank reads in this epoch, in reading order."""
    return [i for i in epoch_order(n_files, seed, epoch) if owns_file(i, rank, world_size, n_files)]


def visit_places(n_files: int, seed: int, epoch: int, world_size: int) -> np.ndarray:
    """Each file's place in its reader's visit order, for all ranks at once: visit_order(..., r, W).index(f) for
    the rank r that reads f (any rank in example mode, where every rank's order is the epoch's). O(files)."""
    order = np.asarray(epoch_order(n_files, seed, epoch), dtype=np.int64)
    places = np.empty(n_files, dtype=np.int64)
    if shard_mode(n_files, world_size) == "example":
        places[order] = np.arange(n_files)
        return places
    readers = order % world_size  # file mode: file f is rank f % W's
    by_reader = np.argsort(readers, kind="stable")  # each rank's files together, in epoch order
    counts = np.bincount(readers, minlength=world_size)
    places[order[by_reader]] = np.arange(n_files) - np.repeat(np.cumsum(counts) - counts, counts)
    return places


@dataclass
class Consumed:
    """The units of one file in one epoch that ranks took before a world-size change: every unit below `prefix`,
    the listed `units`, and per earlier world size a frontier -- (W, each old rank's position): unit u is
    taken when u < the position of u's owner among those W ranks. Frontiers keep the set small whatever the
    number of pieces between the slowest and the fastest rank."""

    file: int
    n_files: int
    prefix: Unit = (0, 0)
    units: set[Unit] = field(default_factory=set)
    frontiers: list[tuple[int, tuple[Unit, ...]]] = field(default_factory=list)

    def __contains__(self, unit: Unit) -> bool:
        if unit < self.prefix or unit in self.units:
            return True
        row, piece = unit
        for world, reach in self.frontiers:
            owner = self.file % world if shard_mode(self.n_files, world) == "file" else \
                (self.file + row + piece) % world
            if unit < reach[owner]:
                return True
        return False

    def merge(self, other: Consumed) -> None:
        self.prefix = max(self.prefix, other.prefix)
        self.units |= other.units
        self.frontiers += [f for f in other.frontiers if f not in self.frontiers]

    def prune(self) -> None:
        self.units = {u for u in self.units if u >= self.prefix}
        self.frontiers = [(w, reach) for w, reach in self.frontiers if any(r > self.prefix for r in reach)]

    def empty(self) -> bool:
        return self.prefix == (0, 0) and not self.units and not self.frontiers

    def to_json(self, epoch: int) -> list[Any]:
        """[epoch, file, prefix row, details] (the version-2 layout, whose last item was a list of extra rows)."""
        return [epoch, self.file, self.prefix[0], {
            "piece": self.prefix[1], "units": [list(u) for u in sorted(self.units)],
            "frontiers": [[w, [list(r) for r in reach]] for w, reach in self.frontiers]}]

    @classmethod
    def from_json(cls, entry: list[Any], n_files: int) -> tuple[int, Consumed]:
        epoch, file, row, details = entry
        if isinstance(details, list):  # version 2: extra whole rows (documents were never split)
            return epoch, cls(file, n_files, (row, 0), {(r, 0) for r in details})
        return epoch, cls(file, n_files, (row, details["piece"]), {(r, k) for r, k in details["units"]},
                          [(w, tuple((r, k) for r, k in reach)) for w, reach in details["frontiers"]])


@dataclass(frozen=True)
class BufferedUnit:
    """A unit whose tokens were in the buffer when the cursor was taken, named instead of stored: a resume
    re-tokenizes piece `piece` of row `row` of file `file` and drops its first `skip` tokens (already cut).
    `deal`: its document's pieces were dealt over several ranks, so each piece ends with EOS."""

    epoch: int
    file: int
    row: int
    piece: int
    skip: int
    deal: bool

    @classmethod
    def from_json(cls, entry: list[Any]) -> BufferedUnit:
        """A cursor's `partial` entry: [epoch, file, row, piece, skip, deal]."""
        epoch, file, row, piece, skip, deal = entry
        return cls(epoch, file, row, piece, skip, deal)

    def to_json(self) -> list[Any]:
        return [self.epoch, self.file, self.row, self.piece, self.skip, self.deal]


FILES_LISTED = 64  # a cursor lists the training files by name up to this many, then by count and digest


def files_record(files: list[Any]) -> list[str] | dict[str, Any]:
    """What a cursor stores of the resolved file list: the names, or for many files (a directory of thousands)
    their count and a sha256 of the names in order -- a few bytes instead of every path in every checkpoint."""
    names = [str(f) for f in files]
    if len(names) <= FILES_LISTED:
        return names
    return {"count": len(names), "sha256": hashlib.sha256("\n".join(names).encode("utf-8", "surrogatepass"))
            .hexdigest()}


def cursor_files(cursor: dict[str, Any]) -> int:
    """How many files the cursor's run read (either layout of files_record)."""
    files = cursor["files"]
    return files["count"] if isinstance(files, dict) else len(files)


def upgrade_cursor(cursor: dict[str, Any]) -> dict[str, Any]:
    """A TextStream cursor in the current layout: version 4 as is; version 2 (a list of leftover tokens, no pieces:
    its run read documents whole, `piece_chars` None keeps it so) and version 3 (row counts of finished files)
    upgraded; anything older refused, and a newer one (a later gpt2dist wrote it) refused as newer."""
    version = cursor.get("version")
    if version == CURSOR_VERSION:
        return cursor
    if isinstance(version, int) and version > CURSOR_VERSION:
        raise UserError(f"the checkpoint's data cursor was written by a newer gpt2dist (cursor version {version}, "
                        f"this one reads up to {CURSOR_VERSION}): resume with that version (pip install -U gpt2dist) "
                        "or start a new run_dir")
    if version not in (2, 3):
        raise UserError("the checkpoint's data cursor was written by an older gpt2dist (global row positions): "
                        "resume with that version or start a new run_dir")
    if version == 2:
        cursor = {**cursor, "piece": 0, "partial": [], "piece_chars": None,
                  "consumed": [[e, i, p, {"piece": 0, "units": [[r, 0] for r in rows], "frontiers": []}]
                               for e, i, p, rows in cursor["consumed"]]}
    # A consumed prefix that reaches its file's row count is the whole file: FILE_END says so without the count.
    rows = {int(i): n for i, n in cursor["rows"].items()}
    consumed = [[e, i, FILE_END[0], {**d, "piece": 0}] if i in rows and (p, d["piece"]) >= (rows[i], 0)
                else [e, i, p, d] for e, i, p, d in cursor["consumed"]]
    return {k: v for k, v in cursor.items() if k != "rows"} | {"version": CURSOR_VERSION, "consumed": consumed,
                                                                "history": []}


Position = tuple[int, int, int, int]  # (epoch, index, row, piece): the next unit a rank would read


@dataclass
class Generation:
    """The `world` ranks' positions when the run changed world size: what they had read stays taken. A unit is
    taken when its owner among them had passed it; which files an owner had passed follows from its (epoch,
    index), its visit order being a pure function of (file count, seed, epoch, rank, world). A cursor carries one
    per world-size change still reaching its epoch -- O(ranks) -- instead of a consumed entry per file."""

    world: int
    positions: tuple[Position, ...]
    _places: tuple[int, np.ndarray | None] = field(default=(-1, None), compare=False, repr=False)

    def reach(self, n_files: int, seed: int, epoch: int, file: int, rank: int) -> Unit:
        """How far old rank `rank` had read `file` in `epoch` (it owns the file): every unit before this is taken."""
        at, index, row, piece = self.positions[rank]
        if epoch != at:
            return FILE_END if epoch < at else (0, 0)
        if self._places[0] != epoch:  # one epoch's places at a time: 8 B a file
            self._places = (epoch, visit_places(n_files, seed, epoch, self.world))
        k = int(self._places[1][file])
        return FILE_END if k < index else (row, piece) if k == index else (0, 0)

    def consumed(self, n_files: int, seed: int, epoch: int, file: int) -> Consumed:
        """The units of `file` in `epoch` these ranks took."""
        reach = {r: self.reach(n_files, seed, epoch, file, r) for r in range(self.world)
                 if owns_file(file, r, self.world, n_files)}
        # Every unit below the slowest reader's position was read through by its owner, hence consumed; above it,
        # a unit is consumed when its owner had passed it (the frontier).
        taken = Consumed(file, n_files, min(reach.values()),
                         frontiers=[(self.world, tuple(reach.get(r, (0, 0)) for r in range(self.world)))])
        taken.prune()
        return taken

    def took_from(self, epoch: int) -> bool:
        """Did these ranks take anything in `epoch` or later?"""
        return any(p > (epoch, 0, 0, 0) for p in self.positions)

    def to_json(self) -> list[Any]:
        return [self.world, [list(p) for p in self.positions]]

    @classmethod
    def from_json(cls, entry: list[Any]) -> Generation:
        world, positions = entry
        return cls(world, tuple(tuple(p) for p in positions))


def reshard_cursor(cursors: list[dict[str, Any]], rank: int, world_size: int) -> dict[str, Any]:
    """This new rank's cursor, merged from all old ranks' cursors (one per old rank, any order): their positions
    become one more Generation; the consumed entries of older cursors (version 3 and before) in this rank's files
    are merged per (epoch, file)."""
    cursors = sorted((upgrade_cursor(c) for c in cursors), key=lambda c: c["rank"])
    old_world = cursors[0]["world_size"]
    if [c["rank"] for c in cursors] != list(range(old_world)):
        raise UserError(f"checkpoint has cursors for ranks {[c['rank'] for c in cursors]} of {old_world}: "
                        "it is incomplete; resume from an earlier checkpoint")
    n_files = cursor_files(cursors[0])
    first = min(c["epoch"] for c in cursors)
    history = [[old_world, [[c["epoch"], c["index"], c["row"], c["piece"]] for c in cursors]]]
    for entry in (g for c in cursors for g in c["history"]):  # every old rank carries the same earlier ones
        if entry not in history:
            history.append(entry)
    history = [g for g in history if Generation.from_json(g).took_from(first)]
    merged: dict[tuple[int, int], Consumed] = {}
    for c in cursors:
        for entry in c["consumed"]:
            epoch, earlier = Consumed.from_json(entry, n_files)
            if epoch >= first and owns_file(earlier.file, rank, world_size, n_files):
                merged.setdefault((epoch, earlier.file), Consumed(earlier.file, n_files)).merge(earlier)
    consumed = []
    for (epoch, _), entry in sorted(merged.items(), key=lambda kv: kv[0]):
        entry.prune()
        if not entry.empty():
            consumed.append(entry.to_json(epoch))
    mine = [c for c in cursors if c["rank"] % world_size == rank]  # old rank r's unfinished tokens go to r % M
    return {"version": CURSOR_VERSION, "files": cursors[0]["files"], "rank": rank, "world_size": world_size,
            "mode": shard_mode(n_files, world_size), "seed": cursors[0]["seed"], "epoch": first, "index": 0,
            "row": 0, "piece": 0, "windows_in_epoch": 0, "piece_chars": cursors[0]["piece_chars"],
            "buffer": [t for c in mine for t in c["buffer"]], "partial": [p for c in mine for p in c["partial"]],
            "consumed": consumed, "history": history}
