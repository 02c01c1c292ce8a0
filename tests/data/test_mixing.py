"""Source mixing on the streaming path (`data.weights` with data.format=stream): shares, rank-disjoint
sources, exact resume on the same and on another world size, and a real killed run resumed.

Source A's documents are all 'a's, source B's all 'b's, tokens are ord(c) + EOS 0: which source a window
came from is read off its tokens, independently of the code under test.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import read_metrics, tiny_config, write_yaml
from ranks import kill_after_checkpoint, read_trace_docs, run_ranks

from gpt2dist.config import load_config
from gpt2dist.data.build import make_train_stream
from gpt2dist.data.mixing import MixedStream
from gpt2dist.errors import UserError


def encode(docs: list[str]) -> list[list[int]]:
    return [[ord(c) for c in doc] + [0] for doc in docs]


def write_source(folder: Path, letter: str, n_files: int, docs: int) -> list[Path]:
    """Unique documents of one letter: `letter * length`, the length encodes (file, row)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(n_files):
        path = folder / f"{letter}{f:02d}.txt"
        path.write_text("\n".join(letter * (5 + f * docs + row) for row in range(docs)) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def mixed_config(tmp_path: Path, weights: list[float], a_files: int = 2, b_files: int = 3, **data):
    a = write_source(tmp_path / "a", "a", a_files, 30)
    b = write_source(tmp_path / "b", "b", b_files, 30)
    raw = tiny_config(tmp_path / "run", [str(tmp_path / "a" / "*.txt"), str(tmp_path / "b" / "*.txt")],
                      data={"block_size": 16, "sample_by": "line", "weights": weights, "num_workers": 0, **data})
    return load_config(write_yaml(tmp_path / "run.yaml", raw)), a, b


def stream(cfg, rank: int = 0, world: int = 1) -> MixedStream:
    out = make_train_stream([], cfg.data, encode, rank=rank, world_size=world, seed=cfg.seed)
    assert isinstance(out, MixedStream)
    return out


def source_of(tokens: list[int]) -> str:
    letters = {chr(t) for t in tokens} & {"a", "b"}
    assert len(letters) == 1, f"a window mixes sources: {letters}"
    return letters.pop()


def test_windows_follow_the_weights_exactly_and_interleaved(tmp_path):
    cfg, _, _ = mixed_config(tmp_path, [0.7, 0.3])
    s = stream(cfg)
    sources = [source_of(next(s).tokens) for _ in range(1000)]
    assert Counter(sources) == {"a": 700, "b": 300}
    assert all(Counter(sources[i:i + 10]) == {"a": 7, "b": 3} for i in range(0, 1000, 10))


def test_each_source_is_split_disjointly_and_completely_over_ranks(tmp_path):
    cfg, a, b = mixed_config(tmp_path, [1, 1])
    expected = {"a": 2 * 30, "b": 3 * 30}
    pulled: dict[str, list[str]] = {"a": [], "b": []}
    for rank in range(2):
        s = stream(cfg, rank, 2)
        for _ in range(400):
            next(s)
        for epoch, where in s.drain_pulled():
            if epoch == 0:
                pulled["ab"[int(where.split("/")[0])]].append(where)
    for letter, docs in pulled.items():
        assert len(docs) == len(set(docs)) == expected[letter], letter


def test_a_zero_weight_source_is_never_read(tmp_path):
    cfg, _, _ = mixed_config(tmp_path, [1, 0])
    s = stream(cfg)
    assert {source_of(next(s).tokens) for _ in range(200)} == {"a"}


def mixed_docs(s: MixedStream, n: int) -> list[tuple[int, str]]:
    for _ in range(n):
        next(s)
    return s.drain_pulled()


def test_resume_on_the_same_and_another_world_size_repeats_and_skips_nothing(tmp_path):
    cfg, _, _ = mixed_config(tmp_path, [0.6, 0.4])
    whole = stream(cfg)
    expected = [next(whole).tokens for _ in range(300)]
    first = stream(cfg)
    got = [next(first).tokens for _ in range(111)]
    again = stream(cfg)
    again.load_cursors([json.loads(json.dumps(first.state_dict()))])
    assert [next(again).tokens for _ in range(189)] == expected[111:]

    two = [stream(cfg, r, 2) for r in range(2)]
    before = [d for s in two for d in mixed_docs(s, 57)]
    cursors = [json.loads(json.dumps(s.state_dict())) for s in two]
    one = stream(cfg)
    one.load_cursors(cursors)
    after = mixed_docs(one, 200)
    epoch0 = [where for epoch, where in before + after if epoch == 0]
    assert len(epoch0) == len(set(epoch0)), "a document was read twice across the 2 -> 1 change"
    assert Counter(w.split("/")[0] for w in epoch0) == {"0": 60, "1": 90}, "a document was skipped"
    assert got == expected[:111]


def test_an_unmixed_cursor_is_refused_in_one_line(tmp_path):
    cfg, _, _ = mixed_config(tmp_path, [1, 1])
    with pytest.raises(UserError, match="data.train or data.weights changed"):
        stream(cfg).load_cursors([{"version": 2, "epoch": 0}])


@pytest.mark.slow
def test_a_killed_mixed_run_resumes_with_identical_losses(tmp_path, warm_cli):
    """A real run (DataLoader worker on) killed after checkpoint 4, resumed: steps 5-12 equal an unbroken run."""
    _, _, _ = mixed_config(tmp_path, [0.7, 0.3])
    raw = tiny_config(tmp_path / "a-run", [str(tmp_path / "a" / "*.txt"), str(tmp_path / "b" / "*.txt")],
                      data={"block_size": 16, "sample_by": "line", "weights": [0.7, 0.3], "num_workers": 1},
                      train={"max_steps": 12}, checkpoint={"every": 4, "keep_last": 2})
    unbroken = write_yaml(tmp_path / "unbroken.yaml", raw)
    killed = write_yaml(tmp_path / "killed.yaml", {**raw, "run_dir": str(tmp_path / "b-run")})
    warm_cli("train", str(unbroken))
    kill_after_checkpoint("single", killed, tmp_path / "b-run", step=4, warm=warm_cli)
    resumed = warm_cli("train", str(killed))
    assert "resuming from step-00000004" in resumed.stdout
    losses = {run: read_metrics(tmp_path / run) for run in ("a-run", "b-run")}
    assert [losses["b-run"][s]["loss"] for s in range(5, 13)] == [losses["a-run"][s]["loss"] for s in range(5, 13)]


def test_doctor_checks_each_source_on_its_own(tmp_path):
    from gpt2dist.planning.preflight import cheap_checks

    cfg, _, b = mixed_config(tmp_path, [0.5, 0.5], a_files=1, b_files=1)
    b[0].write_text("b\n", encoding="utf-8")  # one row: rank 1 of 2 would get none of source b
    findings = {f.message.split(":")[0]: f for f in cheap_checks(cfg, world_size=2)}
    source_a, source_b = (f"data.train source {str(tmp_path / x / '*.txt')!r}" for x in "ab")
    assert findings[source_a].level == "ok"
    assert findings[source_b].level == "error" and "rank 1 would get none" in findings[source_b].message


@pytest.mark.slow
def test_real_two_rank_mixed_run_resumes_on_one_rank_without_repeats(tmp_path, warm_cli):
    """torchrun + DeepSpeed on 2 real ranks to step 4, then 1 rank to step 10: each document at most once."""
    mixed_config(tmp_path, [0.7, 0.3])
    raw = tiny_config(tmp_path / "run", [str(tmp_path / "a" / "*.txt"), str(tmp_path / "b" / "*.txt")],
                      data={"block_size": 16, "sample_by": "line", "weights": [0.7, 0.3]},
                      train={"max_steps": 4, "global_batch_size": 8}, checkpoint={"every": 2, "keep_last": 2},
                      logging={"tensorboard": False, "progress": "lines", "trace_windows": True})
    config = write_yaml(tmp_path / "run.yaml", raw)
    overrides = ["distributed.backend=deepspeed", "distributed.zero_stage=1"]
    run_ranks("torchrun", config, overrides, nproc=2)
    cursor = json.loads((tmp_path / "run" / "checkpoints" / "step-00000004" / "cursor-rank00001.json").read_text())
    assert cursor["format"] == "mixed" and cursor["world_size"] == 2 and cursor["drawn"] == 4 * 8 // 2
    resumed = warm_cli("train", str(config), *overrides, "train.max_steps=10")  # one rank: `gpt2dist train`
    assert "resuming from step-00000004" in resumed.stdout
    docs = [where for epoch, where in read_trace_docs(tmp_path / "run") if epoch == 0]
    assert len(docs) == len(set(docs)), "a document was read twice across the 2 -> 1 change"
    assert {where.split("/")[0] for where in docs} == {"0", "1"}
    assert max(read_metrics(tmp_path / "run")) == 10
