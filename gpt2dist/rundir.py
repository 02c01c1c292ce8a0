"""The run directory's life: fresh vs resume, refusing to mix runs, and the run's saved tokenizer.

Called on rank 0 only (the decision is broadcast), so ranks never race on what they see on disk.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from gpt2dist import atomic
from gpt2dist.checkpoint import CheckpointManager
from gpt2dist.config import RunConfig, to_dict
from gpt2dist.data.text import FORMATS, find_invalid_utf8, iter_documents
from gpt2dist.errors import UserError
from gpt2dist.tokenizer import build_tokenizer, load_tokenizer

log = logging.getLogger(__name__)

# Changing these between a checkpoint and its resume would silently train a different run.
RESUME_MUST_MATCH = ("model", "tokenizer", "data.block_size", "data.train", "data.sample_by", "data.val_fraction",
                     "data.format", "data.weights")
TOKENIZER_DIR = "tokenizer"


def prepare_run_dir(cfg: RunConfig, ckpt: CheckpointManager) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuse a run dir that holds another run."""
    run_dir = Path(cfg.run_dir)
    latest = ckpt.latest_verified()
    if cfg.train.resume and latest is not None:
        check_resume_compatible(cfg, run_dir)
        return latest
    if not run_dir.exists() or not _run_entries(cfg):
        return None
    if cfg.train.resume and (run_dir / "config.yaml").is_file():
        check_resume_compatible(cfg, run_dir)
        log.warning("run dir %s has no complete checkpoint yet: starting from step 0", run_dir)
        return None
    if latest is not None:
        raise UserError(f"run_dir {run_dir} already holds checkpoints (latest {latest.name}): drop --no-resume "
                        "/ train.resume=false to continue it, or choose a new run_dir")
    raise UserError(f"run_dir {run_dir} is not empty and holds no gpt2dist run: choose a new run_dir or empty it")


def _run_entries(cfg: RunConfig) -> list[Path]:
    """What the run dir holds besides `gpt2dist prepare`'s output (by default RUN_DIR/data)."""
    from gpt2dist.data.manifest import packed_root

    prepared = packed_root(cfg).resolve()
    return [p for p in Path(cfg.run_dir).iterdir() if p.resolve() != prepared]


def check_resume_compatible(cfg: RunConfig, run_dir: Path) -> None:
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    current = to_dict(cfg)
    for key in RESUME_MUST_MATCH:
        old, new = _lookup(saved, key), _lookup(current, key)
        if old != new:
            raise UserError(f"config key {key} changed since this run started ({old!r} -> {new!r}): resuming "
                            f"{run_dir} needs the same value, or use a new run_dir")


def _lookup(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part, {}) if isinstance(tree, dict) else {}
    return tree


def check_utf8(cfg: RunConfig, resume_from: Path | None, train_files: list[Path],
               val_files: list[Path] | None) -> None:
    """Invalid UTF-8 must fail before the run dir is written, not at the first batch. The char and bpe
    tokenizers read every training file anyway; a fresh run with a pretrained tokenizer scans them here
    (one pass at disk speed); validation files are scanned on every start."""
    if cfg.data.encoding_errors != "strict" or cfg.data.format == "packed":  # prepare read the text already
        return
    scan = list(val_files or [])
    if resume_from is None and cfg.tokenizer.kind == "pretrained":
        scan += train_files
    # a URL is not scanned (that would download it); reading it names the first bad byte the same way
    found = find_invalid_utf8([f for f in scan if FORMATS[f.suffix.lower()] == "text" and isinstance(f, Path)])
    if found:
        raise UserError(f"{found[0]} at byte {found[1]} is not valid UTF-8: fix the file or set "
                        "data.encoding_errors=replace")


def build_run_tokenizer(cfg: RunConfig, train_files: list[Path]):
    """The run's saved tokenizer when it exists (resume), else a new one built from the config."""
    folder = Path(cfg.run_dir) / TOKENIZER_DIR
    if cfg.data.format == "packed":  # the tokenizer that made the shards, and no other
        from gpt2dist.data.packed import packed_tokenizer

        return packed_tokenizer(cfg, folder)
    if (folder / "tokenizer_config.json").is_file():
        return load_tokenizer(folder)
    tcfg = cfg.tokenizer
    texts = None
    if tcfg.kind != "pretrained":
        heldout = False if cfg.data.val_fraction > 0 and not cfg.data.val else None
        texts = iter_documents(train_files, cfg.data, heldout=heldout)
    return build_tokenizer(tcfg.kind, path=tcfg.path or cfg.model.pretrained, vocab_size=tcfg.vocab_size,
                           texts=texts)


def save_tokenizer(tokenizer, folder: Path) -> None:
    """Save once (temporary name, then rename); an existing folder is the run's own and stays as it is."""
    if folder.is_dir():
        return
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(str(tmp))
    atomic.publish_dir(tmp, folder)
