"""The run config's schema: nested dataclasses, each key declared once -- its type (choices as a `Literal`),
default, range and doc, via `key()` -- and read from there by load.py (coercion), `validate` and docs.py
(`gpt2dist config`); the cross-key checks; the batch triple. Every other module takes a `RunConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gpt2dist import atomic
from gpt2dist.errors import UserError


@dataclass(frozen=True)
class Range:
    """The allowed values of one numeric key (None = unbounded; `*_open` excludes the bound itself)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        below = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        return above and below

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi}"
        return f"in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"


GT0, GE0, FRACTION = Range(0, lo_open=True), Range(0), Range(0, 1, hi_open=True)


def key(default: Any = dataclasses.MISSING, doc: str = "", range: Range | None = None, *,
        factory: Callable[[], Any] | None = None) -> Any:
    """One key's whole declaration beside its type (choices: a `Literal`): default (or factory), doc and range,
    kept in the field's metadata, which `gpt2dist config` (docs.py) and `validate` (RANGES) both read."""
    metadata = {"doc": doc, **({"range": range} if range is not None else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# GPT-2 sizes from the paper / Hugging Face model cards; `tiny` makes every test run in seconds on CPU.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 256},
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024},
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16, "n_positions": 1024},
    "gpt2-large": {"n_layer": 36, "n_embd": 1280, "n_head": 20, "n_positions": 1024},
    "gpt2-xl": {"n_layer": 48, "n_embd": 1600, "n_head": 25, "n_positions": 1024},
}
Preset = Literal["tiny", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]  # MODEL_PRESETS' names (a test checks)
Switch = Literal["auto", "true", "false"]  # these keys also take YAML true/false
Offload = Literal["none", "cpu"]


@dataclass
class ModelConfig:
    preset: Preset = key("tiny", "one of MODEL_PRESETS; ignored when `pretrained` is set")
    pretrained: str | None = key(None, "a Hugging Face folder or hub id (ORG/NAME, via the HF cache) to fine-tune")
    n_layer: int | None = key(None, "per-field overrides of the preset", GT0)
    n_embd: int | None = key(None, "width (embedding size); a multiple of n_head", GT0)
    n_head: int | None = key(None, "attention heads", GT0)
    n_positions: int | None = key(None, "longest sequence the model takes (>= data.block_size)", GT0)
    dropout: float | None = key(None, "sets resid/embd/attn dropout together (preset default 0.0)", FRACTION)
    activation_checkpointing: bool = key(False, "recompute activations in backward: less memory, ~30% slower")
    resize_embeddings: bool = key(False, "with `pretrained`: allow tokenizer.kind bpe/char (a new vocabulary); the "
                                  "embedding matrix is cut or grown to fit it, so rows no longer mean the tokens "
                                  "they were trained for")


@dataclass
class TokenizerConfig:
    kind: Literal["pretrained", "bpe", "char"] | None = key(
        None, "pretrained | bpe | char; unset: pretrained with model.pretrained (its own), else char")
    path: str | None = key(None, "kind=pretrained: a tokenizer folder or hub id (default: model.pretrained)")
    vocab_size: int = key(4096, "kind=bpe: size of the trained byte-level BPE vocabulary", GT0)


@dataclass
class DataConfig:
    train: list[str] = key(doc="files, globs or directories (read recursively): .txt, .jsonl, .json, .csv, .tsv, "
                           ".parquet, .gz text, or a `datasets` save_to_disk folder", factory=list)
    val: list[str] = key(doc="validation files; or use val_fraction", factory=list)
    val_fraction: float = key(0.0, "hold out this fraction of training documents (by content hash)", FRACTION)
    text_field: str = key("text", "the column holding text in .jsonl / .json / .csv / .tsv / .parquet / saved "
                          "datasets")
    block_size: int = key(128, "tokens per training sequence (windows are block_size + 1 long)", GT0)
    sample_by: Literal["line", "paragraph", "document"] = key(
        "paragraph", ".txt documents: line | paragraph (blank-line separated) | document (file)")
    encoding_errors: Literal["strict", "replace"] = key(
        "strict", "strict: undecodable bytes are an error naming file+offset; replace: U+FFFD")
    encoding: Literal["utf-8", "utf-8-sig", "gb18030", "gbk", "big5", "utf-16"] = key(
        "utf-8", "text files' encoding: utf-8 | utf-8-sig | gb18030 | gbk | big5 | utf-16 (with BOM)")
    strip_control: bool = key(True, "drop control characters other than newline and tab")
    collapse_whitespace: bool = key(False, "runs of spaces/tabs become one space")
    min_line_chars: int = key(0, "drop lines shorter than this (after stripping)", GE0)
    ascii_only: bool = key(False, "drop non-ASCII characters")
    halfwidth: bool = key(False, "full-width ASCII forms (U+FF01-FF5E, e.g. Ａ１，) and U+3000 become "
                          "half-width")
    # the packed token stream is sequential: one worker keeps it exact
    num_workers: Literal[0, 1] = key(
        1, "format=stream: 1 = read+tokenize+pack in a DataLoader worker process, 0 = in-process")
    prefetch_factor: int = key(2, "format=stream: micro batches the worker prepares ahead of the training loop", GT0)
    format: Literal["stream", "packed"] = key(
        "stream", "stream: tokenize while training | packed: read `gpt2dist prepare`'s token shards")
    packed_dir: str | None = key(None, "where `gpt2dist prepare` writes / format=packed reads shards (default "
                                 "RUN_DIR/data)")
    weights: list[float] = key(doc="mixing weights, one per data.train", range=GE0, factory=list)


