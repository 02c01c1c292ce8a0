"""Tests for gpt2dist.data: per-rank sharding, exact packing, an exact and cheap resume cursor, epochs, cleaning.

Everything runs on small files written under tmp_path with a trivial char tokenizer (ord(c), EOS = 0), so
the expected token stream can be computed independently of the code under test. Opening a `datasets`
stream costs ~1-2 s the first time in a process and milliseconds afterwards.
"""

from __future__ import annotations

import codecs
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from gpt2dist.config import DataConfig
from gpt2dist.data.build import eval_batches
from gpt2dist.data.contract import Window
from gpt2dist.data.stream import DOCS_PER_TOKENIZE_CALL, TextStream
from gpt2dist.data.text import clean_text, find_invalid_utf8, is_heldout, iter_documents, resolve_files
from gpt2dist.errors import UserError

EOS_ID = 0


def encode(docs: list[str]) -> list[list[int]]:
    """The `encode` TextStream expects: token ids of each document followed by EOS."""
    return [[ord(c) for c in doc] + [EOS_ID] for doc in docs]


def token_stream(docs: list[str]) -> list[int]:
    return [t for ids in encode(docs) for t in ids]


def split_windows(tokens: list[int], window: int) -> list[list[int]]:
    """Full windows only; the final partial window is dropped."""
    return [tokens[i * window:(i + 1) * window] for i in range(len(tokens) // window)]


def flat(windows) -> list[int]:
    return [t for w in windows for t in (w.tokens if isinstance(w, Window) else w)]


def roundtrip(state: dict) -> dict:
    """What a checkpoint does to the cursor: it must survive JSON unchanged."""
    text = json.dumps(state)
    return json.loads(text)


def find_key(obj, key: str):
    """First value of `key` in a nested dict (the `datasets` state nests per iterable wrapper)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for value in obj.values():
            found = find_key(value, key)
            if found is not None:
                return found
    return None


def write_txt_corpus(root: Path, n_files: int, docs_per_file, *, prefix: str = "f", padded: bool = False,
                     trailing_newline: bool = True) -> tuple[list[Path], list[str]]:
    """n_files .txt files of blank-line separated, globally unique documents; returns (files, docs in order)."""
    root.mkdir(parents=True, exist_ok=True)
    files, docs = [], []
    for f in range(n_files):
        count = docs_per_file(f) if callable(docs_per_file) else docs_per_file
        file_docs = []
        for d in range(count):
            doc = f"doc f{f} d{d}"
            if padded:  # varying lengths so windows straddle documents and files at varying offsets
                doc += " " + "abcdefghijk"[: (3 * d + f) % 12]
            file_docs.append(doc)
        path = root / f"{prefix}{f:02d}.txt"
        path.write_text("\n\n".join(file_docs) + ("\n" if trailing_newline else ""), encoding="utf-8")
        files.append(path)
        docs.extend(file_docs)
    return files, docs


@pytest.fixture(scope="module")
def corpus3(tmp_path_factory) -> tuple[list[Path], list[str]]:
    """3 files x 150 documents (read-only: tests that modify files build their own copy)."""
    root = tmp_path_factory.mktemp("corpus3")
    files, docs = write_txt_corpus(root, 3, 150, padded=True, trailing_newline=False)
    assert len(docs) > 4 * DOCS_PER_TOKENIZE_CALL  # several tokenizer batches per file
    return files, docs


# --------------------------------------------------------------------------------------------------------------
# 1. Sharding across fake ranks
# --------------------------------------------------------------------------------------------------------------


def assert_partition(shares: list[list[str]], expected: list[str]) -> None:
    """Per-rank shares are pairwise disjoint, contain no duplicates and together are exactly `expected`."""
    for share in shares:
        assert len(share) == len(set(share)), "a rank saw a document twice"
    for i in range(len(shares)):
        for j in range(i + 1, len(shares)):
            both = set(shares[i]) & set(shares[j])
            assert not both, f"ranks {i} and {j} share documents {sorted(both)[:3]}"
    assert sorted(d for share in shares for d in share) == sorted(expected)


@pytest.mark.parametrize("n_files", [1, 3, 16])
@pytest.mark.parametrize("world_size", [2, 4])
def test_txt_shards_are_disjoint_and_complete(tmp_path: Path, world_size: int, n_files: int) -> None:
    files, docs = write_txt_corpus(tmp_path, n_files, lambda f: 5 + (7 * f) % 10)
    cfg = DataConfig()
    shares = [[d.strip() for d in iter_documents(files, cfg, rank=r, world_size=world_size)]
              for r in range(world_size)]
    assert_partition(shares, docs)
    assert all(shares), "with more documents than ranks every rank gets some"


def test_jsonl_text_field_shards(tmp_path: Path) -> None:
    files, docs = [], []
    for f in range(3):
        path = tmp_path / f"part{f}.jsonl"
        rows = []
        for d in range(4 + 3 * f):
            doc = f"doc f{f} d{d}"
            docs.append(doc)
            rows.append(json.dumps({"id": f * 100 + d, "body": doc, "text": "not this column"}))
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        files.append(path)
    cfg = DataConfig(text_field="body")
    shares = [list(iter_documents(files, cfg, rank=r, world_size=2)) for r in range(2)]
    assert_partition(shares, docs)


def test_jsonl_missing_text_field_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"content": "hello"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="data.text_field"):
        list(iter_documents([path], DataConfig(text_field="body")))


def test_parquet_missing_text_field_is_a_user_error(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"content": ["hello", "world"]}), path)
    with pytest.raises(UserError, match="data.text_field"):
        list(iter_documents([path], DataConfig(text_field="body")))


def test_parquet_shards(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files, docs = [], []
    for f in range(2):
        file_docs = [f"doc f{f} d{d}" for d in range(11 + 6 * f)]
        docs.extend(file_docs)
        table = pa.table({"n": list(range(len(file_docs))), "content": file_docs})
        path = tmp_path / f"shard{f}.parquet"
        pq.write_table(table, path, row_group_size=4)  # several row groups per file
        files.append(path)
    cfg = DataConfig(text_field="content")
    assert list(iter_documents(files, cfg)) == docs
    shares = [list(iter_documents(files, cfg, rank=r, world_size=4)) for r in range(4)]
    assert_partition(shares, docs)


# --------------------------------------------------------------------------------------------------------------
# 2. Packing
# --------------------------------------------------------------------------------------------------------------


def test_documents_are_read_verbatim(corpus3) -> None:
    files, docs = corpus3
    assert list(iter_documents(files, DataConfig())) == docs


def test_one_pass_packs_docs_plus_eos_into_exact_windows(corpus3) -> None:
    files, docs = corpus3
    cfg = DataConfig(block_size=15)
    windows = list(TextStream(files, cfg, encode, repeat=False))
    expected = split_windows(token_stream(docs), cfg.block_size + 1)
    assert len(windows) == len(expected) > 100
    assert all(len(w.tokens) == cfg.block_size + 1 for w in windows)
    assert [w.tokens for w in windows] == expected
    assert [w.index for w in windows] == list(range(len(windows)))
    assert {w.epoch for w in windows} == {0}
    # the final partial window is dropped, nothing more
    assert 0 <= len(token_stream(docs)) - len(flat(windows)) < cfg.block_size + 1


def test_next_batch_stacks_windows(corpus3) -> None:
    files, docs = corpus3
    cfg = DataConfig(block_size=7)
    stream = TextStream(files, cfg, encode, repeat=False)
    batch, windows = stream.next_batch(3)
    assert tuple(batch.shape) == (3, 8)
    assert batch.tolist() == split_windows(token_stream(docs), 8)[:3]
    assert [w.index for w in windows] == [0, 1, 2]


# --------------------------------------------------------------------------------------------------------------
# 3. Cursor exactness
# --------------------------------------------------------------------------------------------------------------


def test_cursor_resume_is_exact_at_many_points(corpus3) -> None:
    files, docs = corpus3
    cfg = DataConfig(block_size=15)
    full_len = len(token_stream(docs)) // (cfg.block_size + 1)
    # 0: nothing read; 5: buffer from the first tokenizer batch; then cursors whose `datasets` state lies in
    # the first, second and third file; full_len - 1 and full_len: at (and past) the last window
    ks = sorted({0, 1, 5, 100, full_len // 3 + 20, full_len // 2, 2 * full_len // 3 + 30, full_len - 1, full_len})
    stream = TextStream(files, cfg, encode, repeat=False)
    states, reference = {}, []
    for k in range(full_len + 1):
        if k in ks:
            states[k] = roundtrip(stream.state_dict())
        if k < full_len:
            reference.append(next(stream).tokens)
    with pytest.raises(StopIteration):
        next(stream)
    assert reference == split_windows(token_stream(docs), cfg.block_size + 1)

    shards_seen = set()
    for k in ks:
        shard = find_key(states[k], "shard_idx")
        if shard is not None:
            shards_seen.add(shard)
        resumed = TextStream(files, cfg, encode, repeat=False)
        resumed.load_state_dict(states[k])
        rest = list(resumed)
        assert [w.tokens for w in rest] == reference[k:], f"resume after {k} windows diverged"
        assert [w.index for w in rest] == list(range(k, full_len))
    if shards_seen:  # the test exercised cursors inside each of the three files
        assert {0, 1, 2} <= shards_seen


def test_cursor_of_a_resumed_stream_resumes_exactly(corpus3) -> None:
    """Checkpoint, resume, checkpoint again before reading anything, resume again: still exact."""
    files, docs = corpus3
    cfg = DataConfig(block_size=15)
    reference = split_windows(token_stream(docs), cfg.block_size + 1)
    first = TextStream(files, cfg, encode, repeat=False)
    for _ in range(40):
        next(first)
    second = TextStream(files, cfg, encode, repeat=False)
    second.load_state_dict(roundtrip(first.state_dict()))
    third = TextStream(files, cfg, encode, repeat=False)
    third.load_state_dict(roundtrip(second.state_dict()))  # state taken before `second` opened its stream
    got = [next(third).tokens for _ in range(150)]
    fourth = TextStream(files, cfg, encode, repeat=False)
    fourth.load_state_dict(roundtrip(third.state_dict()))
    got += [w.tokens for w in fourth]
    assert got == reference[40:]


@pytest.mark.parametrize("n_files", [3, 4])  # 3 files over 2 ranks: split by rows; 4 files: whole files per rank
def test_cursor_resume_is_exact_per_rank(tmp_path: Path, n_files: int) -> None:
    files, _ = write_txt_corpus(tmp_path, n_files, 90, padded=True)
    cfg = DataConfig(block_size=11)
    for rank in range(2):
        reference = [w.tokens for w in TextStream(files, cfg, encode, rank=rank, world_size=2, repeat=False)]
        assert len(reference) > 60
        for k in (7, len(reference) // 2, len(reference) - 3):
            stream = TextStream(files, cfg, encode, rank=rank, world_size=2, repeat=False)
            head = [next(stream).tokens for _ in range(k)]
            resumed = TextStream(files, cfg, encode, rank=rank, world_size=2, repeat=False)
            resumed.load_state_dict(roundtrip(stream.state_dict()))
            assert head + [w.tokens for w in resumed] == reference, f"rank {rank} k={k}"


def write_rows(root: Path, fmt: str, n_files: int, rows_per_file: int) -> tuple[list[Path], list[str]]:
    """.jsonl or .parquet files (small parquet row groups) with the text in a `body` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files, docs = [], []
    for f in range(n_files):
        file_docs = [f"doc f{f} d{d} " + "abcdefghijk"[: (3 * d + f) % 12] for d in range(rows_per_file)]
        docs.extend(file_docs)
        path = root / f"rows{f}.{fmt}"
        if fmt == "parquet":
            pq.write_table(pa.table({"id": list(range(rows_per_file)), "body": file_docs}), path, row_group_size=25)
        else:
            path.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(file_docs)),
                            encoding="utf-8")
        files.append(path)
    return files, docs


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_cursor_resume_is_exact_for_jsonl_and_parquet(tmp_path: Path, fmt: str) -> None:
    files, docs = write_rows(tmp_path, fmt, 2, 110)
    cfg = DataConfig(block_size=15, text_field="body")
    reference = split_windows(token_stream(docs), cfg.block_size + 1)
    for k in (3, 90, len(reference) // 2 + 7, len(reference) - 1):
        stream = TextStream(files, cfg, encode, repeat=False)
        head = [next(stream).tokens for _ in range(k)]
        resumed = TextStream(files, cfg, encode, repeat=False)
        resumed.load_state_dict(roundtrip(stream.state_dict()))
        assert head + [w.tokens for w in resumed] == reference, f"{fmt} k={k}"


# --------------------------------------------------------------------------------------------------------------
# 4. Resume cost is bounded by one file
# --------------------------------------------------------------------------------------------------------------


def test_resume_never_rereads_earlier_files(tmp_path: Path) -> None:
    files, docs = write_txt_corpus(tmp_path, 3, 150, padded=True, trailing_newline=False)
    cfg = DataConfig(block_size=15)
    window = cfg.block_size + 1
    reference = split_windows(token_stream(docs), window)
    first_two = len(token_stream(docs[:300]))  # tokens of files 1 and 2
    k = first_two // window + 5  # every document of files 1 and 2 is already pulled: the cursor is in file 3

    stream = TextStream(files, cfg, encode, repeat=False)
    head = [next(stream).tokens for _ in range(k)]
    state = roundtrip(stream.state_dict())
    shard = find_key(state, "shard_idx")
    assert shard in (None, 2)

    files[0].write_bytes(b"\xff\xfe" * 1000)  # still present, but no longer readable as UTF-8

    resumed = TextStream(files, cfg, encode, repeat=False)
    resumed.load_state_dict(state)
    assert head + [w.tokens for w in resumed] == reference

    fresh = TextStream(files, cfg, encode, repeat=False)
    with pytest.raises(UserError, match=re.escape(f"{files[0]} at byte 0") + ".*not valid UTF-8"):
        next(fresh)


def test_invalid_utf8_offset_is_exact_across_read_chunks(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("fine\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    prefix = b"a" * ((1 << 20) - 1) + "\u20ac".encode()  # a 3-byte character split across the 1 MiB read chunks
    bad.write_bytes(prefix + b"ok" + b"\xc3\x28" + b"tail")
    assert find_invalid_utf8([good, bad]) == (bad, len(prefix) + 2)
    assert find_invalid_utf8([good]) is None
    # and the python decoder agrees on the position
    with pytest.raises(UnicodeDecodeError) as info:
        codecs.decode(bad.read_bytes(), "utf-8")
    assert info.value.start == len(prefix) + 2


def test_truncated_utf8_at_end_of_file_is_named_with_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "cut.txt"
    path.write_bytes(b"first doc\n\nsecond \xe2\x82")  # a euro sign cut after two of its three bytes
    with pytest.raises(UserError, match=re.escape(f"{path} at byte 18")):
        list(iter_documents([path], DataConfig()))


def test_invalid_utf8_midway_is_named_with_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"first doc\n\nsecond \xff doc\n")
    with pytest.raises(UserError, match=re.escape(f"{path} at byte 18")):
        list(iter_documents([path], DataConfig()))
    replaced = list(iter_documents([path], DataConfig(encoding_errors="replace")))
    assert [d.strip() for d in replaced] == ["first doc", "second \ufffd doc"]


# --------------------------------------------------------------------------------------------------------------
# 5. Epochs
# --------------------------------------------------------------------------------------------------------------

TINY_DOCS = ["ab", "cde", "fghi", "jk", "lmnop"]  # 16 characters + 5 EOS = 21 tokens per pass


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.txt"
    path.write_text("\n\n".join(TINY_DOCS), encoding="utf-8")
    return path


@pytest.mark.parametrize("block_size", [7, 6, 4])  # windows of 8 (leftover carries over), 7 (divides 21), 5
def test_epochs_continue_from_the_leftover_buffer(tiny_file: Path, block_size: int) -> None:
    cfg = DataConfig(block_size=block_size)
    window = block_size + 1
    per_pass = token_stream(TINY_DOCS)
    assert len(per_pass) == 21
    n = 4 * len(per_pass) // window + 2  # about four passes
    stream = TextStream([tiny_file], cfg, encode)
    windows = [next(stream) for _ in range(n)]
    # every token of every pass, in order, nothing dropped at the epoch boundaries
    assert flat(windows) == (per_pass * 5)[: n * window]
    # a window belongs to the epoch in which its last token was read
    assert [w.epoch for w in windows] == [-(-(i + 1) * window // len(per_pass)) - 1 for i in range(n)]
    assert stream.epoch == windows[-1].epoch >= 3
    for prev, cur in itertools.pairwise(windows):
        assert cur.index == (prev.index + 1 if cur.epoch == prev.epoch else 0)
        assert cur.epoch in (prev.epoch, prev.epoch + 1)


@pytest.mark.parametrize("block_size", [7, 6])
def test_cursor_around_epoch_boundaries_resumes_exactly(tiny_file: Path, block_size: int) -> None:
    cfg = DataConfig(block_size=block_size)
    n = 12  # crosses three epoch boundaries; cursors just before, at and just after each one
    stream = TextStream([tiny_file], cfg, encode)
    states, reference = [], []
    for _ in range(n):
        states.append(roundtrip(stream.state_dict()))
        w = next(stream)
        reference.append((w.tokens, w.epoch, w.index))
    states.append(roundtrip(stream.state_dict()))
    assert reference[-1][1] >= 2
    for k in range(n + 1):
        resumed = TextStream([tiny_file], cfg, encode)
        resumed.load_state_dict(states[k])
        got = []
        for _ in range(n - k):
            w = next(resumed)
            got.append((w.tokens, w.epoch, w.index))
        assert got == reference[k:], f"resume after {k} windows diverged"
        if k < n:
            assert resumed.epoch == reference[-1][1]


def test_corpus_smaller_than_one_window(tiny_file: Path) -> None:
    cfg = DataConfig(block_size=100)
    with pytest.raises(UserError, match="no full window of 101 tokens"):
        next(TextStream([tiny_file], cfg, encode))
    assert list(TextStream([tiny_file], cfg, encode, repeat=False)) == []


def test_eval_batches_are_the_same_first_windows_every_time(corpus3) -> None:
    files, docs = corpus3
    cfg = DataConfig(block_size=15)
    expected = split_windows(token_stream(docs), cfg.block_size + 1)

    def factory() -> TextStream:
        return TextStream(files, cfg, encode, repeat=False)

    batches = [b.tolist() for b in eval_batches(factory, 4, 3)]
    assert batches == [expected[0:4], expected[4:8], expected[8:12]]
    assert [b.tolist() for b in eval_batches(factory, 4, 3)] == batches
    # a short stream ends with a partial batch and no empty one
    tail = [b.shape[0] for b in eval_batches(factory, 200, 10)]
    assert tail == [200, 200, len(expected) - 400]


# --------------------------------------------------------------------------------------------------------------
# 6. Cleaning and the held-out split
# --------------------------------------------------------------------------------------------------------------


def test_clean_text_defaults_strip_only_control_characters() -> None:
    cfg = DataConfig()
    assert clean_text("Hello,  world.\n\tIndented line\n", cfg) == "Hello,  world.\n\tIndented line\n"
    assert clean_text("a\x00b\x07c\td\ne\x1bf\x7fg\x85h\x0ci\r", cfg) == "abc\td\nefghi"
    kept = "a\x00b\x1b"
    assert clean_text(kept, DataConfig(strip_control=False)) == kept


def test_clean_text_collapse_whitespace() -> None:
    cfg = DataConfig(collapse_whitespace=True)
    assert clean_text("a  \t b\n\n   c\t\td", cfg) == "a b\n\n c d"
    assert clean_text("a  b", DataConfig()) == "a  b"


def test_clean_text_min_line_chars() -> None:
    cfg = DataConfig(min_line_chars=3)
    assert clean_text("ab\nabc\n  xy  \nabcd\n\n", cfg) == "abc\nabcd"
    assert clean_text("ab\ncd", cfg) == ""


def test_clean_text_ascii_only_and_order() -> None:
    assert clean_text("café naïve ok", DataConfig(ascii_only=True)) == "caf nave ok"
    # ascii_only runs before collapse_whitespace, so a removed character leaves no double space
    cfg = DataConfig(ascii_only=True, collapse_whitespace=True)
    assert clean_text("a \u00e9 b", cfg) == "a b"
    # a line made short by ascii_only is then dropped by min_line_chars
    cfg = DataConfig(ascii_only=True, min_line_chars=3)
    assert clean_text("\u00e9\u00e9\u00e9x\nkeep", cfg) == "keep"


def test_documents_empty_after_cleaning_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("short\n\n\u00e9\u00e8\n\nlong enough", encoding="utf-8")
    docs = list(iter_documents([path], DataConfig(ascii_only=True, min_line_chars=6)))
    assert docs == ["long enough"]


def test_is_heldout_is_deterministic_and_close_to_the_fraction() -> None:
    texts = [f"document number {i}: some text" for i in range(10_000)]
    for fraction in (0.05, 0.1, 0.5):
        first = [is_heldout(t, fraction) for t in texts]
        assert first == [is_heldout(t, fraction) for t in texts]
        assert abs(sum(first) / len(texts) - fraction) <= 0.02, fraction
    assert not any(is_heldout(t, 0.0) for t in texts)
    # nested: a document held out at 5% is also held out at 10%
    assert all(is_heldout(t, 0.1) for t in texts if is_heldout(t, 0.05))
    # pinned: the split must not move between versions or platforms, or val documents leak into training
    assert [i for i in range(20) if is_heldout(f"doc {i}", 0.5)] == [1, 4, 7, 8, 10, 11, 12, 16]
    assert [i for i in range(40) if is_heldout(f"doc {i}", 0.1)] == [10, 16, 24, 27]


def test_train_and_heldout_streams_are_disjoint_and_complete(corpus3) -> None:
    files, docs = corpus3
    cfg = DataConfig(val_fraction=0.3, block_size=9)
    everything = list(iter_documents(files, cfg))
    train = list(iter_documents(files, cfg, heldout=False))
    held = list(iter_documents(files, cfg, heldout=True))
    assert everything == docs
    assert held and train
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(docs)
    assert held == [d for d in docs if is_heldout(d, 0.3)]
    assert 0.2 < len(held) / len(docs) < 0.4
    # TextStream applies the same split
    val_windows = [w.tokens for w in TextStream(files, cfg, encode, heldout=True, repeat=False)]
    assert val_windows == split_windows(token_stream(held), cfg.block_size + 1)
    train_windows = [w.tokens for w in TextStream(files, cfg, encode, heldout=False, repeat=False)]
    assert train_windows == split_windows(token_stream(train), cfg.block_size + 1)


# --------------------------------------------------------------------------------------------------------------
# 7. resolve_files
# --------------------------------------------------------------------------------------------------------------


def test_resolve_files_glob_is_sorted_and_patterns_keep_their_order(tmp_path: Path) -> None:
    for name in ("b.txt", "c.txt", "a.txt"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    sub = tmp_path / "sub" / "deep"
    sub.mkdir(parents=True)
    (sub / "z.txt").write_text("y", encoding="utf-8")
    (tmp_path / "sub" / "m.txt").write_text("y", encoding="utf-8")
    (tmp_path / "dir.txt").mkdir()  # a directory matching the glob is not a file

    got = resolve_files([str(tmp_path / "*.txt")], "data.train")
    assert got == [tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"]
    got = resolve_files([str(tmp_path / "c.txt"), str(tmp_path / "sub" / "**" / "*.txt")], "data.train")
    assert got == [tmp_path / "c.txt", tmp_path / "sub" / "deep" / "z.txt", tmp_path / "sub" / "m.txt"]


def test_resolve_files_no_match(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match=r"data\.train: .*nope\*\.txt.* matches no file"):
        resolve_files([str(tmp_path / "a.txt"), str(tmp_path / "nope*.txt")], "data.train")
    with pytest.raises(UserError, match=r"data\.val: .*missing\.txt.* matches no file"):
        resolve_files([str(tmp_path / "missing.txt")], "data.val")


def test_resolve_files_all_empty(tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(UserError, match="data.train: every matched file is empty"):
        resolve_files([str(tmp_path / "*.txt")], "data.train")
    (tmp_path / "c.txt").write_text("some text", encoding="utf-8")
    assert len(resolve_files([str(tmp_path / "*.txt")], "data.train")) == 3  # some empty files are fine


def test_resolve_files_mixed_types(tmp_path: Path) -> None:
    """Each file is read by its own reader, so one key may list several types (issue 25)."""
    (tmp_path / "a.txt").write_text("x", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "y"}\n', encoding="utf-8")
    (tmp_path / "c.json").write_text('{"text": "z"}\n', encoding="utf-8")
    files = resolve_files([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl"), str(tmp_path / "c.json")], "data.train")
    assert list(iter_documents(files, DataConfig(train=["x"]))) == ["x", "y", "z"]


def test_resolve_files_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "a.xlsx").write_bytes(b"PK")
    with pytest.raises(UserError, match=r"data\.train: unsupported file type '\.xlsx'"):
        resolve_files([str(tmp_path / "a.xlsx")], "data.train")


# --------------------------------------------------------------------------------------------------------------
# 8. Window digests
# --------------------------------------------------------------------------------------------------------------


def test_window_digest_is_stable_and_token_sensitive() -> None:
    w = Window([1, 2, 3], epoch=0, index=0)
    assert w.digest() == "77ba1ae68d5afbb4"  # pinned: traces from older runs must stay comparable
    assert Window([50256, 0, 7, 1023], 0, 0).digest() == "b16be3e1cda26710"
    assert w.digest() == Window([1, 2, 3], epoch=4, index=17).digest()  # tokens only
    assert w.digest() == Window(list(np.array([1, 2, 3], dtype=np.int32)), 0, 0).digest()
    others = {Window(t, 0, 0).digest() for t in ([1, 2, 4], [3, 2, 1], [1, 2, 3, 0], [1, 2], [])}
    assert w.digest() not in others and len(others) == 5
    assert re.fullmatch(r"[0-9a-f]{16}", w.digest())


# --------------------------------------------------------------------------------------------------------------
# 9. Cursor validation
# --------------------------------------------------------------------------------------------------------------


def test_cursor_rejects_other_files(corpus3) -> None:
    files, _ = corpus3
    cfg = DataConfig(block_size=15)
    stream = TextStream(files, cfg, encode, repeat=False)
    next(stream)
    state = roundtrip(stream.state_dict())
    for other in (files[:2], files[::-1], [*files, files[0]]):
        with pytest.raises(UserError, match="training files differ"):
            TextStream(other, cfg, encode).load_state_dict(state)


def test_cursor_rejects_other_rank_or_world_size(corpus3) -> None:
    files, _ = corpus3
    cfg = DataConfig(block_size=15)
    stream = TextStream(files, cfg, encode, rank=1, world_size=2, repeat=False)
    next(stream)
    state = roundtrip(stream.state_dict())
    for rank, world_size in ((0, 2), (1, 4), (0, 1)):
        with pytest.raises(UserError, match="cursor is for rank 1 of 2"):
            TextStream(files, cfg, encode, rank=rank, world_size=world_size).load_state_dict(state)
    TextStream(files, cfg, encode, rank=1, world_size=2).load_state_dict(state)  # the same rank is fine
