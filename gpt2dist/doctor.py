"""`gpt2dist doctor`: will this config run on this many ranks, and does it fit -- before hours in a queue.

The preflight findings first (`preflight.py`: batch math, data per rank, block size, vocabulary, disk), then
the per-GPU memory table for ZeRO 0-3 with and without offload (`memory.py`) and the lowest stage that fits.
Exit 0 or 1 with a one-line verdict that scripts read.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from gpt2dist import memory, scaling
from gpt2dist.config import RunConfig, batch_plan, load_config
from gpt2dist.data.checks import bytes_per_token
from gpt2dist.data.sources import file_size
from gpt2dist.errors import UserError
from gpt2dist.preflight import Finding, ModelFacts, preflight, resolve_path

HEADROOM = 0.9  # usable share of --gpu-mem: the CUDA context and allocator fragmentation take the rest
TABLE_ROWS = [(0, False, False), (1, False, False), (2, False, False), (3, False, False),
              (1, True, False), (2, True, False), (3, True, True)]  # (stage, offload opt, offload param)


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
    facts: ModelFacts | None = None  # what the model is (the scaling table reads it)
    scaling: list[str] = field(default_factory=list)  # gpt2dist.scaling's table, after the memory table

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
    findings, facts = preflight(cfg, world_size, base)
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
        plan.describe(block),
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
    from gpt2dist.data.text import resolve_files

    try:
        files = resolve_files([resolve_path(p, base) for p in cfg.data.train], "data.train")
    except UserError:
        return []
    if any(f.suffix.lower() == ".parquet" for f in files):  # compressed: bytes say little about tokens
        return []
    per_token = bytes_per_token(files, cfg)  # the char tokenizer: bytes per character of this corpus (3 for Chinese)
    steps = max(sum(file_size(f) for f in files) / per_token / tokens_per_step, 1e-9)
    return [f"data: ~{steps * tokens_per_step:,.0f} tokens (~{per_token:.3g} bytes/token) -> ~{steps:,.1f} steps/epoch;"
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
    scaling.add_arguments(parser)


def doctor_command(config: str, overrides: list[str], world_size: int | None, gpu_mem: str | None, nodes: int,
                   scaling_options: scaling.ScalingOptions | None = None) -> int:
    """Load the config as training will, print the report and the verdict, return 0 or 1. A config that does
    not load is a problem too (exit 1); a malformed --gpu-mem is a usage error (UserError: exit 2).
    `scaling_options` adds the scaling table (gpt2dist.scaling) after the memory table."""
    world_size = 1 if world_size is None else world_size
    if world_size < 1 or nodes < 1:
        raise UserError(f"--world-size ({world_size}) and --nodes ({nodes}) must be >= 1")
    try:
        gpu_mem_bytes = memory.parse_size(gpu_mem) if gpu_mem is not None else None
    except ValueError as exc:
        raise UserError(f"--gpu-mem {exc}") from None
    if scaling_options is not None and gpu_mem_bytes is None:  # --gpu implies its memory
        gpu_mem_bytes = scaling.default_gpu_mem(scaling_options)
    try:
        cfg = load_config(config, overrides)
    except UserError as exc:
        report = DoctorReport(findings=[Finding("error", str(exc))])
    else:
        report = run_doctor(cfg, world_size, gpu_mem_bytes, nodes)
        if scaling_options is not None and report.facts is not None and not report.problems:
            report.scaling = scaling.doctor_lines(cfg, report.facts, scaling_options, gpu_mem_bytes)
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
    options, world_size, nodes = scaling.options_from_args(args)
    return doctor_command(args.config, [*args.overrides, *extra], world_size, args.gpu_mem, nodes, options)


if __name__ == "__main__":
    from gpt2dist.errors import run_or_exit

    raise SystemExit(run_or_exit(main))
