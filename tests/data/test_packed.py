"""`gpt2dist prepare` and the packed-shard reader, on real files: tokens, incrementality, mismatches, the
schedule (bijective shuffles, mixing, rank-disjoint coverage, world-size independence) and O(1) resume."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli, tiny_config, write_yaml

from gpt2dist.config import load_config
from gpt2dist.data.manifest import load_manifest, packed_root
from gpt2dist.data.packed import PackedBatches, TokenShards, open_train
from gpt2dist.data.prepare import prepare
from gpt2dist.data.schedule import mixing_pattern, permute
from gpt2dist.data.text import iter_documents
from gpt2dist.errors import UserError
from gpt2dist.tokenizer import encode_documents, load_tokenizer


def write_docs(folder: Path, n_files: int, docs_per_file: int, seed: int = 0) -> list[str]:
    """n_files text files of numbered paragraphs; returns the paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    paths = []
    for f in range(n_files):
        paras = [f"doc {f}-{d}: " + " ".join(rng.choice(words, size=int(rng.integers(3, 30))))
                 for d in range(docs_per_file)]
        path = folder / f"part-{f:03d}.txt"
        path.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
        paths.append(str(path))
    return paths


def packed_cfg(tmp_path: Path, train: list[str], **data):
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = tiny_config(tmp_path / "run", train, data={"block_size": 16, "format": "packed", **data})
    return load_config(write_yaml(tmp_path / "run.yaml", raw)), tmp_path / "run.yaml"


def shard_tokens(cfg, part: str = "train") -> list[int]:
    """Every prepared file's `part` tokens, read from the shard files by the manifest's (path, offset, tokens)."""
    root, manifest = packed_root(cfg), load_manifest(packed_root(cfg))
    tokens: list[int] = []
    for entry in manifest["files"].values():
        if part in entry["parts"]:
            p = entry["parts"][part]
            tokens += np.fromfile(root / p["path"], dtype=manifest["dtype"])[p["offset"]:p["offset"] + p["tokens"]
                                                                            ].tolist()
    return tokens


def test_prepared_tokens_are_the_streaming_documents_tokenized(tmp_path):
    files = write_docs(tmp_path / "data", 1, 300)
    cfg, _ = packed_cfg(tmp_path, files)
    report = prepare(cfg, workers=2)
    tokenizer = load_tokenizer(packed_root(cfg) / "tokenizer")
    expected = [t for ids in encode_documents(tokenizer, list(iter_documents([Path(files[0])], cfg.data)))
                for t in ids]
    assert shard_tokens(cfg) == expected
    assert report.tokenized == 1 and report.total_tokens == len(expected)
    assert load_manifest(packed_root(cfg))["dtype"] == "uint16"


def test_worker_count_does_not_change_the_shards(tmp_path, monkeypatch):
    from gpt2dist.data import prepare as prepare_module

    monkeypatch.setattr(prepare_module, "CHUNK_CHARS", 3000)  # many chunks, some spanning two files: a real pool
    files = write_docs(tmp_path / "data", 3, 200)
    one, _ = packed_cfg(tmp_path / "a", files)
    two, _ = packed_cfg(tmp_path / "b", files)
    prepare(one, workers=1)
    prepare(two, workers=2)
    assert shard_tokens(one) == shard_tokens(two)
    assert (packed_root(one) / "shards" / "pack-000000.train.bin").read_bytes() == (
        packed_root(two) / "shards" / "pack-000000.train.bin").read_bytes()


def test_prepares_in_concurrent_threads_share_no_tokenizer_state(tmp_path):
    """One process preparing several dirs at once (as test_bad_input sets up its cases): each in-process
    tokenization keeps its own state (a module-global one was cleared by the next prepare mid-way)."""
    from concurrent.futures import ThreadPoolExecutor

    files = write_docs(tmp_path / "data", 3, 300)
    cfgs = [packed_cfg(tmp_path / f"dir{i}", files)[0] for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(lambda cfg: prepare(cfg, workers=1), cfgs))
    assert [r.tokenized for r in reports] == [3] * 8
    assert all(shard_tokens(cfg) == shard_tokens(cfgs[0]) for cfg in cfgs[1:])


def test_val_fraction_splits_documents_by_content(tmp_path):
    files = write_docs(tmp_path / "data", 1, 400)
    cfg, _ = packed_cfg(tmp_path, files, val_fraction=0.25)
    prepare(cfg, workers=1)
    tokenizer = load_tokenizer(packed_root(cfg) / "tokenizer")
    for part, heldout in (("train", False), ("heldout", True)):
        docs = list(iter_documents([Path(files[0])], cfg.data, heldout=heldout))
        assert shard_tokens(cfg, part) == [t for ids in encode_documents(tokenizer, docs) for t in ids]
    assert 0 < len(shard_tokens(cfg, "heldout")) < len(shard_tokens(cfg, "train"))