@dataclass
class TrainConfig:
    max_steps: int = key(1000, "optimizer steps (ignored when num_epochs is set)", GT0)
    num_epochs: float | None = key(None, "passes over the training data: max_steps is derived from the windows one "
                                   "pass gives (counted, not estimated), printed at start and kept by a resume", GT0)
    # The batch triple: give any two of these (per rank: micro; all ranks: global) and the third is derived
    # for the world size, global = micro x accum x data-parallel ranks. Unset: micro 8, accum 1.
    global_batch_size: int | None = key(None, "sequences per optimizer step, all ranks together", GT0)
    micro_batch_size: int | None = key(None, "sequences per forward pass on one rank", GT0)
    grad_accum_steps: int | None = key(None, "micro batches per optimizer step", GT0)
    lr: float = key(6e-4, "peak learning rate (the schedule divides by it)", GT0)
    min_lr: float | None = key(None, "floor of the cosine/linear schedule (unset: min_lr_ratio x lr)", GE0)
    min_lr_ratio: float = key(0.1, "the floor as a fraction of train.lr when min_lr is unset", Range(0, 1))
    warmup_steps: int = key(100, "linear warm-up steps", GE0)
    warmup_ratio: float | None = key(None, "warm-up as a fraction of max_steps (replaces warmup_steps)", FRACTION)
    schedule: Literal["cosine", "linear", "constant"] = key(
        "cosine", "cosine | linear (to the floor) | constant (after warm-up)")
    weight_decay: float = key(0.1, "AdamW decoupled weight decay (matrices only)", GE0)
    beta1: float = key(0.9, "AdamW first-moment decay (0 <= beta < 1, as torch.optim.AdamW wants)", FRACTION)
    beta2: float = key(0.95, "AdamW second-moment decay", FRACTION)
    grad_clip: float = key(1.0, "max global grad norm; 0 disables", GE0)
    precision: Literal["fp32", "bf16", "fp16"] = key(
        "fp32", "fp32 | bf16 | fp16 (fp16 only on CUDA, with loss scaling)")
    fp16_initial_scale_power: int = key(16, "fp16 loss scaling: initial scale 2**power (2**64 is far beyond any "
                                        "useful scale; fp32 holds up to 2**127)", Range(0, 64))
    fp16_loss_scale_window: int = key(1000, "steps without overflow before the scale grows", GT0)
    fp16_hysteresis: int = key(2, "overflows tolerated before the scale shrinks (DeepSpeed)", GT0)
    fp16_min_loss_scale: int = key(1, "the scale never drops below this", GT0)
    eval_every: int = key(100, "steps between evaluations; 0 disables", GE0)
    eval_batches: int = key(20, "micro batches per evaluation", GT0)
    log_every: int = key(10, "steps between log records", GT0)
    max_bad_steps: int = key(5, "consecutive steps with a NaN/inf loss or grad norm skipped (no update) before the "
                             "run stops as diverged", GE0)
    resume: bool = key(True, "continue from the run dir's latest checkpoint when there is one")
    resume_from: str | None = key(None, "start from this checkpoint (a step-NNNNNNNN dir, or a run dir: its latest) "
                                  "when run_dir has none of its own (a step of run_dir itself: always that one); "
                                  "a new run_dir may be given")
    compile: Switch = key("auto", "auto (on CUDA; off on CPU, where it measured no faster) | true | false; a "
                          "compilation failure falls back to eager with a warning")
    device: Literal["auto", "cpu", "cuda"] = key("auto", "auto | cpu | cuda")
    chunked_loss: Switch = key("auto", "cross entropy in chunks of tokens, full-vocabulary fp32 logits never held "
                               "at once (gpt2dist/engines/chunked_loss.py): auto (on CUDA; off on CPU, where it "
                               "measured 1.09x slower) | true | false. Not with fp16 (full logits there, with a "
                               "warning when asked for)")


