"""`gpt2dist generate`: sample text from a Hugging Face GPT-2 folder with top-k, top-p and temperature."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from gpt2dist.errors import UserError
from gpt2dist.evaluate import default_block_size, load_hf_model

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(model_dir: str, prompt: str = "", *, max_new_tokens: int = 80, top_k: int = 50, top_p: float = 1.0,
             temperature: float = 1.0, num_samples: int = 1, seed: int = 0, device: str = "auto") -> list[str]:
    """Return `num_samples` continuations (prompt included); temperature 0 means greedy decoding."""
    if (not math.isfinite(temperature) or temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 1
            or num_samples < 1 or seed < 0):
        raise UserError("generate needs a finite --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, "
                        "--max-new-tokens >= 1, --num-samples >= 1 and --seed >= 0")
    model, tokenizer, dev = load_hf_model(model_dir, device)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    ids = [tokenizer.eos_token_id] + ids  # a document starts after EOS, as in training
    # Positions past the training block size were never trained: cap the context there, not at n_positions.
    context = min(model.config.n_positions, default_block_size(Path(model_dir), model))
    room = context - len(ids)
    if room < 1:
        raise UserError(f"the prompt is {len(ids)} tokens, the model's trained context is {context}")
    if max_new_tokens > room:
        log.warning("--max-new-tokens %d cut to %d to fit the model's trained context (%d)", max_new_tokens, room,
                    context)
        max_new_tokens = room
    torch.manual_seed(seed)
    sample = temperature > 0
    out = model.generate(
        torch.tensor([ids], device=dev), attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=dev),
        max_new_tokens=max_new_tokens, do_sample=sample, num_return_sequences=num_samples,
        top_k=top_k if sample else None, top_p=top_p if sample else None,
        temperature=temperature if sample else None, pad_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    return [tokenizer.decode(seq[1:], skip_special_tokens=True) for seq in out]
