"""The doctor's scaling table: step time, tokens/s, MFU, scaling efficiency and time to train on 1, 2, 4 ... nodes.

`gpt2dist.planning.costmodel` does the arithmetic; this module turns a run config into its inputs (parameter tensors,
batch plan per world size, ZeRO settings, link bandwidths, achieved MFU) and its answer into lines: where
adding nodes stops paying, and which ZeRO stage is fastest among those that fit in memory.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpt2dist.config import RunConfig, batch_plan
from gpt2dist.errors import UserError
from gpt2dist.planning import costmodel, memory
from gpt2dist.planning.costmodel import GB
from gpt2dist.planning.hardware import GPUS, gpu_kind
from gpt2dist.run.layout import METRICS_FILE

PAYS = 1.5  # a doubling of nodes "pays" while it gives at least 1.5x the tokens/s (75% marginal efficiency)
STAGES = [(0, False, False), (1, False, False), (2, False, False), (3, False, False), (2, True, False),
          (3, True, True)]  # (stage, offload optimizer, offload params) compared for "fastest that fits"


@dataclass
class ScalingOptions:
    """The doctor's scaling flags; bandwidths in GB/s (nccl-tests busbw), None = the GPU's default."""

    nodes: int
    gpus_per_node: int
    gpu: str | None = None
    intra_bw: float | None = None
    inter_bw: float | None = None
    comm_json: str | None = None
    mfu: float | None = None
    from_run: str | None = None
    overlap: float = costmodel.DEFAULT_OVERLAP
    tokens: float | None = None


def gpu_key(name: str) -> str:
    """The hardware.GPUS key a GPU name matches, or a one-line error listing the known kinds."""
    if key := gpu_kind(name):
        return key
    raise UserError(f"--gpu {name!r} is not a GPU the doctor knows: use one of {', '.join(GPUS)}")


def workload(cfg: RunConfig, facts, micro: int, accum: int) -> costmodel.Workload:
    """The model's parameter tensors and one rank's batch; FLOPs per token by `model.flops_per_token`."""
    from gpt2dist.model import flops_per_token  # imports transformers: only when a table is asked for

    tensors = costmodel.gpt2_tensors(facts.n_layer, facts.n_embd, facts.vocab_size, facts.n_positions)
    non_embedding = sum(n for _, n, _ in tensors) - facts.n_positions * facts.n_embd  # as count_parameters
    fpt = flops_per_token(non_embedding, facts.n_layer, facts.n_embd, cfg.data.block_size)
    return costmodel.Workload(tensors, fpt, micro, cfg.data.block_size, accum,
                              2 if cfg.train.precision in ("bf16", "fp16") else 4, cfg.model.activation_checkpointing)


def zero_settings(cfg: RunConfig, stage: int | None = None, offload_optimizer: bool | None = None,
                  offload_param: bool | None = None) -> costmodel.Zero:
    d = cfg.distributed
    return costmodel.Zero(
        stage=d.zero_stage if stage is None else stage,
        offload_optimizer=(d.offload_optimizer == "cpu") if offload_optimizer is None else offload_optimizer,
        offload_param=(d.offload_param == "cpu") if offload_param is None else offload_param,
        overlap_comm=d.overlap_comm, reduce_bucket_size=d.reduce_bucket_size,
        prefetch_bucket_size=d.stage3_prefetch_bucket_size,
        persistence_threshold=d.stage3_param_persistence_threshold, max_reuse_distance=d.stage3_max_reuse_distance)


def control_allreduces(cfg: RunConfig, stage: int) -> float:
    """Scalar all-reduces per step: gpt2dist's stop check (every step), the logged loss (every log_every), and
    DeepSpeed's own (counted with bench/scaling.py --profile on gloo, fp32): 1 at ZeRO-0, 2 at ZeRO-1/2 (overflow
    check and gradient norm, stage_1_and_2.py step), 2 at ZeRO-3."""
    zero = {0: 1, 1: 2, 2: 2, 3: 2}[stage]
    return 1 + 1 / cfg.train.log_every + zero


def links_for(opts: ScalingOptions) -> costmodel.Links:
    """Defaults of the GPU's system, replaced by --intra-bw/--inter-bw, then by a bench-comm report's curves."""
    system = GPUS[gpu_key(opts.gpu)] if opts.gpu else None
    intra = opts.intra_bw * GB if opts.intra_bw else (system.intra_busbw if system else None)
    inter = opts.inter_bw * GB if opts.inter_bw else (system.inter_busbw(opts.gpus_per_node) if system else None)
    if intra is None or inter is None:
        raise UserError("scaling: give --gpu NAME (default link bandwidths) or both --intra-bw and --inter-bw")
    source = [f"{system.source} defaults" if system and not (opts.intra_bw and opts.inter_bw) else "",
              "--intra-bw" if opts.intra_bw else "", "--inter-bw" if opts.inter_bw else ""]
    links = costmodel.Links(intra, inter, pcie_bw=system.pcie_bw if system else 25 * GB,
                            intra_link=system.intra_link if system else "nvlink",
                            source=", ".join(s for s in source if s))
    if opts.comm_json:
        from gpt2dist.commbench import load_report

        report = load_report(opts.comm_json)
        curves, ranks, spans = costmodel.curves_from_report(report)
        level = "across nodes" if spans else "inside a node"
        links = costmodel.Links(links.intra_busbw, links.inter_busbw, links.intra_link, pcie_bw=links.pcie_bw,
                                curves=curves, curve_ranks=ranks, curve_spans_nodes=spans,
                                source=f"{links.source}; measured {level} by bench-comm ({opts.comm_json}, "
                                       f"{report['backend']}, {ranks} ranks)")
    return links


def run_mfu(run_dir: str | Path, skip: int = 2) -> float:
    """Median MFU of a run's metrics.jsonl (its first `skip` records left out: compile and warm-up)."""
    from gpt2dist.observe.plot import read_metrics

    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise UserError(f"--from-run {run_dir}: no metrics.jsonl there; point it at a run directory")
    records, _ = read_metrics(path)
    values = [r["mfu"] for r in records if isinstance(r.get("mfu"), (int, float)) and r["mfu"] > 0][skip:]
    if not values:
        raise UserError(f"--from-run {path} has no mfu values (a CPU run or an unknown GPU logs none): "
                        "give --mfu instead")
    return statistics.median(values)


