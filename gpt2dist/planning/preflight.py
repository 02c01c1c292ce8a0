"""Preflight: the cheap checks every entry point runs before expensive work -- `gpt2dist train` on every rank,
the Slurm renderer before the queue, and the doctor as the first part of its report.

They build no model and read no data beyond file sizes (and small files' row counts): batch triple, backend
vs ranks, files, rows per rank, block size vs positions, vocabulary, precision, checkpoint space. Every
finding is one line: ok, warn or error; `raise_for_problems` turns the first error into a UserError.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpt2dist import hub
from gpt2dist.config import RunConfig, batch_plan, uses_deepspeed
from gpt2dist.data.checks import ascii_only_check, packed_check, shard_check
from gpt2dist.data.sources import file_size, is_url
from gpt2dist.data.text import resolve_files
from gpt2dist.errors import UserError
from gpt2dist.planning import memory
from gpt2dist.run.layout import CHECKPOINTS_DIR
from gpt2dist.units import fmt_bytes

CHAR_VOCAB_GUESS = 256  # a char tokenizer's size is known only once it is built from the data


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | error
    message: str

    def __str__(self) -> str:
        return f"{self.level:<5} {self.message}"


@dataclass(frozen=True)
class ModelFacts:
    """What the run will train, from the config, a pretrained config.json and the tokenizer -- no weights."""

    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int
    vocab_source: str

    @property
    def n_params(self) -> int:
        return memory.gpt2_param_count(self.n_layer, self.n_embd, self.vocab_size, self.n_positions)


def resolve_path(p: str, base: Path | None) -> str:
    """A config path as the job will see it: relative paths are relative to `base` (the job's directory)."""
    return p if base is None or os.path.isabs(p) or is_url(p) else str(base / p)


def resolve_pretrained(p: str, base: Path | None) -> str:
    """model.pretrained / tokenizer.path as the job will see it: a folder under `base`, else a hub id as it is."""
    local = resolve_path(p, base)
    return p if not os.path.exists(local) and hub.is_hub_id(p) else local


def rebased(cfg: RunConfig, base: Path | None) -> RunConfig:
    """The config with its data paths and run dir as the job will see them (no chdir: it is process-global)."""
    if base is None:
        return cfg
    data = cfg.data
    data = dataclasses.replace(data, train=[resolve_path(p, base) for p in data.train],
                               val=[resolve_path(p, base) for p in data.val],
                               packed_dir=resolve_path(data.packed_dir, base) if data.packed_dir else None)
    return dataclasses.replace(cfg, run_dir=resolve_path(cfg.run_dir, base), data=data)


def model_facts(cfg: RunConfig, base: Path | None = None) -> tuple[ModelFacts, list[Finding]]:
    """Dims and vocabulary (the model is resized to the tokenizer), plus vocabulary and block-size findings."""
    out: list[Finding] = []
    dims = dict(cfg.resolved_model_dims())
    model_vocab = None
    if cfg.model.pretrained is not None:
        from gpt2dist.model import pretrained_config  # imports transformers: only for pretrained models

        hf = pretrained_config(resolve_pretrained(cfg.model.pretrained, base))
        dims = {k: hf.get(k, dims[k]) for k in dims}
        model_vocab = hf.get("vocab_size", 50257)
    run_tok = Path(resolve_path(cfg.run_dir, base)) / "tokenizer"  # a resumed run's own tokenizer wins
    tok_dir = run_tok if (run_tok / "tokenizer_config.json").is_file() else None
    if tok_dir is None and cfg.tokenizer.kind == "pretrained":
        tok_dir = Path(resolve_pretrained(cfg.tokenizer.path or cfg.model.pretrained, base))
    tok_vocab, source = None, ""
    if tok_dir is not None:
        from gpt2dist.tokenizer import load_tokenizer

        tok_vocab, source = len(load_tokenizer(tok_dir)), f"len(tokenizer) of {tok_dir}"
    elif cfg.tokenizer.kind == "bpe":
        tok_vocab, source = cfg.tokenizer.vocab_size, "tokenizer.vocab_size, an upper bound"
    if model_vocab is not None and tok_vocab is not None:
        if tok_vocab != model_vocab:
            what = "new rows start random" if tok_vocab > model_vocab else "rows beyond it are dropped"
            out.append(Finding("warn", f"vocabulary: the tokenizer has {tok_vocab} tokens, {cfg.model.pretrained} "
                                       f"{model_vocab} embeddings: they will be resized ({what})"))
        else:
            out.append(Finding("ok", f"vocabulary: tokenizer and model agree ({tok_vocab} tokens)"))
    if tok_vocab is None:
        tok_vocab, source = ((model_vocab, "the model's config.json") if model_vocab is not None
                             else (CHAR_VOCAB_GUESS, "a char tokenizer, assumed"))
    block, positions = cfg.data.block_size, dims["n_positions"]
    if cfg.model.pretrained is not None and block > positions:  # presets: config.validate
        out.append(Finding("error", f"config key data.block_size={block} exceeds the model's n_positions={positions} "
                                    f"({cfg.model.pretrained}): lower data.block_size"))
    return ModelFacts(dims["n_layer"], dims["n_embd"], dims["n_head"], dims["n_positions"], tok_vocab, source), out


def cheap_checks(cfg: RunConfig, world_size: int, *, base_dir: str | Path | None = None) -> list[Finding]:
    """Checks that build no model and read no data beyond sizes (and small files' row counts).

    `base_dir` resolves relative paths (the Slurm renderer's --chdir); default: the current directory.
    """
    return preflight(cfg, world_size, Path(base_dir) if base_dir is not None else None)[0]


def preflight(cfg: RunConfig, world_size: int, base: Path | None) -> tuple[list[Finding], ModelFacts | None]:
    """Every finding, and what the model will be (None when the config does not say enough to know)."""
    out: list[Finding] = []
    for rule in (lambda: batch_plan(cfg.train, world_size), lambda: uses_deepspeed(cfg, world_size)):
        try:
            rule()  # the doctor prints the batch numbers; here only a misfit matters
        except UserError as exc:
            out.append(Finding("error", str(exc)))
    out += deepspeed_keys(cfg, world_size)
    if cfg.train.precision == "fp16":
        cpu = cfg.train.device == "cpu"
        out.append(Finding("error" if cpu else "warn", "train.precision=fp16: prefer bf16 where the GPU has it "
                           "(A100, H100 and newer): same memory, no loss scaling, no skipped steps"
                           + ("; fp16 needs CUDA and train.device is cpu" if cpu else "")))
    facts = None
    try:
        facts, found = model_facts(cfg, base)
        out += found
    except UserError as exc:
        out.append(Finding("error", str(exc)))
    for key, patterns in (("data.train", cfg.data.train), ("data.val", cfg.data.val)):
        try:
            files = resolve_files([resolve_path(p, base) for p in patterns], key) if patterns else []
        except UserError as exc:  # its "relative to" names the cwd; with base_dir the paths were joined to base
            out.append(Finding("error", str(exc).replace(f"relative to {Path.cwd()}", f"relative to {base}")
                               if base is not None else str(exc)))
            continue
        unreadable = [f for f in files if isinstance(f, Path) and not os.access(f, os.R_OK)]
        empty = [f for f in files if file_size(f) == 0]
        if unreadable:
            out.append(Finding("error", f"{key}: {unreadable[0]} is not readable: check its permissions"))
        elif empty:
            out.append(Finding("warn", f"{key}: {len(empty)} of {len(files)} files are empty ({empty[0]})"))
        if key == "data.train" and files and not unreadable and (ascii := ascii_only_check(files, cfg)):
            out.append(Finding(*ascii))
        if key == "data.train" and files and not unreadable:
            if cfg.data.format == "packed":
                out.append(Finding(*packed_check(rebased(cfg, base), base)))
            elif cfg.data.weights:  # each source is sharded over the ranks on its own
                for entry, weight in zip(cfg.data.train, cfg.data.weights, strict=True):
                    if weight > 0:
                        source = resolve_files([resolve_path(entry, base)], key)
                        out.append(Finding(*shard_check(source, cfg, world_size, f"data.train source {entry!r}")))
            else:
                out.append(Finding(*shard_check(files, cfg, world_size)))
    if facts is not None:
        out.append(_disk_finding(cfg, world_size, facts, Path(resolve_path(cfg.run_dir, base))))
    return out, facts


def deepspeed_keys(cfg: RunConfig, world_size: int) -> list[Finding]:
    """distributed.deepspeed: its file and its conflicts with gpt2dist's keys are checked before any work."""
    if cfg.distributed.deepspeed is None:
        return []
    try:
        if not uses_deepspeed(cfg, world_size):
            return [Finding("warn", "distributed.deepspeed is ignored: this run uses the torch engine (one rank, "
                                    "ZeRO stage 0); set distributed.backend=deepspeed to run DeepSpeed")]
        from gpt2dist.launcher.ds_config import build_ds_config  # a pure function: no deepspeed import

        build_ds_config(cfg, world_size)
    except UserError as exc:
        return [Finding("error", str(exc))]
    return []


def _disk_finding(cfg: RunConfig, world_size: int, facts: ModelFacts, run_dir: Path) -> Finding:
    """The checkpoint dir must be creatable and hold two checkpoints (a new one is complete before an old one
    is deleted); less than keep_last + 1 fills the disk later in the run. On a resume, checkpoints already on
    disk count toward both, and the latest one's real size replaces the estimate when larger."""
    probe = run_dir / CHECKPOINTS_DIR
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    # asked, not tried: a probe file would change the folder's mtime before a later check refuses the run
    if not probe.is_dir():
        return Finding("error", f"run_dir {run_dir}: cannot create files in {probe} (Not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        why = os.strerror(errno.EROFS if os.statvfs(probe).f_flag & os.ST_RDONLY else errno.EACCES)
        return Finding("error", f"run_dir {run_dir}: cannot create files in {probe} ({why})")
    deepspeed = cfg.distributed.backend != "torch" and uses_deepspeed(cfg, world_size)
    one = memory.checkpoint_bytes(facts.n_params, cfg.train.precision, deepspeed=deepspeed,
                                  zero_stage=cfg.distributed.zero_stage)
    have = sorted((run_dir / CHECKPOINTS_DIR).glob("step-*")) if probe == run_dir / CHECKPOINTS_DIR else []
    if have:  # a resumed run: its latest checkpoint's real size, and those on disk already count
        one = max(one, sum(f.stat().st_size for f in have[-1].rglob("*") if f.is_file()))
    free, keep = shutil.disk_usage(probe).free, min(len(have), cfg.checkpoint.keep_last)
    msg = (f"run_dir {run_dir}: {fmt_bytes(free)} free, one checkpoint ~{fmt_bytes(one)} "
           f"({facts.n_params / 1e6:.1f}M params{f', {len(have)} on disk' if have else ''})")
    if free < max(1, 2 - len(have)) * one:
        return Finding("error", f"{msg}: room for less than two checkpoints; free space or choose another run_dir")
    if free < (cfg.checkpoint.keep_last + 1 - keep) * one:
        return Finding("warn", f"{msg}: room for less than checkpoint.keep_last + 1 = {cfg.checkpoint.keep_last + 1}"
                               " checkpoints")
    return Finding("ok", msg)


def raise_for_problems(findings: list[Finding], warn: Callable[[str], object] | None = None) -> None:
    """For `gpt2dist train` and the Slurm renderer: warnings go to `warn`, the first error becomes a UserError."""
    for f in findings:
        if f.level == "warn" and warn is not None:
            warn(f.message)
    problems = [f for f in findings if f.level == "error"]
    if problems:
        more = f" (+{len(problems) - 1} more: run gpt2dist doctor)" if len(problems) > 1 else ""
        raise UserError(problems[0].message + more)
