"""World-size changes: cursors of N ranks re-split onto M ranks repeat no document and skip none -- in file
mode, in example mode, when the change switches between them, and when ranks are epochs apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gpt2dist.config import DataConfig
from gpt2dist.data.sharding import CURSOR_VERSION, reshard_cursor, shard_mode, visit_order, visit_places
from gpt2dist.data.stream import TextStream
from gpt2dist.errors import UserError


def encode(docs: list[str]) -> list[list[int]]:
    return [[ord(c) % 250 + 1 for c in doc] + [0] for doc in docs]


def write_corpus(folder: Path, n_files: int, docs=lambda f: 40) -> tuple[list[Path], list[str]]:
    """n_files .txt files; returns the files and every document id "file:row"."""
    folder.mkdir(parents=True, exist_ok=True)
    files, ids = [], []
    for f in range(n_files):
        path = folder / f"part{f:02d}.txt"
        path.write_text("\n\n".join(f"doc {f}-{d} " + "x" * (d % 7) for d in range(docs(f))) + "\n")
        files.append(path)
        ids += [f"{f}:{d}" for d in range(docs(f))]
    return files, ids


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[int, tuple[list[Path], list[str]]]:
    root = tmp_path_factory.mktemp("cursor")
    return {1: write_corpus(root / "one", 1, lambda f: 120), 3: write_corpus(root / "three", 3),
            16: write_corpus(root / "sixteen", 16, lambda f: 5 + (7 * f) % 11)}


def drain(stream: TextStream, n: int | None = None) -> list[tuple[int, str]]:
    """Consume n windows (all if None) and return the documents pulled meanwhile."""
    for count, _ in enumerate(stream, 1):
        if n is not None and count >= n:
            break
    return stream.drain_pulled()


def reshard(corpus, cfg, cursors, new: int, repeat: bool) -> list[TextStream]:
    resumed = [TextStream(corpus, cfg, encode, rank=r, world_size=new, repeat=repeat) for r in range(new)]
    for stream in resumed:
        stream.load_cursors(cursors)
    return resumed


@pytest.mark.parametrize("n_files", [1, 3, 16])
@pytest.mark.parametrize(("old", "new"), [(2, 1), (1, 2), (2, 3), (4, 2), (2, 4)])
@pytest.mark.parametrize("steps", [[3, 5, 1, 4], [10, 0, 7, 2]])
def test_reshard_covers_every_document_once(corpora, n_files, old, new, steps):
    corpus, ids = corpora[n_files]
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    streams = [TextStream(corpus, cfg, encode, rank=r, world_size=old, repeat=False) for r in range(old)]
    before = [doc for r, s in enumerate(streams) for doc in drain(s, steps[r % len(steps)] or None)]
    cursors = [json.loads(json.dumps(s.state_dict())) for s in streams]
    leftover = sum(len(c["buffer"]) for c in cursors)

    resumed = reshard(corpus, cfg, cursors, new, repeat=False)
    assert sum(len(s.buffer) for s in resumed) == leftover, "leftover tokens must move, not vanish or double"
    after = [doc for s in resumed for doc in drain(s)]

    everything = sorted(before + after)
    assert len(everything) == len(set(everything)), "a document was read twice across the change"
    assert everything == sorted((0, i) for i in ids), "a document was skipped across the change"


@pytest.mark.parametrize(("n_files", "old", "new"), [(3, 2, 1), (3, 2, 3), (3, 2, 4), (16, 4, 3), (1, 2, 1), (1, 3, 2)])
def test_reshard_with_ranks_epochs_apart(corpora, n_files, old, new):
    """Uneven shards let ranks drift whole epochs apart (file mode: 3 files on 2 ranks); the merge still covers
    every pass exactly once, in every epoch's own file order."""
    corpus, ids = corpora[n_files]
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    streams = [TextStream(corpus, cfg, encode, rank=r, world_size=old, seed=7) for r in range(old)]
    before = []
    for r, stream in enumerate(streams):
        before += drain(stream, 40 + 23 * r)
    epochs = [s.epoch for s in streams]
    if n_files == 3 and old == 2:
        assert max(epochs) - min(epochs) >= 1, "the test wants ranks in different epochs"
    cursors = [json.loads(json.dumps(s.state_dict())) for s in streams]
    resumed = reshard(corpus, cfg, cursors, new, repeat=True)
    for stream in resumed:
        assert stream.seed == 7
    last = max(epochs)
    after = []
    for stream in resumed:
        while stream.epoch <= last:
            after += drain(stream, 1)
    docs = [d for d in before + after if d[0] <= last]
    assert len(docs) == len(set(docs)), "a document was read twice in one epoch across the change"
    assert sorted(docs) == sorted((e, i) for e in range(last + 1) for i in ids)


