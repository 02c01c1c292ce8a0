"""The run directory's life: fresh vs resume, refusing to mix runs, and the run's saved tokenizer.

Called on rank 0 only (the decision is broadcast), so ranks never race on what they see on disk.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import yaml

from gpt2dist import atomic
from gpt2dist.config import RunConfig, to_dict
from gpt2dist.data.encodings import decode_error
from gpt2dist.data.local import data_format
from gpt2dist.data.manifest import new_text_settings
from gpt2dist.data.text import find_invalid_utf8, iter_documents
from gpt2dist.errors import UserError
from gpt2dist.run.checkpoint import CheckpointManager
from gpt2dist.run.layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LATEST,
    LOCK_FILE,
    MANIFEST,
    RUN_DIR_NAMES,
    STATUS_FILE,
    STOP_FILE,
    TOKENIZER_DIR,
)
from gpt2dist.run.layout import TOKENIZER_SOURCE_FILE as SOURCE_FILE
from gpt2dist.tokenizer import build_tokenizer, load_tokenizer

log = logging.getLogger(__name__)

# Changing these between a checkpoint and its resume would silently train a different run.
RESUME_MUST_MATCH = ("model", "tokenizer", "data.block_size", "data.train", "data.sample_by", "data.val_fraction",
                     "data.format", "data.weights")
LAUNCH_FILES = (LOCK_FILE, STATUS_FILE, STOP_FILE)  # what a launcher (the Slurm script) may put in a new run dir


def prepare_run_dir(cfg: RunConfig, ckpt: CheckpointManager) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run; refuse a run dir that holds another run."""
    run_dir = Path(cfg.run_dir)
    latest = ckpt.latest_verified()
    if cfg.train.resume_from is not None:
        named = named_checkpoint(cfg.train.resume_from)
        if named.parent == ckpt.root.resolve() or latest is None:  # a requeue continues this run's own checkpoints
            check_resume_compatible(cfg, named.parent.parent)
            return named
    if cfg.train.resume and latest is not None:
        check_resume_compatible(cfg, run_dir)
        return latest
    if not run_dir.exists() or not _run_entries(cfg):
        return None
    if (run_dir / CONFIG_FILE).is_file() and latest is None:  # a gpt2dist run that never finished a checkpoint
        if cfg.train.resume:
            check_resume_compatible(cfg, run_dir)
            log.warning("run dir %s has no complete checkpoint yet: starting from step 0", run_dir)
        else:  # --no-resume: a fresh start, as asked; there is no checkpoint to lose or to stay compatible with
            log.warning("run dir %s holds a gpt2dist run without a complete checkpoint: --no-resume starts it afresh "
                        "(its config.yaml is replaced)", run_dir)
        return None
    if latest is not None:
        raise UserError(f"run_dir {run_dir} already holds checkpoints (latest {latest.name}): drop --no-resume "
                        "/ train.resume=false to continue it, or choose a new run_dir")
    raise UserError(f"run_dir {run_dir} is not empty and holds no gpt2dist run: choose a new run_dir or empty it")


def named_checkpoint(source: str) -> Path:
    """train.resume_from: a complete step-NNNNNNNN dir (checked against its manifest), or a run dir's latest one."""
    path = Path(source).resolve()
    if (path / CHECKPOINTS_DIR).is_dir() and not (path / MANIFEST).is_file():
        latest = CheckpointManager(path, keep_last=1).latest_verified()
        if latest is None:
            raise UserError(f"config key train.resume_from={source}: that run dir has no complete checkpoint: name "
                            "a step-NNNNNNNN dir or another run dir")
        return latest.resolve()
    if not (path / MANIFEST).is_file():
        raise UserError(f"config key train.resume_from={source} is not a complete checkpoint (a step-NNNNNNNN dir "
                        "with a manifest.json) nor a run dir: name one")
    CheckpointManager(path.parent.parent, keep_last=1).verify(path)
    return path


def _run_entries(cfg: RunConfig) -> list[Path]:
    """What the run dir holds besides `gpt2dist prepare`'s output (by default RUN_DIR/data)."""
    from gpt2dist.data.manifest import packed_root

    prepared = packed_root(cfg).resolve()
    return [p for p in Path(cfg.run_dir).iterdir() if p.resolve() != prepared and p.name not in LAUNCH_FILES]


def check_resume_compatible(cfg: RunConfig, run_dir: Path) -> None:
    saved_file = run_dir / CONFIG_FILE
    if not saved_file.is_file():
        return
    # a key added since that run was saved has its default there (old run dirs resume)
    saved = _merged(to_dict(RunConfig()), yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {})
    current = to_dict(cfg)
    for key in RESUME_MUST_MATCH:
        old, new = _lookup(saved, key), _lookup(current, key)
        if old != new:
            raise UserError(f"config key {key} changed since this run started ({old!r} -> {new!r}): resuming "
                            f"{run_dir} needs the same value, or use a new run_dir")


def _merged(defaults: dict, saved: dict) -> dict:
    """`saved` over `defaults`, section by section."""
    out = dict(defaults)
    for key, value in saved.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
    texts = [f for f in scan if data_format(f) in ("text", "json", "csv") and isinstance(f, Path)]
    found = find_invalid_utf8(texts, cfg.data.encoding)
    if found:
        raise decode_error(found[0], cfg.data.encoding)


