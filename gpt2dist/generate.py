"""`gpt2dist generate`: sample text from a Hugging Face GPT-2 folder with top-k, top-p and temperature."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from gpt2dist.errors import UserError
from gpt2dist.evaluate import default_block_size, load_hf_model
from gpt2dist.tokenizer import decode

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(model_dir: str, prompt: str = "", *, max_new_tokens: int | None = 80, top_k: int = 50, top_p: float = 1.0,
             temperature: float = 1.0, num_samples: int = 1, seed: int = 0, device: str = "auto",
             max_length: int | None = None, min_length: int | None = None, do_sample: bool = True,
             repetition_penalty: float = 1.0) -> list[str]:
    """Return `num_samples` continuations (prompt included); greedy when do_sample is false or temperature is 0.

    As in `model.generate`, max_length and min_length count the prompt's tokens too; max_new_tokens does not."""
    if max_length is not None and max_new_tokens is not None:
        raise UserError("generate takes --max-length (prompt included) or --max-new-tokens, not both")
    if (not math.isfinite(temperature) or temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or num_samples < 1
            or not math.isfinite(repetition_penalty) or repetition_penalty <= 0 or seed < 0
            or (max_new_tokens is not None and max_new_tokens < 1)):
        raise UserError("generate needs a finite --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, a finite "
                        "--repetition-penalty > 0, --max-new-tokens >= 1, --num-samples >= 1 and --seed >= 0")
    if num_samples > 1 and not (do_sample and temperature > 0):
        raise UserError(f"greedy decoding gives one sequence per prompt: --num-return-sequences {num_samples} needs "
                        "sampling (drop --greedy, temperature > 0)")
    model, tokenizer, dev = load_hf_model(model_dir, device)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if max_length is not None:
        max_new_tokens = max_length - len(prompt_ids)
        if max_new_tokens < 1:
            raise UserError(f"--max-length {max_length} leaves no room after the prompt's {len(prompt_ids)} tokens: "
                            "raise it (it counts the prompt, as model.generate's max_length does)")
    assert max_new_tokens is not None
    ids = [tokenizer.eos_token_id] + prompt_ids  # a document starts after EOS, as in training
    # Positions past the training block size were never trained: cap the context there, not at n_positions.
    context = min(model.config.n_positions, default_block_size(Path(model_dir), model))
    room = context - len(ids)
    if room < 1:
        raise UserError(f"the prompt is {len(ids)} tokens, the model's trained context is {context}")
    if max_new_tokens > room:
        log.warning("--max-new-tokens %d cut to %d to fit the model's trained context (%d)", max_new_tokens, room,
                    context)
        max_new_tokens = room
    min_new = min(max(0, (min_length or 0) - len(prompt_ids)), max_new_tokens)
    torch.manual_seed(seed)
    sample = do_sample and temperature > 0
    out = model.generate(
        torch.tensor([ids], device=dev), attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=dev),
        max_new_tokens=max_new_tokens, min_new_tokens=min_new or None, do_sample=sample,
        num_return_sequences=num_samples, top_k=top_k if sample else None, top_p=top_p if sample else None,
        temperature=temperature if sample else None, repetition_penalty=repetition_penalty,
        pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    return [decode(tokenizer, seq[1:].tolist()) for seq in out]


def read_prompts(path: str) -> list[str]:
    """--prompts-file: one prompt per non-empty line (UTF-8)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--prompts-file {path} is not a readable UTF-8 text file ({exc.__class__.__name__})") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise UserError(f"--prompts-file {path} holds no prompt: write one per line")
    return prompts
