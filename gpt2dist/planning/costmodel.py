"""How fast a GPT-2 run goes on N GPUs: step time, tokens/s, MFU, scaling efficiency, time and GPU-hours to train.

Pure arithmetic (no torch), like `gpt2dist.planning.memory`, so the doctor answers on a login node. Seconds, bytes and
bytes/s throughout. One optimizer step of data-parallel training is modelled as

    step = compute + optimizer share + exposed communication

- compute = FLOPs per token x tokens per GPU per step / (peak FLOP/s x achieved MFU), FLOPs per token being
  `model.flops_per_token`'s 6N + 12*L*H*Q*T (PaLM, Chowdhery et al. 2022, app. B); activation checkpointing
  adds one forward (2N of the 6N) when the MFU is not measured with it. Or, measured: a one-GPU step time.
- communication = what DeepSpeed 0.19 actually sends at each ZeRO stage (`collectives`), priced with nccl-tests'
  bus-bandwidth convention (https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md): a collective
  of S bytes over n ranks takes latency + S x f(n) / busbw, f = 2(n-1)/n for all-reduce, (n-1)/n for all-gather
  and reduce-scatter. Volumes follow the ZeRO paper (Rajbhandari et al. 2020, sec. 7: stages 1-2 move 2 psi,
  the same as data parallelism, stage 3 3 psi); DeepSpeed's implementation differs in two places, modelled as
  implemented and cited at `collectives`. Hierarchy: on one node collectives run at the intra-node busbw; once
  they span nodes, the slower of the two links sets the pace (the inter-node link, on every GPU cluster).
  Latency: NCCL's own tuning model (`nccl`): a ring pays one hop per step, so its latency grows with the GPU
  count (ZeRO-3's shard gathers at hundreds of GPUs), a tree all-reduce's with log2 of the node count.
- overlap: only communication issued during forward/backward can hide behind it, never the last bucket, and
  only a fraction `overlap` of it does (kernels share SMs and memory bandwidth); 0 on CPU, where DeepSpeed's
  CPU accelerator has no streams and every gloo call blocks.
- ZeRO-Offload adds PCIe traffic (gradient partition down, updated weights up) and a host Adam step; with
  overlap_comm the download hides behind backward like communication, the rest does not.
- achieved MFU, unless measured: `default_mfu`, per GPU kind, calibrated against published runs.
- time to train: steady steps x `whole_run_overhead` (evaluation, checkpoints, restarts), from published whole runs.
- ASSUMPTIONS names each of these in one line for the doctor's output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpt2dist.planning import nccl
from gpt2dist.planning.hardware import GB, GPUS, GpuKind, gpu_kind

DEFAULT_MFU = 0.40  # a GPU kind with no published run (MFU_BY_GPU has the calibrated ones); bench/RESULTS.md
DEFAULT_OVERLAP = 0.5  # share of overlappable communication actually hidden on a GPU (assumption; see above)
RECOMPUTE = 8 / 6  # activation checkpointing: forward 2N + backward 4N + a second forward 2N
DS_STAGE0_BUCKET = 500_000_000  # deepspeed.runtime.engine MEMORY_OPT_ALLREDUCE_SIZE: ZeRO-0's all-reduce bucket
HOST_ADAM_PARAMS_PER_S = 1e9  # DeepSpeedCPUAdam on a server CPU, rough (ZeRO-Offload, Ren et al. 2021): measure
BUS_FACTORS = nccl.BUS_FACTORS  # nccl-tests' convention: S x f(n) bytes cross the bus


# Achieved MFU of one GPU by kind, (low, typical, high), in this repo's 6N + 12LHQT convention, for GPT-2-shaped
# models at T = 1024-2048 with flash attention and bf16: calibrated against published runs (bench/RESULTS.md,
# 'Calibration'). A kind with no published run gets DEFAULT_MFU with the A100/H100 spread around it.
# A100: MosaicML's MPT 125m-1b and llm.c's GPT-2 124M-774M imply 43-64% (median 55%); H100: MPT 760m-1b and
# llm.c's GPT-2 1558M imply 35-49% (median 41%): the H100's peak grew 3.2x over the A100's, its memory bandwidth
# 1.6x, so the same kernels reach a smaller share of it. PCIe/NVL cards and the H200 (the H100's compute) share
# the H100's figures; the kinds with no published run get DEFAULT_MFU +- 20%. V100 (fp16): DLPerf's 26 GPT runs
# on 1-32 V100-16GB (Megatron-LM, OneFlow, DeepSpeed 0.3) fit 9-43% through the whole model, communication
# included; quartiles 18/25/37% (GPT-2 small at micro batch 1-4 at the bottom, 1536-wide models at the top).
_A100, _H100, _V100 = (0.43, 0.53, 0.62), (0.35, 0.41, 0.49), (0.18, 0.25, 0.37)
MFU_BY_GPU: dict[str, tuple[float, float, float]] = {"A100": _A100, "H100": _H100, "H100 PCIe": _H100,
                                                     "H100 NVL": _H100, "H200": _H100, "H200 NVL": _H100,
                                                     "V100": _V100}
SMALL_MODEL = 200e6  # below this many parameters, published MFU runs lower: the vocabulary and the per-layer
#                      overheads (layer norms, softmax, the optimizer) weigh more against the matmuls
SMALL_MODEL_FACTOR = 0.88  # A100 runs of 124-125M imply 43-60% (median 47%) against 54% for 350M-1B


# A whole run's wall time over its steady steps' time (evaluation, checkpoints, restarts, data loading, warm-up and
# compile), (low, typical, high), read off published whole runs whose source also gives the steady rate
# (bench/calibration.py OVERHEADS, bench/RESULTS.md 'Whole runs'). One node: llm.c's GPT-2 124M (8 A100) and 1558M
# (8 H100) took the time their steps give ('~90 minutes', '24 hours': 0.95x, 0.96x, rounded), so nothing is added.
# Across nodes: BLOOM-176B (48 nodes, 118 days) 1.11x its quoted 150 TFLOP/s, MPT-7B (55 nodes, 9.5 days) 1.31x
# llm-foundry's benchmark, OPT-175B (128 nodes, 56 days for '~33 days of continuous training') 1.70x; typical =
# their median. Eval or checkpoint intervals are not modelled: no source splits the overhead by them.
WHOLE_RUN_ONE_NODE = (1.0, 1.0, 1.0)
WHOLE_RUN_NODES = (1.11, 1.31, 1.70)


def whole_run_overhead(nodes: int) -> tuple[float, float, float]:
    """(low, typical, high) whole-run wall time over steady-state time for a run on `nodes` nodes."""
    return WHOLE_RUN_ONE_NODE if nodes <= 1 else WHOLE_RUN_NODES


ASSUMPTIONS = ("assumes: MFU per GPU kind from published runs (bench/RESULTS.md 'Calibration'; lower below 200M "
               "params); gradient reduction overlapped with backward where DeepSpeed does (ZeRO-1/2 with overlap_comm, "
               "ZeRO-3 always; ZeRO-0 after backward); latencies of NCCL's tuning model (a ring's grows with the GPU "
               "count); offload's gradient download overlapped, host Adam and the weight upload not; time and GPU-h "
               "are a whole run's: steady steps x "
               f"{WHOLE_RUN_ONE_NODE[1]:.2f} on one node, x {WHOLE_RUN_NODES[1]:.2f} ({WHOLE_RUN_NODES[0]:.2f}-"
               f"{WHOLE_RUN_NODES[2]:.2f}) across nodes (evaluation, checkpoints, restarts of published whole runs; "
               "bench/RESULTS.md 'Whole runs')")


def system_for(name: str | None) -> GpuKind:
    """The figures of a device name's GPU kind (the H100's when the kind is unknown)."""
    return GPUS[gpu_kind(name) or "H100"]


def default_mfu(gpu: str | None, n_params: float, block_size: int) -> tuple[float, float, float]:
    """(low, typical, high) achieved MFU of one GPU of kind `gpu` (a GPUS key or a device name) for a GPT-2
    of `n_params` parameters at `block_size`: the calibrated table, scaled down for small models."""
    low, typ, high = MFU_BY_GPU.get(gpu_kind(gpu) or "", (DEFAULT_MFU * 0.8, DEFAULT_MFU, DEFAULT_MFU * 1.2))
    factor = SMALL_MODEL_FACTOR if n_params < SMALL_MODEL else 1.0
    return low * factor, typ * factor, high * factor


@dataclass(frozen=True)
class Links:
    """What one collective costs: busbw per level (nccl-tests convention), a latency, PCIe for offload, and
    optionally bench-comm's measured curves, which replace the level they were measured on."""

    intra_busbw: float
    inter_busbw: float
    intra_link: str = "nvlink"  # or "pcie": which hop latency NCCL's model gives the steps inside a node
    nccl_latency: float = 1.0  # x the latencies of NCCL's tuning model (`nccl`); 0: bandwidth only
    pcie_bw: float = 25 * GB
    curves: Mapping[str, Sequence[tuple[int, float]]] = field(default_factory=dict)  # kind -> (bytes, seconds)
    curve_ranks: int = 0  # ranks the curves were measured on
    curve_spans_nodes: bool = False
    source: str = "flags"

    def busbw(self, nodes: int) -> float:
        return self.intra_busbw if nodes <= 1 else min(self.intra_busbw, self.inter_busbw)


