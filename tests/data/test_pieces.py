"""Long documents in pieces (gpt2dist/data/pieces.py): where the cuts fall, and that the pieces tokenize to exactly
the ids of the whole text for every tokenizer kind the streaming path splits with -- char, byte-level BPE, and a
pretrained folder configured as GPT-2's (ByteLevel pre-tokenizer, no normalizer) -- while a tokenizer whose
pieces could differ (a SentencePiece-style Metaspace) is detected and reads documents whole."""

from __future__ import annotations

import random

import pytest

from gpt2dist.data.pieces import PIECE_CHARS, DocumentEncoder, piece_starts, piece_text, splits_exactly
from gpt2dist.demo_corpus import generate_stories
from gpt2dist.tokenizer import load_tokenizer, train_bpe, train_char

ODD = ["  double  spaces ", "tabs\tand\t\ttabs", "line\nbreaks\n\n\nruns", "trailing spaces   \n", "\u00a0nbsp\u00a0x",
       "ideographic\u3000space", "don't we'll they're it's O'Neil's", "numbers 12345 678,90 3.14159",
       "punct!!! ?? ... ---", "\u4e2d\u6587\u6ca1\u6709\u7a7a\u683c\u7684\u53e5\u5b50\u4e2d\u6587",
       "emoji \U0001f600\U0001f680 ok",
       "caf\u00e9 na\u00efve r\u00e9sum\u00e9", "x" * 300, " " * 40, "end."]


def long_text(n_stories: int = 600, seed: int = 3) -> str:
    """Stories joined into one document, with odd whitespace, Unicode and punctuation sprinkled between them."""
    rng = random.Random(seed)
    parts = []
    for story in generate_stories(n_stories, seed=seed):
        parts.append(story)
        if rng.random() < 0.5:
            parts.append(rng.choice(ODD))
    return rng.choice(["", " "]) + " ".join(parts)


def pieces_of(text: str, piece_chars: int) -> list[str]:
    starts = piece_starts(text, piece_chars)
    return [piece_text(text, starts, k) for k in range(len(starts))]


@pytest.mark.parametrize("piece_chars", [37, 500, 4096])
def test_cuts_fall_before_a_space_after_non_whitespace_and_lose_nothing(piece_chars):
    text = long_text(200)
    starts = piece_starts(text, piece_chars)
    assert len(starts) > 10 and starts[0] == 0 and starts == sorted(set(starts))
    for cut in starts[1:]:
        assert text[cut] == " " and not text[cut - 1].isspace()
    assert "".join(pieces_of(text, piece_chars)) == text
    lengths = [b - a for a, b in zip(starts, starts[1:] + [len(text)], strict=True)]
    assert max(lengths) <= piece_chars or any(len(o) > piece_chars for o in ODD)  # longer only without a cut
    assert piece_starts(text, piece_chars) == starts, "the cuts are a function of the text alone"
    assert piece_starts(text[:piece_chars], piece_chars) == [0] and piece_starts(text, None) == [0]


def test_a_text_without_a_safe_cut_is_one_piece_and_a_late_cut_is_found():
    assert piece_starts("x" * 1000, 100) == [0]
    assert piece_starts("\u4e2d" * 1000 + " tail", 100) == [0, 1000]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    text = long_text(800, seed=1)
    corpus = text.split("\n") + ODD
    char = train_char([text, *ODD])
    bpe = train_bpe(corpus, 2048)
    folder = tmp_path_factory.mktemp("gpt2-like")
    bpe.save_pretrained(folder)  # a pretrained folder as GPT-2's: ByteLevel(add_prefix_space=False), no normalizer
    pretrained = load_tokenizer(folder)
    prefixed = load_tokenizer(folder)
    from tokenizers import pre_tokenizers

    prefixed.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    return {"char": char, "bpe": bpe, "pretrained": pretrained, "pretrained-prefix-space": prefixed}


@pytest.mark.parametrize("kind", ["char", "bpe", "pretrained", "pretrained-prefix-space"])
@pytest.mark.parametrize("piece_chars", [61, 1000, PIECE_CHARS])
def test_pieces_tokenize_to_the_ids_of_the_whole(tokenizers, kind, piece_chars):
    tok = tokenizers[kind]
    assert splits_exactly(tok)
    text = long_text(1200 if piece_chars == PIECE_CHARS else 300, seed=11)
    pieces = pieces_of(text, piece_chars)
    assert len(pieces) >= 4
    whole = tok(text, add_special_tokens=False)["input_ids"]
    parts = tok(pieces, add_special_tokens=False)["input_ids"]
    assert [t for ids in parts for t in ids] == whole


def test_a_metaspace_tokenizer_is_not_split(tokenizers):
    """SentencePiece-style pre-tokenizers add '\u2581' to the first word of every call: pieces would differ, so
    such a tokenizer reads documents whole (and a normalizer is refused too: it may join across a cut)."""
    from tokenizers import normalizers, pre_tokenizers

    tok = load_tokenizer_copy(tokenizers["pretrained"])
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    assert not splits_exactly(tok) and DocumentEncoder(tok).piece_chars is None
    tok = load_tokenizer_copy(tokenizers["pretrained"])
    tok.backend_tokenizer.normalizer = normalizers.NFKC()
    assert not splits_exactly(tok)
    assert DocumentEncoder(tokenizers["bpe"]).piece_chars == PIECE_CHARS


def load_tokenizer_copy(tok):
    import copy

    return copy.deepcopy(tok)


def test_document_encoder_appends_eos(tokenizers):
    tok = tokenizers["char"]
    ids = DocumentEncoder(tok)(["ab", "c"])
    assert [x[-1] for x in ids] == [tok.eos_token_id] * 2 and len(ids[0]) == 3
