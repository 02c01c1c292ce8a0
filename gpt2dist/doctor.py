"""`gpt2dist doctor`: will this config run on this many ranks, and does it fit -- before hours in a queue.

Two layers. `cheap_checks` builds no model and reads no data beyond file sizes (batch triple, files, rows per
rank, block size, vocabulary, precision, checkpoint space), so `gpt2dist train` and the Slurm renderer can run
it before any expensive work. `run_doctor` adds the per-GPU memory table for ZeRO 0-3 with and without
offload (`gpt2dist.memory`) and the lowest stage that fits. Every finding is one line: ok, warn or error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpt2dist import memory
from gpt2dist.config import RunConfig, batch_plan, load_config
from gpt2dist.datacheck import BYTES_PER_TOKEN, packed_check, shard_check
from gpt2dist.errors import UserError
from gpt2dist.sources import file_size, is_url

CHAR_VOCAB_GUESS = 256  # a char tokenizer's size is known only once it is built from the data
HEADROOM = 0.9  # usable share of --gpu-mem: the CUDA context and allocator fragmentation take the rest
TABLE_ROWS = [(0, False, False), (1, False, False), (2, False, False), (3, False, False),
              (1, True, False), (2, True, False), (3, True, True)]  # (stage, offload opt, offload param)


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | error
    message: str

    def __str__(self) -> str:
        return f"{self.level:<5} {self.message}"


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # model, batch math, data volume
    table: list[memory.MemoryEstimate] = field(default_factory=list)  # TABLE_ROWS order
    ds_estimates: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> DeepSpeed's (cpu, gpu)
    configured: memory.MemoryEstimate | None = None
    recommended: memory.MemoryEstimate | None = None
    gpu_mem_bytes: int | None = None
    ranks_per_node: int = 1
    facts: ModelFacts | None = None  # issue 16: the scaling table reads the model from here
    scaling: list[str] = field(default_factory=list)  # issue 16: gpt2dist.scaling's table, after the memory table

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def verdict(self) -> str:
        """The one line scripts read: `doctor: OK (...)` or `doctor: N problems (the first one)`."""
        if self.problems:
            n = len(self.problems)
            return f"doctor: {n} problem{'s' if n > 1 else ''} ({self.problems[0].message})"
        warns = sum(f.level == "warn" for f in self.findings)
        parts = [f"{e.label} ~{memory.fmt_bytes(e.total)} per GPU" for e in (self.configured,) if e]
        parts += [f"lowest that fits: {e.label}" for e in (self.recommended,) if e]
        return f"doctor: OK ({'; '.join([*parts, f'{warns} warning' + ('s' if warns != 1 else '')])})"


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


def _path(p: str, base: Path | None) -> str:
    return p if base is None or os.path.isabs(p) or is_url(p) else str(base / p)


def model_facts(cfg: RunConfig, base: Path | None = None) -> tuple[ModelFacts, list[Finding]]:
    """Dims and vocabulary (the model is resized to the tokenizer), plus vocabulary and block-size findings."""
    out: list[Finding] = []
    dims = dict(cfg.resolved_model_dims())
    model_vocab = None
    if cfg.model.pretrained is not None:
        from gpt2dist.model import pretrained_config  # imports transformers: only for pretrained models

        hf = pretrained_config(_path(cfg.model.pretrained, base))
        dims = {k: hf.get(k, dims[k]) for k in dims}
        model_vocab = hf.get("vocab_size", 50257)
    run_tok = Path(_path(cfg.run_dir, base)) / "tokenizer"  # a resumed run's own tokenizer wins
    tok_dir = run_tok if (run_tok / "tokenizer_config.json").is_file() else None
    if tok_dir is None and cfg.tokenizer.kind == "pretrained":
        tok_dir = Path(_path(cfg.tokenizer.path or cfg.model.pretrained, base))
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
    if cfg.data.block_size > dims["n_positions"]:
        out.append(Finding("error", f"data.block_size={cfg.data.block_size} exceeds the model's n_positions="
                                    f"{dims['n_positions']}: lower data.block_size"))
    return ModelFacts(dims["n_layer"], dims["n_embd"], dims["n_head"], dims["n_positions"], tok_vocab, source), out


def cheap_checks(cfg: RunConfig, world_size: int, *, base_dir: str | Path | None = None) -> list[Finding]:
    """Checks that build no model and read no data beyond sizes (and small files' row counts).

    `base_dir` resolves relative paths (the Slurm renderer's --chdir); default: the current directory.
    """
    return _checks(cfg, world_size, Path(base_dir) if base_dir is not None else None)[0]


def _checks(cfg: RunConfig, world_size: int, base: Path | None) -> tuple[list[Finding], ModelFacts | None]:
    from gpt2dist.data import resolve_files  # imports torch: deferred so `--help` stays instant

    out: list[Finding] = []
    try:
        batch_plan(cfg.train, world_size)  # run_doctor prints the numbers; here only a misfit matters
    except UserError as exc:
        out.append(Finding("error", str(exc)))
    if cfg.distributed.backend == "torch" and world_size > 1:
        out.append(Finding("error", f"distributed.backend=torch runs one process, not {world_size} ranks: use "
                                    "distributed.backend=deepspeed (or auto)"))
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
            files = resolve_files([_path(p, base) for p in patterns], key) if patterns else []
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
        if key == "data.train" and files and not unreadable:
            if cfg.data.format == "packed":
                out.append(Finding(*packed_check(cfg, base)))
            elif cfg.data.weights:  # each source is sharded over the ranks on its own
                for entry, weight in zip(cfg.data.train, cfg.data.weights, strict=True):
                    if weight > 0:
                        source = resolve_files([_path(entry, base)], key)
                        out.append(Finding(*shard_check(source, cfg, world_size, f"data.train source {entry!r}")))
            else:
                out.append(Finding(*shard_check(files, cfg, world_size)))
    if facts is not None:
        out.append(_disk_finding(cfg, world_size, facts, Path(_path(cfg.run_dir, base))))
    return out, facts


def _disk_finding(cfg: RunConfig, world_size: int, facts: ModelFacts, run_dir: Path) -> Finding:
    """The checkpoint dir must be creatable and hold two checkpoints (a new one is complete before an old one
    is deleted); less than keep_last + 1 fills the disk later in the run. On a resume, checkpoints already on
    disk count toward both, and the latest one's real size replaces the estimate when larger."""
    probe = run_dir / "checkpoints"
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gpt2dist-doctor-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:  # NotADirectoryError too: a file where the run dir should be
        return Finding("error", f"run_dir {run_dir}: cannot create files in {probe} ({exc.strerror or exc})")
    deepspeed = cfg.distributed.backend == "deepspeed" or (cfg.distributed.backend == "auto" and (
        world_size > 1 or cfg.distributed.zero_stage > 0))
    one = memory.checkpoint_bytes(facts.n_params, cfg.train.precision, deepspeed=deepspeed,
                                  zero_stage=cfg.distributed.zero_stage)
    have = sorted((run_dir / "checkpoints").glob("step-*")) if probe == run_dir / "checkpoints" else []
    if have:  # a resumed run: its latest checkpoint's real size, and those on disk already count
        one = max(one, sum(f.stat().st_size for f in have[-1].rglob("*") if f.is_file()))
    free, keep = shutil.disk_usage(probe).free, min(len(have), cfg.checkpoint.keep_last)
    msg = (f"run_dir {run_dir}: {memory.fmt_bytes(free)} free, one checkpoint ~{memory.fmt_bytes(one)} "
           f"({facts.n_params / 1e6:.1f}M params{f', {len(have)} on disk' if have else ''})")
    if free < max(1, 2 - len(have)) * one:
        return Finding("error", f"{msg}: room for less than two checkpoints; free space or choose another run_dir")
    if free < (cfg.checkpoint.keep_last + 1 - keep) * one:
        return Finding("warn", f"{msg}: room for less than checkpoint.keep_last + 1 = {cfg.checkpoint.keep_last + 1}"
                               " checkpoints")
    return Finding("ok", msg)


def _estimate(cfg: RunConfig, facts: ModelFacts, world_size: int, micro: int, stage: int, offload_optimizer: bool,
              offload_param: bool, checkpointing: bool | None = None) -> memory.MemoryEstimate:
    d, precision = cfg.distributed, cfg.train.precision
    return memory.estimate(
        facts.n_params, facts.n_layer, facts.n_embd, facts.n_head, cfg.data.block_size, micro, precision, stage,
        world_size, offload_optimizer, offload_param, vocab_size=facts.vocab_size,
        largest_layer=memory.largest_layer_params(facts.n_embd, facts.vocab_size, facts.n_positions),
        buffers=memory.zero_bucket_bytes(stage, precision, d.reduce_bucket_size, overlap_comm=d.overlap_comm,
                                         contiguous_gradients=d.contiguous_gradients),
        checkpointing=cfg.model.activation_checkpointing if checkpointing is None else checkpointing,
        dropout=cfg.model.dropout or 0.0)


def run_doctor(cfg: RunConfig, world_size: int, gpu_mem_bytes: int | None = None, nodes: int = 1, *,
               base_dir: str | Path | None = None) -> DoctorReport:
    """Every check, the memory table and the lowest ZeRO stage that fits; nothing is built or written."""
    base = Path(base_dir) if base_dir is not None else None
    findings, facts = _checks(cfg, world_size, base)
    report = DoctorReport(findings=findings, gpu_mem_bytes=gpu_mem_bytes)
    if nodes < 1 or world_size % nodes:
        report.findings.append(Finding("error", f"--world-size {world_size} is not a multiple of --nodes {nodes}"))
        return report
    report.ranks_per_node = world_size // nodes
    try:
        plan = batch_plan(cfg.train, world_size)
    except UserError:
        facts = None
    if facts is None:
        return report  # why is a finding already
    report.facts = facts
    block = cfg.data.block_size
    report.lines += [
        f"model: {facts.n_params / 1e6:.1f}M params (L{facts.n_layer} x E{facts.n_embd}, {facts.n_head} heads, "
        f"vocab {facts.vocab_size} from {facts.vocab_source}) | {cfg.train.precision}",
        f"batch: micro {plan.micro} x accum {plan.accum} x data-parallel {world_size} = global {plan.global_batch:,}"
        f" sequences = {plan.global_batch * block:,} tokens/step (block {block})",
        *_epoch_line(cfg, plan.global_batch * block, base)]
    report.table = [_estimate(cfg, facts, world_size, plan.micro, *row) for row in TABLE_ROWS]
    largest = memory.largest_layer_params(facts.n_embd, facts.vocab_size, facts.n_positions)
    if cfg.train.precision in memory.MIXED:  # DeepSpeed's estimators assume 16-bit weights
        ds = {e.label: memory.deepspeed_model_states(facts.n_params, largest, e.zero_stage, report.ranks_per_node,
                                                     nodes, e.offload_optimizer, e.offload_param) for e in report.table}
        report.ds_estimates = {label: v for label, v in ds.items() if v is not None}
    d = cfg.distributed
    conf = report.configured = _estimate(cfg, facts, world_size, plan.micro, d.zero_stage,
                                         d.offload_optimizer == "cpu", d.offload_param == "cpu")
    if conf.buffers > conf.total / 4:
        report.findings.append(Finding("warn", f"distributed.reduce_bucket_size={d.reduce_bucket_size:,} makes "
                                               f"DeepSpeed hold {memory.fmt_bytes(conf.buffers)} of gradient buckets "
                                               "per GPU: 50000000 is plenty at GPT-2 sizes"))
    if gpu_mem_bytes is not None:
        report.findings.append(_recommend(report, cfg, facts, world_size, plan.micro))
    return report


def _recommend(report: DoctorReport, cfg: RunConfig, facts: ModelFacts, world_size: int, micro: int) -> Finding:
    """Lowest stage that fits without offload (offload costs speed), else the lowest offload row that fits."""
    usable = int(report.gpu_mem_bytes * HEADROOM)
    report.recommended = next((e for e in report.table if e.fits(usable)), None)
    conf, fmt = report.configured, memory.fmt_bytes
    budget = f"{fmt(usable)} usable of --gpu-mem {fmt(report.gpu_mem_bytes)}"
    if report.recommended is None:
        fix = "lower train.micro_batch_size (raise train.grad_accum_steps to keep the batch)"
        if not cfg.model.activation_checkpointing and _estimate(cfg, facts, world_size, micro, *TABLE_ROWS[-1],
                                                                checkpointing=True).fits(usable):
            fix = "set model.activation_checkpointing=true"
        return Finding("error", f"memory: nothing fits {budget} (ZeRO-3 + offload needs "
                                f"{fmt(report.table[-1].total)} per GPU): {fix}")
    if not conf.fits(usable):
        return Finding("error", f"memory: configured {conf.label} needs ~{fmt(conf.total)} per GPU, more than "
                                f"{budget}: use {report.recommended.label}")
    return Finding("ok", f"memory: configured {conf.label} ~{fmt(conf.total)} per GPU fits {budget}")


def _epoch_line(cfg: RunConfig, tokens_per_step: int, base: Path | None) -> list[str]:
    """Steps per epoch from the text volume: approximate (bytes / typical bytes per token of the tokenizer)."""
    from gpt2dist.data import resolve_files

    try:
        files = resolve_files([_path(p, base) for p in cfg.data.train], "data.train")
    except UserError:
        return []
    if any(f.suffix.lower() == ".parquet" for f in files):  # compressed: bytes say little about tokens
        return []
    per_token = BYTES_PER_TOKEN[cfg.tokenizer.kind]
    steps = max(sum(file_size(f) for f in files) / per_token / tokens_per_step, 1e-9)
    return [f"data: ~{steps * tokens_per_step:,.0f} tokens (~{per_token:g} bytes/token) -> ~{steps:,.1f} steps/epoch;"
            f" train.max_steps {cfg.train.max_steps:,} = ~{cfg.train.max_steps / steps:,.1f} epochs"]


def render(report: DoctorReport) -> str:
    """The report for people: context lines, the memory table, the recommendation, one line per finding."""
    out = list(report.lines)
    if report.table:
        out += memory.format_table(report.table, report.ds_estimates, report.configured, report.gpu_mem_bytes,
                                   HEADROOM, report.ranks_per_node)
    if report.recommended is not None:
        out.append(f"recommend: {report.recommended.label} (the lowest ZeRO stage that fits; offload only if needed)")
    out += report.scaling
    return "\n".join(out + [f"  {f}" for f in report.findings])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's arguments, shared by `python -m gpt2dist.doctor` and the `gpt2dist doctor` subcommand."""
    parser.add_argument("config", help="YAML run config")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. distributed.zero_stage=2")
    parser.add_argument("--world-size", type=int, default=None, help="data-parallel ranks (default 1, or "
                        "--nodes x --gpus-per-node)")
    parser.add_argument("--gpu-mem", default=None, help="memory per GPU, e.g. 80GiB, 80GB, 40000MiB")
    parser.add_argument("--nodes", type=int, default=1, help="nodes the ranks are spread over (default 1)")
    from gpt2dist.scaling import add_arguments as scaling_arguments  # issue 16

    scaling_arguments(parser)


def doctor_command(config: str, overrides: list[str], world_size: int | None, gpu_mem: str | None, nodes: int,
                   scaling=None) -> int:
    """Load the config as training will, print the report and the verdict, return 0 or 1. A config that does
    not load is a problem too (exit 1); a malformed --gpu-mem is a usage error (UserError: exit 2).
    `scaling` (gpt2dist.scaling.ScalingOptions, issue 16) adds the scaling table after the memory table."""
    world_size = 1 if world_size is None else world_size
    if world_size < 1 or nodes < 1:
        raise UserError(f"--world-size ({world_size}) and --nodes ({nodes}) must be >= 1")
    try:
        gpu_mem_bytes = memory.parse_size(gpu_mem) if gpu_mem is not None else None
    except ValueError as exc:
        raise UserError(f"--gpu-mem {exc}") from None
    if scaling is not None and gpu_mem_bytes is None:  # issue 16: --gpu implies its memory
        from gpt2dist.scaling import default_gpu_mem

        gpu_mem_bytes = default_gpu_mem(scaling)
    try:
        cfg = load_config(config, overrides)
    except UserError as exc:
        report = DoctorReport(findings=[Finding("error", str(exc))])
    else:
        report = run_doctor(cfg, world_size, gpu_mem_bytes, nodes)
        if scaling is not None and report.facts is not None and not report.problems:  # issue 16
            from gpt2dist.scaling import doctor_lines

            report.scaling = doctor_lines(cfg, report.facts, scaling, gpu_mem_bytes)
    print(render(report))
    print(report.verdict(), flush=True)
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """`python -m gpt2dist.doctor CONFIG [a.b=value ...] --world-size N [--gpu-mem 80GiB] [--nodes K]`."""
    parser = argparse.ArgumentParser(prog="gpt2dist doctor", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args, extra = parser.parse_known_args(argv)  # overrides may follow the options
    if any(item.startswith("-") or "=" not in item for item in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from gpt2dist.scaling import options_from_args  # issue 16

    scaling, world_size, nodes = options_from_args(args)
    return doctor_command(args.config, [*args.overrides, *extra], world_size, args.gpu_mem, nodes, scaling)


def raise_for_problems(findings: list[Finding], warn: Callable[[str], object] | None = None) -> None:
    """For `gpt2dist train` and the Slurm renderer: warnings go to `warn`, the first error becomes a UserError."""
    for f in findings:
        if f.level == "warn" and warn is not None:
            warn(f.message)
    problems = [f for f in findings if f.level == "error"]
    if problems:
        more = f" (+{len(problems) - 1} more: run gpt2dist doctor)" if len(problems) > 1 else ""
        raise UserError(problems[0].message + more)


if __name__ == "__main__":
    from gpt2dist.errors import run_or_exit

    raise SystemExit(run_or_exit(main))
