"""The cost model (gpt2dist/planning/costmodel.py) against measurements: real gloo ranks here, published GPU runs there.

CPU validation, in one invocation: one rank (1 thread) trains the same model at ZeRO 0, 2 and 3 with gpt2dist's
DeepSpeed engine; two ranks (1 thread each) run `bench-comm` over their gloo group and then the same three
trainings (same micro batch, so each rank does the one-rank's compute). The model predicts each two-rank step
from the one-rank step of that stage and bench-comm's measured curves -- no GPU-side defaults, no fitted
constant -- and the table prints predicted beside measured (median of post-warm-up steps from metrics.jsonl).
Each world size is one process per rank that runs its trainings one after the other through
`gpt2dist.train.train` (imports and start-up paid once), on a fresh process group per training.

    python bench/scaling.py                       # CPU: 1 vs 2 gloo ranks, ZeRO 0/2/3
    python bench/scaling.py --repeats 3 --json out.json
    python bench/scaling.py --references          # published GPU runs vs the model's prediction (no run)

On CPU nothing overlaps (DeepSpeed's CPU accelerator has no streams; every gloo call blocks), so the
validation exercises volumes, message counts, bucket sizes and the bandwidth curve, not the overlap factor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/scaling.py` from anywhere
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Spec:
    """One validation: a model with more parameters than compute per step (2 x 512 wide, 2 x 64 tokens), so that
    communication is a large share of a two-rank step on gloo, yet a step is ~0.1-0.3 s on one core."""

    n_layer: int = 2
    n_embd: int = 512
    n_head: int = 8
    block_size: int = 64
    micro: int = 2
    stages: list[int] = field(default_factory=lambda: [0, 2, 3])  # the ZeRO stages measured
    steps: int = 30
    warmup: int = 8  # steps left out of the median (DeepSpeed's first steps trace ZeRO-3 and warm allocators)
    stories: int = 300
    comm_iters: int = 10
    seed: int = 1
    # The one-rank baseline: "twin" = two independent one-rank trainings side by side, so each shares the cores'
    # caches and memory bandwidth as the two ranks will (and a busy machine's load) -- everything but the
    # communication; "single" = one training alone (on a quiet machine the two differ by that sharing, ~5-15%).
    baseline: str = "twin"
    nice: int = 0  # scheduling priority of the rank processes (< 0, as root: other jobs cannot preempt them)


# ---------------------------------------------------------------------------------------------- per rank

def run_config(spec: Spec, corpus: Path, run_dir: Path, stage: int) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir), "seed": spec.seed,
        "model": {"preset": "tiny", "n_layer": spec.n_layer, "n_embd": spec.n_embd, "n_head": spec.n_head,
                  "n_positions": max(spec.block_size, 256), "dropout": 0.0},
        "tokenizer": {"kind": "char"},
        "data": {"train": [str(corpus)], "block_size": spec.block_size, "num_workers": 0},
        "train": {"max_steps": spec.steps, "micro_batch_size": spec.micro, "grad_accum_steps": 1, "lr": 1e-3,
                  "min_lr": 1e-4, "warmup_steps": 2, "log_every": 1, "eval_every": 0, "device": "cpu",
                  "precision": "fp32", "compile": "false"},
        "checkpoint": {"every": 0, "keep_last": 1},
        "logging": {"tensorboard": False, "progress": "lines"},
        "distributed": {"backend": "deepspeed", "zero_stage": stage, "timeout_minutes": 3},
    }


def worker(job_file: Path) -> None:
    """One rank: join the group once, run bench-comm (two or more ranks), then one training per stage.

    The trainings go through `gpt2dist.train.run_training`, the loop `python -m gpt2dist.train` runs after its
    checks and `init_process_group`; one group serves all of them (DeepSpeed caches its groups per process)."""
    import gc
    import io

    from gpt2dist import commbench, dist
    from gpt2dist.config import batch_plan, load_config
    from gpt2dist.data.text import resolve_files
    from gpt2dist.train import run_training, setup_logging

    job = json.loads(job_file.read_text())
    spec, workdir = Spec(**job["spec"]), Path(job["workdir"])
    info = dist.discover()
    calls = profile_collectives() if job.get("profile") else None
    engine_calls = time_engine_calls()
    setup_logging()
    suffix = f"-t{os.environ.get('GPT2DIST_BENCH_TWIN', '0')}" if info.world_size == 1 else ""
    cfgs = {stage: load_config(workdir / f"n{info.world_size}-s{stage}{suffix}.yaml") for stage in spec.stages}
    first = cfgs[spec.stages[0]]
    import torch

    dist.init_process_group(info, "cpu", first.distributed.timeout_minutes, deepspeed=True)
    try:
        if info.world_size > 1:
            report = commbench.measure_all(first, torch.device("cpu"), max_bytes=None, warmup=2,
                                           iters=spec.comm_iters, budget_s=0.3)
            if info.is_writer:
                (workdir / "comm.json").write_text(json.dumps(report, indent=1))
        for stage in spec.stages:
            cfg = cfgs[stage]
            with contextlib.redirect_stdout(io.StringIO()):
                run_training(cfg, info, batch_plan(cfg.train, info.world_size), True,
                             resolve_files(cfg.data.train, "data.train"), None)
            gc.collect()
            (Path(cfg.run_dir) / f"engine-calls-rank{info.rank}.json").write_text(json.dumps(engine_calls))
            for values in engine_calls.values():
                values.clear()
            if calls is not None:
                (Path(cfg.run_dir) / f"collectives-rank{info.rank}.json").write_text(json.dumps(calls))
                calls.clear()
    except BaseException:
        dist.shutdown(clean=False)
        raise
    gc.collect()
    dist.shutdown()


def time_engine_calls() -> dict[str, list[float]]:
    """Seconds of each DeepSpeedEngine forward_loss / backward / step call. `step` (the optimizer step; on one
    rank it holds no communication) is the part of a one-rank step that ZeRO >= 1 splits over the ranks; the
    others are diagnostics (--profile). CPU work is synchronous, so wall clock is the work."""
    from gpt2dist.engines.deepspeed_engine import DeepSpeedEngine

    times: dict[str, list[float]] = {"forward_loss": [], "backward": [], "step": []}
    for name in times:
        original = getattr(DeepSpeedEngine, name)

        def timed(self, *args, _original=original, _name=name):
            start = time.perf_counter()
            out = _original(self, *args)
            times[_name].append(time.perf_counter() - start)
            return out

        setattr(DeepSpeedEngine, name, timed)
    return times


def profile_collectives() -> list[tuple[str, float, float, int]]:
    """Diagnostics (--profile): wrap torch.distributed's collectives to log (name, start, seconds, bytes) per call;
    an async call's time runs to its wait(). Not used for the prediction."""
    import functools

    import torch
    import torch.distributed as tdist

    calls: list[tuple[str, float, float, int]] = []

    class Timed:
        def __init__(self, work, name, start, nbytes):
            self._work, self._name, self._start, self._nbytes = work, name, start, nbytes

        def wait(self, *args, **kwargs):
            out = self._work.wait(*args, **kwargs)
            calls.append((self._name, self._start, time.time() - self._start, self._nbytes))
            return out

        def __getattr__(self, attr):
            return getattr(self._work, attr)

    def wrap(name):
        fn = getattr(tdist, name)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            nbytes = max((a.numel() * a.element_size() for a in tensors), default=0)
            start = time.time()
            out = fn(*args, **kwargs)
            if kwargs.get("async_op") and out is not None:
                return Timed(out, name, start, nbytes)
            calls.append((name, start, time.time() - start, nbytes))
            return out
        setattr(tdist, name, timed)

    for name in ("all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor", "all_gather", "broadcast",
                 "reduce", "barrier", "all_gather_object", "broadcast_object_list"):
        wrap(name)
    return calls