@dataclass
class Row:
    nodes: int
    gpus: int
    plan: tuple[int, int, int] | None  # micro, accum, global sequences
    step: costmodel.StepEstimate | None
    run: costmodel.RunEstimate | None
    note: str = ""


@dataclass
class ScalingReport:
    header: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    stages: list[tuple[str, bool | None, costmodel.StepEstimate | None]] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)
    fastest: str | None = None  # the fastest ZeRO stage that fits (or may: memory unknown) at the largest count
    mfu_range: tuple[float, float, float] | None = None  # (low, typical, high) when the MFU is the default


def node_counts(nodes: int) -> list[int]:
    """1, 2, 4, ... up to `nodes`, and `nodes` itself."""
    counts = [2**k for k in range(int(math.log2(nodes)) + 1)]
    return counts + ([nodes] if counts[-1] != nodes else [])


def scaling_report(cfg: RunConfig, facts, opts: ScalingOptions,
                   fits: Callable[[int, bool, bool, int], bool | None]) -> ScalingReport:
    """The table for the configured ZeRO stage at 1, 2, 4, ... nodes, then every stage at the largest count.

    `fits(stage, offload_optimizer, offload_param, world_size)` is the memory table's verdict (None: unknown).
    """
    from gpt2dist.observe.metrics import peak_flops

    key = gpu_key(opts.gpu) if opts.gpu else None
    precision = cfg.train.precision
    peak = peak_flops(key, precision, tf32=True) if key else None
    if peak is None:
        raise UserError(f"scaling: no {precision} peak FLOP/s for --gpu {opts.gpu}: pick a GPU with one "
                        "(gpt2dist.planning.hardware.GPUS)")
    if opts.mfu is not None and not 0 < opts.mfu <= 1:
        raise UserError(f"--mfu {opts.mfu} must be in (0, 1], e.g. 0.4")
    measured = opts.mfu is not None or opts.from_run is not None
    low, typical, high = costmodel.default_mfu(key, facts.n_params, cfg.data.block_size)
    mfu = opts.mfu if opts.mfu is not None else (run_mfu(opts.from_run) if opts.from_run else typical)
    mfu_src = "--mfu" if opts.mfu is not None else (f"median of {opts.from_run}" if opts.from_run else
                                                    f"default for {key}; about half of published runs lie in "
                                                    f"{low:.0%}-{high:.0%}")
    links = links_for(opts)
    hbm = GPUS[key].hbm_bw
    g = opts.gpus_per_node
    level = [f"{links.intra_busbw / GB:,.0f} GB/s inside a node", f"{links.inter_busbw / GB:,.0f} GB/s across nodes"]
    if links.curves.get("all_reduce"):
        size, t = links.curves["all_reduce"][-1]
        busbw = size / t * costmodel.BUS_FACTORS["all_reduce"](links.curve_ranks) / GB
        where = "across nodes" if links.curve_spans_nodes else "inside a node"
        level[links.curve_spans_nodes] = (f"{busbw:,.2f} GB/s {where} (measured at {size / 2**20:,.0f} MiB; the "
                                          "curve below it too)")
    report = ScalingReport(header=[
        f"scaling (gpt2dist/planning/costmodel.py): {key} {precision} peak {peak / 1e12:,.0f} TFLOP/s x MFU {mfu:.0%} "
        f"({mfu_src}); overlap {opts.overlap:.0%} of overlappable communication",
        f"  links: all-reduce busbw {level[0]}, {level[1]} ({links.source})"
        + ("" if opts.comm_json else "; measure yours: gpt2dist launch CONFIG --nproc G --module gpt2dist.commbench")])

    def estimate(world: int, stage, off_opt, off_param, at_mfu: float | None = None,
                 ) -> tuple[tuple[int, int, int], costmodel.StepEstimate]:
        plan = batch_plan(cfg.train, world)
        w = workload(cfg, facts, plan.micro, plan.accum)
        z = zero_settings(cfg, stage, off_opt, off_param)
        compute = costmodel.compute_time(w.flops_per_token, w.tokens_per_gpu, peak, at_mfu or mfu,
                                         activation_checkpointing=w.activation_checkpointing, mfu_measured=measured)
        step = costmodel.estimate_step(w, z, world, g, links, compute_s=compute, overlap=opts.overlap, peak=peak,
                                       optimizer_s=costmodel.optimizer_time(w.n_params, hbm),
                                       control_allreduces=control_allreduces(cfg, z.stage))
        return (plan.micro, plan.accum, plan.global_batch), step

    def to_end(step: costmodel.StepEstimate, overhead: float | None = None) -> costmodel.RunEstimate:
        return costmodel.time_to_train(step, tokens=opts.tokens, overhead=overhead) if opts.tokens else \
            costmodel.time_to_train(step, steps=cfg.train.max_steps, overhead=overhead)

    d = cfg.distributed
    configured = (d.zero_stage, d.offload_optimizer == "cpu", d.offload_param == "cpu")
    target = f"{opts.tokens:,.0f} tokens" if opts.tokens else f"{cfg.train.max_steps:,} steps"
    for nodes in node_counts(opts.nodes):
        try:
            plan, step = estimate(nodes * g, *configured)
        except UserError as exc:
            report.rows.append(Row(nodes, nodes * g, None, None, None, str(exc).split(":")[0]))
            continue
        run = to_end(step)
        note = "communication-bound" if step.comm_bound else ""
        if fits(*configured, nodes * g) is False:
            note = (note + "; " if note else "") + "does not fit memory"
        report.rows.append(Row(nodes, nodes * g, plan, step, run, note))
    good = [r for r in report.rows if r.step is not None]
    if good:
        report.verdict.append(_where_it_stops(good))
        if not measured:  # the evidence is spread: say what its ends mean for the largest count
            last = good[-1]
            ends = [estimate(last.gpus, *configured, at_mfu=m)[1] for m in (low, high)]
            o_low, _, o_high = costmodel.whole_run_overhead(last.nodes)
            runs = [to_end(ends[0], o_high), to_end(ends[1], o_low)]  # the slowest end with the most overhead
            overheads = f"x {o_low:.2f}" if o_low == o_high else f"x {o_low:.2f}-{o_high:.2f}"
            report.verdict.append(
                f"at MFU {low:.0%}-{high:.0%} (where about half of published runs lie; bench/RESULTS.md 'Fresh "
                f"held-out check') and whole-run overhead {overheads}, "
                f"{last.nodes} node{'s' if last.nodes > 1 else ''}"
                f" give {ends[0].tokens_per_s:,.0f}-{ends[1].tokens_per_s:,.0f} tokens/s, "
                f"{costmodel.fmt_duration(runs[1].seconds)}-{costmodel.fmt_duration(runs[0].seconds)}, "
                f"{runs[1].gpu_hours:,.0f}-{runs[0].gpu_hours:,.0f} GPU-h; measure yours: --from-run RUN_DIR")
            report.mfu_range = (low, typical, high)
    world = opts.nodes * g
    for stage, off_opt, off_param in STAGES:
        label = f"ZeRO-{stage}" + (" offload opt+param" if off_param else " offload opt" if off_opt else "")
        try:
            _, step = estimate(world, stage, off_opt, off_param)
        except UserError:
            step = None
        report.stages.append((label, fits(stage, off_opt, off_param, world), step))
    candidates = [(label, s) for label, ok, s in report.stages if s is not None and ok is not False]
    if candidates:
        label, best = min(candidates, key=lambda c: c[1].step_s)
        report.fastest = label
        known = any(ok is not None for _, ok, _ in report.stages)
        report.verdict.append(f"fastest ZeRO stage on {opts.nodes} node{'s' if opts.nodes > 1 else ''} x {g} "
                              f"{'that fits memory' if known else '(add --gpu-mem to check memory)'}: {label} "
                              f"({best.step_s * 1e3:,.0f} ms/step, {best.tokens_per_s:,.0f} tokens/s)")
    report.header.append(f"  {costmodel.ASSUMPTIONS}")
    report.header.append(f"  time to train: {target}")
    return report


