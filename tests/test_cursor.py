"""World-size changes: cursors of N ranks re-split onto M ranks repeat no document and skip none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpt2dist.config import DataConfig
from gpt2dist.cursor import reshard_cursor
from gpt2dist.data import PackedStream
from gpt2dist.errors import UserError


def encode(docs: list[str]) -> list[list[int]]:
    return [[ord(c) % 250 + 1 for c in doc] + [0] for doc in docs]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cursor")
    files = []
    for f in range(3):
        path = folder / f"part{f}.txt"
        path.write_text("\n\n".join(f"doc {f}-{d} " + "x" * (d % 7) for d in range(40)) + "\n")
        files.append(path)
    return files


def drain(stream: PackedStream, n: int | None = None) -> list[tuple[int, int]]:
    """Consume n windows (all if None) and return the documents pulled meanwhile."""
    for count, _ in enumerate(stream, 1):
        if n is not None and count >= n:
            break
    pulled, stream.pulled = stream.pulled, []
    return pulled


@pytest.mark.parametrize(("old", "new"), [(2, 1), (1, 2), (2, 3), (4, 2)])
@pytest.mark.parametrize("steps", [[3, 5, 1, 4], [10, 0, 7, 2]])
def test_reshard_covers_every_document_once(corpus, old, new, steps):
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    streams = [PackedStream(corpus, cfg, encode, rank=r, world_size=old, repeat=False) for r in range(old)]
    before = [doc for r, s in enumerate(streams) for doc in drain(s, steps[r % len(steps)] or None)]
    cursors = [json.loads(json.dumps(s.state_dict())) for s in streams]
    leftover = sum(len(c["buffer"]) for c in cursors)

    resumed = [PackedStream(corpus, cfg, encode, rank=r, world_size=new, repeat=False) for r in range(new)]
    for stream in resumed:
        stream.load_cursors(cursors)
    assert sum(len(s.buffer) for s in resumed) == leftover, "leftover tokens must move, not vanish or double"
    after = [doc for s in resumed for doc in drain(s)]

    everything = sorted(before + after)
    assert len(everything) == len(set(everything)), "a document was read twice across the change"
    assert everything == [(0, row) for row in range(3 * 40)], "a document was skipped across the change"


def test_same_world_size_loads_own_cursor_exactly(corpus):
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    streams = [PackedStream(corpus, cfg, encode, rank=r, world_size=2, repeat=False) for r in range(2)]
    for s in streams:
        drain(s, 4)
    cursors = [s.state_dict() for s in streams]
    expected = [[w.tokens for w in s] for s in streams]
    for r in range(2):
        again = PackedStream(corpus, cfg, encode, rank=r, world_size=2, repeat=False)
        again.load_cursors(cursors)
        assert [w.tokens for w in again] == expected[r]


def test_incomplete_cursor_set_is_refused(corpus):
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    cursors = [PackedStream(corpus, cfg, encode, rank=r, world_size=3).state_dict() for r in (0, 2)]
    with pytest.raises(UserError, match="incomplete"):
        reshard_cursor(cursors, 0, 1)


def test_reshard_across_an_epoch_boundary(corpus):
    """Rank 0 has wrapped into epoch 1 while rank 1 is still in epoch 0: the merge still covers both passes."""
    cfg = DataConfig(train=[str(corpus[0])], block_size=16)
    files = corpus[:1]
    fast = PackedStream(files, cfg, encode, rank=0, world_size=2)
    slow = PackedStream(files, cfg, encode, rank=1, world_size=2)
    before = []
    while fast.epoch == 0 or fast.row < 6:
        before += drain(fast, 1)
    before += drain(slow, 3)
    assert fast.epoch == 1 and slow.epoch == 0
    merged = PackedStream(files, cfg, encode, rank=0, world_size=1)
    merged.load_cursors([fast.state_dict(), slow.state_dict()])
    after = []
    while merged.epoch < 2:
        after += drain(merged, 1)
    docs = [d for d in before + after if d[0] < 2]
    assert sorted(docs) == [(e, r) for e in (0, 1) for r in range(40)]