def profiled_comm(run_dir: Path, warmup: int) -> float | None:
    """Rank 0's seconds per step with a collective in flight after the warm-up (--profile's log; overlapping
    async calls -- ZeRO-3's -- count once), or None."""
    path = run_dir / "collectives-rank0.json"
    if not path.is_file():
        return None
    times = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        times[rec["step"]] = rec["time"]
    last = max(times)
    spans = sorted((c[1], c[1] + c[2]) for c in json.loads(path.read_text()) if times[warmup] <= c[1] <= times[last])
    busy, end = 0.0, float("-inf")
    for start, stop in spans:  # the union of the intervals
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return busy / (last - warmup)


def set_priority(nice: int) -> None:
    """In the child, after setsid: nice the process and, where the kernel groups sessions for fair scheduling
    (sched_autogroup), its session's group too -- a plain nice only orders processes within one session."""
    os.nice(nice)
    with contextlib.suppress(OSError):
        Path("/proc/self/autogroup").write_text(str(nice))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, CPU seconds of this process's finished children) so far."""
    import resource

    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    ours = resource.getrusage(resource.RUSAGE_CHILDREN)
    return busy, ours.ru_utime + ours.ru_stime


def launch(spec: Spec, workdir: Path, world: int, timeout: float, profile: bool = False) -> float:
    """Start `world` rank processes (RANK/WORLD_SIZE/MASTER_* as torchrun would set them, one thread each) and
    wait; returns the CPU cores other processes used meanwhile (0 on a quiet machine, as in CI). With
    spec.baseline == "twin", world 1 starts two independent one-rank processes side by side."""
    job = workdir / f"job-n{world}.json"
    job.write_text(json.dumps({"spec": asdict(spec), "workdir": str(workdir), "profile": profile}))
    busy0, ours0 = cpu_seconds()
    wall0 = time.monotonic()
    procs, port = [], free_port()
    for rank in range(2 if world == 1 and spec.baseline == "twin" else world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        if world == 1:  # a twin: its own one-rank group, port and run dir
            env.update(RANK="0", LOCAL_RANK="0", MASTER_PORT=str(free_port()), GPT2DIST_BENCH_TWIN=str(rank))
        log = open(workdir / f"log-n{world}-rank{rank}.txt", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(job)],
                                       env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=(lambda: set_priority(spec.nice)) if spec.nice else None), log))
    deadline = time.monotonic() + timeout
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{world}-rank run passed {timeout:.0f} s; logs in {workdir}") from None
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
    for rank, (proc, _) in enumerate(procs):
        if proc.returncode != 0:
            tail = (workdir / f"log-n{world}-rank{rank}.txt").read_text()[-3000:]
            raise AssertionError(f"rank {rank} of {world} exited {proc.returncode}:\n{tail}")
    busy1, ours1 = cpu_seconds()
    return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (time.monotonic() - wall0)


