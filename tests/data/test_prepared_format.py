"""Prepared data's on-disk format: many small files share shards (format 2), and a folder written in format 1
(one shard per file, tests/data/fixtures/v1-prepared, made by tests/data/fixtures/make_v1_prepared.py at commit
62b57c6) still trains, resumes and is added to."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from zh_text import TEXTS

from gpt2dist.config import load_config
from gpt2dist.data import prepare as prepare_module
from gpt2dist.data import shardwriter
from gpt2dist.data.manifest import load_manifest, packed_root
from gpt2dist.data.packed import open_train, packed_summary, val_factory
from gpt2dist.data.prepare import prepare
from gpt2dist.data.text import iter_documents, resolve_files
from gpt2dist.errors import UserError
from gpt2dist.tokenizer import encode_documents, load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "v1-prepared"


def install_v1(tmp_path: Path):
    """A copy of the format-1 fixture as if its code had prepared it right here: the manifest's absolute source
    paths and the files' mtimes (which git does not keep) are what that prepare recorded."""
    work = (tmp_path / "v1").resolve()
    shutil.copytree(FIXTURE, work)
    manifest = work / "packed" / "manifest.json"
    manifest.write_text(manifest.read_text(encoding="utf-8").replace("@FIXTURE@", str(work)), encoding="utf-8")
    expected = json.loads((work / "expected.json").read_text(encoding="utf-8"))
    for rel, ns in expected["mtime_ns"].items():
        os.utime(work / rel, ns=(ns, ns))
    cfg = load_config(None, [o.replace("@FIXTURE@", str(work)) for o in expected["overrides"]])
    return work, cfg, expected


def all_windows(cfg) -> list[list[int]]:
    """Every window of one pass, in the run's (shuffled) order, at one rank."""
    stream = open_train(cfg, 0, 1, 1, 1)
    return [stream.next_batch(1)[0][0].tolist() for _ in range(stream.schedule.total)]


def source_tokens(cfg) -> list[int]:
    """The source's whole token sequence as training reads it."""
    shards = open_train(cfg, 0, 1, 1, 1).sources[0]
    return shards.read(np.array([0]), shards.total)[0].tolist()


def streamed_tokens(cfg, heldout: bool | None = False) -> list[int]:
    """Independent of prepare: the streaming reader's documents, tokenized by the prepared dir's tokenizer."""
    tokenizer = load_tokenizer(packed_root(cfg) / "tokenizer")
    docs = list(iter_documents(resolve_files(cfg.data.train, "data.train"), cfg.data, heldout=heldout))
    return [t for ids in encode_documents(tokenizer, docs) for t in ids]


def test_a_format_1_dir_resumes_with_the_old_readers_windows_on_two_ranks(tmp_path):
    _, cfg, expected = install_v1(tmp_path)
    ranks = [open_train(cfg, r, 2, 2, 1) for r in range(2)]  # the old run: 1 rank, micro batch 4
    for stream in ranks:
        stream.load_cursors([expected["cursor"]])
    assert list(ranks[0].schedule.windows) == expected["windows"]
    for step in expected["next_steps"]:
        got = [stream.next_batch(2) for stream in ranks]  # rank 0 takes the step's first 2 samples, rank 1 the rest
        assert [[w.epoch, w.index] for _, windows in got for w in windows] == step["windows"]
        assert [row for batch, _ in got for row in batch.tolist()] == step["rows"]
    val = [w.tokens for _, w in zip(range(3), val_factory(cfg)(), strict=False)]
    assert val == expected["val"]
    assert packed_summary(cfg)[0] == "ok"


def test_prepare_over_a_format_1_dir_keeps_it_adds_to_it_and_replaces_what_changed(tmp_path):
    work, cfg, _ = install_v1(tmp_path)
    root = packed_root(cfg)
    before = (root / "manifest.json").read_bytes()
    assert prepare(cfg, workers=1, progress=False).tokenized == 0
    assert (root / "manifest.json").read_bytes() == before, "nothing to do: the folder stays format 1"
    old = load_manifest(root)["files"]
    b_shards = [p["path"] for p in old[str(work / "corpus" / "b.txt")]["parts"].values()]
    (work / "corpus" / "b.txt").write_text("b.txt 0: the dog sat\n\nb.txt 1: a cat ran far\n", encoding="utf-8")
    (work / "corpus" / "d.txt").write_text("d.txt 0: the mat and the dog\n", encoding="utf-8")
    assert prepare(cfg, workers=1, progress=False).tokenized == 2
    assert json.loads((root / "manifest.json").read_text())["version"] == 2
    files = load_manifest(root)["files"]
    assert files[str(work / "corpus" / "a.txt")] == old[str(work / "corpus" / "a.txt")]  # untouched, format 1
    assert not any((root / p).exists() for p in b_shards), "the changed file's old shards are deleted"
    assert {p["path"] for p in files[str(work / "corpus" / "d.txt")]["parts"].values()} == {
        p["path"] for p in files[str(work / "corpus" / "b.txt")]["parts"].values()}, "one new shard group"
    assert source_tokens(cfg) == streamed_tokens(cfg)
    assert packed_summary(cfg)[0] == "ok"