def test_rerun_is_incremental(tmp_path):
    files = write_docs(tmp_path / "data", 3, 50)
    cfg, _ = packed_cfg(tmp_path, files)
    assert prepare(cfg, workers=1).tokenized == 3
    assert prepare(cfg, workers=1).tokenized == 0
    os.utime(files[0], ns=(1, 1))  # a copy/touch: new mtime, same bytes -> the sha256 says unchanged
    assert prepare(cfg, workers=1).tokenized == 0
    Path(files[1]).write_text("a changed file\n\nwith new text\n", encoding="utf-8")
    new = write_docs(tmp_path / "more", 1, 10)[0]
    cfg2, _ = packed_cfg(tmp_path, [*files, new])
    report = prepare(cfg2, workers=1)
    assert report.tokenized == 2 and report.files == 4
    assert report.total_tokens == len(shard_tokens(cfg2))


def test_prepare_refuses_another_tokenizer_or_other_text_settings(tmp_path):
    files = write_docs(tmp_path / "data", 1, 50)
    cfg, config = packed_cfg(tmp_path, files)
    prepare(cfg, workers=1)
    with pytest.raises(UserError, match=r"tokenizer\.kind is 'bpe' but .* prepared with 'char'"):
        prepare(load_config(config, ["tokenizer.kind=bpe"]), workers=1)
    with pytest.raises(UserError, match=r"data\.collapse_whitespace is True but .* prepared with False"):
        prepare(load_config(config, ["data.collapse_whitespace=true"]), workers=1)
    with pytest.raises(UserError, match=r"tokenizer\.kind is 'bpe'"):  # training refuses it too
        open_train(load_config(config, ["tokenizer.kind=bpe"]), 0, 1, 4, 1)


def test_a_vocabulary_over_65536_is_stored_as_uint32(tmp_path):
    chars = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 21000))  # CJK
    chars += "".join(chr(c) for c in range(0x20000, 0x20000 + 46000))  # CJK extension B
    path = tmp_path / "wide.txt"
    path.write_text("\n\n".join(chars[i:i + 500] for i in range(0, len(chars), 500)) + "\n", encoding="utf-8")
    cfg, _ = packed_cfg(tmp_path, [str(path)])
    prepare(cfg, workers=1)
    manifest = load_manifest(packed_root(cfg))
    assert manifest["vocab_size"] > 65536 and manifest["dtype"] == "uint32"
    tokens = shard_tokens(cfg)
    assert max(tokens) >= 65536
    batch, _ = open_train(cfg, 0, 1, 2, 1).next_batch(2)
    assert int(batch.max()) < manifest["vocab_size"]


@pytest.mark.parametrize("n", [1, 2, 3, 17, 1000, 4097, 65536])
def test_permute_is_a_bijection_that_differs_by_key(n):
    index = np.arange(n)
    a, b = permute(index, n, key=1), permute(index, n, key=2)
    assert sorted(a.tolist()) == list(range(n)) == sorted(b.tolist())
    if n >= 17:
        assert not np.array_equal(a, b) and not np.array_equal(a, index)
    few = index[-min(n, 64):]  # a micro batch takes the plain-int path: it must give the same bijection
    assert np.array_equal(permute(few, n, key=1), a[-len(few):])


def test_mixing_pattern_follows_the_weights():
    pattern = mixing_pattern([0.7, 0.3])
    assert np.bincount(pattern).tolist() == [7000, 3000]
    assert np.bincount(pattern[:100]).tolist() == [70, 30]  # spread evenly, not in two blocks
    assert np.array_equal(pattern, mixing_pattern([7, 3]))
    assert np.bincount(mixing_pattern([1, 0, 1]), minlength=3).tolist() == [5000, 0, 5000]


def batches(cfg, rank: int, world: int, micro: int, accum: int, steps: int) -> list[list[tuple[int, int]]]:
    """Per step, the (epoch, window id) this rank trained on."""
    stream = open_train(cfg, rank, world, micro, accum)
    out = []
    for _ in range(steps):
        step = []
        for _ in range(accum):
            _, windows = stream.next_batch(micro)
            step += [(w.epoch, w.index) for w in windows]
        out.append(step)
    return out