# ---------------------------------------------------------------------------------------------- the check

def step_times(run_dir: Path, tokens_per_step: int, warmup: int) -> list[float]:
    """Seconds per optimizer step after `warmup` steps, from metrics.jsonl (log_every=1: one window per step)."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec.get("tokens_per_s") and rec["step"] > warmup:
            out.append(tokens_per_step / rec["tokens_per_s"])
    return out


@dataclass
class Row:
    stage: int
    one_rank_s: float
    measured_s: float
    predicted_s: float
    comm_s: float  # the model's communication per step (all of it is exposed on CPU)
    optimizer_s: float  # measured one-rank DeepSpeedEngine.step (ZeRO >= 1: the model divides it by the ranks)
    spread_1: tuple[float, float]  # quartiles of the one-rank steps
    spread_2: tuple[float, float]
    foreign: tuple[float, float]  # CPU cores other processes used during the 1-rank and the 2-rank launch
    profiled_comm_s: float | None = None  # --profile: rank 0's seconds inside collectives per 2-rank step
    phases: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None  # (forward, backward,
    #   step) medians of the one-rank and of the two-rank trainings, rank 0

    @property
    def ratio(self) -> float:
        return self.predicted_s / self.measured_s


def predict(cfg_file: Path, report: dict[str, Any], one_rank_s: float, world: int, optimizer_s: float = 0.0):
    """The cost model's step on `world` ranks of one node, from the measured one-rank step (of which
    `optimizer_s` is its optimizer step) and bench-comm's curves."""
    from gpt2dist.config import load_config
    from gpt2dist.planning import costmodel
    from gpt2dist.planning.preflight import model_facts
    from gpt2dist.planning.scaling import control_allreduces, workload, zero_settings

    cfg = load_config(cfg_file)
    facts, _ = model_facts(cfg)  # vocabulary from the run's own tokenizer
    curves, ranks, spans = costmodel.curves_from_report(report)
    links = costmodel.Links(intra_busbw=1.0, inter_busbw=1.0, curves=curves, curve_ranks=ranks,
                            curve_spans_nodes=spans, source="bench-comm")
    w = workload(cfg, facts, micro=cfg.train.micro_batch_size, accum=1)
    z = zero_settings(cfg)
    return costmodel.estimate_step(w, z, world, world, links, compute_s=one_rank_s - optimizer_s,
                                   optimizer_s=optimizer_s, overlap=0.0,
                                   control_allreduces=control_allreduces(cfg, z.stage))