def test_same_world_size_loads_own_cursor_exactly(corpora):
    corpus, _ = corpora[3]
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    streams = [TextStream(corpus, cfg, encode, rank=r, world_size=2, repeat=False) for r in range(2)]
    for s in streams:
        drain(s, 4)
    cursors = [s.state_dict() for s in streams]
    expected = [[w.tokens for w in s] for s in streams]
    for r in range(2):
        again = TextStream(corpus, cfg, encode, rank=r, world_size=2, repeat=False)
        again.load_cursors(cursors[::-1])  # any order
        assert [w.tokens for w in again] == expected[r]


def test_incomplete_cursor_set_is_refused(corpora):
    corpus, _ = corpora[3]
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    cursors = [TextStream(corpus, cfg, encode, rank=r, world_size=3).state_dict() for r in (0, 2)]
    with pytest.raises(UserError, match="incomplete"):
        reshard_cursor(cursors, 0, 1)


def test_old_cursor_format_is_refused(corpora):
    corpus, _ = corpora[3]
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    old = {"epoch": 0, "row": 5, "skip": [], "buffer": [], "files": [str(f) for f in corpus], "rank": 0,
           "world_size": 1, "dataset": None, "epoch_rows": None, "windows_in_epoch": 0}
    with pytest.raises(UserError, match="older gpt2dist"):
        TextStream(corpus, cfg, encode).load_cursors([old])
    with pytest.raises(UserError, match="older gpt2dist"):
        TextStream(corpus, cfg, encode, world_size=2).load_cursors([old])


def test_newer_cursor_format_is_refused_as_newer(corpora):
    """A cursor a later gpt2dist wrote is not called "older": the refusal says newer and names both versions."""
    corpus, _ = corpora[3]
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    stream = TextStream(corpus, cfg, encode)
    newer = {**stream.state_dict(), "version": CURSOR_VERSION + 1}
    with pytest.raises(UserError, match=f"newer gpt2dist \\(cursor version {CURSOR_VERSION + 1}, this one reads "
                                        f"up to {CURSOR_VERSION}\\)"):
        TextStream(corpus, cfg, encode).load_cursors([newer])


def test_mode_follows_files_and_ranks():
    assert [shard_mode(n, 4) for n in (1, 3, 4, 16)] == ["example", "example", "file", "file"]


def test_reshard_across_an_epoch_boundary(tmp_path):
    """Rank 0 has wrapped into epoch 1 (mid-file) while rank 1 is still in epoch 0: the merge covers both passes."""
    files, ids = write_corpus(tmp_path, 1, lambda f: 400)
    cfg = DataConfig(train=[str(files[0])], block_size=16)
    fast = TextStream(files, cfg, encode, rank=0, world_size=2)
    slow = TextStream(files, cfg, encode, rank=1, world_size=2)
    before = []
    while fast.epoch == 0 or fast.row < 150:
        before += drain(fast, 1)
    before += drain(slow, 3)
    assert fast.epoch == 1 and slow.epoch == 0 and 0 < fast.row < 400
    merged = TextStream(files, cfg, encode, rank=0, world_size=1)
    merged.load_cursors([fast.state_dict(), slow.state_dict()])
    after = []
    while merged.epoch < 2:
        after += drain(merged, 1)
    docs = [d for d in before + after if d[0] < 2]
    assert len(docs) == len(set(docs))
    assert sorted(docs) == sorted((e, i) for e in (0, 1) for i in ids)


def test_the_cursor_does_not_grow_with_the_files_read_to_their_end(tmp_path):
    """500 one-window files: the cursor after 450 finished files is the cursor after 50 but for its position
    (version 3 stored a row count per finished file)."""
    block = 16
    files = []
    for f in range(500):  # one document of `block` characters + EOS = exactly one window
        files.append(tmp_path / f"f{f:03d}.txt")
        files[-1].write_text(f"{f:03d}" + "y" * (block - 3))
    stream = TextStream(files, DataConfig(block_size=block), encode, repeat=False)
    cursors = {}
    for count, _ in enumerate(stream, 1):
        state = stream.state_dict()
        for mark in (50, 450):
            if count >= mark and mark not in cursors and not state["partial"]:  # no buffered unit: position only
                cursors[mark] = json.loads(json.dumps(state))
    early, late = cursors[50], cursors[450]
    assert late["index"] - early["index"] >= 400, "the later cursor is 400 more finished files in"
    changed = {key for key in early if early[key] != late[key]}
    assert changed <= {"index", "row", "piece", "windows_in_epoch"}, "only the position may differ"
    assert "rows" not in late