def _where_it_stops(rows: list[Row]) -> str:
    """Communication-bound from the start, the first doubling that gives less than PAYS x the tokens/s, or that
    scaling pays all the way."""
    first = rows[0]
    if first.step.comm_bound:
        return (f"communication-bound already on {first.nodes} node{'s' if first.nodes > 1 else ''} of "
                f"{first.gpus} GPUs: {first.step.efficiency:.0%} of one GPU's tokens/s per GPU (exposed "
                f"communication {first.step.exposed_comm_s * 1e3:,.0f} ms of a {first.step.step_s * 1e3:,.0f} ms "
                "step); raise the micro batch or accumulation, or measure the links (bench-comm)")
    for prev, row in zip(rows, rows[1:], strict=False):
        gain = row.step.tokens_per_s / prev.step.tokens_per_s
        if gain < PAYS * row.nodes / prev.nodes / 2:
            why = (f"exposed communication {row.step.exposed_comm_s * 1e3:,.0f} ms of a "
                   f"{row.step.step_s * 1e3:,.0f} ms step")
            return (f"scaling stops paying beyond {prev.nodes} node{'s' if prev.nodes > 1 else ''}: {row.nodes} "
                    f"nodes give {gain:.2f}x the tokens/s of {prev.nodes} ({why}); raise the micro batch or "
                    "accumulation (fewer reductions per token), or measure the links (bench-comm)")
    last = rows[-1]
    return (f"scaling pays up to {last.nodes} node{'s' if last.nodes > 1 else ''}: {last.step.efficiency:.0%} of "
            f"linear ({last.step.tokens_per_s:,.0f} tokens/s)")