def many_and_one(tmp_path: Path, n_files: int):
    """n_files small files of Chinese poems and prose in nested folders, and one file of the same documents in the
    same order (each ends with a blank line: the same paragraphs either way); a config for each."""
    for i in range(n_files):
        path = tmp_path / "many" / f"d{i % 7}" / f"{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TEXTS[i % len(TEXTS)] + "\n\n", encoding="utf-8")
    ordered = resolve_files([str(tmp_path / "many")], "data.train")
    (tmp_path / "one.txt").write_text("".join(p.read_text(encoding="utf-8") for p in ordered), encoding="utf-8")
    cfgs = []
    for name, train in (("many", tmp_path / "many"), ("one", tmp_path / "one.txt")):
        cfgs.append(load_config(None, [f"run_dir={tmp_path / name}-run", f"data.train=[{train}]", "data.block_size=16",
                                       "data.format=packed", "tokenizer.kind=char", "data.val_fraction=0.2"]))
    return ordered, cfgs


def test_many_small_files_share_shards_and_train_as_one_file_would(tmp_path, monkeypatch):
    monkeypatch.setattr(shardwriter, "SHARD_BYTES", 1000)  # several shard groups out of 60 small files
    ordered, (many, one) = many_and_one(tmp_path, 60)
    assert prepare(many, workers=1, progress=False).tokenized == 60
    prepare(one, workers=1, progress=False)
    root = packed_root(many)
    shards = sorted(p.name for p in (root / "shards").iterdir())
    groups = {name.split(".")[0] for name in shards}
    assert 3 <= len(groups) <= 20 and len(shards) == 2 * len(groups), shards  # train + heldout per group, no .tmp
    assert set(load_manifest(root)["shards"]) == {f"shards/{name}" for name in shards}
    assert source_tokens(many) == streamed_tokens(many) == source_tokens(one)
    assert all_windows(many) == all_windows(one)
    held = [list(w.tokens) for w in val_factory(many)()]
    assert held and held == [list(w.tokens) for w in val_factory(one)()]


def test_an_error_keeps_the_sealed_shards_and_a_rerun_does_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(shardwriter, "SHARD_BYTES", 600)
    monkeypatch.setattr(prepare_module, "CHUNK_CHARS", 200)  # a few files per tokenizer call
    ordered, (many, _) = many_and_one(tmp_path, 30)
    prepare(many, workers=1, progress=False)
    root = packed_root(many)
    before = load_manifest(root)["files"]
    for path in ordered[10:]:  # changed (no new character: the tokenizer is kept)
        path.write_text(path.read_text(encoding="utf-8") * 2, encoding="utf-8")
    good = ordered[20].read_bytes()
    ordered[20].write_bytes(good[:6] + b"\xff" + good[6:])
    with pytest.raises(UserError, match=f"{ordered[20].name} at byte 6 is not valid UTF-8"):
        prepare(many, workers=1, progress=False)
    after = load_manifest(root)["files"]
    redone = [p for p in ordered[10:] if after[str(p)] != before[str(p)]]
    assert 0 < len(redone) < 10 and redone == ordered[10:10 + len(redone)], "the sealed groups' files, in order"
    assert sorted(f"shards/{p.name}" for p in (root / "shards").iterdir()) == sorted(load_manifest(root)["shards"])
    ordered[20].write_bytes(good)
    assert prepare(many, workers=1, progress=False).tokenized == 20 - len(redone)
    assert source_tokens(many) == streamed_tokens(many)


def test_a_shard_is_deleted_once_no_file_uses_it(tmp_path):
    ordered, (many, _) = many_and_one(tmp_path, 3)
    prepare(many, workers=1, progress=False)
    root = packed_root(many)
    assert sorted(p.name for p in (root / "shards").iterdir()) == ["pack-000000.heldout.bin", "pack-000000.train.bin"]
    ordered[1].write_text(ordered[0].read_text(encoding="utf-8"), encoding="utf-8")  # same characters
    assert prepare(many, workers=1, progress=False).tokenized == 1
    assert len(list((root / "shards").iterdir())) == 4, "pack-000000 still holds files 0 and 2"
    for path in (ordered[0], ordered[2]):
        path.write_text(ordered[1].read_text(encoding="utf-8") + "\n" + path.read_text(encoding="utf-8"),
                        encoding="utf-8")
    assert prepare(many, workers=1, progress=False).tokenized == 2
    assert sorted(p.name for p in (root / "shards").iterdir()) == [
        f"pack-00000{n}.{part}.bin" for n in (1, 2) for part in ("heldout", "train")]
    assert source_tokens(many) == streamed_tokens(many)