@dataclass
class CheckpointConfig:
    every: int = key(100, "steps between checkpoints (and one at the end); 0 = only at the end", GE0)
    keep_last: int = key(3, "complete checkpoints kept; older ones are deleted after a new one is complete", GT0)


@dataclass
class LoggingConfig:
    tensorboard: bool = key(True, "write RUN_DIR/tensorboard event files")
    progress: Literal["auto", "bar", "lines"] = key("auto", "auto (bar on a terminal, lines otherwise) | bar | lines")
    trace_windows: bool = key(False, "append a digest of every consumed window to RUN_DIR/trace/ (resume audits)")
    curves: bool = key(True, "redraw RUN_DIR/curves.png after evals (within 2% of the wall clock) and at the end")
    wandb: bool = key(False, "also log every metrics.jsonl record + the resolved config to Weights & Biases "
                      "(rank 0)")
    wandb_project: str | None = key(None, "W&B project (default: WANDB_PROJECT, else gpt2dist)")


@dataclass
class DistributedConfig:
    backend: Literal["auto", "torch", "deepspeed"] = key(
        "auto", "auto (DeepSpeed when world size > 1 or zero_stage > 0) | torch | deepspeed")
    zero_stage: Literal[0, 1, 2, 3] = key(0, "DeepSpeed ZeRO stage 0-3")
    offload_optimizer: Offload = key("none", "none | cpu (ZeRO stage >= 1)")
    offload_param: Offload = key("none", "none | cpu (ZeRO stage 3 only)")
    overlap_comm: bool = key(True, "overlap gradient reduction with backward")
    contiguous_gradients: bool = key(True, "copy gradients into one buffer as they are produced (less "
                                     "fragmentation)")
    reduce_bucket_size: int = key(500_000_000, "elements per gradient reduce bucket", GT0)
    allgather_bucket_size: int = key(500_000_000, "elements per all-gather bucket (stages 1-2)", GT0)
    stage3_prefetch_bucket_size: int = key(50_000_000, "elements prefetched ahead of use (stage 3)", GT0)
    stage3_param_persistence_threshold: int = key(100_000, "smaller params stay unpartitioned (stage 3)", GE0)
    stage3_max_live_parameters: int = key(1_000_000_000, "cap on gathered parameters alive at once (stage 3)", GT0)
    stage3_max_reuse_distance: int = key(1_000_000_000, "keep a gathered param reused within this (stage 3)", GE0)
    timeout_minutes: int = key(30, "collective timeout before a hung rank fails the job", GT0)
    deepspeed: dict | str | None = key(None, "your DeepSpeed keys: a mapping or a JSON file, merged over the "
                                       "generated one")


@dataclass
class RunConfig:
    run_dir: str = key("runs/default", "checkpoints, metrics, tokenizer and the resolved config go here")
    seed: int = key(1234, "seeds python, numpy and torch (model init, dropout)", Range(0, 2**64 - 1))
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def resolved_model_dims(self) -> dict[str, int]:
        """Preset values with per-field overrides applied (pretrained models report their own)."""
        dims = dict(MODEL_PRESETS[self.model.preset])
        for key in dims:
            value = getattr(self.model, key)
            if value is not None:
                dims[key] = value
        return dims


