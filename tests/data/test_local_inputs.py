"""Local inputs (issue 25): directories, every file type, encodings, and rows identical to what `datasets` read.

The expected texts come from tests/zh_text.py (real Chinese poems and prose) and, for the row layout old
cursors depend on, from `datasets`' own packaged builders (the reader gpt2dist used before).
"""

from __future__ import annotations

import gzip
import json
import os
import unicodedata
from pathlib import Path

import pytest
from zh_text import TEXTS, write_zh_files

from gpt2dist.config import DataConfig
from gpt2dist.data.encodings import guess_encoding
from gpt2dist.data.local import read_rows
from gpt2dist.data.text import clean_text, iter_documents, resolve_files
from gpt2dist.errors import UserError


def docs(patterns: list[str], **keys) -> list[str]:
    cfg = DataConfig(train=patterns, **keys)
    return [d.strip("\n") for d in iter_documents(resolve_files(patterns, "data.train"), cfg)]


# ------------------------------------------------------------------------------------------------ directories
def test_directory_is_walked_recursively_in_a_stable_order(tmp_path: Path) -> None:
    files = write_zh_files(tmp_path / "corpus", 30)
    (tmp_path / "corpus" / ".hidden.txt").write_text("隐藏", encoding="utf-8")
    (tmp_path / "corpus" / ".git").mkdir()
    (tmp_path / "corpus" / ".git" / "x.txt").write_text("隐藏", encoding="utf-8")
    (tmp_path / "corpus" / "README.md").write_text("# not data", encoding="utf-8")
    os.symlink(files[0], tmp_path / "corpus" / "link.txt")  # never read through a symlink
    found = resolve_files([str(tmp_path / "corpus")], "data.train")
    assert found == sorted(files, key=lambda p: p.relative_to(tmp_path / "corpus").as_posix())
    assert resolve_files([str(tmp_path / "corpus") + "/"], "data.train") == found  # the same list every time
    # directories, globs and files mixed in one list, each expanded in place
    (tmp_path / "extra.jsonl").write_text(json.dumps({"text": TEXTS[0]}, ensure_ascii=False) + "\n", encoding="utf-8")
    mixed = resolve_files([str(tmp_path / "extra.jsonl"), str(tmp_path / "corpus" / "part1" / "*.txt"),
                           str(tmp_path / "corpus")], "data.train")
    part1 = sorted(p for p in files if p.parent.name == "part1")
    assert mixed == [tmp_path / "extra.jsonl", *part1, *found]
    assert docs([str(tmp_path / "corpus")]) == [TEXTS[files.index(p) % len(TEXTS)] for p in found]


def test_empty_directory_and_unknown_types_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"data\.train: .*empty' matches no file; the directory holds no "):
        resolve_files([str(tmp_path / "empty")], "data.train")
    (tmp_path / "a.docx").write_bytes(b"PK")
    with pytest.raises(UserError, match=r"data\.train: unsupported file type '\.docx'"):
        resolve_files([str(tmp_path / "a.docx")], "data.train")


