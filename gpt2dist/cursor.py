"""Re-splitting the data cursor when a checkpoint resumes on a different number of ranks.

Each rank's cursor says where it stands in the shared row stream: (epoch, row). Rows below the
slowest rank's position were all consumed; between it and the others' positions, each old rank
consumed exactly the rows it owned. The new ranks restart from the slowest position, skip those
consumed rows, and take over the old ranks' leftover tokens -- so across the change no document is
read twice and none is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gpt2dist.errors import UserError


def _rows_between(start: tuple[int, int], stop: tuple[int, int], epoch_rows: int | None) -> Iterator[tuple[int, int]]:
    """(epoch, row) positions in [start, stop) of the row stream."""
    epoch, row = start
    while (epoch, row) < stop:
        if epoch < stop[0]:
            if epoch_rows is None:
                raise UserError("checkpoint cursors span an epoch boundary without its row count: resume on the "
                                "world size the checkpoint was written with")
            end = epoch_rows
        else:
            end = stop[1]
        for r in range(row, end):
            yield epoch, r
        epoch, row = epoch + 1, 0


def reshard_cursor(cursors: list[dict[str, Any]], rank: int, world_size: int) -> dict[str, Any]:
    """This new rank's cursor, merged from all old ranks' cursors (one per old rank, any order)."""
    cursors = sorted(cursors, key=lambda c: c["rank"])
    old_world = cursors[0]["world_size"]
    if [c["rank"] for c in cursors] != list(range(old_world)):
        raise UserError(f"checkpoint has cursors for ranks {[c['rank'] for c in cursors]} of {old_world}: "
                        "it is incomplete; resume from an earlier checkpoint")
    positions = [(c["epoch"], c["row"]) for c in cursors]
    start = min(positions)
    base = cursors[positions.index(start)]
    epoch_rows = next((c["epoch_rows"] for c in cursors if c["epoch_rows"] is not None), None)
    skip: set[tuple[int, int]] = set()
    for cursor, position in zip(cursors, positions, strict=True):
        own_skip = {(e, r) for e, r in cursor["skip"]}
        skip |= {p for p in own_skip if p >= start}
        for epoch, row in _rows_between(start, position, epoch_rows):
            if row % old_world == cursor["rank"] and (epoch, row) not in own_skip:
                skip.add((epoch, row))
    buffer = [t for c in cursors if c["rank"] % world_size == rank for t in c["buffer"]]
    return {"epoch": start[0], "row": start[1], "epoch_rows": epoch_rows, "skip": sorted(map(list, skip)),
            "windows_in_epoch": 0, "buffer": buffer, "dataset": base["dataset"], "files": base["files"],
            "rank": rank, "world_size": world_size}
