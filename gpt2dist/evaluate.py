"""`gpt2dist eval`: loss and perplexity of a Hugging Face GPT-2 folder on text files, packed like training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from gpt2dist.config import DataConfig
from gpt2dist.data.pieces import DocumentEncoder
from gpt2dist.data.stream import TextStream
from gpt2dist.data.text import resolve_files
from gpt2dist.engines.device import resolve_device
from gpt2dist.engines.loss import lm_loss
from gpt2dist.errors import UserError
from gpt2dist.model import from_pretrained_complete, pretrained_config
from gpt2dist.run.layout import EXPORT_PROVENANCE as PROVENANCE
from gpt2dist.tokenizer import load_tokenizer


def load_hf_model(model_dir: str | Path, device: str = "auto") -> tuple[GPT2LMHeadModel, object, torch.device]:
    """A local GPT-2 folder and its tokenizer, in eval mode on the chosen device."""
    pretrained_config(str(model_dir), key="--model")
    dev = resolve_device(device)
    model = from_pretrained_complete(model_dir).to(dev).eval()
    tokenizer = load_tokenizer(model_dir)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:  # an id past the table is an IndexError deep inside torch
        raise UserError(f"{model_dir}: its tokenizer has {len(tokenizer)} tokens but the model's embeddings only "
                        f"{rows}: use the tokenizer the model was trained with")
    return model, tokenizer, dev


def default_block_size(model_dir: Path, model: GPT2LMHeadModel) -> int:
    """The block size the model was trained with when gpt2dist exported it, else its n_positions."""
    provenance = model_dir / PROVENANCE
    if not provenance.is_file():
        return model.config.n_positions
    try:
        record = json.loads(provenance.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{provenance} is not readable JSON ({str(exc).splitlines()[0][:120]}): re-export the "
                        "model, or delete that file to use n_positions") from None
    block = record.get("block_size") if isinstance(record, dict) else None
    if block is None and isinstance(record, dict):
        return model.config.n_positions
    if not isinstance(block, int) or isinstance(block, bool) or not 0 < block <= model.config.n_positions:
        raise UserError(f"{provenance}: block_size {block!r} is not a whole number in [1, n_positions="
                        f"{model.config.n_positions}]: re-export the model, or pass --block-size")
    return block


@torch.no_grad()
def evaluate_files(model_dir: str | Path, patterns: list[str], *, block_size: int | None = None,
                   batch_size: int = 8, max_batches: int | None = None, text_field: str = "text",
                   device: str = "auto", encoding: str = "utf-8", encoding_errors: str = "strict") -> dict[str, float]:
    for flag, value in (("--block-size", block_size), ("--batch-size", batch_size), ("--max-batches", max_batches)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    model, tokenizer, dev = load_hf_model(model_dir, device)
    block = block_size or default_block_size(Path(model_dir), model)
    if block > model.config.n_positions:
        raise UserError(f"--block-size {block} exceeds the model's n_positions={model.config.n_positions}")
    files = resolve_files(patterns, "--data")
    cfg = DataConfig(train=[str(f) for f in files], block_size=block, text_field=text_field, encoding=encoding,
                     encoding_errors=encoding_errors)
    stream = TextStream(files, cfg, DocumentEncoder(tokenizer), repeat=False)
    total, n_tokens, n_batches = 0.0, 0, 0
    while max_batches is None or n_batches < max_batches:
        windows = _next_windows(stream, batch_size)
        if not windows:
            break
        batch = torch.tensor(windows, dtype=torch.long, device=dev)
        loss = lm_loss(model(input_ids=batch[:, :-1]).logits, batch[:, 1:])
        total += float(loss) * batch[:, 1:].numel()
        n_tokens += batch[:, 1:].numel()
        n_batches += 1
    if n_tokens == 0:
        raise UserError(f"--data {patterns[0]!r} gives no full window of {block + 1} tokens: add text or pass a "
                        "smaller --block-size")
    loss = total / n_tokens
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": n_tokens, "block_size": block}


def _next_windows(stream: TextStream, n: int) -> list[list[int]]:
    """Up to n windows; a decode error names eval's flags, not the training config's keys."""
    try:
        return [w.tokens for _, w in zip(range(n), stream, strict=False)]
    except UserError as exc:
        message = str(exc).replace("data.encoding_errors=", "--encoding-errors ")
        message = message.replace("data.encoding=", "--encoding ")
        raise UserError(message.replace("data.encoding", "--encoding")) from None