def curves_from_report(report: Mapping) -> tuple[dict[str, list[tuple[int, float]]], int, bool]:
    """(kind -> [(bytes, median seconds)], ranks, spans nodes) from a bench-comm JSON report."""
    curves = {kind: sorted((int(r["bytes"]), float(r["time_s"])) for r in rows)
              for kind, rows in report["results"].items() if rows}
    return curves, int(report["world_size"]), int(report.get("nodes", 1)) > 1


def collective_time(kind: str, nbytes: float, n: int, nodes: int, links: Links) -> float:
    """Seconds for one collective of nccl-tests size `nbytes` (all-reduce: the buffer; all-gather: the gathered
    output; reduce-scatter: the input) over n ranks on `nodes` nodes.

    With a measured curve for this level (one node, or several): busbw interpolated in log(size) between the
    measured points, below the smallest size the smallest size's time (latency-bound), above the largest the
    largest's busbw. Otherwise NCCL's own tuning model at the level's busbw (`nccl.collective_seconds`): a ring's
    latency grows with the GPU count, a tree's (all-reduce) with log2(nodes).
    """
    if n <= 1 or nbytes <= 0:
        return 0.0
    points = links.curves.get(kind)
    if points and links.curve_ranks > 1 and links.curve_spans_nodes == (nodes > 1):
        factor = BUS_FACTORS[kind](n)
        f_measured = BUS_FACTORS[kind](links.curve_ranks)
        sizes = [s for s, _ in points]
        bus = [s / t * f_measured for s, t in points]
        if nbytes <= sizes[0]:
            return points[0][1] * factor / f_measured
        if nbytes >= sizes[-1]:
            return nbytes * factor / bus[-1]
        i = next(k for k in range(1, len(sizes)) if sizes[k] >= nbytes)
        x = (math.log(nbytes) - math.log(sizes[i - 1])) / (math.log(sizes[i]) - math.log(sizes[i - 1]))
        return nbytes * factor / (bus[i - 1] + x * (bus[i] - bus[i - 1]))
    return nccl.collective_seconds(kind, nbytes, n, nodes, links.busbw(nodes), links.intra_link, links.nccl_latency)


