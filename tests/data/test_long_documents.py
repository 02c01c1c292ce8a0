"""The streaming path at any document length (issue 13): cutting a window costs O(window) work whatever the
document's length, the cursor's size does not grow with it, a long document is read in pieces with exact resume,
one long document feeds every rank (dealt in pieces) with exact N -> M resume, and version-2 cursors (token
lists) still resume exactly.

Tokens are ord(c) % 250 + 1 and EOS 0 (`Chars`), so expected streams are computed independently of the code
under test; `Chars.piece_chars` plays DocumentEncoder's role (a char tokenizer splits exactly anywhere).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gpt2dist.config import DataConfig
from gpt2dist.data.pieces import piece_starts, piece_text
from gpt2dist.data.stream import TextStream
from gpt2dist.demo_corpus import generate_stories


class Chars:
    """ids of each text + EOS; pieces of `piece_chars` characters (None: whole documents)."""

    def __init__(self, piece_chars: int | None):
        self.piece_chars = piece_chars

    def __call__(self, docs: list[str]) -> list[list[int]]:
        return [[ord(c) % 250 + 1 for c in doc] + [0] for doc in docs]


def ids(text: str) -> list[int]:
    return [ord(c) % 250 + 1 for c in text]


def story_text(chars: int, seed: int = 0) -> str:
    """One long document of about `chars` characters: stories joined by spaces (no blank line)."""
    out, n = [], 0
    for story in generate_stories(max(4, chars // 300), seed=seed):
        out.append(story.replace("\n", " "))
        n += len(out[-1]) + 1
        if n >= chars:
            break
    return " ".join(out)[:chars].rstrip()


def write_docs(folder: Path, docs: list[str]) -> list[Path]:
    """One document per file (read with data.sample_by=document)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, doc in enumerate(docs):
        path = folder / f"doc{i:02d}.txt"
        path.write_text(doc, encoding="utf-8")
        paths.append(path)
    return paths


def roundtrip(state: dict) -> dict:
    return json.loads(json.dumps(state))