def render(report: ScalingReport) -> list[str]:
    out = list(report.header)
    out.append(f"  {'nodes':>5}{'GPUs':>6}  {'micro x accum = global':<24}{'step':>9}{'tokens/s':>12}{'per GPU':>9}"
               f"{'MFU':>6}{'scaling':>8}{'comm exposed':>14}{'time':>8}{'GPU-h':>9}  note")
    for r in report.rows:
        if r.step is None:
            out.append(f"  {r.nodes:>5}{r.gpus:>6}  {'-':<24}  {r.note}")
            continue
        s = r.step
        batch = f"{r.plan[0]} x {r.plan[1]} = {r.plan[2]:,}"
        out.append(f"  {r.nodes:>5}{r.gpus:>6}  {batch:<24}{s.step_s * 1e3:>7,.0f}ms{s.tokens_per_s:>12,.0f}"
                   f"{s.tokens_per_s_per_gpu:>9,.0f}{s.mfu:>6.0%}{s.efficiency:>8.0%}"
                   f"{s.exposed_comm_s * 1e3:>7,.0f}ms {s.exposed_comm_s / s.step_s:>4.0%}"
                   f"{costmodel.fmt_duration(r.run.seconds):>8}{r.run.gpu_hours:>9,.0f}  {r.note}")
    if report.stages:
        parts = []
        for label, ok, s in report.stages:
            fit = "" if ok is None else (" fits" if ok else " does not fit")
            parts.append(f"{label} {s.step_s * 1e3:,.0f} ms{fit}" if s else f"{label} -")
        out.append("  by ZeRO stage at the largest count: " + "; ".join(parts))
    out += [f"  {v}" for v in report.verdict]
    return out