# ------------------------------------------------------------------------------------------------ file types
def write_every_type(root: Path) -> dict[str, Path]:
    """TEXTS in each supported layout; each must read back as exactly TEXTS."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    out = {"txt": root / "a.txt", "txt.gz": root / "a.txt.gz", "jsonl": root / "a.jsonl",
           "jsonl.gz": root / "b.jsonl.gz", "json-strings": root / "strings.json", "json-objects": root / "objs.json",
           "json-holder": root / "holder.json", "csv": root / "a.csv", "tsv": root / "a.tsv",
           "parquet": root / "a.parquet", "saved": root / "saved"}
    paragraphs = "\n\n".join(TEXTS) + "\n"
    out["txt"].write_text(paragraphs, encoding="utf-8")
    out["txt.gz"].write_bytes(gzip.compress(paragraphs.encode("utf-8")))
    lines = "".join(json.dumps({"text": t, "id": i}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS))
    out["jsonl"].write_text(lines, encoding="utf-8")
    out["jsonl.gz"].write_bytes(gzip.compress(lines.encode("utf-8")))
    out["json-strings"].write_text(json.dumps(TEXTS, ensure_ascii=False), encoding="utf-8")  # GPT2-Chinese train.json
    out["json-objects"].write_text(json.dumps([{"text": t} for t in TEXTS], ensure_ascii=False), encoding="utf-8")
    out["json-holder"].write_text(json.dumps({"version": 1, "data": TEXTS}, ensure_ascii=False), encoding="utf-8")
    import csv

    for key, sep in (("csv", ","), ("tsv", "\t")):
        with open(out[key], "w", encoding="utf-8", newline="") as fh:  # quoted fields hold the poems' newlines
            writer = csv.writer(fh, delimiter=sep)
            writer.writerow(["id", "text"])
            writer.writerows([i, t] for i, t in enumerate(TEXTS))
    pq.write_table(pa.table({"text": TEXTS}), out["parquet"])
    datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(len(TEXTS)))}).save_to_disk(str(out["saved"]))
    return out


@pytest.fixture(scope="module")
def every_type(tmp_path_factory) -> dict[str, Path]:
    return write_every_type(tmp_path_factory.mktemp("types"))


@pytest.mark.parametrize("kind", ["txt", "txt.gz", "jsonl", "jsonl.gz", "json-strings", "json-objects",
                                  "json-holder", "csv", "tsv", "parquet", "saved"])
def test_every_file_type_reads_the_texts(every_type: dict[str, Path], kind: str) -> None:
    assert docs([str(every_type[kind])]) == TEXTS


def test_a_directory_of_every_type_and_saved_dataset_splits(every_type: dict[str, Path], tmp_path: Path) -> None:
    root = every_type["txt"].parent
    assert docs([str(root)]) == TEXTS * len(every_type)  # the saved dataset's .arrow files count as one entry
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS[:3]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UserError, match=r"saved DatasetDict with splits \['train'\]: name one split's folder"):
        resolve_files([str(tmp_path / "dd")], "data.train")
    assert docs([str(tmp_path / "dd" / "train")]) == TEXTS[:3]


def test_broken_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[\n  "床前明月光",\n  "疑是地上霜"\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"a\.json is not valid JSON \(.*\): fix the file"):
        docs([str(tmp_path / "a.json")])
    (tmp_path / "a.json").write_text('{"text": "一"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"a\.json line 2 is not JSON"):
        docs([str(tmp_path / "a.json")])


def test_a_broken_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a.txt.gz").write_bytes(b"not gzip at all")
    (tmp_path / "b.parquet").write_bytes(b"PAR1 broken")
    for name in ("a.txt.gz", "b.parquet"):
        with pytest.raises(UserError, match=rf"{name} cannot be read \(.*\): fix or remove the file"):
            docs([str(tmp_path / name)])
    from gpt2dist.config import load_config
    from gpt2dist.data.checks import shard_check

    level, message = shard_check([tmp_path / "a.txt.gz"], load_config(None, [f"data.train=[{tmp_path}]"]), 2)
    assert level == "error" and "a.txt.gz cannot be read" in message


def test_wrong_text_field_names_the_columns(every_type: dict[str, Path]) -> None:
    for kind in ("csv", "jsonl", "parquet", "saved"):
        with pytest.raises(UserError, match=r"data\.text_field='body'.*(columns|fields)"):
            docs([str(every_type[kind])], text_field="body")


TRICKY = "first line\r\nsecond\n\n\nthird para\rstill third\n\n\n\nfourth 末尾\n\nlast without newline"


@pytest.mark.parametrize("sample_by", ["line", "paragraph", "document"])
def test_text_rows_are_datasets_rows(tmp_path: Path, sample_by: str) -> None:
    """Old cursors name (file, row): the rows must be the ones `datasets`' text builder gave (keep_linebreaks)."""
    import datasets

    path = tmp_path / "t.txt"
    path.write_bytes(TRICKY.encode("utf-8"))
    expected = [r["text"] for r in datasets.load_dataset("text", data_files=[str(path)], split="train",
                                                         streaming=True, sample_by=sample_by, keep_linebreaks=True)]
    cfg = DataConfig(train=[str(path)], sample_by=sample_by)
    assert list(read_rows(path, cfg)) == expected
    assert list(read_rows(path, cfg, start=2)) == expected[2:]