# ---------------------------------------------------------------- what a step sends, stage by stage

@dataclass(frozen=True)
class Zero:
    """The DeepSpeed settings that change what is sent (config keys distributed.*)."""

    stage: int = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    overlap_comm: bool = True
    reduce_bucket_size: int = 500_000_000
    prefetch_bucket_size: int = 50_000_000
    persistence_threshold: int = 100_000
    max_reuse_distance: int = 1_000_000_000
    # Other trainers, for bench/scaling.py's published runs: "ddp" (torch DistributedDataParallel: stage-0 bytes,
    # all-reduced in reduce_bucket_size buckets during the last micro batch's backward) and "paper" (ZeRO-1/2 as
    # Rajbhandari et al. and llm.c do them: reduce-scatter instead of DeepSpeed's all-reduce).
    implementation: str = "deepspeed"


@dataclass(frozen=True)
class Workload:
    """One rank's share of a step: the model's parameter tensors (forward order, unique) and the batch."""

    tensors: tuple[tuple[str, int, int], ...]  # (module, numel, dims)
    flops_per_token: float
    micro_batch: int
    block_size: int
    accum: int = 1
    weight_bytes: int = 2  # 16-bit weights and gradients (bf16/fp16) or 4 (fp32)
    activation_checkpointing: bool = False

    @property
    def n_params(self) -> int:
        return sum(numel for _, numel, _ in self.tensors)

    @property
    def tokens_per_gpu(self) -> int:
        return self.micro_batch * self.accum * self.block_size


