"""The streaming path at scale (issue 5): file vs example sharding over fake ranks, per-epoch file order,
resume that never touches finished or foreign files, and the DataLoader worker path.

Fake ranks are PackedStreams built with rank=r, world_size=W in this process over real files; the
worker tests start real DataLoader worker processes. Tokens are ord(c) + EOS 0, so expected counts are
computed independently of the code under test.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import read_metrics, tiny_config, write_yaml

from gpt2dist.config import DataConfig, load_config
from gpt2dist.data.build import make_train_stream
from gpt2dist.data.prefetch import PrefetchedStream
from gpt2dist.data.sharding import epoch_order, owns_file, shard_mode
from gpt2dist.data.stream import TextStream
from gpt2dist.errors import UserError


def encode(docs: list[str]) -> list[list[int]]:
    return [[ord(c) for c in doc] + [0] for doc in docs]


def write_files(root: Path, n_files: int, docs_per_file=lambda f: 6 + (5 * f) % 13) -> dict[str, str]:
    """n_files .txt files of unique documents; returns {"file:row": document}."""
    root.mkdir(parents=True, exist_ok=True)
    docs = {}
    for f in range(n_files):
        texts = [f"doc {f}.{d} " + "abcdefg"[: (d + f) % 8] for d in range(docs_per_file(f))]
        (root / f"s{f:02d}.txt").write_text("\n\n".join(texts), encoding="utf-8")
        docs.update({f"{f}:{d}": t for d, t in enumerate(texts)})
    return docs


def files_of(root: Path) -> list[Path]:
    return sorted(root.glob("s*.txt"))


def run_out(stream: TextStream) -> tuple[list[str], int]:
    """Drain a non-repeating stream: (documents it pulled, tokens it emitted + still holds)."""
    windows = list(stream)
    return [doc for _, doc in stream.drain_pulled()], sum(len(w.tokens) for w in windows) + len(stream.buffer)


@pytest.mark.parametrize("n_files", [1, 3, 16])
@pytest.mark.parametrize("world_size", [2, 4])
def test_fake_ranks_cover_the_data_disjointly_and_completely(tmp_path, n_files, world_size):
    docs = write_files(tmp_path, n_files)
    files = files_of(tmp_path)
    cfg = DataConfig(block_size=7)
    shares, tokens = [], 0
    for rank in range(world_size):
        pulled, emitted = run_out(TextStream(files, cfg, encode, rank=rank, world_size=world_size, repeat=False))
        shares.append(pulled)
        tokens += emitted
        read_files = {int(doc.split(":")[0]) for doc in pulled}
        if shard_mode(n_files, world_size) == "file":  # whole files, only its own
            assert read_files == {f for f in range(n_files) if f % world_size == rank}
    counts = Counter(doc for share in shares for doc in share)
    assert set(counts) == set(docs), "a document was left out"
    assert max(counts.values()) == 1, "a document went to two ranks"
    assert tokens == sum(len(t) + 1 for t in docs.values()), "tokens were lost or duplicated"
    sizes = [len(share) for share in shares]
    if n_files < world_size:  # the row interleave balances to one document per file
        assert max(sizes) - min(sizes) <= n_files


def test_jsonl_and_parquet_file_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for fmt in ("jsonl", "parquet"):
        files, expected = [], set()
        for f in range(5):
            texts = [f"{fmt} {f}.{d}" for d in range(3 + f)]
            path = tmp_path / f"{fmt}{f}.{fmt}"
            if fmt == "parquet":
                pq.write_table(pa.table({"body": texts}), path, row_group_size=2)
            else:
                path.write_text("".join(json.dumps({"body": t}) + "\n" for t in texts), encoding="utf-8")
            files.append(path)
            expected |= {f"{f}:{d}" for d in range(len(texts))}
        cfg = DataConfig(block_size=5, text_field="body")
        shares = [run_out(TextStream(files, cfg, encode, rank=r, world_size=2, repeat=False))[0] for r in range(2)]
        assert sorted(shares[0] + shares[1]) == sorted(expected) and not set(shares[0]) & set(shares[1])


def test_each_epoch_visits_the_ranks_files_once_in_a_new_order(tmp_path):
    write_files(tmp_path, 16)
    files = files_of(tmp_path)
    stream = TextStream(files, DataConfig(block_size=7), encode, rank=1, world_size=2, seed=5)
    while stream.epoch < 4:
        next(stream)
    per_epoch: dict[int, list[str]] = {}
    for epoch, doc in stream.drain_pulled():
        per_epoch.setdefault(epoch, []).append(doc)
    orders = []
    for epoch in range(4):
        order = list(dict.fromkeys(int(doc.split(":")[0]) for doc in per_epoch[epoch]))
        assert sorted(order) == list(range(1, 16, 2)), "an epoch must read exactly the rank's own files"
        assert sorted(per_epoch[epoch]) == sorted(per_epoch[0]), "an epoch must read every document once"
        assert order == [f for f in epoch_order(16, 5, epoch) if owns_file(f, 1, 2, 16)]
        orders.append(order)
    assert orders[0] == sorted(orders[0]), "epoch 0 follows data.train order"
    assert len({tuple(o) for o in orders}) == 4, "every epoch a different file order"
    assert epoch_order(16, 5, 3) == epoch_order(16, 5, 3) != epoch_order(16, 6, 3), "(seed, epoch) decide it"
    # documents inside a file stay in order
    rows = [int(doc.split(":")[1]) for doc in per_epoch[2] if doc.startswith("3:")]
    assert rows == sorted(rows)


def test_a_rank_never_reads_other_ranks_files_nor_finished_ones_on_resume(tmp_path):
    write_files(tmp_path, 6, lambda f: 200)
    files = files_of(tmp_path)
    cfg = DataConfig(block_size=15)
    for other in files[1::2]:  # rank 0 of 2 owns files 0, 2, 4: the others are not even valid text
        other.write_bytes(b"\xff\xfe" * 100)
    reference = TextStream(files, cfg, encode, rank=0, world_size=2)
    for _ in range(400):
        next(reference)
    assert (reference.epoch, reference.index) == (0, 2) and reference.row > 0, "the cursor must be mid third file"
    state = json.loads(json.dumps(reference.state_dict()))
    expected = [next(reference).tokens for _ in range(50)]
    assert reference.index == 2
    files[0].unlink()  # finished: resuming must not open them (nor skip through them)
    files[2].unlink()
    resumed = TextStream(files, cfg, encode, rank=0, world_size=2)
    resumed.load_state_dict(state)
    assert [next(resumed).tokens for _ in range(50)] == expected


def collect(stream, n: int, batch: int) -> tuple[list[list[list[int]]], list[tuple[int, str]]]:
    out = [stream.next_batch(batch)[0].tolist() for _ in range(n)]
    pulled = stream.drain_pulled()
    return out, pulled


def test_worker_gives_the_in_process_windows_and_resumes_exactly(tmp_path):
    write_files(tmp_path, 3, lambda f: 150)
    files = files_of(tmp_path)
    inproc = make_train_stream(files, DataConfig(block_size=9, num_workers=0), encode, rank=1, world_size=2, seed=3)
    assert isinstance(inproc, TextStream)
    expected, expected_docs = collect(inproc, 120, 4)  # crosses an epoch boundary
    assert inproc.epoch >= 1

    cfg = DataConfig(block_size=9, num_workers=1, prefetch_factor=4)
    rng_before = torch.get_rng_state()
    loader = make_train_stream(files, cfg, encode, rank=1, world_size=2, seed=3)
    assert isinstance(loader, PrefetchedStream)
    head, head_docs = collect(loader, 50, 4)
    assert torch.equal(torch.get_rng_state(), rng_before), "starting the worker must not move the torch RNG"
    state = json.loads(json.dumps(loader.state_dict()))  # the worker has prefetched beyond this point
    tail, tail_docs = collect(loader, 70, 4)
    assert head + tail == expected and head_docs + tail_docs == expected_docs
    assert loader.epoch == inproc.epoch

    resumed = make_train_stream(files, cfg, encode, rank=1, world_size=2, seed=3)
    resumed.load_cursors(_own_and_other(state))
    again, again_docs = collect(resumed, 70, 4)
    assert again == tail and again_docs == tail_docs


def _own_and_other(state: dict) -> list[dict]:
    """A 2-rank cursor set whose rank-1 cursor is `state` (rank 0's is never read on the same world size)."""
    return [{**state, "rank": 0}, state]


def test_worker_errors_are_one_line_user_errors(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("ab\n\ncd", encoding="utf-8")
    loader = make_train_stream([path], DataConfig(block_size=100), encode)
    with pytest.raises(UserError, match="no full window of 101 tokens") as info:
        loader.next_batch(2)
    assert "\n" not in str(info.value)


def test_num_workers_is_validated(tmp_path):
    with pytest.raises(UserError, match=r"data.num_workers=2 is not one of 0, 1"):
        load_config(None, ["data.train=[x.txt]", "data.num_workers=2"])
    with pytest.raises(UserError, match=r"data.prefetch_factor must be > 0"):
        load_config(None, ["data.train=[x.txt]", "data.prefetch_factor=0"])


@pytest.mark.slow
def test_a_run_longer_than_one_pass_logs_epochs_and_tokens(tmp_path, warm_cli):
    write_files(tmp_path / "data", 4, lambda f: 6)  # ~10 windows per pass: 48 windows are 4+ epochs
    cfg = tiny_config(tmp_path / "run", [str(tmp_path / "data" / "*.txt")], data={"block_size": 32},
                      train={"max_steps": 12, "micro_batch_size": 4}, checkpoint={"every": 6, "keep_last": 2})
    warm_cli("train", str(write_yaml(tmp_path / "run.yaml", cfg)))
    metrics = read_metrics(tmp_path / "run")
    assert [metrics[s]["tokens"] for s in (1, 12)] == [4 * 32, 12 * 4 * 32]
    epochs = [metrics[s]["epoch"] for s in range(1, 13)]
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] >= 2, epochs