def test_jsonl_rows_are_datasets_rows(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "一"}\n\n{"text": "二", "x": 1}\n{"text": null}\n{"text": "三"}', encoding="utf-8")
    expected = [r["text"] or "" for r in datasets.load_dataset("json", data_files=[str(path)], split="train",
                                                               streaming=True)]
    assert list(read_rows(path, DataConfig(train=[str(path)]))) == expected


# ------------------------------------------------------------------------------------------------ encodings
@pytest.mark.parametrize("encoding", ["gb18030", "gbk", "big5", "utf-16", "utf-8-sig"])
def test_data_encoding_reads_the_file(tmp_path: Path, encoding: str) -> None:
    big5 = ["床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。", "春眠不覺曉，處處聞啼鳥。"]  # traditional script
    texts = big5 if encoding == "big5" else TEXTS
    path = tmp_path / "a.txt"
    path.write_bytes("\n\n".join(texts).encode(encoding))
    assert docs([str(path)], encoding=encoding) == texts


@pytest.mark.parametrize(("encoding", "named"), [("gbk", "GBK/GB18030; set data.encoding=gb18030"),
                                                 ("big5", "Big5; set data.encoding=big5"),
                                                 ("utf-16", "UTF-16; set data.encoding=utf-16")])
def test_a_decode_failure_names_the_likely_encoding(tmp_path: Path, encoding: str, named: str) -> None:
    text = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。" if encoding == "big5" else "\n\n".join(TEXTS)
    path = tmp_path / "gbk.txt"
    path.write_bytes(text.encode(encoding))
    with pytest.raises(UserError, match=rf"gbk\.txt at byte \d+ is not valid UTF-8: it looks like {named}"):
        docs([str(path)])


def test_guess_prefers_the_encoding_that_gives_common_characters() -> None:
    prose = "".join(TEXTS)
    assert guess_encoding(prose.encode("gb18030")) == "gb18030"
    assert guess_encoding("學而時習之，不亦說乎？有朋自遠方來，不亦樂乎？".encode("big5")) == "big5"
    assert guess_encoding(prose.encode("utf-8")) == "utf-8"


# ------------------------------------------------------------------------------------------------ CJK cleaning
def test_halfwidth_is_nfkc_of_the_fullwidth_forms_and_off_by_default() -> None:
    fullwidth = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
    expected = unicodedata.normalize("NFKC", fullwidth)  # Unicode's own mapping, independent of our table
    assert clean_text(fullwidth, DataConfig(halfwidth=True)) == expected
    assert clean_text(fullwidth, DataConfig()) == fullwidth
    poem = TEXTS[0]
    assert clean_text(poem, DataConfig(halfwidth=True)) == poem.replace("，", ",")  # 。 is not a full-width form


def test_char_and_bpe_tokenizers_round_trip_cjk() -> None:
    from gpt2dist.data.pieces import splits_exactly
    from gpt2dist.tokenizer import train_bpe, train_char

    for tok in (train_char(TEXTS), train_bpe(TEXTS, 400)):
        ids = tok(TEXTS, add_special_tokens=False)["input_ids"]
        assert [tok.decode(i) for i in ids] == TEXTS
        assert tok.unk_token_id not in {t for i in ids for t in i}
        assert splits_exactly(tok)
    char = train_char(TEXTS)
    assert len(char(TEXTS[0], add_special_tokens=False)["input_ids"]) == len(TEXTS[0])  # one token per character


# ------------------------------------------------------------------------------------------------ the doctor
def test_rows_per_rank_count_every_type_in_characters(every_type: dict[str, Path]) -> None:
    from gpt2dist.config import load_config
    from gpt2dist.data.checks import ascii_only_check, bytes_per_token, shard_check

    root = str(every_type["txt"].parent)
    files = resolve_files([root], "data.train")
    cfg = load_config(None, [f"data.train=[{root}]", "tokenizer.kind=char", "data.block_size=32"])
    rows = len(TEXTS) * len(files)  # each file (and the saved dataset's one .arrow file) holds TEXTS
    world = len(files) + 5  # fewer files than ranks: rows are dealt
    level, message = shard_check(files, cfg, world)
    assert level == "ok" and f"{rows:,} rows -> ~{rows // world:,} per rank" in message, message
    utf8 = "".join(TEXTS)
    assert bytes_per_token(files[:1], cfg) == pytest.approx(len(utf8.encode("utf-8")) / len(utf8), rel=0.05)
    assert ascii_only_check(files, cfg) is None
    level, message = ascii_only_check(files, load_config(None, [f"data.train=[{root}]", "data.ascii_only=true"]))
    assert level == "warn" and "data.ascii_only would drop" in message and "data.ascii_only=false" in message