def gpt2_tensors(n_layer: int, n_embd: int, vocab_size: int, n_positions: int) -> tuple[tuple[str, int, int], ...]:
    """GPT2LMHeadModel's parameters in forward order, lm_head tied to wte (counted once, as in
    `memory.gpt2_param_count`, which their sum equals): (module, numel, dims)."""
    e = n_embd
    out = [("wte", vocab_size * e, 2), ("wpe", n_positions * e, 2)]
    for i in range(n_layer):
        h = f"h.{i}"
        out += [(f"{h}.ln_1", e, 1), (f"{h}.ln_1", e, 1), (f"{h}.attn.c_attn", e * 3 * e, 2),
                (f"{h}.attn.c_attn", 3 * e, 1), (f"{h}.attn.c_proj", e * e, 2), (f"{h}.attn.c_proj", e, 1),
                (f"{h}.ln_2", e, 1), (f"{h}.ln_2", e, 1), (f"{h}.mlp.c_fc", e * 4 * e, 2),
                (f"{h}.mlp.c_fc", 4 * e, 1), (f"{h}.mlp.c_proj", 4 * e * e, 2), (f"{h}.mlp.c_proj", e, 1)]
    return tuple(out + [("ln_f", e, 1), ("ln_f", e, 1)])


@dataclass(frozen=True)
class Collective:
    kind: str  # all_reduce | all_gather | reduce_scatter
    nbytes: int  # nccl-tests size S of one call
    per_pass: int  # calls in one pass (a forward, a backward, a boundary)
    passes: float  # passes per optimizer step (micro batches, or 1)
    phase: str  # forward | backward (may overlap with compute) | boundary (exposed: after backward / the step)
    what: str

    @property
    def calls(self) -> float:
        return self.per_pass * self.passes

    @property
    def hideable(self) -> float:
        """Share that can overlap with compute: all calls of a forward/backward pass but its last."""
        return (self.per_pass - 1) / self.per_pass if self.phase in ("forward", "backward") else 0.0


