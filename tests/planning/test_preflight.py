"""The preflight every entry point runs: batch math, ranks vs backend, data per rank, precision, disk, vocabulary
and positions -- one finding each, errors turned into one line before any expensive work."""

from __future__ import annotations

import json
import os
from collections import namedtuple
from pathlib import Path

import pytest
from helpers import cfg_with, messages

from gpt2dist.config import load_config
from gpt2dist.errors import UserError
from gpt2dist.planning import preflight


def test_cheap_checks_pass_on_a_good_config(tmp_path):
    findings = preflight.cheap_checks(cfg_with(tmp_path, "train.micro_batch_size=2"), 2)
    assert not messages(findings, "error") and not messages(findings, "warn"), findings
    assert any("40 rows -> ~20 per rank" in m for m in messages(findings, "ok"))


def test_row_count_matches_the_stream_ranks_shard(tmp_path):
    from gpt2dist.data.checks import count_rows
    from gpt2dist.data.text import iter_file_texts
    from gpt2dist.demo_corpus import write_demo_corpus

    train, _ = write_demo_corpus(tmp_path, train_stories=100, val_stories=5, seed=3)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"a\r\nb\r\n\r\nc\r\n\r\n\r\n\r\nd")
    for path in (train, crlf):
        for mode in ("line", "paragraph", "document"):
            cfg = load_config(None, [f"data.train=[{path}]", f"data.sample_by={mode}"])
            rows = sum(1 for _ in iter_file_texts(path, cfg.data))
            assert count_rows([path], mode) == rows, (path.name, mode)


def test_missing_data_is_an_error(tmp_path):
    cfg = cfg_with(tmp_path)
    cfg.data.train = [str(tmp_path / "nope" / "*.txt")]
    (err,) = messages(preflight.cheap_checks(cfg, 1), "error")
    assert "data.train" in err and "matches no file" in err


def test_a_rank_without_rows_is_an_error(tmp_path):
    cfg = cfg_with(tmp_path, "train.micro_batch_size=1", data="one\n\ntwo\n\nthree\n\nfour\n")
    (err,) = messages(preflight.cheap_checks(cfg, 6), "error")
    assert "4 rows (documents) for 6 ranks: ranks 4-5 would get none" in err
    assert "data.format=packed" in err, "the message names what works"


