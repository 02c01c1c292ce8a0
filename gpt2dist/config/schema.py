"""The run config's schema: nested dataclasses, each key's type, default, range (field metadata) and doc (its
comment, read by docs.py); the choices; the cross-key checks; the batch triple. Every other module takes a
`RunConfig`; load.py builds one from YAML and overrides.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def ranged(default: Any, allowed: Range) -> Any:
    """A numeric field and its range, side by side: the one table `validate` checks (RANGES collects it)."""
    return field(default=default, metadata={"range": allowed})


# GPT-2 sizes from the paper / Hugging Face model cards; `tiny` makes every test run in seconds on CPU.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 256},
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024},
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16, "n_positions": 1024},
    "gpt2-large": {"n_layer": 36, "n_embd": 1280, "n_head": 20, "n_positions": 1024},
    "gpt2-xl": {"n_layer": 48, "n_embd": 1600, "n_head": 25, "n_positions": 1024},
}


@dataclass
class ModelConfig:
    preset: str = "tiny"  # one of MODEL_PRESETS; ignored when `pretrained` is set
    pretrained: str | None = None  # a Hugging Face folder or hub id (ORG/NAME, via the HF cache) to fine-tune
    n_layer: int | None = ranged(None, GT0)  # per-field overrides of the preset
    n_embd: int | None = ranged(None, GT0)  # width (embedding size); a multiple of n_head
    n_head: int | None = ranged(None, GT0)  # attention heads
    n_positions: int | None = ranged(None, GT0)  # longest sequence the model takes (>= data.block_size)
    dropout: float | None = ranged(None, FRACTION)  # sets resid/embd/attn dropout together (preset default 0.0)
    activation_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    # with `pretrained`: allow tokenizer.kind bpe/char (a new vocabulary); the embedding matrix is cut or grown to
    resize_embeddings: bool = False  # fit it, so rows no longer mean the tokens they were trained for


@dataclass
class TokenizerConfig:
    kind: str | None = None  # pretrained | bpe | char; unset: pretrained with model.pretrained (its own), else char
    path: str | None = None  # kind=pretrained: a tokenizer folder or hub id (default: model.pretrained)
    vocab_size: int = ranged(4096, GT0)  # kind=bpe: size of the trained byte-level BPE vocabulary


@dataclass
class DataConfig:
    # files, globs or directories (read recursively): .txt, .jsonl, .json, .csv, .tsv, .parquet, .gz text, or a
    # `datasets` save_to_disk folder
    train: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)  # validation files; or use val_fraction
    val_fraction: float = ranged(0.0, FRACTION)  # hold out this fraction of training documents (by content hash)
    text_field: str = "text"  # the column holding text in .jsonl / .json / .csv / .tsv / .parquet / saved datasets
    block_size: int = ranged(128, GT0)  # tokens per training sequence (windows are block_size + 1 long)
    sample_by: str = "paragraph"  # .txt documents: line | paragraph (blank-line separated) | document (file)
    encoding_errors: str = "strict"  # strict: undecodable bytes are an error naming file+offset; replace: U+FFFD
    encoding: str = "utf-8"  # text files' encoding: utf-8 | utf-8-sig | gb18030 | gbk | big5 | utf-16 (with BOM)
    strip_control: bool = True  # drop control characters other than newline and tab
    collapse_whitespace: bool = False  # runs of spaces/tabs become one space
    min_line_chars: int = ranged(0, GE0)  # drop lines shorter than this (after stripping)
    ascii_only: bool = False  # drop non-ASCII characters
    halfwidth: bool = False  # full-width ASCII forms (U+FF01-FF5E, e.g. Ａ１，) and U+3000 become half-width
    # format=stream: 1 = read+tokenize+pack in a DataLoader worker process, 0 = in-process
    num_workers: int = ranged(1, Range(0, 1))
    prefetch_factor: int = ranged(2, GT0)  # format=stream: micro batches the worker prepares ahead of the training loop
    format: str = "stream"  # stream: tokenize while training | packed: read `gpt2dist prepare`'s token shards
    packed_dir: str | None = None  # where `gpt2dist prepare` writes / format=packed reads shards (default RUN_DIR/data)
    weights: list[float] = field(default_factory=list, metadata={"range": GE0})  # mixing weights, one per data.train


@dataclass
class TrainConfig:
    max_steps: int = ranged(1000, GT0)  # optimizer steps (ignored when num_epochs is set)
    # passes over the training data: max_steps is derived from the windows one pass gives (counted, not
    num_epochs: float | None = ranged(None, GT0)  # estimated), printed at start and kept by a resume
    # The batch triple: give any two of these (per rank: micro; all ranks: global) and the third is derived
    # for the world size, global = micro x accum x data-parallel ranks. Unset: micro 8, accum 1.
    global_batch_size: int | None = ranged(None, GT0)  # sequences per optimizer step, all ranks together
    micro_batch_size: int | None = ranged(None, GT0)  # sequences per forward pass on one rank
    grad_accum_steps: int | None = ranged(None, GT0)  # micro batches per optimizer step
    lr: float = ranged(6e-4, GT0)  # peak learning rate (the schedule divides by it)
    min_lr: float | None = ranged(None, GE0)  # floor of the cosine/linear schedule (unset: min_lr_ratio x lr)
    min_lr_ratio: float = ranged(0.1, Range(0, 1))  # the floor as a fraction of train.lr when min_lr is unset
    warmup_steps: int = ranged(100, GE0)  # linear warm-up steps
    warmup_ratio: float | None = ranged(None, FRACTION)  # warm-up as a fraction of max_steps (replaces warmup_steps)
    schedule: str = "cosine"  # cosine | linear (to the floor) | constant (after warm-up)
    weight_decay: float = ranged(0.1, GE0)  # AdamW decoupled weight decay (matrices only)
    beta1: float = ranged(0.9, FRACTION)  # AdamW first-moment decay (0 <= beta < 1, as torch.optim.AdamW wants)
    beta2: float = ranged(0.95, FRACTION)  # AdamW second-moment decay
    grad_clip: float = ranged(1.0, GE0)  # max global grad norm; 0 disables
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 only on CUDA, with loss scaling)
    # fp16 loss scaling: initial scale 2**power (2**64 is far beyond any useful scale; fp32 holds up to 2**127)
    fp16_initial_scale_power: int = ranged(16, Range(0, 64))
    fp16_loss_scale_window: int = ranged(1000, GT0)  # steps without overflow before the scale grows
    fp16_hysteresis: int = ranged(2, GT0)  # overflows tolerated before the scale shrinks (DeepSpeed)
    fp16_min_loss_scale: int = ranged(1, GT0)  # the scale never drops below this
    eval_every: int = ranged(100, GE0)  # steps between evaluations; 0 disables
    eval_batches: int = ranged(20, GT0)  # micro batches per evaluation
    log_every: int = ranged(10, GT0)  # steps between log records
    max_bad_steps: int = ranged(5, GE0)  # consecutive steps with a NaN/inf loss or grad norm skipped (no update)
    #                                      before the run stops as diverged
    resume: bool = True  # continue from the run dir's latest checkpoint when there is one
    # start from this checkpoint (a step-NNNNNNNN dir, or a run dir: its latest) when run_dir has none of its own
    resume_from: str | None = None  # (a step of run_dir itself: always that one); a new run_dir may be given
    compile: str = "auto"  # auto (on CUDA; off on CPU, where it measured no faster) | true | false; a
    #                        compilation failure falls back to eager with a warning
    device: str = "auto"  # auto | cpu | cuda
    # cross entropy in chunks of tokens, full-vocabulary fp32 logits never held at once (gpt2dist/engines/
    # chunked_loss.py): auto (on CUDA; off on CPU, where it measured 1.09x slower) | true | false. Not with fp16
    # (full logits there, with a warning when asked for)
    chunked_loss: str = "auto"


@dataclass
class CheckpointConfig:
    every: int = ranged(100, GE0)  # steps between checkpoints (and one at the end); 0 = only at the end
    keep_last: int = ranged(3, GT0)  # complete checkpoints kept; older ones are deleted after a new one is complete


@dataclass
class LoggingConfig:
    tensorboard: bool = True  # write RUN_DIR/tensorboard event files
    progress: str = "auto"  # auto (bar on a terminal, lines otherwise) | bar | lines
    trace_windows: bool = False  # append a digest of every consumed window to RUN_DIR/trace/ (resume audits)
    curves: bool = True  # redraw RUN_DIR/curves.png after evals (within 2% of the wall clock) and at the end
    wandb: bool = False  # also log every metrics.jsonl record + the resolved config to Weights & Biases (rank 0)
    wandb_project: str | None = None  # W&B project (default: WANDB_PROJECT, else gpt2dist)


@dataclass
class DistributedConfig:
    backend: str = "auto"  # auto (DeepSpeed when world size > 1 or zero_stage > 0) | torch | deepspeed
    zero_stage: int = ranged(0, Range(0, 3))  # DeepSpeed ZeRO stage 0-3
    offload_optimizer: str = "none"  # none | cpu (ZeRO stage >= 1)
    offload_param: str = "none"  # none | cpu (ZeRO stage 3 only)
    overlap_comm: bool = True  # overlap gradient reduction with backward
    contiguous_gradients: bool = True  # copy gradients into one buffer as they are produced (less fragmentation)
    reduce_bucket_size: int = ranged(500_000_000, GT0)  # elements per gradient reduce bucket
    allgather_bucket_size: int = ranged(500_000_000, GT0)  # elements per all-gather bucket (stages 1-2)
    stage3_prefetch_bucket_size: int = ranged(50_000_000, GT0)  # elements prefetched ahead of use (stage 3)
    stage3_param_persistence_threshold: int = ranged(100_000, GE0)  # smaller params stay unpartitioned (stage 3)
    stage3_max_live_parameters: int = ranged(1_000_000_000, GT0)  # cap on gathered parameters alive at once (stage 3)
    stage3_max_reuse_distance: int = ranged(1_000_000_000, GE0)  # keep a gathered param reused within this (stage 3)
    timeout_minutes: int = ranged(30, GT0)  # collective timeout before a hung rank fails the job
    deepspeed: dict | str | None = None  # your DeepSpeed keys: a mapping or a JSON file, merged over the generated one


@dataclass
class RunConfig:
    run_dir: str = "runs/default"  # checkpoints, metrics, tokenizer and the resolved config go here
    seed: int = ranged(1234, Range(0, 2**64 - 1))  # seeds python, numpy and torch (model init, dropout)
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


CHOICES: dict[str, tuple[Any, ...]] = {
    "model.preset": tuple(MODEL_PRESETS),
    "tokenizer.kind": ("pretrained", "bpe", "char"),
    "data.sample_by": ("line", "paragraph", "document"),
    "data.encoding_errors": ("strict", "replace"),
    "data.encoding": ("utf-8", "utf-8-sig", "gb18030", "gbk", "big5", "utf-16"),
    "data.num_workers": (0, 1),  # the packed token stream is sequential: one worker keeps it exact
    "data.format": ("stream", "packed"),
    "train.schedule": ("cosine", "linear", "constant"),
    "train.precision": ("fp32", "bf16", "fp16"),
    "train.compile": ("auto", "true", "false"),
    "train.chunked_loss": ("auto", "true", "false"),
    "train.device": ("auto", "cpu", "cuda"),
    "logging.progress": ("auto", "bar", "lines"),
    "distributed.backend": ("auto", "torch", "deepspeed"),
    "distributed.zero_stage": (0, 1, 2, 3),
    "distributed.offload_optimizer": ("none", "cpu"),
    "distributed.offload_param": ("none", "cpu"),
}


def _ranges(cls: type, prefix: str = "") -> dict[str, Range]:
    """Dotted key -> Range, from the fields' metadata (every int/float key has one: tests/config/test_config.py)."""
    out: dict[str, Range] = {}
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(_ranges(hint, f"{prefix}{f.name}."))
        elif "range" in f.metadata:
            out[prefix + f.name] = f.metadata["range"]
    return out


RANGES: dict[str, Range] = _ranges(RunConfig)


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
            raise UserError(f"config key {key}={value!r} is not one of {', '.join(map(str, allowed))}")
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