def _drain_to_end(streams: list[TextStream]) -> list[tuple[int, str]]:
    return [doc for s in streams for doc in drain(s)]


@pytest.mark.parametrize(("old", "middle", "new"), [(3, 2, 5), (4, 7, 1)])
def test_world_size_changes_over_hundreds_of_small_files(tmp_path, old, middle, new):
    """N -> M -> K over 300 small files: no document twice, none left out; the files the old ranks read to their
    end are not opened again (they are made unreadable before the resume), and no cursor lists them: the resumed
    ranks' cursors hold the old ranks' positions, not an entry per file."""
    corpus, ids = write_corpus(tmp_path, 300, lambda f: 1 + f % 3)
    cfg = DataConfig(train=[str(f) for f in corpus], block_size=16)
    streams = [TextStream(corpus, cfg, encode, rank=r, world_size=old, repeat=False) for r in range(old)]
    before = [doc for r, s in enumerate(streams) for doc in drain(s, 40 + 30 * r)]
    cursors = [json.loads(json.dumps(s.state_dict())) for s in streams]
    buffered = {unit[1] for c in cursors for unit in c["partial"]}
    finished = {f for c in cursors for f in range(len(corpus))
                if f % old == c["rank"] and f // old < c["index"] and f not in buffered}  # epoch 0: order = files
    assert 100 < len(finished) < 250, "the test wants many finished files and some left"
    for f in finished:
        corpus[f].write_bytes(b"\xff\xfe" * 50)  # opening it now would fail the test (not valid UTF-8)

    resumed = reshard(corpus, cfg, cursors, middle, repeat=False)
    during = [doc for s in resumed for doc in drain(s, 7)]
    cursors = [json.loads(json.dumps(s.state_dict())) for s in resumed]
    for c in cursors:  # no entry per file: the old ranks' positions say which files they had taken
        assert "rows" not in c and c["consumed"] == [] and [len(g[1]) for g in c["history"]] == [old]
    after = _drain_to_end(reshard(corpus, cfg, cursors, new, repeat=False))

    everything = sorted(before + during + after)
    assert len(everything) == len(set(everything)), "a document was read twice across the changes"
    assert everything == sorted((0, i) for i in ids), "a document was skipped across the changes"


V3 = Path(__file__).parent / "fixtures" / "cursor-v3"  # fixtures/make_v3_cursors.py, by gpt2dist at 6c0d904


@pytest.fixture
def v3_corpus(tmp_path, monkeypatch) -> tuple[list[Path], list[dict]]:
    """A copy of the fixture's files (its cursors name them relative) and the 3 ranks' version-3 cursors."""
    shutil.copytree(V3 / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    return [Path("data") / f"part{f}.txt" for f in range(8)], json.loads((V3 / "cursors.json").read_text())


def test_version3_cursors_with_row_counts_resume_as_the_old_code_went_on(v3_corpus):
    files, cursors = v3_corpus
    assert all(c["version"] == 3 and c["rows"] for c in cursors)
    for f in (0, 1):  # consumed whole before the change, no unit buffered: the upgraded cursor never opens them
        files[f].write_bytes(b"\xff\xfe" * 50)
    expected = json.loads((V3 / "next-windows.json").read_text())
    for rank in range(3):
        stream = TextStream(files, DataConfig(block_size=16), encode, rank=rank, world_size=3, repeat=False)
        stream.load_cursors(cursors)
        assert [w.tokens for w in stream] == expected[rank]


@pytest.mark.parametrize("new", [1, 2])
def test_version3_cursors_with_row_counts_reshard_exactly(v3_corpus, new):
    files, cursors = v3_corpus
    before = [tuple(doc) for doc in json.loads((V3 / "before.json").read_text())]
    after = _drain_to_end(reshard(files, DataConfig(block_size=16), cursors, new, repeat=False))
    everything = sorted(before + after)
    assert everything == sorted((0, f"{f}:{d}") for f in range(8) for d in range(40))


def test_visit_places_invert_every_ranks_visit_order():
    """The resumed rank's O(files) lookup of where each file lies in its old reader's order (Generation.reach)."""
    for n_files in (1, 3, 16, 37):
        for world in (1, 2, 3, 4, 7):
            for epoch in (0, 1, 2):
                places = visit_places(n_files, 5, epoch, world)
                for rank in range(world):
                    order = visit_order(n_files, 5, epoch, rank, world)
                    assert [int(places[f]) for f in order] == list(range(len(order)))