def test_the_doctor_names_a_gbk_file(tmp_path: Path) -> None:
    from gpt2dist.config import load_config
    from gpt2dist.data.checks import shard_check

    (tmp_path / "gbk.txt").write_bytes("\n\n".join(TEXTS).encode("gbk"))
    files = resolve_files([str(tmp_path)], "data.train")
    level, message = shard_check(files, load_config(None, [f"data.train=[{tmp_path}]"]), 2)
    assert level == "error" and "gbk.txt at byte" in message and "data.encoding=gb18030" in message
    cfg = load_config(None, [f"data.train=[{tmp_path}]", "data.encoding=gb18030"])
    assert shard_check(files, cfg, 2)[0] == "ok"


# ------------------------------------------------------------------------------------------------ many files
def ords(texts: list[str]) -> list[list[int]]:
    return [[ord(c) for c in text] + [0] for text in texts]


def test_the_cursor_stays_small_over_many_files_and_resumes(tmp_path: Path) -> None:
    from collections import Counter

    from gpt2dist.data.stream import TextStream

    write_zh_files(tmp_path / "corpus", 100)  # > sharding.FILES_LISTED: named by count and digest
    files = resolve_files([str(tmp_path / "corpus")], "data.train")
    cfg = DataConfig(train=[str(tmp_path / "corpus")], block_size=31)
    reference = [w.tokens for w in TextStream(files, cfg, ords, repeat=False)]
    stream = TextStream(files, cfg, ords, repeat=False)
    k = len(reference) // 2
    head = [next(stream).tokens for _ in range(k)]
    state = json.loads(json.dumps(stream.state_dict()))
    names = json.dumps([str(f) for f in files])
    assert str(files[0]) not in json.dumps(state) and len(json.dumps(state)) < len(names) / 4
    resumed = TextStream(files, cfg, ords, repeat=False)
    resumed.load_state_dict(state)
    assert head + [w.tokens for w in resumed] == reference  # exact resume
    with pytest.raises(UserError, match="training files differ"):
        TextStream(files[1:], cfg, ords, repeat=False).load_state_dict(state)
    rest = Counter(t for w in reference[k:] for t in w)
    got: Counter = Counter()
    for rank in range(2):  # a world-size change 1 -> 2 re-splits the rest
        part = TextStream(files, cfg, ords, rank=rank, world_size=2, repeat=False)
        part.load_cursors([state])
        got.update(t for w in part for t in w.tokens)
    assert got <= rest and sum(got.values()) >= sum(rest.values()) - 2 * 32


# ------------------------------------------------------------------------------------------------ BERT vocabularies
@pytest.mark.slow  # builds and saves a model: ~5 s of transformers imports
def test_a_gpt2_chinese_folder_keeps_its_bert_vocabulary(tmp_path: Path) -> None:
    """GPT2-Chinese folders may have only vocab.txt and a config.json naming no tokenizer class."""
    from zh_text import bert_gpt2

    from gpt2dist.tokenizer import decode, load_tokenizer

    folder = bert_gpt2(tmp_path / "zh")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    del config["tokenizer_class"]
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split()
    tok = load_tokenizer(folder)
    assert len(tok) == len(vocab) and tok.eos_token == "[SEP]" and tok.eos_token_id == vocab.index("[SEP]")
    assert decode(tok, tok(TEXTS[0], add_special_tokens=False)["input_ids"]) == "".join(TEXTS[0].split())
    (folder / "vocab.txt").write_text("\n".join(v for v in vocab if v != "[SEP]") + "\n", encoding="utf-8")
    tok = load_tokenizer(folder)  # no [SEP] in the vocabulary: its [CLS] ends documents
    assert tok.eos_token == "[CLS]" and tok.eos_token_id == vocab.index("[CLS]")
