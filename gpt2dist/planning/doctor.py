"""`gpt2dist doctor`: will this config run on this many ranks, and does it fit -- before hours in a queue.

The preflight findings first (`preflight.py`: batch math, data per rank, block size, vocabulary, disk), then
the per-GPU memory table for ZeRO 0-3 with and without offload (`memory.py`) and the lowest stage that fits.
Exit 0 or 1 with a one-line verdict that scripts read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from gpt2dist.config import RunConfig, batch_plan, load_config
from gpt2dist.data.checks import bytes_per_token
from gpt2dist.data.sources import file_size
from gpt2dist.errors import UserError
from gpt2dist.planning import costmodel, memory, scaling
from gpt2dist.planning.preflight import (
    CHAR_VOCAB_GUESS,
    Finding,
    ModelFacts,
    preflight,
    resolve_path,
    resolve_pretrained,
)
from gpt2dist.units import fmt_bytes, parse_size

EPOCHS_WARN = 20  # train.max_steps beyond this many passes over data.train is a warning (repeated data overfits)
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
    scaling: list[str] = field(default_factory=list)  # gpt2dist.planning.scaling's table, after the memory table
    scaling_report: scaling.ScalingReport | None = None  # the same, as data (--json)
    assumed: list[str] = field(default_factory=list)  # what was not on this machine and what was assumed instead
    world_size: int = 1
    nodes: int = 1
    epoch_tokens: float | None = None  # tokens in one pass over data.train (estimated), when known

    @property
    def recommendation(self) -> str | None:
        """The one recommendation: the fastest ZeRO stage that fits when the scaling table is there, else the
        lowest that fits (offload costs speed)."""
        if self.scaling_report is not None and self.scaling_report.fastest:
            return self.scaling_report.fastest
        return self.recommended.label if self.recommended is not None else None

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
        parts = [f"{e.label} ~{fmt_bytes(e.total)} per GPU" for e in (self.configured,) if e]
        parts += [f"recommend: {self.recommendation}"] if self.recommendation else []
        return f"doctor: OK ({'; '.join([*parts, f'{warns} warning' + ('s' if warns != 1 else '')])})"


def run_doctor(cfg: RunConfig, world_size: int, gpu_mem_bytes: int | None = None, nodes: int = 1, *,
               base_dir: str | Path | None = None, model_config: str | None = None) -> DoctorReport:
    """Every check, the memory table and the lowest ZeRO stage that fits; nothing is built or written.

    Plans from anywhere: data or a model folder that is not on this machine is a warning that says what was
    assumed instead (the model's shape from `model_config`, a config.json, if given, else the preset and
    overrides), not a reason to withhold the tables."""
    base = Path(base_dir) if base_dir is not None else None
    findings, facts = preflight(cfg, world_size, base)
    findings, assumed = _not_on_this_machine(cfg, findings, base)
    if facts is None and assumed.get("model"):
        facts = _assumed_facts(cfg, model_config)
        assumed["model"] += (f": planned as L{facts.n_layer} x E{facts.n_embd}, {facts.n_head} heads, "
                             f"{facts.n_positions} positions, vocab {facts.vocab_size} ({facts.vocab_source})")
    report = DoctorReport(findings=findings, gpu_mem_bytes=gpu_mem_bytes, assumed=list(assumed.values()),
                          world_size=world_size, nodes=nodes)
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
    epochs = _epoch_line(cfg, plan.global_batch * block, base)
    report.epoch_tokens = epochs[0][2] if epochs else None
    report.lines += [
        f"model: {facts.n_params / 1e6:.1f}M params (L{facts.n_layer} x E{facts.n_embd}, {facts.n_head} heads, "
        f"vocab {facts.vocab_size} from {facts.vocab_source}) | {cfg.train.precision}",
        plan.describe(block), *(line for line, _, _ in epochs)]
    report.lines += [f"assumed: {line}" for line in report.assumed]
    for _, n_epochs, _ in epochs:
        if n_epochs > EPOCHS_WARN:
            budget = (f"train.num_epochs {n_epochs:,g}" if cfg.train.num_epochs else
                      f"train.max_steps {cfg.train.max_steps:,} is ~{n_epochs:,.0f} epochs of data.train")
            report.findings.append(Finding("warn", f"{budget} (more than {EPOCHS_WARN}): the model will memorize "
                                                   f"it; add data or lower {budget.split()[0]}"))
    report.table = [memory.estimate_for(cfg, facts, world_size, plan.micro, *row) for row in TABLE_ROWS]
    largest = memory.largest_layer_params(facts.n_embd, facts.vocab_size, facts.n_positions)
    if cfg.train.precision in memory.MIXED:  # DeepSpeed's estimators assume 16-bit weights
        ds = {e.label: memory.deepspeed_model_states(facts.n_params, largest, e.zero_stage, report.ranks_per_node,
                                                     nodes, e.offload_optimizer, e.offload_param) for e in report.table}
        report.ds_estimates = {label: v for label, v in ds.items() if v is not None}
    d = cfg.distributed
    conf = report.configured = memory.estimate_for(cfg, facts, world_size, plan.micro, d.zero_stage,
                                         d.offload_optimizer == "cpu", d.offload_param == "cpu")
    if conf.buffers > conf.total / 4:
        report.findings.append(Finding("warn", f"distributed.reduce_bucket_size={d.reduce_bucket_size:,} makes "
                                               f"DeepSpeed hold {fmt_bytes(conf.buffers)} of gradient buckets "
                                               "per GPU: 50000000 is plenty at GPT-2 sizes"))
    if gpu_mem_bytes is not None:
        report.findings.append(_recommend(report, cfg, facts, world_size, plan.micro))
    return report


def _recommend(report: DoctorReport, cfg: RunConfig, facts: ModelFacts, world_size: int, micro: int) -> Finding:
    """Lowest stage that fits without offload (offload costs speed), else the lowest offload row that fits."""
    usable = int(report.gpu_mem_bytes * memory.HEADROOM)
    report.recommended = next((e for e in report.table if e.fits(usable)), None)
    conf, fmt = report.configured, fmt_bytes
    budget = f"{fmt(usable)} usable of --gpu-mem {fmt(report.gpu_mem_bytes)}"
    if report.recommended is None:
        fix = "lower train.micro_batch_size (raise train.grad_accum_steps to keep the batch)"
        last = memory.estimate_for(cfg, facts, world_size, micro, *TABLE_ROWS[-1], checkpointing=True)
        if not cfg.model.activation_checkpointing and last.fits(usable):
            fix = "set model.activation_checkpointing=true"
        return Finding("error", f"memory: nothing fits {budget} (ZeRO-3 + offload needs "
                                f"{fmt(report.table[-1].total)} per GPU): {fix}")
    if not conf.fits(usable):
        return Finding("error", f"memory: configured {conf.label} needs ~{fmt(conf.total)} per GPU, more than "
                                f"{budget}: use {report.recommended.label}")
    return Finding("ok", f"memory: configured {conf.label} ~{fmt(conf.total)} per GPU fits {budget}")


def _not_on_this_machine(cfg: RunConfig, findings: list[Finding], base: Path | None,
                         ) -> tuple[list[Finding], dict[str, str]]:
    """Errors that only say a path is absent here -- data.train/data.val matching no file, a model or tokenizer
    folder without its files -- become warnings (the job's nodes may well have them); the rest stay."""
    assumed: dict[str, str] = {}
    out = []
    folder_absent = cfg.model.pretrained is not None and not (
        Path(resolve_pretrained(cfg.model.pretrained, base)) / "config.json").is_file()
    for f in findings:
        msg = f.message
        if f.level == "error" and "matches no file" in msg and msg.startswith(("config key data.train",
                                                                                "config key data.val")):
            key = msg.split(":")[0].removeprefix("config key ")
            assumed[key] = f"{key} is not on this machine: planned without it (no steps per epoch)"
            f = Finding("warn", f"{msg} -- not on this machine: planned without it; the job's nodes need it")
        elif f.level == "error" and folder_absent and msg.startswith(("config key model.pretrained",
                                                                      "config key tokenizer.path")):
            assumed["model"] = f"model.pretrained {cfg.model.pretrained} is not on this machine"
            f = Finding("warn", f"{msg} -- not on this machine: planned with an assumed shape; the job's nodes "
                                "need it")
        out.append(f)
    return out, assumed


def _assumed_facts(cfg: RunConfig, model_config: str | None) -> ModelFacts:
    """The model's shape when its folder is elsewhere: a config.json given with --model-config (read as JSON,
    nothing run), else the preset and overrides; the vocabulary from that file, the BPE size, or GPT-2's."""
    dims = dict(cfg.resolved_model_dims())
    vocab, source = None, ""
    if model_config is not None:
        if Path(model_config).is_symlink():
            raise UserError(f"--model-config {model_config} is a symbolic link: give the file itself")
        try:
            hf = json.loads(Path(model_config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"--model-config {model_config}: not a readable config.json ({exc})") from None
        dims = {k: int(hf.get(k, dims[k])) for k in dims}
        vocab, source = hf.get("vocab_size"), f"--model-config {model_config}"
    if vocab is None:
        if cfg.tokenizer.kind == "bpe":
            vocab, source = cfg.tokenizer.vocab_size, "tokenizer.vocab_size, an upper bound"
        elif cfg.tokenizer.kind == "char":
            vocab, source = CHAR_VOCAB_GUESS, "a char tokenizer, assumed"
        else:
            vocab, source = 50257, "GPT-2's, assumed"
    where = source if model_config is not None else f"model.preset {cfg.model.preset} and overrides; {source}"
    return ModelFacts(dims["n_layer"], dims["n_embd"], dims["n_head"], dims["n_positions"], int(vocab), where)


def _epoch_line(cfg: RunConfig, tokens_per_step: int, base: Path | None) -> list[tuple[str, float, float]]:
    """Steps per epoch from the text volume: approximate (bytes / typical bytes per token of the tokenizer).
    [(line, epochs the run trains, tokens per epoch)], or [] when the volume is unknown."""
    from gpt2dist.data.text import resolve_files

    try:
        files = resolve_files([resolve_path(p, base) for p in cfg.data.train], "data.train")
    except UserError:
        return []
    if any(f.suffix.lower() == ".parquet" for f in files):  # compressed: bytes say little about tokens
        return []
    per_token = bytes_per_token(files, cfg)  # the char tokenizer: bytes per character of this corpus (3 for Chinese)
    steps = max(sum(file_size(f) for f in files) / per_token / tokens_per_step, 1e-9)
    head = f"data: ~{steps * tokens_per_step:,.0f} tokens (~{per_token:.3g} bytes/token) -> ~{steps:,.1f} steps/epoch"
    if cfg.train.num_epochs:  # the budget is in epochs: max_steps is ignored by training, so here too
        epochs = cfg.train.num_epochs
        return [(f"{head}; train.num_epochs {epochs:g} = ~{math.ceil(epochs * steps):,} steps", epochs,
                 steps * tokens_per_step)]
    return [(f"{head}; train.max_steps {cfg.train.max_steps:,} = ~{cfg.train.max_steps / steps:,.1f} epochs",
             cfg.train.max_steps / steps, steps * tokens_per_step)]


def render(report: DoctorReport) -> str:
    """The report for people: context lines, the memory table, the recommendation, one line per finding."""
    out = list(report.lines)
    if report.table:
        out += memory.format_table(report.table, report.ds_estimates, report.configured, report.gpu_mem_bytes,
                                   memory.HEADROOM, report.ranks_per_node)
    out += report.scaling
    if report.recommendation is not None:
        why = ("the fastest ZeRO stage that fits, from the scaling table"
               if report.scaling_report is not None and report.scaling_report.fastest
               else "the lowest ZeRO stage that fits; offload only if needed")
        out.append(f"recommend: {report.recommendation} ({why})")
    return "\n".join(out + [f"  {f}" for f in report.findings])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's arguments, shared by `python -m gpt2dist.planning.doctor` and the `gpt2dist doctor` subcommand."""
    parser.add_argument("config", help="YAML run config")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. distributed.zero_stage=2")
    parser.add_argument("--world-size", type=int, default=None, help="data-parallel ranks (default 1, or "
                        "--nodes x --gpus-per-node)")
    parser.add_argument("--gpu-mem", default=None, help="memory per GPU, e.g. 80GiB, 80GB, 40000MiB")
    parser.add_argument("--nodes", type=int, default=1, help="nodes the ranks are spread over (default 1)")
    parser.add_argument("--model-config", default=None, help="a config.json giving the model's shape when "
                        "model.pretrained is not on this machine (default: the preset and overrides)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object (for "
                        "schedulers and CI) instead of the tables; same exit code")
    scaling.add_arguments(parser)


def doctor_command(config: str, overrides: list[str], world_size: int | None, gpu_mem: str | None, nodes: int,
                   scaling_options: scaling.ScalingOptions | None = None, *, model_config: str | None = None,
                   as_json: bool = False) -> int:
    """Load the config as training will, print the report and the verdict, return 0 or 1. A config that does
    not load is a problem too (exit 1); a malformed --gpu-mem is a usage error (UserError: exit 2).
    `scaling_options` adds the scaling table (gpt2dist.planning.scaling) after the memory table."""
    world_size = 1 if world_size is None else world_size
    if world_size < 1 or nodes < 1:
        raise UserError(f"--world-size ({world_size}) and --nodes ({nodes}) must be >= 1")
    try:
        gpu_mem_bytes = parse_size(gpu_mem) if gpu_mem is not None else None
    except ValueError as exc:
        raise UserError(f"--gpu-mem {exc}") from None
    if scaling_options is not None and gpu_mem_bytes is None:  # --gpu implies its memory
        gpu_mem_bytes = scaling.default_gpu_mem(scaling_options)
    try:
        cfg = load_config(config, overrides)
    except UserError as exc:
        report = DoctorReport(findings=[Finding("error", str(exc))])
    else:
        report = run_doctor(cfg, world_size, gpu_mem_bytes, nodes, model_config=model_config)
        if scaling_options is not None and report.facts is not None:  # problems or not: the plan is shown
            if scaling_options.tokens is None and cfg.train.num_epochs and report.epoch_tokens:
                tokens = cfg.train.num_epochs * report.epoch_tokens  # an epoch budget: the time is for those tokens
                scaling_options = dataclasses.replace(scaling_options, tokens=tokens)
                report.assumed.append(f"time to train: train.num_epochs {cfg.train.num_epochs:g} x ~"
                                      f"{report.epoch_tokens:,.0f} tokens/epoch = ~{tokens:,.0f} tokens")
                report.lines.append(f"assumed: {report.assumed[-1]}")
            report.scaling_report = scaling.doctor_report(cfg, report.facts, scaling_options, gpu_mem_bytes)
            report.scaling = scaling.render(report.scaling_report)
    if as_json:
        print(json.dumps(as_dict(report), indent=1), flush=True)
        return report.exit_code
    print(render(report))
    print(report.verdict(), flush=True)
    return report.exit_code


def as_dict(report: DoctorReport) -> dict:
    """The report's figures for machines (`gpt2dist doctor --json`): per node count nodes, gpus, step_s,
    tokens_per_s, mfu, scaling efficiency, a whole run's time and GPU-hours (and the steady steps' alone, and the
    whole-run overhead between them); per ZeRO stage memory per GPU and fits."""
    usable = int(report.gpu_mem_bytes * memory.HEADROOM) if report.gpu_mem_bytes else None
    facts = report.facts
    out: dict = {
        "verdict": report.verdict(), "exit_code": report.exit_code, "recommend": report.recommendation,
        "world_size": report.world_size, "nodes": report.nodes, "gpu_mem_bytes": report.gpu_mem_bytes,
        "usable_bytes": usable, "assumed": report.assumed,
        "findings": [{"level": f.level, "message": f.message} for f in report.findings],
        "model": None if facts is None else {
            "n_params": facts.n_params, "n_layer": facts.n_layer, "n_embd": facts.n_embd, "n_head": facts.n_head,
            "n_positions": facts.n_positions, "vocab_size": facts.vocab_size, "vocab_source": facts.vocab_source},
        "memory": [{"label": e.label, "zero_stage": e.zero_stage, "offload_optimizer": e.offload_optimizer,
                    "offload_param": e.offload_param, "params": e.params, "grads": e.grads,
                    "optimizer": e.optimizer, "activations": e.activations, "buffers": e.buffers,
                    "total_per_gpu": e.total, "host": e.host, "fits": None if usable is None else e.fits(usable),
                    "configured": report.configured is not None and e.label == report.configured.label}
                   for e in report.table],
        "scaling": None}
    sr = report.scaling_report
    if sr is not None:
        out["scaling"] = {"header": sr.header, "verdict": sr.verdict, "fastest": sr.fastest, "nodes": [
            {"nodes": r.nodes, "gpus": r.gpus, "note": r.note,
             **({} if r.step is None else {
                 "micro": r.plan[0], "accum": r.plan[1], "global_batch": r.plan[2], "step_s": r.step.step_s,
                 "tokens_per_s": r.step.tokens_per_s, "tokens_per_s_per_gpu": r.step.tokens_per_s_per_gpu,
                 "mfu": r.step.mfu, "scaling_efficiency": r.step.efficiency,
                 "exposed_comm_s": r.step.exposed_comm_s, "offload_s": r.step.offload_s}),
             **({} if r.run is None else {
                 "steps": r.run.steps, "tokens": r.run.tokens, "time_s": r.run.seconds, "gpu_hours": r.run.gpu_hours,
                 "steady_time_s": r.run.steady_seconds, "steady_gpu_hours": r.run.steady_gpu_hours,
                 "whole_run_overhead": r.run.overhead,
                 "whole_run_overhead_range": list(costmodel.whole_run_overhead(r.nodes))})} for r in sr.rows],
            "stages": [{"label": label, "fits": ok, "step_s": None if st is None else st.step_s,
                        "tokens_per_s": None if st is None else st.tokens_per_s} for label, ok, st in sr.stages]}
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m gpt2dist.planning.doctor CONFIG [a.b=value ...] --world-size N [--gpu-mem 80GiB] [--nodes K]`."""
    parser = argparse.ArgumentParser(prog="gpt2dist doctor", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args, extra = parser.parse_known_args(argv)  # overrides may follow the options
    if any(item.startswith("-") or "=" not in item for item in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    options, world_size, nodes = scaling.options_from_args(args)
    return doctor_command(args.config, [*args.overrides, *extra], world_size, args.gpu_mem, nodes, options,
                          model_config=args.model_config, as_json=args.json)


if __name__ == "__main__":
    from gpt2dist.errors import run_or_exit

    raise SystemExit(run_or_exit(main))