# ------------------------------------------------------------------------------------------------- work and size
@pytest.mark.parametrize("piece_chars", [None, 4096])
def test_work_per_window_is_flat_in_document_length(tmp_path, piece_chars):
    """Tokens copied by buffer refills per window cut, for one document of 2k, 20k and 200k characters: flat, and
    below two windows (the window itself and the remainder carried over at a refill) -- a list cut as
    `buf[:w], buf[w:]` copied the whole remainder per window, n^2 / (2w) tokens per document."""
    window = 65
    per_window = {}
    for chars in (2_000, 20_000, 200_000):
        files = write_docs(tmp_path / f"{chars}-{piece_chars}", [story_text(chars)])
        stream = TextStream(files, DataConfig(block_size=window - 1, sample_by="document"), Chars(piece_chars),
                            repeat=False)
        windows = sum(1 for _ in stream)
        assert windows == (chars // window) or abs(windows - chars // window) <= 1
        per_window[chars] = stream.tokens.copied / windows
    assert max(per_window.values()) <= 2 * window, per_window
    assert max(per_window.values()) - min(per_window.values()) <= 0.1 * window, per_window


@pytest.mark.parametrize("piece_chars", [None, 4096])
def test_cursor_size_does_not_grow_with_document_length(tmp_path, piece_chars):
    sizes = {}
    for chars in (10_000, 100_000, 1_000_000):
        files = write_docs(tmp_path / f"{chars}-{piece_chars}", [story_text(chars)])
        stream = TextStream(files, DataConfig(block_size=127, sample_by="document"), Chars(piece_chars))
        for _ in range(30):  # mid-document: most of it is read (or, in pieces, one piece) and not yet trained on
            next(stream)
        assert len(stream.buffer) > (chars // 2 if piece_chars is None else 1000)
        sizes[chars] = len(json.dumps(stream.state_dict()))
    assert max(sizes.values()) < 2000 and max(sizes.values()) - min(sizes.values()) < 32, sizes


# ------------------------------------------------------------------------------------------------- exact resume
def expected_stream(docs: list[str], piece_chars: int | None, world_size: int, rank: int) -> list[int]:
    """A rank's token stream in example sharding over one-document files: piece k of file i when
    (i + k) % W == rank; every dealt piece ends with EOS when W > 1, else only a document's last."""
    out = []
    for i, doc in enumerate(docs):
        starts = piece_starts(doc, piece_chars)
        for k in range(len(starts)):
            if len(docs) >= world_size:
                if i % world_size != rank:
                    break
            elif (i + k) % world_size != rank:
                continue
            eos = k == len(starts) - 1 or 1 < world_size > len(docs)
            out += ids(piece_text(doc, starts, k)) + ([0] if eos else [])
    return out


def test_a_long_document_streams_in_pieces_and_resumes_exactly_anywhere(tmp_path):
    docs = [story_text(30_000, seed=1), story_text(5_000, seed=2)]
    files = write_docs(tmp_path, docs)
    cfg = DataConfig(block_size=63, sample_by="document")
    encode = Chars(1000)
    reference = [w.tokens for w in TextStream(files, cfg, encode, repeat=False)]
    flat = expected_stream(docs, 1000, 1, 0)
    assert [t for w in reference for t in w] == flat[: len(reference) * 64]
    for k in (1, 7, 15, 16, 17, 250, len(reference) // 2, len(reference) - 1):
        stream = TextStream(files, cfg, encode, repeat=False)
        head = [next(stream).tokens for _ in range(k)]
        state = roundtrip(stream.state_dict())
        assert state["partial"] and all(len(p) == 6 for p in state["partial"])
        resumed = TextStream(files, cfg, encode, repeat=False)
        resumed.load_state_dict(state)
        assert head + [w.tokens for w in resumed] == reference, f"resume after {k} windows"


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_one_long_document_feeds_every_rank(tmp_path, world_size):
    doc = story_text(40_000, seed=4)
    files = write_docs(tmp_path, [doc])
    cfg = DataConfig(block_size=31, sample_by="document")
    n_pieces = len(piece_starts(doc, 2000))
    taken: Counter[str] = Counter()
    for rank in range(world_size):
        stream = TextStream(files, cfg, Chars(2000), rank=rank, world_size=world_size, repeat=False)
        windows = [w.tokens for w in stream]
        assert len(windows) * 32 >= 0.7 * len(doc) / world_size, "a rank got too little of the document"
        assert [t for w in windows for t in w] + stream.buffer.tolist() == expected_stream([doc], 2000, world_size,
                                                                                             rank)
        taken.update(doc_id for _, doc_id in stream.drain_pulled())
    assert taken == Counter(f"0:0#{k}" for k in range(n_pieces)), "each piece on exactly one rank"


def drain(stream: TextStream, n: int | None = None) -> tuple[list[int], list[str]]:
    """Tokens of n windows (all, and the leftover, if None) and the units pulled meanwhile."""
    tokens = []
    for count, window in enumerate(stream, 1):
        tokens += window.tokens
        if n is not None and count >= n:
            break
    if n is None:
        tokens += stream.buffer.tolist()
    pulled = [d for _, d in stream.drain_pulled()]
    return tokens, pulled


@pytest.mark.parametrize("worlds", [(2, 3), (3, 1), (1, 2), (4, 2), (3, 2, 4, 1), (2, 5, 3, 1)])
def test_world_size_changes_inside_long_documents_read_every_piece_once(tmp_path, worlds):
    """Ranks stopped mid-piece, several pieces apart, re-split (once, or three times in a row): every token of every
    piece is trained on exactly once across the changes (the multiset of the pass's tokens matches), none twice."""
    docs = [story_text(25_000, seed=5), story_text(12_000, seed=6)]
    files = write_docs(tmp_path, docs)
    cfg = DataConfig(block_size=47, sample_by="document")
    encode = Chars(1500)
    tokens, units, cursors = [], [], None
    for stage, world in enumerate(worlds):
        streams = [TextStream(files, cfg, encode, rank=r, world_size=world, repeat=False) for r in range(world)]
        for r, stream in enumerate(streams):
            if cursors is not None:
                stream.load_cursors(cursors)
            got, pulled = drain(stream, None if stage == len(worlds) - 1 else 13 + 29 * r)
            tokens += got
            units += pulled
        cursors = [roundtrip(s.state_dict()) for s in streams]
    assert len(units) == len(set(units)), "a piece was read twice across the changes"
    assert set(units) == {f"{i}:0#{k}" for i, d in enumerate(docs) for k in range(len(piece_starts(d, 1500)))}
    assert Counter(t for t in tokens if t != 0) == Counter(t for d in docs for t in ids(d)), \
        "tokens were lost or duplicated across the changes"
    assert max(len(json.dumps(c)) for c in cursors) < 2000


def test_the_worker_path_gives_the_same_windows_with_a_small_cursor(tmp_path):
    """The DataLoader worker runs the same stream (O(window) cuts): its batches equal the in-process ones, and the
    cursor that travels with every batch is a few hundred bytes, not the buffered document."""
    from gpt2dist.data.build import make_train_stream
    from gpt2dist.data.prefetch import PrefetchedStream

    files = write_docs(tmp_path, [story_text(120_000, seed=8)])
    inproc = TextStream(files, DataConfig(block_size=63, sample_by="document"), Chars(None))
    expected = [inproc.next_batch(4)[0].tolist() for _ in range(30)]
    worker = make_train_stream(files, DataConfig(block_size=63, sample_by="document", num_workers=1), Chars(None))
    assert isinstance(worker, PrefetchedStream)
    got = []
    for _ in range(30):
        got.append(worker.next_batch(4)[0].tolist())
        assert len(json.dumps(worker.state_dict())) < 1000
    worker.close()
    assert got == expected


# ------------------------------------------------------------------------------------------------- version 2
def as_version2(state: dict, stream: TextStream) -> dict:
    """The cursor the code before version 3 wrote at this point: the same position, the buffer as token ids."""
    assert state["piece_chars"] is None and state["piece"] == 0 and not state["history"]
    consumed = [[e, i, p, [r for r, _ in d["units"]]] for e, i, p, d in state["consumed"]]
    old = {k: v for k, v in state.items() if k not in ("piece", "partial", "piece_chars", "history")}
    rows = {str(f): 1 for f in stream.visit()[:state["index"]]}  # finished files' row counts: one document each
    return {**old, "version": 2, "buffer": stream.buffer.tolist(), "consumed": consumed, "rows": rows}


def test_version2_cursors_resume_exactly_and_reshard(tmp_path):
    docs = [story_text(9_000, seed=s) for s in range(3)]
    files = write_docs(tmp_path, docs)
    cfg = DataConfig(block_size=31, sample_by="document")
    reference = [w.tokens for w in TextStream(files, cfg, Chars(None), repeat=False)]
    stream = TextStream(files, cfg, Chars(None), repeat=False)
    head = [next(stream).tokens for _ in range(300)]
    v2 = roundtrip(as_version2(stream.state_dict(), stream))
    assert len(v2["buffer"]) > 1000
    resumed = TextStream(files, cfg, Chars(4096), repeat=False)  # the cursor's whole-document reading wins
    resumed.load_cursors([v2])
    assert head + [w.tokens for w in resumed] == reference

    two = [TextStream(files, cfg, Chars(None), rank=r, world_size=2, repeat=False) for r in range(2)]
    spent = [t for r, s in enumerate(two) for t in drain(s, 50 + 90 * r)[0]]
    cursors = [roundtrip(as_version2(s.state_dict(), s)) for s in two]
    one = TextStream(files, cfg, Chars(None), repeat=False)
    one.load_cursors(cursors)
    rest = drain(one)[0]
    assert Counter(spent + rest) == Counter(t for d in docs for t in ids(d) + [0])


# ------------------------------------------------------------------------------------------------- real ranks
@pytest.mark.slow
def test_real_two_rank_run_on_one_long_document_resumes_on_one_rank(tmp_path, warm_cli):
    """torchrun on 2 real ranks trains on a corpus that is one document (refused before: "rank 1 would get
    none"), then resumes on 1 rank: every piece is read at most once across the change."""
    from helpers import read_metrics, tiny_config, write_yaml
    from ranks import read_trace_docs, run_ranks

    files = write_docs(tmp_path / "data", [story_text(400_000, seed=9)])
    raw = tiny_config(tmp_path / "run", [str(files[0])], data={"block_size": 64, "sample_by": "document"},
                      train={"max_steps": 4, "micro_batch_size": 4}, checkpoint={"every": 2, "keep_last": 2},
                      logging={"tensorboard": False, "progress": "lines", "trace_windows": True})
    config = write_yaml(tmp_path / "run.yaml", raw)
    overrides = ["distributed.backend=deepspeed", "distributed.zero_stage=1"]
    run_ranks("torchrun", config, overrides, nproc=2)
    cursors = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "checkpoints" / "step-00000004").glob(
        "cursor-rank*.json"))]
    assert [c["rank"] for c in cursors] == [0, 1] and all(c["partial"] for c in cursors)
    assert all(len(json.dumps(c)) < 2000 for c in cursors), "the cursor holds no token ids"
    resumed = warm_cli("train", str(config), *overrides, "train.max_steps=8")  # one rank: `gpt2dist train`
    assert "resuming from step-00000004" in resumed.stdout
    units = [doc for _, doc in read_trace_docs(tmp_path / "run")]
    assert len(units) == len(set(units)), "a piece was read twice across the 2 -> 1 change"
    assert {int(u.split("#")[1]) % 2 for u in units[:2]} == {0, 1}, "both ranks read pieces of the one document"
    assert max(read_metrics(tmp_path / "run")) == 8