# ------------------------------------------------------------------------------------ the doctor's hooks

def add_arguments(parser) -> None:
    """The scaling flags of `gpt2dist doctor` (the topology flags --nodes/--world-size stay the doctor's)."""
    g = parser.add_argument_group("scaling (step time, tokens/s and time to train on 1, 2, 4 ... nodes)")
    g.add_argument("--gpus-per-node", type=int, default=None, help="GPUs (ranks) per node; with --nodes it sets the "
                   "world size")
    g.add_argument("--gpu", default=None, help=f"GPU kind for peak FLOP/s, memory and default links: "
                   f"{', '.join(GPUS)}")
    g.add_argument("--intra-bw", type=float, default=None, help="all-reduce bus bandwidth inside a node, GB/s "
                   "(nccl-tests busbw; default: the GPU's NVLink/PCIe figure)")
    g.add_argument("--inter-bw", type=float, default=None, help="all-reduce bus bandwidth across nodes, GB/s "
                   "(~ NICs per node x NIC GB/s x 0.9; default: the GPU's usual fabric)")
    g.add_argument("--comm-json", default=None, help="bench-comm's report: its measured curves replace the "
                   "bandwidth of the level it ran on (one node, or several)")
    g.add_argument("--mfu", type=float, default=None, help="achieved MFU of one GPU (default: calibrated per GPU "
                   "kind against published runs, costmodel.default_mfu)")
    g.add_argument("--from-run", default=None, help="take the MFU from a run dir's metrics.jsonl (median)")
    g.add_argument("--overlap", type=float, default=costmodel.DEFAULT_OVERLAP, help="share of overlappable "
                   f"communication hidden behind compute (default {costmodel.DEFAULT_OVERLAP})")
    g.add_argument("--tokens", default=None, help="time to train this many tokens (e.g. 10B, 300M) instead of "
                   "train.max_steps")