@pytest.mark.parametrize("n_files", [1, 3, 16])
@pytest.mark.parametrize("world", [2, 4])
def test_ranks_cover_each_epoch_disjointly_and_completely(tmp_path, n_files, world):
    cfg, _ = packed_cfg(tmp_path, write_docs(tmp_path / "data", n_files, 96 // n_files))
    prepare(cfg, workers=1)
    n_windows = open_train(cfg, 0, 1, 1, 1).schedule.total
    micro, accum = 2, 2
    steps = (2 * n_windows) // (micro * accum * world) + 1  # past the end of epoch 1
    seen = [w for r in range(world) for step in batches(cfg, r, world, micro, accum, steps) for w in step]
    assert len(seen) == len(set(seen)), "a window was trained twice"
    for epoch in (0, 1):
        assert sorted(w for e, w in seen if e == epoch) == list(range(n_windows))
    single = [w for step in batches(cfg, 0, 1, 1, 1, 2 * n_windows) for w in step]
    assert [w for e, w in single if e == 0] != [w for e, w in single if e == 1], "epoch 1 must be shuffled anew"


def test_windows_span_shard_ends_and_lose_no_token(tmp_path):
    files = write_docs(tmp_path / "data", 16, 4)
    cfg, _ = packed_cfg(tmp_path, files)
    prepare(cfg, workers=1)
    tokens = shard_tokens(cfg)
    stream = open_train(cfg, 0, 1, 1, 1)
    block = cfg.data.block_size
    for _ in range(stream.schedule.total):
        batch, (window,) = stream.next_batch(1)
        assert batch[0].tolist() == tokens[window.index * block: window.index * block + block + 1]


def test_a_step_is_the_same_windows_at_any_world_size(tmp_path):
    cfg, _ = packed_cfg(tmp_path, write_docs(tmp_path / "data", 3, 60))
    prepare(cfg, workers=1)
    global_batch, steps = 8, 6
    per_world = {}
    for world in (1, 2, 4):
        micro = 2
        accum = global_batch // (micro * world)
        ranks = [batches(cfg, r, world, micro, accum, steps) for r in range(world)]
        per_world[world] = [sorted(w for r in range(world) for w in ranks[r][s]) for s in range(steps)]
    assert per_world[1] == per_world[2] == per_world[4]


def test_resume_continues_exactly_on_another_world_size(tmp_path):
    cfg, _ = packed_cfg(tmp_path, write_docs(tmp_path / "data", 3, 60))
    prepare(cfg, workers=1)
    uninterrupted = batches(cfg, 0, 1, 8, 1, 10)
    first = open_train(cfg, 0, 2, 4, 1), open_train(cfg, 1, 2, 4, 1)
    for _ in range(4):
        for stream in first:
            stream.next_batch(4)
    cursors = [s.state_dict() for s in first]
    resumed = open_train(cfg, 0, 1, 8, 1)
    resumed.load_cursors(cursors)
    rest = [[(w.epoch, w.index) for w in resumed.next_batch(8)[1]] for _ in range(6)]
    assert [sorted(s) for s in rest] == [sorted(s) for s in uninterrupted[4:]]


@pytest.mark.slow
def test_resume_reads_one_batch_whatever_the_position(tmp_path):
    """O(1) resume: the tokens read to produce the first batch after a resume do not depend on the position."""
    files = write_docs(tmp_path / "data", 4, 2500)
    cfg, _ = packed_cfg(tmp_path, files)
    prepare(cfg, workers=2)
    total = open_train(cfg, 0, 1, 1, 1).schedule.total
    assert total > 20_000
    read, seconds = {}, {}
    for fraction in (0.0, 0.5, 0.99):
        started = time.perf_counter()
        stream = open_train(cfg, 0, 2, 4, 1)
        stream.load_cursors([{"format": "packed", "samples": int(fraction * total) // 8 * 8, "micro_in_step": 0,
                              "windows": [total], "rank": r, "world_size": 2} for r in range(2)])
        stream.next_batch(4)
        seconds[fraction] = time.perf_counter() - started
        read[fraction] = sum(s.tokens_read for s in stream.sources)
    assert read == {0.0: 4 * 17, 0.5: 4 * 17, 0.99: 4 * 17}
    assert seconds[0.99] < 10 * seconds[0.0] + 0.5, seconds  # generous: timing only guards against a replay


def test_mixing_weights_draw_sources_in_proportion(tmp_path):
    a = write_docs(tmp_path / "a", 1, 200, seed=1)
    b = write_docs(tmp_path / "b", 1, 30, seed=2)  # small: it repeats (is upsampled) to keep its 30%
    cfg, _ = packed_cfg(tmp_path, [a[0], b[0]], weights=[0.7, 0.3])
    prepare(cfg, workers=1)
    stream = open_train(cfg, 0, 1, 10, 1)
    n_a = stream.schedule.windows[0]
    drawn = [w.index for _ in range(100) for w in stream.next_batch(10)[1]]
    from_a = sum(1 for w in drawn if w < n_a)
    assert from_a == 700
    b_windows = [w for w in drawn if w >= n_a]
    per_pass = stream.schedule.windows[1]
    for start in range(0, len(b_windows) - per_pass + 1, per_pass):  # each pass over b is a permutation
        assert sorted(b_windows[start:start + per_pass]) == list(range(n_a, n_a + per_pass))
    again = open_train(cfg, 0, 1, 10, 1)
    assert [w.index for _ in range(100) for w in again.next_batch(10)[1]] == drawn


def test_token_reader_crosses_shards(tmp_path):
    root = tmp_path
    (root / "shards").mkdir()
    records = {}
    for name, values in (("a.bin", [1, 2, 3]), ("b.bin", [4]), ("c.bin", [9, 5, 6, 7, 8])):
        np.asarray(values, dtype=np.uint16).tofile(root / "shards" / name)
        records[f"shards/{name}"] = {"tokens": len(values), "mtime_ns": None}
    # parts of files in file order: stretches of shared shards (c.bin holds two files, read out of order)
    parts = [{"path": "shards/a.bin", "offset": 0, "tokens": 3}, {"path": "shards/e.bin", "offset": 0, "tokens": 0},
             {"path": "shards/b.bin", "offset": 0, "tokens": 1}, {"path": "shards/c.bin", "offset": 1, "tokens": 2},
             {"path": "shards/c.bin", "offset": 3, "tokens": 2}, {"path": "shards/c.bin", "offset": 0, "tokens": 1}]
    shards = TokenShards(root, parts, np.dtype(np.uint16), records)
    assert shards.total == 9 and shards.windows(3) == 2 and len(shards.maps) == 4  # c's adjacent parts: one stretch
    assert shards.read(np.array([0, 2, 4, 5]), 4).tolist() == [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8],
                                                               [6, 7, 8, 9]]
    outside = [{"path": "shards/c.bin", "offset": 4, "tokens": 2}]
    with pytest.raises(UserError, match=r"names tokens \[4, 6\) of shards/c.bin \(the shard holds 5\)"):
        TokenShards(root, outside, np.dtype(np.uint16), records)
    np.asarray([1, 2], dtype=np.uint16).tofile(root / "x.bin")
    with pytest.raises(UserError, match="not a plain file in shards/"):  # never a path out of shards/
        TokenShards(root, [{"path": "shards/../x.bin", "offset": 0, "tokens": 2}], np.dtype(np.uint16),
                    {"shards/../x.bin": {"tokens": 2}})


@pytest.mark.slow
def test_cli_prepare_then_train_packed(tmp_path, warm_cli):
    files = write_docs(tmp_path / "data", 2, 100)
    raw = tiny_config(tmp_path / "run", files, data={"block_size": 16, "format": "packed", "val_fraction": 0.1},
                      train={"max_steps": 6, "eval_every": 3, "micro_batch_size": 4})
    config = write_yaml(tmp_path / "run.yaml", raw)
    out = run_cli("prepare", str(config), "--workers", "2")
    assert "2 files (2 tokenized, 0 up to date)" in out.stdout and "tokens/s" in out.stdout
    out = warm_cli("train", str(config))
    assert "fresh run" in out.stdout and "val_loss" in out.stdout
    assert (tmp_path / "run" / "checkpoints" / "step-00000006").is_dir()


@pytest.mark.slow
def test_train_packed_without_prepare_is_one_line(tmp_path, warm_cli):
    files = write_docs(tmp_path / "data", 1, 10)
    config = write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", files, data={"format": "packed"}))
    out = warm_cli("train", str(config), check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "run `gpt2dist prepare` with this config first" in out.stderr
    assert not (tmp_path / "run").exists()


def test_a_file_changed_after_prepare_is_refused(tmp_path):
    files = write_docs(tmp_path / "data", 1, 10)
    cfg, _ = packed_cfg(tmp_path, files)
    prepare(cfg, workers=1)
    Path(files[0]).write_text("new text\n", encoding="utf-8")
    with pytest.raises(UserError, match="changed since it was prepared"):
        open_train(cfg, 0, 1, 1, 1)


@pytest.mark.parametrize("name", ["shards", "tokenizer", "manifest.json", ".prepare.lock"])
def test_a_link_planted_in_the_packed_dir_is_refused_by_prepare_and_training(tmp_path, name):
    """A link at any name prepare writes: refused before anything is written or read through it. The foreign
    folder holds what the names would hold (prepared elsewhere), so only the refusal keeps it untouched."""
    files = write_docs(tmp_path / "data", 2, 10)
    foreign_cfg, _ = packed_cfg(tmp_path / "foreign", files)
    prepare(foreign_cfg, workers=1)
    foreign = packed_root(foreign_cfg)
    cfg, _ = packed_cfg(tmp_path, files)
    root = packed_root(cfg)
    root.mkdir(parents=True)
    (root / name).symlink_to(foreign / name)
    before = {p: p.lstat().st_mtime_ns for p in foreign.rglob("*")}
    Path(files[0]).write_text("new text\n", encoding="utf-8")  # work for prepare to do
    for call in (lambda: prepare(cfg, workers=1), lambda: open_train(cfg, 0, 1, 1, 1)):
        with pytest.raises(UserError, match=rf"{root / name} is a symbolic link: gpt2dist never writes or reads"):
            call()
    assert {p: p.lstat().st_mtime_ns for p in foreign.rglob("*")} == before
    assert [p.name for p in root.iterdir()] == [name]


def test_weights_need_one_per_entry_and_a_positive_sum(tmp_path):
    files = write_docs(tmp_path / "data", 2, 10)
    config = write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", files))
    with pytest.raises(UserError, match=r"data.weights=\[0.0, 0.0\] needs weights >= 0 with a positive sum"):
        load_config(config, ["data.weights=[0,0]"])
    with pytest.raises(UserError, match="has 1 entries for 2 data.train entries"):
        load_config(config, ["data.weights=[1]", "data.format=packed"])


def test_packed_batches_refuse_a_stream_cursor(tmp_path):
    cfg, _ = packed_cfg(tmp_path, write_docs(tmp_path / "data", 1, 50))
    prepare(cfg, workers=1)
    stream: PackedBatches = open_train(cfg, 0, 1, 1, 1)
    with pytest.raises(UserError, match="data.format=stream"):
        stream.load_cursors([{"epoch": 0, "row": 3}])


def test_doctor_checks_the_prepared_data(tmp_path):
    from gpt2dist.planning.preflight import cheap_checks

    cfg, _ = packed_cfg(tmp_path, write_docs(tmp_path / "data", 2, 30))
    found = [f for f in cheap_checks(cfg, 2) if "manifest.json" in f.message]
    assert [f.level for f in found] == ["error"] and "run `gpt2dist prepare`" in found[0].message
    prepare(cfg, workers=1)
    found = [f for f in cheap_checks(cfg, 2) if f.message.startswith("data: packed")]
    assert [f.level for f in found] == ["ok"] and "windows of 17 tokens in 1 source" in found[0].message


def test_invalid_utf8_stops_prepare_cleanly_and_keeps_finished_files(tmp_path):
    files = write_docs(tmp_path / "data", 2, 20)
    cfg, _ = packed_cfg(tmp_path, files[:1])
    prepare(cfg, workers=1)
    Path(files[1]).write_bytes(b"fine text\n\nbad \xff byte\n")
    cfg, _ = packed_cfg(tmp_path, files)  # the tokenizer exists: the error comes while tokenizing the new file
    with pytest.raises(UserError, match=r"part-001.txt at byte 15 is not valid UTF-8"):
        prepare(cfg, workers=1)
    root = packed_root(cfg)
    assert list(load_manifest(root)["files"]) == [str(Path(files[0]).resolve())]
    assert list(root.glob("shards/*")) == [root / load_manifest(root)["files"][str(Path(files[0]).resolve())][
        "parts"]["train"]["path"]], "a half-written shard was left behind"


def test_slurm_renderer_refuses_unprepared_packed_data(tmp_path):
    from gpt2dist.launcher.slurm import SlurmOptions, render

    files = write_docs(tmp_path / "data", 2, 30)
    cfg, config = packed_cfg(tmp_path, files)
    opts = SlurmOptions(nodes=2, gpus_per_node=0, nproc_per_node=1)
    with pytest.raises(UserError, match="run `gpt2dist prepare` with this config first"):
        render(str(config), opts, workdir=str(tmp_path))
    prepare(cfg, workers=1)
    assert "srun" in render(str(config), opts, workdir=str(tmp_path))
