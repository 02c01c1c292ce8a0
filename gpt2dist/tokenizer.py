"""Tokenizers as Hugging Face folders: a local pretrained one, a byte-level BPE trained here, or characters.

Whatever the kind, the result is a `PreTrainedTokenizerFast` saved under RUN_DIR/tokenizer, so resume
reuses it byte for byte and `export` copies it beside the weights where `AutoTokenizer` loads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from gpt2dist import hub
from gpt2dist.errors import UserError

EOS = "<|endoftext|>"  # GPT-2's document separator; also used as BOS/EOS by the kinds trained here
UNK = "<unk>"


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer folder, or a hub id's snapshot from the HF cache (never the network); ensure an EOS."""
    path = Path(hub.local_folder(str(path), "tokenizer.path"))
    if not path.is_dir():
        raise UserError(f"tokenizer folder {path} not found: set tokenizer.path to a local Hugging Face "
                        "tokenizer folder (e.g. one saved by AutoTokenizer.save_pretrained)")
    try:
        if (path / "vocab.txt").is_file() and not any((path / n).is_file() for n in ("tokenizer.json", "vocab.json")):
            # a GPT2-Chinese folder: a BERT vocab.txt and a config.json that may not name the tokenizer class, where
            # AutoTokenizer would build an empty GPT-2 tokenizer from the model type
            from transformers import BertTokenizerFast

            tok = BertTokenizerFast.from_pretrained(str(path), local_files_only=True)
        else:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own types for a garbage tokenizer.json
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"tokenizer folder {path} could not be loaded ({first}): it needs tokenizer.json "
                        "or vocab.json + merges.txt (or a BERT vocab.txt)") from None
    if len(tok) < 2:
        raise UserError(f"tokenizer folder {path} has an empty vocabulary: it needs tokenizer.json, vocab.json + "
                        "merges.txt, or a BERT vocab.txt")
    if tok.eos_token_id is None:
        own = own_separator(tok)
        if own is not None:  # e.g. a BERT vocabulary's [SEP]: the vocabulary (and the embeddings) stay as they are
            tok.eos_token = own
        else:
            tok.add_special_tokens({"eos_token": EOS})
    return tok


def own_separator(tok: PreTrainedTokenizerBase) -> str | None:
    """The token a tokenizer without an EOS already has for "end of text": [SEP] (BERT-vocabulary GPT-2 models
    such as GPT2-Chinese and the CLUECorpus ones are trained on "[CLS] text [SEP]"), else the CLS token."""
    for token in (tok.sep_token, tok.cls_token):
        found = None if token is None else tok.convert_tokens_to_ids(token)
        if found is not None and found != tok.unk_token_id and found < tok.vocab_size:  # in the vocabulary proper
            return str(token)
    return None


# CJK ideographs, kana, Hangul and their punctuation (U+3000-303F, full-width forms U+FF00-FFEF)
_CJK = "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af" \
       "\uf900-\ufaff\uff00-\uffef"
_PUNCT = "\u3000-\u303f\uff00-\uffef"  # full-width punctuation: never spaced in the text
_CJK_SPACE = re.compile(f"(?<=[{_CJK}]) (?=[{_CJK}])|(?<=[{_PUNCT}]) | (?=[{_PUNCT}])")


def decode(tok: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """Text of token ids without special tokens. A WordPiece (BERT-vocabulary) tokenizer joins tokens with spaces:
    between two CJK characters or next to full-width punctuation that space was never in the text, so it goes;
    Latin words keep theirs."""
    text = tok.decode(ids, skip_special_tokens=True)
    backend = getattr(tok, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is not None and type(decoder).__name__ == "WordPiece":
        text = _CJK_SPACE.sub("", text)
    return text


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE as GPT-2 uses it: no unknown tokens, any UTF-8 text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS)


def train_char(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per character seen in the data (the classic from-scratch tutorial vocabulary).

    Characters not seen at build time map to <unk>; ids are assigned in sorted order, so the same
    data always gives the same vocabulary.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    vocab = {EOS: 0, UNK: 1}
    for ch in sorted(chars):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Oniguruma's (?m) is "dot matches newline": every character, newlines included, is one piece.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m)."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([EOS, UNK])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=UNK)


def build_tokenizer(kind: str, *, path: str | None, vocab_size: int,
                    texts: Iterable[str] | None = None) -> PreTrainedTokenizerBase:
    """Make the tokenizer a fresh run asks for; `texts` (training documents) feed the bpe and char kinds."""
    if kind == "pretrained":
        assert path is not None, "config validation guarantees a path for kind=pretrained"
        return load_tokenizer(path)
    if texts is None:
        raise ValueError(f"tokenizer kind {kind} needs training texts")
    if kind == "bpe":
        return train_bpe(texts, vocab_size)
    if kind == "char":
        return train_char(texts)
    raise UserError(f"config key tokenizer.kind={kind!r} is not one of pretrained, bpe, char")


def encode_documents(tok: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each document followed by EOS, so packed windows keep document boundaries visible."""
    ids = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
    eos = tok.eos_token_id
    return [doc + [eos] for doc in ids]