def collectives(w: Workload, z: Zero, n: int) -> list[Collective]:
    """What DeepSpeed 0.19 sends per optimizer step on n data-parallel ranks (nothing on one).

    - ZeRO-0: the engine all-reduces every gradient after the last micro batch's backward, in buckets of
      500M elements (deepspeed/runtime/engine.py allreduce_gradients -> buffered_allreduce_fallback).
    - ZeRO-1/2: the paper reduce-scatters gradients (psi) and all-gathers weights (psi). DeepSpeed 0.19
      all-reduces each gradient bucket instead (zero_optimization.use_multi_rank_bucket_allreduce, default true:
      stage_1_and_2.py average_tensor -> allreduce_and_scatter), 2 psi of bus traffic, then all-gathers the
      updated 16-bit weights once per parameter group (utils.all_gather_into_tensor_dp_groups): 3 psi in all.
      Stage 1 reduces at the accumulation boundary, stage 2 after every micro batch, from backward hooks, in
      reduce_bucket_size buckets.
    - ZeRO-3: per micro batch, forward all-gathers every partitioned weight; once the first step has traced
      the module order, a fetch takes the next modules' weights along up to stage3_prefetch_bucket_size
      elements in one coalesced call (partitioned_param_coordinator.fetch_sub_module), so ~partitioned /
      prefetch_bucket calls. Gradients are reduce-scattered in reduce_bucket_size buckets. The paper's second
      all-gather in backward happens only for weights whose next use is further than stage3_max_reuse_distance
      elements away (__params_to_release): a weight is reused after ~2 x the weights that follow it in
      forward, so about psi - distance/2 elements are gathered again. Weights below
      stage3_param_persistence_threshold stay whole and are all-gathered one by one after each step
      (stage3.py _post_step). Counted on gloo with bench/scaling.py --profile.
    """
    if n <= 1:
        return []
    wb, psi = w.weight_bytes, w.n_params
    buckets = math.ceil(psi / max(1, z.reduce_bucket_size))
    if z.stage == 0 and z.implementation == "ddp":
        return [Collective("all_reduce", psi * wb // buckets, buckets, 1, "backward", "DDP gradient buckets")]
    if z.stage == 0:
        calls = math.ceil(psi / DS_STAGE0_BUCKET)
        return [Collective("all_reduce", psi * wb // calls, calls, 1, "boundary", "gradients, after backward")]
    if z.stage in (1, 2):
        per_micro = z.stage == 2
        kind = "reduce_scatter" if z.implementation == "paper" else "all_reduce"
        # stage 1 too reduces from backward hooks, in the last micro batch's backward, when overlap_comm is on
        # (stage_1_and_2.py process_gradients -> reduce_ready_partitions_and_remove_grads at the boundary)
        in_backward = per_micro or z.overlap_comm
        out = [Collective(kind, psi * wb // buckets, buckets, w.accum if per_micro else 1,
                          "backward" if in_backward else "boundary",
                          "gradient buckets" + (", every micro batch" if per_micro else ""))]
        for name, numel in (("matrices", sum(m for _, m, d in w.tensors if d >= 2)),
                            ("vectors", sum(m for _, m, d in w.tensors if d < 2))):
            if numel:
                out.append(Collective("all_gather", numel * wb, 1, 1, "boundary", f"updated weights ({name})"))
        return out
    partitioned = sum(m for _, m, _ in w.tensors if m > z.persistence_threshold)
    persistent = [m for _, m, _ in w.tensors if m <= z.persistence_threshold]
    regather = max(0.0, partitioned - z.max_reuse_distance / 2)
    out = []
    if partitioned:
        k = math.ceil(partitioned / max(1, z.prefetch_bucket_size))
        out.append(Collective("all_gather", partitioned * wb // k, k, w.accum, "forward", "weights for forward"))
        if regather:
            k = math.ceil(regather / max(1, z.prefetch_bucket_size))
            out.append(Collective("all_gather", int(regather * wb) // k, k, w.accum, "backward",
                                  "weights again in backward (beyond stage3_max_reuse_distance)"))
    out.append(Collective("reduce_scatter", psi * wb // buckets, buckets, w.accum, "backward", "gradient buckets"))
    if persistent:
        out.append(Collective("all_gather", sum(persistent) * wb // len(persistent), len(persistent), 1, "boundary",
                              "persistent (small) weights, after the step"))
    return out


# ------------------------------------------------------------------------------------ one step

@dataclass(frozen=True)
class StepEstimate:
    n_gpus: int
    nodes: int
    compute_s: float
    optimizer_s: float
    comm_s: float  # all communication, overlapped or not
    exposed_comm_s: float
    offload_s: float
    tokens_per_gpu: int  # per optimizer step
    flops_per_token: float
    peak: float | None
    one_gpu_step_s: float  # the same micro batch and accumulation on one GPU: no communication

    @property
    def step_s(self) -> float:
        return self.compute_s + self.optimizer_s + self.exposed_comm_s + self.offload_s

    @property
    def tokens_per_s_per_gpu(self) -> float:
        return self.tokens_per_gpu / self.step_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_s_per_gpu * self.n_gpus

    @property
    def mfu(self) -> float | None:
        return self.tokens_per_s_per_gpu * self.flops_per_token / self.peak if self.peak else None

    @property
    def efficiency(self) -> float:
        """Tokens/s per GPU against one GPU with the same micro batch (1.0 = linear scaling)."""
        return self.one_gpu_step_s / self.step_s

    @property
    def comm_bound(self) -> bool:
        """More time goes to exposed communication than to compute."""
        return self.exposed_comm_s + self.offload_s > self.compute_s


ADAM_BYTES = 30  # per parameter, fused AdamW with fp32 master weights: read weight, grad, m, v (16); write weight,
#                  m, v (12) and the 16-bit copy (2) -- a memory-bound elementwise pass


def optimizer_time(n_params: float, hbm_bw: float) -> float:
    """Seconds of one optimizer step over `n_params` on one GPU: ADAM_BYTES per parameter at the memory
    bandwidth (GPT-2 124M on an H100: ~1 ms; ZeRO >= 1 runs it on 1/n of the parameters)."""
    return n_params * ADAM_BYTES / hbm_bw


def compute_time(flops_per_token: float, tokens: float, peak: float, mfu: float, *,
                 activation_checkpointing: bool = False, mfu_measured: bool = False) -> float:
    """Seconds of forward + backward for `tokens` tokens on one GPU at `mfu` of `peak` FLOP/s.

    MFU counts model FLOPs only, so recomputation makes a step longer at the same MFU: x 8/6 with activation
    checkpointing, unless the MFU was measured on a run that already recomputed (`mfu_measured`).
    """
    t = flops_per_token * tokens / (peak * mfu)
    return t * RECOMPUTE if activation_checkpointing and not mfu_measured else t


def estimate_step(w: Workload, z: Zero, n_gpus: int, gpus_per_node: int, links: Links, *, compute_s: float,
                  optimizer_s: float = 0.0, overlap: float = DEFAULT_OVERLAP, peak: float | None = None,
                  host_adam: float = HOST_ADAM_PARAMS_PER_S, control_allreduces: float = 0.0) -> StepEstimate:
    """One optimizer step on n_gpus (gpus_per_node per node): compute_s is one GPU's forward + backward for all
    micro batches of the step (from `compute_time`, or measured); optimizer_s its optimizer step on the whole
    model, which ZeRO >= 1 splits over the ranks (on a GPU it is ~1 ms for GPT-2 124M: 0 is fine there).
    control_allreduces: latency-bound scalar all-reduces per step (gpt2dist's stop check, the logged loss,
    ZeRO's gradient norm), priced as a 4-byte all-reduce."""
    nodes = math.ceil(n_gpus / gpus_per_node)
    coll = collectives(w, z, n_gpus)
    if control_allreduces and n_gpus > 1:
        coll.append(Collective("all_reduce", 4, 1, control_allreduces, "boundary", "scalars: stop check, loss, norm"))
    times = {c: c.calls * collective_time(c.kind, c.nbytes, n_gpus, nodes, links) for c in coll}
    comm = sum(times.values())
    # Hideable: forward / backward communication except each phase's last call, if DeepSpeed overlaps at all
    # (ZeRO-1/2 only with overlap_comm; ZeRO-3 always prefetches / reduces on side streams).
    can_overlap = z.stage == 3 or (z.stage in (1, 2) and z.overlap_comm) or z.implementation == "ddp"
    hidden = 0.0
    if can_overlap and overlap > 0:
        fwd_share = (1 / 3) / (RECOMPUTE if w.activation_checkpointing else 1)  # forward's share of compute
        for phase, window in (("forward", compute_s * fwd_share), ("backward", compute_s * (1 - fwd_share))):
            # a collective issued in `passes` of the step's accum micro batches hides behind those passes only
            hideable = sum(min(t * c.hideable, window * min(1.0, c.passes / w.accum))
                           for c, t in times.items() if c.phase == phase)
            hidden += overlap * min(hideable, window)
    opt = optimizer_s / n_gpus if z.stage >= 1 else optimizer_s
    offload = 0.0
    if z.offload_optimizer and z.stage >= 1:
        part = w.n_params / n_gpus
        # fp32 gradient partition to the host, updated 16-bit weights back, and Adam on the host's partition.
        # With overlap_comm DeepSpeed copies each reduced gradient bucket to pinned host memory from the
        # backward pass (async_accumulate_grad_in_cpu_via_gpu / the offload copy stream), so the download hides
        # behind the last micro batch's backward like communication does; the host Adam step and the upload of
        # the updated weights come after it and stay exposed.
        down = part * 4 / links.pcie_bw
        if z.overlap_comm and overlap > 0:
            backward = compute_s * (1 - (1 / 3) / (RECOMPUTE if w.activation_checkpointing else 1)) / w.accum
            down -= overlap * min(down, backward)
        offload = down + part * w.weight_bytes / links.pcie_bw + part / host_adam
        opt = 0.0
    if z.offload_param and z.stage == 3:
        gathers = sum(c.calls * c.nbytes for c in coll if c.kind == "all_gather")
        offload += gathers / n_gpus / links.pcie_bw  # each rank brings its partition up before every gather
    return StepEstimate(n_gpus, nodes, compute_s, opt, comm, comm - hidden, offload, w.tokens_per_gpu,
                        w.flops_per_token, peak, compute_s + optimizer_s)


# ------------------------------------------------------------------------------------ to the end of the run

@dataclass(frozen=True)
class RunEstimate:
    steps: float
    tokens: float
    seconds: float  # a whole run's: steady steps x overhead
    gpu_hours: float
    overhead: float = 1.0  # whole-run wall time over steady-state time (`whole_run_overhead`)

    @property
    def steady_seconds(self) -> float:
        return self.seconds / self.overhead

    @property
    def steady_gpu_hours(self) -> float:
        return self.gpu_hours / self.overhead


def time_to_train(step: StepEstimate, *, steps: float | None = None, tokens: float | None = None,
                  overhead: float | None = None) -> RunEstimate:
    """Wall time and GPU-hours of a whole run of `steps` optimizer steps, or of `tokens` tokens (whichever is
    given): the steady steps' time x `overhead` (default: the typical `whole_run_overhead` at the step's nodes)."""
    per_step = step.tokens_per_gpu * step.n_gpus
    if (steps is None) == (tokens is None):
        raise ValueError("give steps or tokens")
    if steps is None:
        steps = tokens / per_step
    if overhead is None:
        overhead = whole_run_overhead(step.nodes)[1]
    seconds = steps * step.step_s * overhead
    return RunEstimate(steps, steps * per_step, seconds, seconds * step.n_gpus / 3600, overhead)


def fmt_duration(seconds: float) -> str:
    """'45s', '12m', '3.4h', '2.1d'."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