def build_run_tokenizer(cfg: RunConfig, train_files: list[Path], resume_from: Path | None = None):
    """The run's saved tokenizer when a checkpoint depends on it (resume) or when it was built from this same data
    and settings; else a new one built from the config (before step 0 nothing is lost by rebuilding)."""
    folder = Path(cfg.run_dir) / TOKENIZER_DIR
    if resume_from is not None:  # the checkpoint's embeddings are indexed by its run's tokenizer (train.resume_from)
        folder = resume_from.parent.parent / TOKENIZER_DIR
    if cfg.data.format == "packed":  # the tokenizer that made the shards, and no other
        from gpt2dist.data.packed import packed_tokenizer

        return packed_tokenizer(cfg, folder)
    if (folder / "tokenizer_config.json").is_file():
        if resume_from is not None:  # the checkpoint's embeddings are indexed by this tokenizer's ids
            return load_tokenizer(folder)
        stale = stale_reason(folder, tokenizer_source(cfg, train_files))
        if stale is None:
            return load_tokenizer(folder)
        log.warning("run dir %s: rebuilding %s/ (%s); there is no checkpoint yet, so nothing is lost",
                    cfg.run_dir, TOKENIZER_DIR, stale)
    tcfg = cfg.tokenizer
    texts = None
    if tcfg.kind != "pretrained":
        heldout = False if cfg.data.val_fraction > 0 and not cfg.data.val else None
        texts = iter_documents(train_files, cfg.data, heldout=heldout)
    return build_tokenizer(tcfg.kind, path=tcfg.path or cfg.model.pretrained, vocab_size=tcfg.vocab_size,
                           texts=texts)


def save_tokenizer(tokenizer, folder: Path, source: dict[str, Any] | None = None) -> None:
    """Publish the tokenizer (temporary name, then rename) with `source`, the record of what built it.

    An existing folder stays as it is when no source is given (a resumed run's tokenizer) or when it records
    this same source; otherwise (build_run_tokenizer rebuilt it) it is replaced."""
    if folder.is_dir() and (source is None or stale_reason(folder, source) is None):
        return
    tmp = atomic.make_temp_dir(folder.parent, f".{folder.name}-")  # ours: never a name a stranger planted
    try:
        tokenizer.save_pretrained(str(tmp))
        if source is not None:
            atomic.write_json(tmp / SOURCE_FILE, source, indent=1)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic.publish_dir(tmp, folder)


def refuse_planted_links(run_dir: Path) -> None:
    """One line naming a link planted where the run writes (checked before the run writes anything)."""
    for name in RUN_DIR_NAMES:
        path = Path(run_dir) / name
        if path.is_symlink():
            raise UserError(f"{path} is a symbolic link: gpt2dist never writes through one; remove it (a run dir "
                            "holds only what gpt2dist wrote)")
    latest = Path(run_dir) / CHECKPOINTS_DIR / LATEST
    if latest.is_symlink():
        raise UserError(f"{latest} is a symbolic link: remove it (gpt2dist writes it as a plain file)")


# ---- what built the run's tokenizer (issue 12, item 8): reuse a saved tokenizer only for the same inputs ----
TEXT_KEYS = ("text_field", "sample_by", "encoding_errors", "strip_control", "collapse_whitespace", "min_line_chars",
             "ascii_only")  # the DataConfig keys that change which text the tokenizer is built from


def tokenizer_source(cfg: RunConfig, train_files: list) -> dict[str, Any]:
    """What a fresh run builds its tokenizer from: the tokenizer keys, the text settings and the files it reads
    (path, size, mtime -- no hashing: a changed file means a rebuild, which costs nothing before step 0)."""
    tcfg, data = cfg.tokenizer, cfg.data
    if tcfg.kind == "pretrained":
        folder = Path(tcfg.path or cfg.model.pretrained or "")
        files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        return {"kind": "pretrained", "path": str(folder.resolve()), "files": [_file_stamp(p) for p in files]}
    text = {key: getattr(data, key) for key in TEXT_KEYS} | new_text_settings(data)
    source: dict[str, Any] = {"kind": tcfg.kind, "text": text,
                              "val_fraction": data.val_fraction if not data.val else 0.0,
                              "files": [_file_stamp(f) for f in train_files]}
    if tcfg.kind == "bpe":
        source["vocab_size"] = tcfg.vocab_size
    return source


def _file_stamp(file) -> list:
    if isinstance(file, Path):
        stat = file.stat()
        return [str(file.resolve()), stat.st_size, stat.st_mtime_ns]
    return [str(file), getattr(file, "size", None), None]  # a URL: its listed size


def stale_reason(folder: Path, source: dict[str, Any]) -> str | None:
    """None when `folder` records `source`; else why it cannot be reused, in words for the log."""
    try:
        saved = json.loads((folder / SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{SOURCE_FILE} is missing or unreadable, so what built it is unknown"
    if saved == source:
        return None
    if saved.get("kind") != source["kind"] or saved.get("vocab_size") != source.get("vocab_size"):
        return "the tokenizer settings changed"
    if saved.get("text") != source.get("text") or saved.get("val_fraction") != source.get("val_fraction"):
        return "the data.* text settings changed"
    old = {f[0]: f for f in saved.get("files", [])}
    for stamp in source["files"]:
        if stamp[0] not in old:
            return f"{stamp[0]} is new"
        if old[stamp[0]] != stamp:
            return f"{stamp[0]} changed (size or modification time)"
    return "files were removed from the data"
