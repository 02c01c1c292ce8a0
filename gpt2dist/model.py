"""GPT-2 from a size preset or a pretrained folder, and the FLOPs-per-token convention.

Only local files are read (`local_files_only=True`): a local folder, or a hub id's snapshot in the Hugging Face
cache (`gpt2dist.hub`; `gpt2dist train` fills the cache on rank 0 before any of this runs).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from gpt2dist import hub
from gpt2dist.config import ModelConfig, RunConfig
from gpt2dist.errors import UserError, read_json_object
from gpt2dist.run.layout import CHECKPOINTS_DIR, TRAIN_STATE_FILE

log = logging.getLogger(__name__)

# GPT-2's `gelu_new` is the tanh approximation of GELU written as five elementwise torch ops (five kernels
# forward, more backward, three extra saved tensors); `gelu_pytorch_tanh` is the same function as one fused
# kernel. Measured on CPU: 1.29x faster steps for the tiny preset, 1.09x for a 10M model (bench/RESULTS.md).
FAST_GELU = "gelu_pytorch_tanh"
# PyTorch's scaled_dot_product_attention: flash / memory-efficient kernels on CUDA, a fused kernel on CPU.
ATTENTION = "sdpa"


def pretrained_config(path: str, key: str = "config key model.pretrained") -> dict:
    """The folder's (or cached hub id's) config.json, read early so a bad path fails before any expensive work."""
    folder = Path(hub.local_folder(path, key.removeprefix("config key ")))
    config_file = folder / "config.json"
    refuse_checkpoint_folder(folder, key, path)
    if not config_file.is_file():
        raise UserError(f"{key}={path!r}: no config.json there; point it at a local "
                        "Hugging Face model folder (e.g. one saved by save_pretrained)")
    cfg = read_json_object(config_file, "",
                           f"{config_file} is not a JSON object: point {key} at a Hugging Face GPT-2 model folder")
    if cfg.get("model_type") != "gpt2":
        raise UserError(f"{config_file}: model_type is {cfg.get('model_type')!r}, gpt2dist trains GPT-2 models only")
    if not any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin",
                                                      "model.safetensors.index.json")):
        raise UserError(f"{key}={path!r}: no model.safetensors (or pytorch_model.bin) there")
    return cfg


def refuse_checkpoint_folder(folder: Path, key: str, path: str) -> None:
    """A checkpoint step dir is not a Hugging Face folder (it has no tokenizer, so `generate` printed an empty
    string), nor is a run dir before its run ended (a finished run leaves the HF folder at its top, config.json
    included): say which command makes one."""
    step_dir = (folder / TRAIN_STATE_FILE).is_file()
    unfinished_run = (folder / CHECKPOINTS_DIR).is_dir() and not (folder / "config.json").is_file()
    if step_dir or unfinished_run:
        kind = "checkpoint step dir" if step_dir else "run dir"
        raise UserError(f"{key}={path!r} is a gpt2dist {kind}, not a Hugging Face model folder: run "
                        f"`gpt2dist export {path} OUT` and pass OUT")


def gpt2_config(cfg: RunConfig, vocab_size: int, eos_token_id: int) -> GPT2Config:
    dims = cfg.resolved_model_dims()
    dropout = cfg.model.dropout if cfg.model.dropout is not None else 0.0
    return GPT2Config(vocab_size=vocab_size, n_positions=dims["n_positions"], n_embd=dims["n_embd"],
                      n_layer=dims["n_layer"], n_head=dims["n_head"], resid_pdrop=dropout, embd_pdrop=dropout,
                      attn_pdrop=dropout, bos_token_id=eos_token_id, eos_token_id=eos_token_id,
                      pad_token_id=eos_token_id, activation_function=FAST_GELU, attn_implementation=ATTENTION)


def build_model(cfg: RunConfig, tokenizer: PreTrainedTokenizerBase) -> GPT2LMHeadModel:
    """A fresh model from the preset, or the pretrained folder with its embeddings fitted to the tokenizer."""
    vocab = len(tokenizer)
    if cfg.model.pretrained is None:
        return GPT2LMHeadModel(gpt2_config(cfg, vocab, tokenizer.eos_token_id))
    model = load_pretrained(cfg.model.pretrained, cfg.model)
    if model.get_input_embeddings().num_embeddings != vocab:
        log.info("resizing embeddings %d -> %d to fit the tokenizer",
                 model.get_input_embeddings().num_embeddings, vocab)
        model.resize_token_embeddings(vocab)
    # the tokenizer's ids, never GPT2Config's defaults (50256 lies outside a BERT vocabulary of ~21k tokens)
    model.config.eos_token_id = model.config.bos_token_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.update(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=model.config.pad_token_id)
    return model


def load_pretrained(path: str, overrides: ModelConfig | None = None) -> GPT2LMHeadModel:
    saved = pretrained_config(path)
    kwargs: dict = {"attn_implementation": ATTENTION}
    if saved.get("activation_function", "gelu_new") == "gelu_new":  # the same function, one fused kernel
        kwargs["activation_function"] = FAST_GELU
    if overrides is not None and overrides.dropout is not None:
        kwargs.update({k: overrides.dropout for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")})
    return from_pretrained_complete(hub.local_folder(path, "model.pretrained"), **kwargs)


def from_pretrained_complete(path: str | Path, **kwargs) -> GPT2LMHeadModel:
    """`from_pretrained` that refuses a folder whose weights do not cover the model: transformers would give
    each missing tensor a fresh random value and only log it (the tied lm_head is not missing)."""
    try:
        model, info = GPT2LMHeadModel.from_pretrained(str(path), local_files_only=True, output_loading_info=True,
                                                      **kwargs)
    except Exception as exc:  # noqa: BLE001 - a truncated, garbage or wrong-shape weights file, whatever raised
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: its weights could not be loaded ({first}): use a complete model folder") from None
    missing = sorted(info.get("missing_keys") or [])
    if missing or info.get("mismatched_keys"):
        raise UserError(f"{path}: its weights do not cover the model ({len(missing)} tensors missing, e.g. "
                        f"{missing[:2]}; {len(info.get('mismatched_keys') or [])} of another shape): use a "
                        "complete model folder")
    return model


def count_parameters(model: GPT2LMHeadModel, *, non_embedding: bool = False) -> int:
    """Unique parameters (the tied lm_head counted once); non_embedding drops the position table (as PaLM)."""
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= model.transformer.wpe.weight.numel()
    return n


def flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12·L·H·Q·T (PaLM, Chowdhery et al. 2022, appendix B).

    6N counts forward (2N) and backward (4N) matmuls over the N non-embedding parameters; the second
    term is attention's QK^T and AV products, with H·Q = n_embd (heads × head size) and T the sequence
    length. Activation recomputation is not counted (MFU, not HFU).
    """
    return 6.0 * n_params + 12.0 * n_layer * n_embd * seq_len