def parse_count(text: str) -> float:
    """'10B', '300M', '2.5T', '1e10', '10_000' -> a number."""
    s = text.strip().upper().replace("_", "").replace(",", "")
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}.get(s[-1:], 1)
    try:
        value = float(s[:-1] if scale != 1 else s) * scale
    except ValueError:
        raise UserError(f"--tokens {text!r} is not a count: use e.g. 10B, 300M or 1e10") from None
    if value <= 0:
        raise UserError(f"--tokens {text!r} must be positive")
    return value


def options_from_args(args) -> tuple[ScalingOptions | None, int, int]:
    """(scaling options or None when no table is asked for, world size, nodes) from the doctor's arguments;
    one-line errors for inconsistent topology or scaling flags, before any work."""
    nodes = args.nodes
    if args.gpus_per_node is not None:
        if args.gpus_per_node < 1 or nodes < 1:
            raise UserError(f"--gpus-per-node ({args.gpus_per_node}) and --nodes ({nodes}) must be >= 1")
        world = nodes * args.gpus_per_node
        if args.world_size is not None and args.world_size != world:
            raise UserError(f"--world-size {args.world_size} disagrees with --nodes {nodes} x --gpus-per-node "
                            f"{args.gpus_per_node} = {world}: give one or the other")
    else:
        world = args.world_size if args.world_size is not None else 1
    asked = [flag for flag, v in (("--intra-bw", args.intra_bw), ("--inter-bw", args.inter_bw),
                                  ("--comm-json", args.comm_json), ("--mfu", args.mfu),
                                  ("--from-run", args.from_run), ("--tokens", args.tokens)) if v is not None]
    if args.gpu is None:
        if asked:
            raise UserError(f"{asked[0]} is a scaling flag: add --gpu NAME (its peak FLOP/s), e.g. --gpu H100")
        return None, world, nodes
    gpu_key(args.gpu)
    if nodes < 1 or world % nodes:
        return None, world, nodes  # the doctor reports the topology error itself
    for flag, v in (("--intra-bw", args.intra_bw), ("--inter-bw", args.inter_bw)):
        if v is not None and v <= 0:
            raise UserError(f"{flag} {v} must be a positive bandwidth in GB/s")
    if not 0 <= args.overlap <= 1:
        raise UserError(f"--overlap {args.overlap} must be between 0 and 1")
    opts = ScalingOptions(nodes, world // nodes, args.gpu, args.intra_bw, args.inter_bw, args.comm_json, args.mfu,
                          args.from_run, args.overlap, parse_count(args.tokens) if args.tokens else None)
    if opts.comm_json:
        from gpt2dist.commbench import load_report

        load_report(opts.comm_json)
    if opts.from_run and opts.mfu is None:
        run_mfu(opts.from_run)
    return opts, world, nodes


def default_gpu_mem(opts: ScalingOptions | None) -> int | None:
    """The GPU kind's memory in bytes (datasheet GB), for --gpu without --gpu-mem."""
    return int(GPUS[gpu_key(opts.gpu)].memory_gb * 1e9) if opts is not None and opts.gpu else None


def doctor_lines(cfg: RunConfig, facts, opts: ScalingOptions, gpu_mem_bytes: int | None) -> list[str]:
    """The scaling section of the doctor's report: the memory table's own fit test decides 'fits'."""
    return render(doctor_report(cfg, facts, opts, gpu_mem_bytes))


def doctor_report(cfg: RunConfig, facts, opts: ScalingOptions, gpu_mem_bytes: int | None) -> ScalingReport:
    """The scaling report the doctor prints (`render`) and writes as JSON, with the memory table's fit test."""
    def fits(stage: int, off_opt: bool, off_param: bool, world: int) -> bool | None:
        if gpu_mem_bytes is None:
            return None
        try:
            micro = batch_plan(cfg.train, world).micro
        except UserError:
            return None
        est = memory.estimate_for(cfg, facts, world, micro, stage, off_opt, off_param)
        return est.fits(int(gpu_mem_bytes * memory.HEADROOM))

    return scaling_report(cfg, facts, opts, fits)
