"""Who reads what (the sharding rules) and re-splitting the data cursor when a run resumes on other ranks.

Positions are per (epoch, file, row-in-file), so a cursor never depends on the rows of files a rank does
not read. Rank r of W reads files r, r+W, ... when there are at least as many files as ranks ("file"
mode: a rank never opens another rank's file); with fewer files every rank reads every file and keeps
row j of file i when (i + j) % W == r ("example" mode). Epoch 0 visits the files in `data.train` order,
every later epoch in a permutation drawn from (seed, epoch); rows inside a file stay in order.

A cursor (TextStream.state_dict) says: epoch, how far into this rank's visit order (`index`, `row`),
the row counts of files read to their end, the rows other ranks consumed before a world-size change
(`consumed`: [epoch, file, prefix, extra rows]), the leftover tokens and the windows of the epoch.
`reshard_cursor` merges N old cursors into the consumed set of every (epoch, file) and hands each of the
M new ranks the part of it in its share: across the change no document is read twice and none is left out,
in either mode and when the mode switches (the tests cover N->M over 1, 3 and 16 files).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpt2dist.errors import UserError

CURSOR_VERSION = 2


def shard_mode(n_files: int, world_size: int) -> str:
    """'file' when every rank can get whole files of its own, 'example' (row interleave) otherwise."""
    return "file" if n_files >= world_size else "example"


def owns_file(file: int, rank: int, world_size: int, n_files: int) -> bool:
    """Does this rank read this file at all? (file mode: files r, r+W, ...; example mode: all of them)."""
    return shard_mode(n_files, world_size) == "example" or file % world_size == rank


def owns_row(file: int, row: int, rank: int, world_size: int, n_files: int) -> bool:
    """Does this rank train on row `row` of file `file`? Disjoint and complete over the ranks."""
    if shard_mode(n_files, world_size) == "file":
        return file % world_size == rank
    return (file + row) % world_size == rank


def epoch_order(n_files: int, seed: int, epoch: int) -> list[int]:
    """File order of one pass: `data.train` order in epoch 0, a permutation from (seed, epoch) afterwards."""
    if epoch == 0 or n_files < 2:
        return list(range(n_files))
    rng = np.random.default_rng([seed & 0xFFFFFFFF, epoch])
    return [int(i) for i in rng.permutation(n_files)]


def visit_order(n_files: int, seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """The files this rank reads in this epoch, in reading order."""
    return [i for i in epoch_order(n_files, seed, epoch) if owns_file(i, rank, world_size, n_files)]


def _position(cursor: dict[str, Any], epoch: int, file: int, counts: dict[int, int]) -> int:
    """How many rows of `file` this old rank had read through in `epoch` (0 .. the file's row count)."""
    n_files = len(cursor["files"])
    if not owns_file(file, cursor["rank"], cursor["world_size"], n_files) or epoch > cursor["epoch"]:
        return 0
    order = visit_order(n_files, cursor["seed"], epoch, cursor["rank"], cursor["world_size"])
    k = order.index(file)
    if epoch == cursor["epoch"] and k >= cursor["index"]:
        return cursor["row"] if k == cursor["index"] else 0
    if file not in counts:  # every finished file's count is recorded; a missing one means a damaged cursor
        raise UserError(f"checkpoint cursor of rank {cursor['rank']} lacks the row count of {cursor['files'][file]}: "
                        "resume on the world size the checkpoint was written with")
    return counts[file]


def _consumed(cursors: list[dict[str, Any]], epoch: int, file: int, counts: dict[int, int]) -> tuple[int, set[int]]:
    """Rows of `file` consumed in `epoch` by any old rank, as (prefix, extra rows >= prefix)."""
    n_files = len(cursors[0]["files"])
    readers = [(c, _position(c, epoch, file, counts)) for c in cursors
               if owns_file(file, c["rank"], c["world_size"], n_files)]
    # Every row below the slowest reader's position was read through by its owner, hence consumed.
    prefix = min(pos for _, pos in readers)
    reach = {c["rank"]: pos for c, pos in readers}
    old_world = cursors[0]["world_size"]
    extra = {j for j in range(prefix, max(reach.values()))
             for owner in range(old_world) if owns_row(file, j, owner, old_world, n_files) and j < reach.get(owner, 0)}
    for c in cursors:  # rows other ranks consumed before an earlier world-size change
        for e, i, p, rows in c["consumed"]:
            if (e, i) == (epoch, file):
                prefix = max(prefix, p)
                extra |= set(rows)
    while prefix in extra:
        prefix += 1
    return prefix, {j for j in extra if j > prefix}


def reshard_cursor(cursors: list[dict[str, Any]], rank: int, world_size: int) -> dict[str, Any]:
    """This new rank's cursor, merged from all old ranks' cursors (one per old rank, any order)."""
    if any(c.get("version") != CURSOR_VERSION for c in cursors):
        raise UserError("the checkpoint's data cursor was written by an older gpt2dist (global row positions): "
                        "resume it on the world size it was written with, or start a new run_dir")
    cursors = sorted(cursors, key=lambda c: c["rank"])
    old_world = cursors[0]["world_size"]
    if [c["rank"] for c in cursors] != list(range(old_world)):
        raise UserError(f"checkpoint has cursors for ranks {[c['rank'] for c in cursors]} of {old_world}: "
                        "it is incomplete; resume from an earlier checkpoint")
    n_files = len(cursors[0]["files"])
    counts = {int(i): n for c in cursors for i, n in c["rows"].items()}
    first = min(c["epoch"] for c in cursors)
    last = max([c["epoch"] for c in cursors] + [e for c in cursors for e, *_ in c["consumed"]])
    consumed = []
    for epoch in range(first, last + 1):
        for file in range(n_files):
            if not owns_file(file, rank, world_size, n_files):
                continue
            prefix, extra = _consumed(cursors, epoch, file, counts)
            if prefix or extra:
                consumed.append([epoch, file, prefix, sorted(extra)])
    buffer = [t for c in cursors if c["rank"] % world_size == rank for t in c["buffer"]]
    return {"version": CURSOR_VERSION, "files": cursors[0]["files"], "rank": rank, "world_size": world_size,
            "mode": shard_mode(n_files, world_size), "seed": cursors[0]["seed"], "epoch": first, "index": 0,
            "row": 0, "windows_in_epoch": 0, "buffer": buffer, "consumed": consumed,
            "rows": {str(i): n for i, n in sorted(counts.items()) if owns_file(i, rank, world_size, n_files)}}