def validate(spec: Spec, workdir: Path, timeout: float = 600,
             profile: bool = False) -> tuple[list[Row], dict[str, Any]]:
    """Run both world sizes and compare; returns the rows and bench-comm's report."""
    import yaml

    from gpt2dist.demo_corpus import write_demo_corpus

    corpus, _ = write_demo_corpus(workdir / "corpus", train_stories=spec.stories, val_stories=5, seed=spec.seed)
    twins = [f"-t{k}" for k in range(2 if spec.baseline == "twin" else 1)]
    for world, names in ((1, twins), (2, [""])):
        for stage in spec.stages:
            for name in names:
                cfg = run_config(spec, corpus, workdir / f"run-n{world}-s{stage}{name}", stage)
                (workdir / f"n{world}-s{stage}{name}.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    foreign = tuple(launch(spec, workdir, world, timeout, profile) for world in (1, 2))
    report = json.loads((workdir / "comm.json").read_text())
    rows = []
    tokens = spec.micro * spec.block_size
    for stage in spec.stages:
        one = [t for name in twins for t in step_times(workdir / f"run-n1-s{stage}{name}", tokens, spec.warmup)]
        two = step_times(workdir / f"run-n2-s{stage}", 2 * tokens, spec.warmup)
        opt = statistics.median([t for name in twins for t in optimizer_steps(workdir / f"run-n1-s{stage}{name}",
                                                                                 spec.warmup)])
        est = predict(workdir / f"n2-s{stage}.yaml", report, statistics.median(one), 2, opt)
        phases = tuple(tuple(statistics.median(optimizer_steps(workdir / run, spec.warmup, call))
                             for call in ("forward_loss", "backward", "step"))
                       for run in (f"run-n1-s{stage}{twins[0]}", f"run-n2-s{stage}"))
        rows.append(Row(stage, statistics.median(one), statistics.median(two), est.step_s, est.comm_s, opt,
                        _quartiles(one), _quartiles(two), foreign,
                        profiled_comm(workdir / f"run-n2-s{stage}", spec.warmup), phases))
    return rows, report


def optimizer_steps(run_dir: Path, warmup: int, call: str = "step") -> list[float]:
    return json.loads((run_dir / "engine-calls-rank0.json").read_text())[call][warmup:]


def _quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def render(spec: Spec, rows: list[Row], report: dict[str, Any]) -> str:
    from gpt2dist.planning.costmodel import BUS_FACTORS

    ar = {r["bytes"]: r["busbw_GBps"] for r in report["results"]["all_reduce"]}
    big = max(ar)
    out = [f"model: {spec.n_layer} layers x {spec.n_embd} wide, micro {spec.micro} x block {spec.block_size}, fp32, "
           f"baseline {spec.baseline}, " + (f"nice {spec.nice}, " if spec.nice else "") +
           f"{spec.steps} steps (median after {spec.warmup}); 1 thread per rank; other processes used "
           f"{rows[0].foreign[0]:.2f} / {rows[0].foreign[1]:.2f} cores during the 1- / 2-rank runs",
           f"bench-comm ({report['backend']}, {report['world_size']} ranks): all-reduce busbw {ar[big]:.2f} GB/s at "
           f"{big / 2**20:.0f} MiB; factor 2(n-1)/n = {BUS_FACTORS['all_reduce'](2):.2f}",
           f"{'ZeRO':<5}{'1 rank ms':>11}{'(q1-q3)':>15}{'2 ranks ms':>12}{'(q1-q3)':>15}{'predicted':>11}"
           f"{'optimizer':>10}{'model comm':>12}{'profiled':>10}{'pred/meas':>11}"]
    for r in rows:
        prof = f"{r.profiled_comm_s * 1e3:.1f}" if r.profiled_comm_s is not None else "-"
        out.append(f"{r.stage:<5}{r.one_rank_s * 1e3:>11.1f}{_q(r.spread_1):>15}{r.measured_s * 1e3:>12.1f}"
                   f"{_q(r.spread_2):>15}{r.predicted_s * 1e3:>11.1f}{r.optimizer_s * 1e3:>10.1f}"
                   f"{r.comm_s * 1e3:>12.1f}{prof:>10}"
                   f"{r.ratio:>10.2f}x")
    out.append("engine calls, ms (forward / backward / step, medians): "
               + "; ".join(f"ZeRO-{r.stage} 1 rank {' / '.join(f'{x * 1e3:.0f}' for x in r.phases[0])}, 2 ranks "
                           f"{' / '.join(f'{x * 1e3:.0f}' for x in r.phases[1])}" for r in rows if r.phases))
    return "\n".join(out)


def _q(q: tuple[float, float]) -> str:
    return f"({q[0] * 1e3:.0f}-{q[1] * 1e3:.0f})"


# ---------------------------------------------------------------------------------------------- published runs

@dataclass(frozen=True)
class Reference:
    """A published multi-GPU GPT-2 run: what ran and the step time it reported."""

    name: str
    gpu: str
    n_gpus: int
    n_layer: int
    n_embd: int
    vocab: int
    micro: int
    tokens_per_step: int  # all GPUs
    zero: dict  # costmodel.Zero fields
    measured_step_s: float
    source: str
    one_gpu_step_s: float | None = None  # a published one-GPU step of the same micro batch and accumulation
    untied_head: bool = False
    block_size: int = 1024


# Published figures, quoted where they stand. llm.c: bf16, ZeRO-1 by reduce-scatter + all-gather (-z 1);
# nanoGPT: bf16 DDP (25 MB buckets, all-reduce on the last micro batch only); rasbt: bf16 weights, DDP, no
# accumulation, a 163M model (GPT-2 124M dims with an untied output layer, vocab 50,304).
REFERENCES = [
    Reference("llm.c GPT-2 124M", "A100", 8, 12, 768, 50257, 64, 524_288, {"stage": 1, "implementation": "paper"},
              0.300, "karpathy/llm.c scripts/run_gpt2_124M.sh (f1e2ace): '8X A100 80GB SXM ... ~300ms/iter'"),
    Reference("llm.c GPT-2 350M", "A100", 8, 24, 1024, 50257, 64, 524_288, {"stage": 1, "implementation": "paper"},
              0.820, "karpathy/llm.c scripts/run_gpt2_350M.sh: '8X A100 80GB SXM ... ~820ms/iter'"),
    Reference("llm.c GPT-2 774M", "A100", 8, 36, 1280, 50257, 32, 524_288, {"stage": 1, "implementation": "paper"},
              1.7, "karpathy/llm.c scripts/run_gpt2_774M.sh: '8X A100 80GB SXM ... ~1.7s/iter'"),
    Reference("llm.c GPT-2 1558M", "H100", 8, 48, 1600, 50257, 16, 1_048_576, {"stage": 1, "implementation": "paper"},
              2.80, "karpathy/llm.c scripts/run_gpt2_1558M.sh: '8X H100 80GB SXM ... 2.80s/iter'"),
    Reference("nanoGPT GPT-2 124M", "A100", 8, 12, 768, 50257, 12, 491_520,
              {"stage": 0, "implementation": "ddp", "reduce_bucket_size": 25 * 2**20 // 2}, 4 * 86400 / 600_000,
              "karpathy/nanoGPT README (3adf61e): 600k iters of 491,520 tokens (config/train_gpt2.py) 'in about 4 "
              "days' on 8XA100 40GB; one GPU: README 'efficiency notes', 135 ms/iter of 8 x 1024 (batch_size = 8 "
              "in bench.py and train.py at that commit), scaled to the config's 12 x 1024, x 5 micro batches",
              one_gpu_step_s=0.135 * 12 / 8 * 5),
    Reference("rasbt LLMs-from-scratch 4x", "A100", 4, 12, 768, 50304, 32, 4 * 32 * 1024,
              {"stage": 0, "implementation": "ddp", "reduce_bucket_size": 25 * 2**20 // 2}, 4 * 32 * 1024 / 419_259,
              "rasbt/LLMs-from-scratch ch05/10_llm-training-speed/README.md: 419,259 tok/s on 4x A100 (DDP), "
              "142,156 on one", one_gpu_step_s=32 * 1024 / 142_156, untied_head=True),
]


def reference_rows(mfu: float | None = None) -> list[tuple[Reference, Any, float]]:
    """(reference, the model's StepEstimate, the MFU used): compute from the published one-GPU step where there
    is one (a pure scaling prediction), else from the MFU (default: costmodel.default_mfu's typical figure for
    the GPU kind and size); default links."""
    from gpt2dist.model import flops_per_token
    from gpt2dist.observe.metrics import peak_flops
    from gpt2dist.planning import costmodel, hardware

    rows = []
    for ref in REFERENCES:
        tensors = costmodel.gpt2_tensors(ref.n_layer, ref.n_embd, ref.vocab, ref.block_size)
        if ref.untied_head:
            tensors += (("lm_head", ref.vocab * ref.n_embd, 2),)
        non_embedding = sum(n for _, n, _ in tensors) - ref.block_size * ref.n_embd
        fpt = flops_per_token(non_embedding, ref.n_layer, ref.n_embd, ref.block_size)
        accum = ref.tokens_per_step // (ref.micro * ref.block_size * ref.n_gpus)
        w = costmodel.Workload(tensors, fpt, ref.micro, ref.block_size, accum, 2)
        system = hardware.GPUS[ref.gpu]
        links = costmodel.Links(system.intra_busbw, system.inter_busbw(8), system.intra_link, pcie_bw=system.pcie_bw,
                                source=system.source)
        peak = peak_flops(ref.gpu, "bf16")
        used = mfu or costmodel.default_mfu(ref.gpu, sum(n for _, n, _ in tensors), ref.block_size)[1]
        compute = costmodel.compute_time(fpt, w.tokens_per_gpu, peak, used)
        if ref.one_gpu_step_s is not None and mfu is None:  # a published one-GPU figure: its MFU, not ours
            compute, used = ref.one_gpu_step_s, fpt * w.tokens_per_gpu / ref.one_gpu_step_s / peak
        # the optimizer step is inside a published one-GPU step already; otherwise at the GPU's memory bandwidth
        opt = 0.0 if ref.one_gpu_step_s is not None and mfu is None else costmodel.optimizer_time(w.n_params,
                                                                                                   system.hbm_bw)
        est = costmodel.estimate_step(w, costmodel.Zero(**ref.zero), ref.n_gpus, 8, links, compute_s=compute,
                                      optimizer_s=opt, peak=peak)
        rows.append((ref, est, used))
    return rows


def implied_mfu(ref: Reference, est) -> float:
    """The MFU at which the model would match the published step exactly (its communication and optimizer kept)."""
    left = ref.measured_step_s - (est.step_s - est.compute_s)
    return est.tokens_per_gpu * est.flops_per_token / (left * est.peak)


def render_references(mfu: float | None = None) -> str:
    out = [f"{'run':<28}{'GPUs':>8}{'tokens/step':>13}{'published':>11}{'predicted':>11}{'ratio':>7}{'MFU used':>10}"
           f"{'implied':>9}{'comm':>9}  source"]
    for ref, est, used in reference_rows(mfu):
        out.append(f"{ref.name:<28}{f'{ref.n_gpus}x{ref.gpu}':>8}{ref.tokens_per_step:>13,}"
                   f"{ref.measured_step_s:>10.3f}s{est.step_s:>10.3f}s{est.step_s / ref.measured_step_s:>6.2f}x"
                   f"{used:>10.0%}{implied_mfu(ref, est):>9.0%}{est.exposed_comm_s * 1e3:>7.1f}ms  {ref.source}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- entry

def parse_args(argv: list[str] | None = None) -> tuple[Spec, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--references", action="store_true", help="print the published-run table only")
    p.add_argument("--mfu", type=float, default=None, help="MFU for the reference predictions (default: the "
                   "model's default, or a published one-GPU step where there is one)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--steps", type=int, default=Spec.steps)
    p.add_argument("--warmup", type=int, default=Spec.warmup)
    p.add_argument("--n-layer", type=int, default=Spec.n_layer)
    p.add_argument("--n-embd", type=int, default=Spec.n_embd)
    p.add_argument("--micro", type=int, default=Spec.micro)
    p.add_argument("--block-size", type=int, default=Spec.block_size)
    p.add_argument("--stages", default="0,2,3")
    p.add_argument("--baseline", choices=["single", "twin"], default=Spec.baseline,
                   help="one-rank baseline: one training alone, or two independent ones side by side (same core "
                        "and memory sharing as the two-rank job, no communication)")
    p.add_argument("--nice", type=int, default=0, help="priority of the rank processes, e.g. -15 (root) on a machine "
                   "shared with other jobs: they then barely preempt the ranks (reported as 'other processes used')")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--profile", action="store_true", help="also time every collective of rank 0 (diagnostics)")
    p.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (logs, runs)")
    p.add_argument("--band", type=float, default=None, help="exit 1 unless every predicted/measured ratio is within "
                   "1 +- BAND (e.g. 0.25; the timing check the test suite leaves to this script)")
    args = p.parse_args(argv)
    if args.steps - args.warmup < 4:
        p.error("--steps must exceed --warmup by at least 4")
    spec = Spec(n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64), micro=args.micro,
                block_size=args.block_size, steps=args.steps, warmup=args.warmup,
                stages=[int(s) for s in args.stages.split(",")], baseline=args.baseline, nice=args.nice)
    return spec, args


def main(argv: list[str] | None = None) -> list[list[Row]]:
    spec, args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return []
    print(render_references(args.mfu), flush=True)
    if args.references:
        return []
    results = []
    for i in range(args.repeats):
        if args.keep is not None:
            workdir = args.keep / f"repeat-{i}"
            workdir.mkdir(parents=True, exist_ok=True)
            rows, report = validate(spec, workdir, profile=args.profile)
        else:
            with tempfile.TemporaryDirectory(prefix="gpt2dist-scaling-") as tmp:
                rows, report = validate(spec, Path(tmp), profile=args.profile)
        print(render(spec, rows, report), flush=True)
        results.append(rows)
    if args.json is not None:
        args.json.write_text(json.dumps([[asdict(r) | {"ratio": r.ratio} for r in rows] for rows in results],
                                        indent=1))
    if args.band is not None:
        ratios = [r.ratio for rows in results for r in rows]
        inside = sum(abs(x - 1) <= args.band for x in ratios)
        print(f"predicted/measured within 1 +- {args.band}: {inside} of {len(ratios)}", flush=True)
        if inside < len(ratios):
            sys.exit(1)
    return results


if __name__ == "__main__":
    main()