def long_document(chars: int) -> str:
    from gpt2dist.demo_corpus import generate_stories

    return " ".join(s.replace("\n", " ") for s in generate_stories(chars // 250, seed=2))[:chars]


def test_one_long_document_is_shared_by_every_rank(tmp_path):
    """A corpus of one document (a single .txt read with sample_by=document) is dealt to ranks in pieces."""
    cfg = cfg_with(tmp_path, "train.micro_batch_size=1", "data.sample_by=document", data=long_document(300_000))
    findings = preflight.cheap_checks(cfg, 4)
    assert not messages(findings, "error"), findings
    assert any("1 rows in 5 pieces -> ~1 per rank" in m for m in messages(findings, "ok")), findings
    (err,) = messages(preflight.cheap_checks(cfg, 8), "error")  # 5 pieces cannot feed 8 ranks
    assert "1 rows (documents) for 8 ranks: ranks 5-7 would get none" in err and "data.format=packed" in err


def test_long_parquet_rows_are_counted_in_pieces(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "long.parquet"
    pq.write_table(pa.table({"text": [long_document(200_000), "a short one"]}), path)
    cfg = load_config(None, [f"data.train=[{path}]", f"run_dir={tmp_path / 'run'}", "train.micro_batch_size=1"])
    findings = preflight.cheap_checks(cfg, 3)
    assert not messages(findings, "error"), findings
    assert any("2 rows in 5 pieces" in m for m in messages(findings, "ok")), findings


def test_a_tokenizer_that_cannot_split_documents_names_packed(tmp_path):
    from tokenizers import pre_tokenizers

    from gpt2dist.tokenizer import train_bpe

    tok = train_bpe(["some text to learn from"] * 20, 300)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.save_pretrained(tmp_path / "tok")
    cfg = cfg_with(tmp_path, "train.micro_batch_size=1", "data.sample_by=document", "tokenizer.kind=pretrained",
                   f"tokenizer.path={tmp_path / 'tok'}", data=long_document(300_000))
    errors = [e for e in messages(preflight.cheap_checks(cfg, 2), "error") if "would get none" in e]
    assert len(errors) == 1 and "cannot split long documents exactly" in errors[0]
    assert "data.format=packed" in errors[0]


def test_file_sharding_flags_a_rank_whose_files_are_empty(tmp_path):
    cfg = cfg_with(tmp_path, "train.micro_batch_size=1")
    for name, text in (("a.txt", "one\n\ntwo\n"), ("b.txt", ""), ("c.txt", "three\n"), ("d.txt", "")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    cfg.data.train = [str(tmp_path / n) for n in ("a.txt", "b.txt", "c.txt", "d.txt")]
    errors = messages(preflight.cheap_checks(cfg, 2), "error")
    assert any("rank 1 would read only empty files (rank r reads files r, r+2, ...)" in e for e in errors), errors
    assert not any("read only empty" in e for e in messages(preflight.cheap_checks(cfg, 1), "error"))


def test_world_size_that_does_not_divide_the_batch(tmp_path):
    cfg = cfg_with(tmp_path, "train.global_batch_size=8", "train.micro_batch_size=4")
    (err,) = messages(preflight.cheap_checks(cfg, 3), "error")
    assert "does not fit 3 ranks" in err


def test_fp16_warns_and_unwritable_run_dir_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = cfg_with(tmp_path, "train.precision=fp16", f"run_dir={blocker / 'run'}")
    findings = preflight.cheap_checks(cfg, 1)
    assert any("prefer bf16" in m for m in messages(findings, "warn"))
    (err,) = messages(findings, "error")
    assert err.startswith(f"run_dir {blocker / 'run'}: cannot create files")


def test_the_disk_check_writes_nothing(tmp_path):
    """The run dir's checks run before a changed-key refusal, which must leave the run dir untouched: the
    writability check asks the kernel rather than creating a probe file (which would bump the folder's mtime)."""
    cfg = cfg_with(tmp_path)
    checkpoints = Path(cfg.run_dir) / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.utime(checkpoints, ns=(10**18, 10**18))
    preflight.cheap_checks(cfg, 1)
    assert checkpoints.stat().st_mtime_ns == 10**18 and not list(checkpoints.iterdir())


def test_too_little_disk_for_two_checkpoints(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    cfg = cfg_with(tmp_path, "model.preset=gpt2", "tokenizer.kind=bpe", "tokenizer.vocab_size=50257")
    one = 12 * 124_439_808  # GPT-2's parameters; torch engine on one rank: fp32 weights + Adam m, v
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _p: usage(10**12, 0, 2 * one - 1))
    (err,) = messages(preflight.cheap_checks(cfg, 1), "error")
    assert "less than two checkpoints" in err and "124.4M params" in err
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _p: usage(10**12, 0, 3 * one))
    (warn,) = messages(preflight.cheap_checks(cfg, 1), "warn")
    assert "keep_last + 1 = 4" in warn
    # resuming with one checkpoint on disk: room for one more is enough to go on (then the oldest is deleted)
    step = tmp_path / "run" / "checkpoints" / "step-00000100"
    step.mkdir(parents=True)
    with open(step / "engine.pt", "wb") as fh:
        fh.truncate(one + 1)  # sparse: its size is what counts
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _p: usage(10**12, 0, one + 2))
    findings = preflight.cheap_checks(cfg, 1)
    assert not messages(findings, "error") and "1 on disk" in messages(findings, "warn")[0]


def test_pretrained_vocab_and_positions(tmp_path):
    from gpt2dist.tokenizer import train_char

    folder = tmp_path / "pre"
    train_char(["abc"]).save_pretrained(str(folder))  # 5 tokens: EOS, UNK, a, b, c
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 100, "n_positions": 64,
                                                    "n_layer": 2, "n_embd": 64, "n_head": 2}))
    (folder / "model.safetensors").write_bytes(b"")  # only its presence is checked before the build
    cfg = cfg_with(tmp_path, f"model.pretrained={folder}", "tokenizer.kind=pretrained", "data.block_size=128")
    findings = preflight.cheap_checks(cfg, 1)
    assert any("tokenizer has 5 tokens" in m and "100 embeddings" in m for m in messages(findings, "warn"))
    assert any("exceeds the model's n_positions=64" in m for m in messages(findings, "error"))


def test_raise_for_problems():
    warned: list[str] = []
    preflight.raise_for_problems([preflight.Finding("ok", "fine"), preflight.Finding("warn", "hmm")], warned.append)
    assert warned == ["hmm"]
    with pytest.raises(UserError, match=r"^first \(\+1 more: run gpt2dist doctor\)$"):
        preflight.raise_for_problems([preflight.Finding("error", "first"), preflight.Finding("error", "second")])
