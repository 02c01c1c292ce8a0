"""Checkpoint -> Hugging Face folder (config.json, model.safetensors, tokenizer files) that plain
`GPT2LMHeadModel.from_pretrained` / `AutoTokenizer.from_pretrained` load as they are."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2dist import atomic
from gpt2dist.errors import UserError
from gpt2dist.run.checkpoint import CheckpointManager
from gpt2dist.run.layout import CHECKPOINTS_DIR, CONFIG_FILE, MANIFEST
from gpt2dist.run.layout import EXPORT_PROVENANCE as PROVENANCE
from gpt2dist.run.state import TrainState
from gpt2dist.tokenizer import load_tokenizer


def resolve_step_dir(source: str | Path) -> Path:
    """A step directory as given, or the newest checkpoint of a run directory that passes verification (a
    damaged newest one is skipped with a warning, as when resuming)."""
    source = Path(source)
    if (source / MANIFEST).is_file():
        return source
    if (source / CHECKPOINTS_DIR).is_dir():
        latest = CheckpointManager(source, keep_last=1).latest_verified()
        if latest is not None:
            return latest
        raise UserError(f"run dir {source} has no complete, verified checkpoint: train longer or pass a step dir")
    raise UserError(f"{source} is neither a run dir (with checkpoints/) nor a complete step-NNNNNNNN dir")


def load_checkpoint_model(step_dir: Path) -> GPT2LMHeadModel:
    """The trained model of a verified step directory, on CPU, in fp32; refused unless its weights cover the
    whole model (the tied lm_head aside): loading leaves anything missing at its random initial value."""
    from safetensors.torch import load_model

    CheckpointManager(step_dir.parent.parent, keep_last=1).verify(step_dir)
    try:
        model = GPT2LMHeadModel(GPT2Config.from_json_file(str(step_dir / "config.json")))
        missing, unexpected = load_model(model, str(step_dir / "model.safetensors"), strict=False)
    except Exception as exc:  # noqa: BLE001 - a config.json / safetensors pair that does not fit, whatever raised
        raise UserError(f"checkpoint {step_dir}: model.safetensors does not fit its config.json "
                        f"({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__}): "
                        "export another checkpoint") from None
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise UserError(f"checkpoint {step_dir}: model.safetensors does not cover the model (missing "
                        f"{len(missing)} tensors, e.g. {missing[:2]}; unexpected {list(unexpected)[:2]}): export "
                        "another checkpoint")
    bad = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if bad:  # written by a run that diverged before gpt2dist refused to save such weights
        raise UserError(f"checkpoint {step_dir} holds NaN/inf weights ({bad[0]}, ...): export an earlier checkpoint")
    model.tie_weights()
    return model.eval()


def export(source: str | Path, out: str | Path) -> Path:
    """Write the HF folder to a temporary sibling, then rename it into place (an old export is replaced)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"export target {out} is a file, not a folder: pass a new folder (or an earlier export)")
    step_dir = resolve_step_dir(source)
    run_dir = step_dir.parent.parent
    if out.exists() and any(out.iterdir()) and not (out / PROVENANCE).is_file():
        raise UserError(f"export target {out} exists and is not an earlier gpt2dist export: choose another path")
    model = load_checkpoint_model(step_dir)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.make_temp_dir(out.parent, f".{out.name}-")  # ours (mkdtemp): a user's OUT.tmp/ is left alone
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        train_state = TrainState.read(step_dir).to_json()
        block_size = _run_block_size(run_dir)
        (tmp / PROVENANCE).write_text(json.dumps({"checkpoint": str(step_dir), "block_size": block_size,
                                                  **train_state}, indent=1), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return atomic.publish_dir(tmp, out)  # an earlier export is replaced only once this one is complete


def _run_block_size(run_dir: Path) -> int | None:
    import yaml

    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        return None
    return (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}).get("data", {}).get("block_size")


def save_model_folder(run_dir: str | Path, source: str | Path | None = None) -> Path:
    """End of training: the latest checkpoint as a Hugging Face folder at the top of the run dir (model, tokenizer,
    generation config), what `Trainer.save_model()` leaves in output_dir: `from_pretrained(run_dir)` loads it. Each
    file is published by rename; the files replaced are the ones an earlier call wrote (same names). `source`: a
    step dir to write instead of the run's latest (a finished checkpoint named by train.resume_from)."""
    run_dir = Path(run_dir)
    staged = export(source or run_dir, run_dir / ".model-folder")
    for file in sorted(staged.iterdir()):
        os.replace(file, run_dir / file.name)
    staged.rmdir()
    return run_dir
