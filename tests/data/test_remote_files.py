"""Data files named by URL (how a hub dataset's files are named: hf://datasets/ORG/NAME/...), streamed.

Offline, the URLs are `file://` ones: the same fsspec listing and `datasets` URL reading a hub dataset goes
through, without a network. What only the hub does (auth, its listing API) is not exercised here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import read_metrics, run_cli, tiny_config, write_yaml

from gpt2dist.config import load_config
from gpt2dist.data.sources import RemoteFile
from gpt2dist.data.stream import TextStream
from gpt2dist.data.text import iter_documents, resolve_files
from gpt2dist.errors import UserError
from gpt2dist.planning.preflight import cheap_checks


def write_jsonl(folder: Path, n_files: int, docs: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        path = folder / f"part-{i:02d}.jsonl"
        path.write_text("".join(json.dumps({"text": f"file {i} story {j}: the cat sat on the mat number {j}."}) + "\n"
                                for j in range(docs)), encoding="utf-8")
        paths.append(path)
    return paths


def url(path: Path) -> str:
    return path.resolve().as_uri()


def test_a_url_glob_lists_files_sorted_with_sizes(tmp_path):
    paths = write_jsonl(tmp_path / "data", 3, 5)
    files = resolve_files([url(tmp_path / "data") + "/part-*.jsonl"], "data.train")
    assert all(isinstance(f, RemoteFile) for f in files)
    assert [str(f) for f in files] == [url(p) for p in paths]
    assert [f.size for f in files] == [p.stat().st_size for p in paths]
    assert files[0].name == "part-00.jsonl" and files[0].suffix == ".jsonl"


def test_bad_urls_are_one_line_errors_naming_the_key(tmp_path):
    with pytest.raises(UserError, match=r"config key data.train: 'file://.*/nothing-\*\.jsonl' matches no file; "
                                        r"check the URL"):
        resolve_files([url(tmp_path) + "/nothing-*.jsonl"], "data.train")
    with pytest.raises(UserError, match=r"config key data.val: cannot open 'nosuchscheme://x/a.txt' .*install the "
                                        r"fsspec filesystem"):
        resolve_files(["nosuchscheme://x/a.txt"], "data.val")


@pytest.mark.parametrize("world", [1, 2, 3])
def test_urls_stream_the_same_documents_as_the_local_paths(tmp_path, world):
    paths = write_jsonl(tmp_path / "data", 3, 40)
    cfg = load_config(write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", [str(p) for p in paths])))
    remote = resolve_files([url(p) for p in paths], "data.train")
    for rank in range(world):
        local_docs = list(iter_documents(paths, cfg.data, rank=rank, world_size=world))
        assert local_docs and list(iter_documents(remote, cfg.data, rank=rank, world_size=world)) == local_docs


def test_a_url_stream_resumes_from_its_cursor(tmp_path):
    paths = write_jsonl(tmp_path / "data", 2, 60)
    cfg = load_config(write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", [str(p) for p in paths])))
    remote = resolve_files([url(p) for p in paths], "data.train")

    def encode(texts):
        return [[ord(c) % 50 for c in t] for t in texts]

    whole = TextStream(remote, cfg.data, encode)
    expected = [next(whole).tokens for _ in range(40)]
    first = TextStream(remote, cfg.data, encode)
    got = [next(first).tokens for _ in range(17)]
    resumed = TextStream(remote, cfg.data, encode)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    got += [next(resumed).tokens for _ in range(23)]
    assert got == expected


def test_parquet_columns_are_checked_through_the_url(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": ["a story"] * 10}), path)
    cfg = load_config(write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", [url(path)])))
    with pytest.raises(UserError, match=r"data.text_field='text': file://.*d.parquet has columns \['body'\]"):
        list(iter_documents(resolve_files([url(path)], "data.train"), cfg.data))


def test_doctor_checks_url_shards_and_prepare_refuses_urls(tmp_path):
    paths = write_jsonl(tmp_path / "data", 1, 30)
    config = write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", [url(paths[0])]))
    findings = cheap_checks(load_config(config), world_size=2)
    data = [f for f in findings if f.message.startswith("data.train")]
    assert data and data[0].level == "ok" and "rows not counted: remote files" in data[0].message, findings
    out = run_cli("prepare", str(config), check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "config key data.train: file://" in out.stderr and "is a URL but prepare reads local files" in out.stderr


def test_training_from_urls_equals_training_from_the_local_files(tmp_path, warm_cli):
    paths = write_jsonl(tmp_path / "data", 2, 200)
    steps = {"max_steps": 6}
    local = write_yaml(tmp_path / "local.yaml", tiny_config(tmp_path / "local", [str(p) for p in paths], train=steps))
    glob_url = url(tmp_path / "data") + "/*.jsonl"
    remote = write_yaml(tmp_path / "remote.yaml", tiny_config(tmp_path / "remote", [glob_url], train=steps))
    warm_cli("train", str(local))
    warm_cli("train", str(remote))
    local_losses = [r["loss"] for _, r in sorted(read_metrics(tmp_path / "local").items())]
    assert len(local_losses) == 6
    assert [r["loss"] for _, r in sorted(read_metrics(tmp_path / "remote").items())] == local_losses
