"""`gpt2dist bench-comm`: bus bandwidth of the real process group, nccl-tests style, for the doctor's cost model.

A per-rank entry point like `python -m gpt2dist.train`, started by any launcher the training uses:

    gpt2dist launch run.yaml --nproc 8 --module gpt2dist.commbench     # -> ./bench-comm.json
    torchrun --nproc_per_node 8 -m gpt2dist.commbench run.yaml -o comm.json
    srun python -m gpt2dist.commbench run.yaml -o comm.json             # one task per rank, several nodes
    gpt2dist doctor run.yaml --nodes 4 --gpus-per-node 8 --comm-json comm.json

It times all-reduce, all-gather and reduce-scatter over a sweep of sizes plus the sizes the run sends (the
gradient buffer, distributed.reduce_bucket_size and allgather_bucket_size in the training dtype), capped on
CPU. Conventions follow nccl-tests (https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md):
the size S is the whole array (all-reduce: the buffer; all-gather: the gathered output; reduce-scatter: the
input), algbw = S / t, busbw = algbw x 2(n-1)/n (all-reduce) or (n-1)/n (all-gather, reduce-scatter), so
busbw is comparable across rank counts and with the link's hardware bandwidth. Each size gets warm-up
calls, then timed calls; a call's time is the slowest rank's, and the reported time is the median call.
Rank 0 writes the JSON (atomically) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import socket
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2dist import atomic
from gpt2dist.errors import UserError
from gpt2dist.units import parse_size

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter")
FORMAT = "gpt2dist-bench-comm/1"
CPU_MAX_BYTES = 64 * 2**20  # gloo over loopback: bigger buffers only take longer, the bandwidth has settled
GPU_MAX_BYTES = 2**30
MIN_BYTES = 4096
DEFAULT_OUTPUT = "bench-comm.json"


def bus_factor(kind: str, n: int) -> float:
    """busbw / algbw for `kind` on n ranks (nccl-tests PERFORMANCE.md, 'Summary')."""
    if kind == "all_reduce":
        return 2 * (n - 1) / n
    if kind in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    raise ValueError(f"unknown collective {kind!r}")


def sweep_sizes(max_bytes: int, run_sizes: list[int], multiple: int) -> list[int]:
    """Powers of 4 from 4 KiB to max_bytes, plus the run's own sizes (capped), each a multiple of `multiple`
    (ranks x element size, so every rank's share is whole elements); sorted, unique."""
    sizes, s = [], MIN_BYTES
    while s <= max_bytes:
        sizes.append(s)
        s *= 4
    sizes += [min(r, max_bytes) for r in run_sizes if r > 0]
    rounded = {max(multiple, (s // multiple) * multiple) for s in sizes}
    return sorted(rounded)


@dataclass
class Measurement:
    kind: str
    nbytes: int
    times: list[float]  # per timed call, the slowest rank's seconds
    n: int

    @property
    def time_s(self) -> float:
        return statistics.median(self.times)

    @property
    def algbw(self) -> float:
        return self.nbytes / self.time_s

    @property
    def busbw(self) -> float:
        return self.algbw * bus_factor(self.kind, self.n)

    def record(self) -> dict[str, Any]:
        return {"bytes": self.nbytes, "time_s": self.time_s, "algbw_GBps": self.algbw / 1e9,
                "busbw_GBps": self.busbw / 1e9, "iters": len(self.times),
                "time_min_s": min(self.times), "time_max_s": max(self.times)}


def run_sizes_for(cfg, elem_bytes: int, *, with_model: bool = True) -> dict[str, int]:
    """Bytes the run sends per collective: its whole gradient buffer (ZeRO-0's one all-reduce at GPT-2 sizes)
    and the configured buckets, all in the training dtype. The parameter count needs no model build."""
    from gpt2dist.planning import memory
    from gpt2dist.planning.preflight import model_facts

    out = {"reduce_bucket": cfg.distributed.reduce_bucket_size * elem_bytes,
           "allgather_bucket": cfg.distributed.allgather_bucket_size * elem_bytes}
    if not with_model:
        return out
    try:
        facts, _ = model_facts(cfg)
    except UserError:
        return out
    n_params = memory.gpt2_param_count(facts.n_layer, facts.n_embd, facts.vocab_size, facts.n_positions)
    out["gradients"] = n_params * elem_bytes
    out["reduce_bucket"] = min(out["reduce_bucket"], out["gradients"])
    out["allgather_bucket"] = min(out["allgather_bucket"], out["gradients"])
    return out


def _dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def measure(kind: str, nbytes: int, dtype, device, n: int, *, warmup: int, iters: int, budget_s: float) -> Measurement:
    """Time one collective at one size on every rank; all ranks return the same Measurement."""
    import torch
    import torch.distributed as dist

    elem = torch.tensor([], dtype=dtype).element_size()
    count = nbytes // elem
    if kind == "all_reduce":
        buf = torch.ones(count, dtype=dtype, device=device)

        def op() -> None:
            dist.all_reduce(buf)
    elif kind == "all_gather":  # the calls DeepSpeed makes (torch 2.13 deprecates their names: warning muted)
        out, inp = torch.empty(count, dtype=dtype, device=device), torch.ones(count // n, dtype=dtype, device=device)

        def op() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                dist.all_gather_into_tensor(out, inp)
    else:
        out, inp = torch.empty(count // n, dtype=dtype, device=device), torch.ones(count, dtype=dtype, device=device)

        def op() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                dist.reduce_scatter_tensor(out, inp)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed() -> float:
        sync()
        dist.barrier()
        start = time.perf_counter()
        op()
        sync()
        return time.perf_counter() - start

    for _ in range(warmup):
        timed()
    # As many calls as fit the time budget (the slowest rank's first timed call decides, for all ranks alike).
    first = _slowest([timed()], device)[0]
    calls = max(3, min(iters, int(budget_s / max(first, 1e-9))))
    times = [first] + _slowest([timed() for _ in range(calls - 1)], device)
    return Measurement(kind, count * elem, times, n)


def _slowest(times: list[float], device) -> list[float]:
    """Element-wise max over ranks: a collective is done when its slowest rank is."""
    import torch
    import torch.distributed as dist

    if not times:
        return []
    t = torch.tensor(times, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.cpu().tolist()


def topology(world_size: int) -> tuple[int, int, list[str]]:
    """(nodes, ranks on rank 0's node, hostnames by rank): a run that spans nodes measures the inter-node link."""
    import torch.distributed as dist

    hosts: list[str] = [""] * world_size
    dist.all_gather_object(hosts, socket.gethostname())
    return len(set(hosts)), hosts.count(hosts[0]), hosts


def bench(cfg, output: Path, *, max_bytes: int | None, warmup: int, iters: int, budget_s: float,
          with_model: bool = True) -> dict[str, Any] | None:
    """Join the process group, measure, leave; rank 0 writes the JSON and returns the report (others None)."""
    from gpt2dist import dist as gdist
    from gpt2dist.engines.device import resolve_device

    info = gdist.discover()
    if info.world_size < 2:
        raise UserError("bench-comm measures collectives between ranks and this launch has 1: start it with "
                        "gpt2dist launch CONFIG --nproc 2 --module gpt2dist.commbench (or torchrun/srun/mpirun)")
    device = resolve_device(cfg.train.device, info.local_rank)
    gdist.init_process_group(info, device.type, cfg.distributed.timeout_minutes, deepspeed=False)
    try:
        report = measure_all(cfg, device, max_bytes=max_bytes, warmup=warmup, iters=iters, budget_s=budget_s,
                             with_model=with_model)
        if info.is_writer:
            output.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(output, json.dumps(report, indent=1) + "\n")
            print(render(report), flush=True)
            print(f"wrote {output} (use it: gpt2dist doctor CONFIG --comm-json {output})", flush=True)
    except BaseException:
        gdist.shutdown(clean=False)
        raise
    gdist.shutdown()
    return report if info.is_writer else None


def measure_all(cfg, device, *, max_bytes: int | None, warmup: int, iters: int, budget_s: float,
                with_model: bool = True, collectives: tuple[str, ...] = COLLECTIVES) -> dict[str, Any]:
    """Every collective at every size over the initialized default group; the same report on every rank."""
    import torch
    import torch.distributed as dist

    precision = cfg.train.precision
    if precision == "fp16" and device.type != "cuda":
        precision = "bf16"  # training refuses fp16 on CPU: measure what would run
    dtype = _dtype(precision)
    elem = torch.tensor([], dtype=dtype).element_size()
    n = dist.get_world_size()
    nodes, per_node, hosts = topology(n)
    cap = max_bytes or (GPU_MAX_BYTES if device.type == "cuda" else CPU_MAX_BYTES)
    run = run_sizes_for(cfg, elem, with_model=with_model)
    sizes = sweep_sizes(cap, list(run.values()), n * elem)
    results = {kind: [measure(kind, s, dtype, device, n, warmup=warmup, iters=iters, budget_s=budget_s).record()
                      for s in sizes] for kind in collectives}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU {platform.machine()}"
    return {"format": FORMAT, "backend": dist.get_backend(), "device": device_name, "world_size": n,
            "nodes": nodes, "ranks_per_node": per_node, "hosts": sorted(set(hosts)), "dtype": str(dtype).split(".")[-1],
            "elem_bytes": elem, "run_bytes": run, "capped_at": cap, "warmup": warmup, "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}


def render(report: dict[str, Any]) -> str:
    where = (f"{report['world_size']} ranks on {report['nodes']} node{'s' if report['nodes'] > 1 else ''} "
             f"({report['ranks_per_node']} on rank 0's)")
    out = [f"bench-comm: {report['backend']} on {report['device']}, {where}, {report['dtype']}; "
           f"median of timed calls after {report['warmup']} warm-up; busbw per nccl-tests",
           f"  {'collective':<15}{'size':>12}{'time':>12}{'algbw':>12}{'busbw':>12}{'calls':>7}"]
    for kind, rows in report["results"].items():
        for r in rows:
            out.append(f"  {kind:<15}{_fmt_size(r['bytes']):>12}{r['time_s'] * 1e6:>10.1f}us"
                       f"{r['algbw_GBps']:>8.3f}GB/s{r['busbw_GBps']:>8.3f}GB/s{r['iters']:>7}")
    return "\n".join(out)


def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def load_report(path: str | Path) -> dict[str, Any]:
    """bench-comm's JSON, checked enough to use: one-line errors for a missing or foreign file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--comm-json {path}: no such file; write it with gpt2dist bench-comm "
                        "(gpt2dist launch CONFIG --nproc N --module gpt2dist.commbench)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"--comm-json {path} is not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("results"), dict):
        raise UserError(f"--comm-json {path} is not a gpt2dist bench-comm report (format {FORMAT})")
    return data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpt2dist bench-comm", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)  # the deepspeed launcher appends --local_rank=N
    if any(item.startswith("-") or "=" not in item for item in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = [*args.overrides, *extra]
    return args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help="YAML run config (buckets, precision, device); "
                        "default: gpt2dist's defaults")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.precision=bf16")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help=f"JSON report (default ./{DEFAULT_OUTPUT})")
    parser.add_argument("--max-bytes", default=None, help="largest size measured, e.g. 256MiB (default 64 MiB on "
                        "CPU, 1 GiB on GPU; the run's buckets are capped to it)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per size (default 3)")
    parser.add_argument("--iters", type=int, default=20, help="most timed calls per size (default 20)")
    parser.add_argument("--budget", type=float, default=0.5, help="seconds of timed calls per size (default 0.5)")


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    from gpt2dist.config import load_config

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.warmup < 0 or args.iters < 3 or args.budget <= 0:
        raise UserError("--warmup must be >= 0, --iters >= 3 and --budget > 0")
    try:
        max_bytes = parse_size(args.max_bytes) if args.max_bytes else None
    except ValueError as exc:
        raise UserError(f"--max-bytes {exc}") from None
    if args.config is None and args.overrides:
        raise UserError("overrides need a config file first: gpt2dist bench-comm run.yaml a.b=value")
    cfg = load_config(args.config, args.overrides) if args.config else _default_config()
    return bench(cfg, Path(args.output), max_bytes=max_bytes, warmup=args.warmup, iters=args.iters,
                 budget_s=args.budget, with_model=args.config is not None)


def _default_config():
    from gpt2dist.config import RunConfig

    return RunConfig()


if __name__ == "__main__":
    from gpt2dist.errors import run_or_exit

    run_or_exit(main)