def leaves(cls: type = RunConfig, prefix: str = "") -> dict[str, tuple[Any, dataclasses.Field]]:
    """Dotted key -> (annotation, field) for every leaf key under `cls`, in declaration order (sections recurse)."""
    out: dict[str, tuple[Any, dataclasses.Field]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(leaves(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = (hints[f.name], f)
    return out


def literal_choices(hint: Any) -> tuple[Any, ...]:
    """The values a `Literal[...]` (or `Literal[...] | None`) annotation allows; () for any other annotation."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((c for c in map(literal_choices, typing.get_args(hint)) if c), ())
    return ()


# Derived from the declarations, for the code that checks and documents them (validate, docs.py, tests).
CHOICES: dict[str, tuple[Any, ...]] = {k: literal_choices(h) for k, (h, _) in leaves().items() if literal_choices(h)}
RANGES: dict[str, Range] = {k: f.metadata["range"] for k, (_, f) in leaves().items() if "range" in f.metadata}
DOCS: dict[str, str] = {k: f.metadata.get("doc", "") for k, (_, f) in leaves().items()}


def choice_error(key: str, value: Any, allowed: tuple[Any, ...]) -> UserError:
    """The one line for a value outside a key's choices (coerce and validate both raise it)."""
    return UserError(f"config key {key}={value!r} is not one of {', '.join(map(str, allowed))}")


BPE_MIN_VOCAB = 257  # byte-level BPE: 256 byte tokens + <|endoftext|>
# Upper bounds past which a value passes its range but makes no sense (issue 23): a decay or clip of 1e300, a
# collective timeout of millions of years, a vocabulary no embedding table holds.
SENSIBLE_MAX: dict[str, float] = {"train.weight_decay": 10.0, "train.grad_clip": 1e6,
                                  "distributed.timeout_minutes": 7 * 24 * 60, "tokenizer.vocab_size": 2**24}


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that need no files: choices, ranges, block size vs positions (after the defaults that
    depend on other keys are resolved)."""
    resolve_defaults(cfg)
    for key, allowed in CHOICES.items():
        value = get_key(cfg, key)
        if value not in allowed:
            raise choice_error(key, value, allowed)
    for key, allowed in RANGES.items():
        value = get_key(cfg, key)
        for item in value if isinstance(value, list) else [value]:
            if item is not None and item not in allowed:
                raise UserError(f"config key {key} must be {allowed}, got {value}")
    for key, most in SENSIBLE_MAX.items():
        if get_key(cfg, key) > most:
            raise UserError(f"config key {key} must be <= {most:g}, got {get_key(cfg, key)}")
    if not cfg.data.train:
        raise UserError("config key data.train is empty: list the training files or globs")
    check_weights(cfg.data)
    if cfg.train.min_lr is not None and cfg.train.min_lr > cfg.train.lr:
        raise UserError(f"config key train.min_lr={cfg.train.min_lr} exceeds train.lr={cfg.train.lr}: lower it, or "
                        "leave it unset (the floor is then train.min_lr_ratio x train.lr)")
    check_tokenizer_kind(cfg)
    if cfg.model.pretrained is None:
        dims = cfg.resolved_model_dims()
        if dims["n_embd"] % dims["n_head"]:
            raise UserError(f"config keys model.n_embd={dims['n_embd']} must be divisible by "
                            f"model.n_head={dims['n_head']}")
        if cfg.data.block_size > dims["n_positions"]:
            raise UserError(f"config key data.block_size={cfg.data.block_size} exceeds the model's "
                            f"n_positions={dims['n_positions']}: lower data.block_size or raise model.n_positions")
    dcfg = cfg.distributed
    if dcfg.offload_param == "cpu" and dcfg.zero_stage != 3:
        raise UserError(f"config key distributed.offload_param=cpu needs distributed.zero_stage=3 (got "
                        f"{dcfg.zero_stage}): parameters are only partitioned, hence offloadable, at stage 3")
    if dcfg.offload_optimizer == "cpu" and dcfg.zero_stage == 0:
        raise UserError("config key distributed.offload_optimizer=cpu needs distributed.zero_stage >= 1 "
                        "(DeepSpeed offloads the partitioned optimizer state)")
    if dcfg.backend == "torch" and (dcfg.zero_stage > 0 or "cpu" in (dcfg.offload_optimizer, dcfg.offload_param)):
        raise UserError(f"config key distributed.backend=torch cannot run ZeRO stage {dcfg.zero_stage} or offload: "
                        "use distributed.backend=deepspeed (or auto)")
    t = cfg.train
    per_rank = (t.micro_batch_size or 1) * (t.grad_accum_steps or 1)
    if t.global_batch_size is not None and t.global_batch_size % per_rank:
        raise UserError(f"train.global_batch_size={t.global_batch_size} is not a multiple of train.micro_batch_size="
                        f"{t.micro_batch_size or '?'} x train.grad_accum_steps={t.grad_accum_steps or '?'}: "
                        "adjust one of the three, or give only two")
    if cfg.tokenizer.kind == "bpe" and cfg.tokenizer.vocab_size < BPE_MIN_VOCAB:
        raise UserError(f"config key tokenizer.vocab_size={cfg.tokenizer.vocab_size} is below {BPE_MIN_VOCAB}: a "
                        "byte-level BPE vocabulary holds the 256 bytes and <|endoftext|> before any merge")
    if cfg.tokenizer.kind == "pretrained" and not (cfg.tokenizer.path or cfg.model.pretrained):
        raise UserError("config key tokenizer.path is required when tokenizer.kind=pretrained "
                        "(a local Hugging Face tokenizer folder)")


def resolve_defaults(cfg: RunConfig) -> None:
    """Defaults that depend on other keys: a pretrained folder brings its own tokenizer (tokenizer.kind unset)."""
    if cfg.tokenizer.kind is None:
        cfg.tokenizer.kind = "pretrained" if cfg.model.pretrained else "char"


def check_tokenizer_kind(cfg: RunConfig) -> None:
    """A new vocabulary on a pretrained model scrambles its embeddings: refused unless asked for by name."""
    kind = cfg.tokenizer.kind
    if cfg.model.pretrained and kind in ("bpe", "char") and not cfg.model.resize_embeddings:
        raise UserError(f"config key tokenizer.kind={kind} would give model.pretrained={cfg.model.pretrained} a new "
                        "vocabulary and resize its embeddings: leave tokenizer.kind unset to use the folder's own "
                        "tokenizer, or set model.resize_embeddings=true")


def check_weights(data: DataConfig) -> None:
    """Mixing weights: one number >= 0 per data.train entry (each entry is one source), some positive."""
    if not data.weights:
        return
    if len(data.weights) != len(data.train):
        raise UserError(f"config key data.weights has {len(data.weights)} entries for {len(data.train)} data.train "
                        "entries: give one weight per entry (each entry is one source)")
    if any(w < 0 for w in data.weights) or sum(data.weights) <= 0:
        raise UserError(f"config key data.weights={data.weights} needs weights >= 0 with a positive sum")


@dataclass(frozen=True)
class BatchPlan:
    """The resolved batch triple for a world size (tokens are the unit: tokens = global x block_size)."""

    micro: int
    accum: int
    world_size: int

    @property
    def global_batch(self) -> int:
        return self.micro * self.accum * self.world_size

    def describe(self, block_size: int) -> str:
        """The batch line every entry point prints (train, doctor, ds-config): sequences and tokens per step."""
        tokens = self.global_batch * block_size
        return (f"batch: micro {self.micro} x accum {self.accum} x data-parallel {self.world_size} = global "
                f"{self.global_batch:,} sequences = {tokens:,} tokens/step (block {block_size})")


def batch_plan(train: TrainConfig, world_size: int) -> BatchPlan:
    """Derive the missing member of (global, micro, accum) for `world_size` data-parallel ranks, or fail
    with one line naming the three numbers (gpt-neox's rule: global = micro x accum x data_parallel)."""
    g, m, a = train.global_batch_size, train.micro_batch_size, train.grad_accum_steps
    given = (f"train.global_batch_size={g}, train.micro_batch_size={'?' if m is None else m}, "
             f"train.grad_accum_steps={'?' if a is None else a}")
    if g is None:
        return BatchPlan(m or 8, a or 1, world_size)
    if m is None and a is None:
        a = 1
    if m is None:
        m, rem = divmod(g, a * world_size)
    elif a is None:
        a, rem = divmod(g, m * world_size)
    else:
        rem = g - m * a * world_size
    if rem or not m or not a:
        raise UserError(f"batch triple {given} does not fit {world_size} ranks (global = micro x accum x ranks): "
                        "make global a multiple of micro x accum x ranks, or give only two of the three")
    return BatchPlan(m, a, world_size)


def uses_deepspeed(cfg: RunConfig, world_size: int) -> bool:
    """backend auto: DeepSpeed when there are several ranks or a ZeRO stage was asked, plain torch otherwise.
    backend=torch trains on one process, so several ranks are refused in one line."""
    backend = cfg.distributed.backend
    if backend == "torch" and world_size > 1:
        raise UserError(f"distributed.backend=torch trains on one process, this launch has {world_size} ranks: "
                        "use distributed.backend=deepspeed (or auto)")
    return backend == "deepspeed" or (backend == "auto" and (world_size > 1 or cfg.distributed.zero_stage > 0))


def get_key(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config (every key, defaults included) so a run dir documents itself."""
    atomic.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
