"""Tests for the procedural demo corpus: deterministic, well-formed documents, learnable small vocabulary."""

from __future__ import annotations

import random
import re

import pytest

from gpt2dist.demo_corpus import generate_stories, main, write_demo_corpus


def test_same_seed_gives_identical_stories() -> None:
    assert generate_stories(200, seed=3) == generate_stories(200, seed=3)


def test_different_seed_gives_different_stories() -> None:
    assert generate_stories(200, seed=0) != generate_stories(200, seed=1)


def test_global_random_state_is_untouched() -> None:
    random.seed(123)
    expected = random.random()
    random.seed(123)
    generate_stories(50, seed=7)
    assert random.random() == expected


def test_stories_are_ascii_single_documents() -> None:
    stories = generate_stories(2000, seed=0)
    assert len(stories) == 2000
    for story in stories:
        assert story.isascii()
        assert "\n\n" not in story
        assert story == story.strip()
        assert story.endswith("The end.")


def test_most_stories_are_distinct() -> None:
    stories = generate_stories(2000, seed=0)
    assert len(set(stories)) > 0.9 * len(stories)


def test_vocabulary_is_small() -> None:
    stories = generate_stories(5000, seed=0)
    words = {w.lower() for s in stories for w in re.findall(r"[A-Za-z']+", s)}
    assert 100 < len(words) < 600


def test_negative_count_is_rejected() -> None:
    with pytest.raises(ValueError):
        generate_stories(-1)


def test_write_demo_corpus(tmp_path) -> None:
    out = tmp_path / "corpus"
    train_path, val_path = write_demo_corpus(out, train_stories=300, val_stories=40, seed=5)
    assert (train_path, val_path) == (out / "train.txt", out / "val.txt")
    train_text = train_path.read_text(encoding="ascii")
    val_text = val_path.read_text(encoding="ascii")
    assert train_path.stat().st_size > 0 and val_path.stat().st_size > 0
    assert train_text.split("\n\n") == [s + "\n" * (i == 299) for i, s in enumerate(generate_stories(300, 5))]
    assert len(train_text.split("\n\n")) == 300
    assert len(val_text.split("\n\n")) == 40
    assert train_text != val_text
    # val comes from its own stream: it is not the start of this or any nearby seed's train stream.
    val_docs = [d.strip() for d in val_text.split("\n\n")]
    for seed in range(10):
        assert val_docs != generate_stories(40, seed)
    # No temporary files are left behind.
    assert sorted(p.name for p in out.iterdir()) == ["train.txt", "val.txt"]


def test_write_is_deterministic_and_overwrites(tmp_path) -> None:
    a, _ = write_demo_corpus(tmp_path / "a", train_stories=100, val_stories=10, seed=2)
    b, _ = write_demo_corpus(tmp_path / "b", train_stories=100, val_stories=10, seed=2)
    assert a.read_bytes() == b.read_bytes()
    a.write_text("stale\n")
    a2, _ = write_demo_corpus(tmp_path / "a", train_stories=100, val_stories=10, seed=2)
    assert a2.read_bytes() == b.read_bytes()


def test_main_prints_paths_and_sizes(tmp_path, capsys) -> None:
    main([str(tmp_path), "--train-stories", "50", "--val-stories", "5", "--seed", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, ("train.txt", "val.txt"), strict=False):
        path, size, unit = line.rsplit(" ", 2)
        assert path == str(tmp_path / name)
        assert unit == "bytes" and int(size) == (tmp_path / name).stat().st_size > 0


def test_main_rejects_negative_count(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--train-stories", "-3"])
