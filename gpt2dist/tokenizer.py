"""Tokenizers as Hugging Face folders: a local pretrained one, a byte-level BPE trained here, or characters.

Whatever the kind, the result is a `PreTrainedTokenizerFast` saved under RUN_DIR/tokenizer, so resume
reuses it byte for byte and `export` copies it beside the weights where `AutoTokenizer` loads it.
"""

from __future__ import annotations

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
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own types for a garbage tokenizer.json
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"tokenizer folder {path} could not be loaded ({first}): it needs tokenizer.json "
                        "or vocab.json + merges.txt") from None
    if tok.eos_token_id is None:
        tok.add_special_tokens({"eos_token": EOS})
    return tok


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
