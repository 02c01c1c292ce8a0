"""Long documents in bounded pieces: where to cut, and why the pieces tokenize to the ids of the whole.

A document longer than `PIECE_CHARS` characters is tokenized piece by piece as the stream reaches it, so the
tokens held in memory (and the work before the first window) are one piece, not the document. Pieces are also
the unit a rank owns in example sharding (sharding.py), which lets every rank train on one long document.

Where the pieces are cut: right before a space (U+0020) whose preceding character is not whitespace, the
last such place at or before `start + PIECE_CHARS` (or the first after it when there is none). That is a
boundary of every pre-tokenizer this project splits with, and there the pieces give exactly the ids of the
whole document (tests/data/test_pieces.py checks it on long text for the char, bpe and a GPT-2-configured
pretrained tokenizer):
- char (tokenizer.train_char): every character is its own pre-token and maps to one id alone: any cut is exact.
- byte-level BPE (tokenizer.train_bpe, GPT-2's own `tokenizer.json`): the `ByteLevel` pre-tokenizer splits with
  GPT-2's regex `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+` (openai/gpt-2
  src/encoder.py; tokenizers' `ByteLevel` uses the same pattern) and BPE merges only inside a pre-token. The
  regex scans left to right with no look-behind; the only look-ahead, `(?!\\S)`, ends whitespace runs, and the
  pre-token holding the non-whitespace character before the cut cannot contain the space after it (only a
  leading optional space is ever joined to a word). So the whole text's scan ends a pre-token at the cut, the
  prefix scans identically on its own, and the suffix scan restarts exactly where the whole one continues.
  Cutting before a space (not a newline) keeps `add_prefix_space=True` tokenizers exact too: a piece after the
  first already starts with a space. Python's `str.isspace` is true for every Unicode White_Space character
  that the regex's `\\s` matches (and a few more), so "not isspace" is never whitespace to the regex.
Any other pre-tokenizer (e.g. a SentencePiece-style `Metaspace` that prefixes the first word of each call)
may tokenize a piece's start differently: `splits_exactly` says no and such a tokenizer reads documents whole.
"""

from __future__ import annotations

import json
from typing import Any

PIECE_CHARS = 1 << 16  # 64 Ki characters: ~16k BPE tokens per tokenizer call, a few ms; a 1 MB text is 16 pieces


def piece_starts(text: str, piece_chars: int | None) -> list[int]:
    """Character offsets where the pieces of `text` start ([0] when it is one piece): a function of the text alone,
    so every rank and every resume cuts a document at the same places."""
    starts = [0]
    if piece_chars is None:
        return starts
    n = len(text)
    while n - starts[-1] > piece_chars:
        start = starts[-1]
        cut = _cut_before(text, start, start + piece_chars)
        if cut is None:
            break  # no safe place up to the end: the rest is one piece
        starts.append(cut)
    return starts


def _cut_before(text: str, start: int, target: int) -> int | None:
    """The last safe cut in (start, target], else the first one after target, else None."""
    cut = text.rfind(" ", start + 1, target + 1)
    while cut > start:
        if not text[cut - 1].isspace():
            return cut
        cut = text.rfind(" ", start + 1, cut)
    cut = text.find(" ", target + 1)
    while cut != -1:
        if not text[cut - 1].isspace():
            return cut
        cut = text.find(" ", cut + 1)
    return None


def piece_text(text: str, starts: list[int], k: int) -> str:
    return text[starts[k]:starts[k + 1] if k + 1 < len(starts) else len(text)]


def splits_exactly(tokenizer: Any) -> bool:
    """True when `piece_starts` pieces of any text tokenize to the whole text's ids with this tokenizer: a fast
    tokenizer without a normalizer whose pre-tokenizer is byte-level (GPT-2's regex) or one piece per character."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.normalizer is not None:
        return False
    return _exact(backend.pre_tokenizer)


def _exact(pre: Any) -> bool:
    from tokenizers import pre_tokenizers

    if isinstance(pre, pre_tokenizers.ByteLevel):
        return bool(pre.use_regex)
    if isinstance(pre, pre_tokenizers.Split):  # tokenizer.train_char's one piece per character
        state = json.loads(pre.__getstate__())
        return state.get("pattern") == {"Regex": "(?m)."} and state.get("behavior") == "Isolated" \
            and not state.get("invert")
    return False


class DocumentEncoder:
    """What the streaming path tokenizes with: ids of each text followed by EOS (tokenizer.encode_documents), and
    `piece_chars`, the piece size at which this tokenizer splits documents exactly (None: read them whole)."""

    def __init__(self, tokenizer: Any, piece_chars: int = PIECE_CHARS):
        self.tokenizer = tokenizer
        self.piece_chars = piece_chars if splits_exactly(tokenizer) else None

    def __call__(self, texts: list[str]) -> list[list[int]]:
        from gpt2dist.tokenizer import encode_documents  # transformers: not at import (the CLI's checks load this)

        return encode_documents(self.tokenizer, texts)
