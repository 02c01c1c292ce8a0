"""Peak memory and time of GPT-2's loss, full logits vs chunked (gpt2dist/engines/chunked_loss.py), in one run.

One forward + backward of the output layer and the loss (hidden [B, T, 768] -> vocabulary 50,257 -> cross
entropy), the rest of the model left out so the figure is the loss's own: peak memory above what the inputs hold
(CPU: tracemalloc cannot see torch's allocator, so the growth of the process's peak RSS over what it held before
the first step, in a fresh child process per variant; CUDA: torch.cuda.max_memory_allocated) and the median
wall time of a few repeats. Prints each variant and the ratios chunked / full measured in this same invocation.

    python bench/chunked_ce.py                       # CPU: B=4, T=1024, fp32
    python bench/chunked_ce.py                       # CUDA: B=16, bf16 (the GPU kit, bench/gpu/run.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("full", "chunked")


def one(variant: str, batch: int, seq: int, vocab: int, embd: int, dtype: str, chunk: int, repeats: int) -> dict:
    """Run one variant in this process; peak bytes above the inputs and the median seconds."""
    import torch

    from gpt2dist.engines.chunked_loss import chunked_lm_loss
    from gpt2dist.engines.loss import lm_loss

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    hidden = torch.randn(batch, seq, embd, device=device, requires_grad=True)
    weight = (torch.randn(vocab, embd, device=device) * 0.02).requires_grad_()
    targets = torch.randint(0, vocab, (batch, seq), device=device)
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> None:
        with amp:
            if variant == "full":
                loss = lm_loss(hidden @ weight.t(), targets)
            else:
                loss = chunked_lm_loss(hidden, weight, targets, chunk)
        loss.backward()
        hidden.grad = weight.grad = None

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # torch, the inputs: before any step
    step()  # warm-up (allocator, kernels)
    sync()
    base = torch.cuda.memory_allocated() if cuda else rss_base
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    return {"variant": variant, "peak_mib": peak / 2**20, "ms": statistics.median(times) * 1e3,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu", "peak_of": "cuda allocated" if cuda else
            "process max RSS above the inputs"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="micro batch (default 4 on CPU, 16 on CUDA)")
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None, help="default fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--chunk", type=int, default=None, help="tokens per chunk (default: the engines' default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args(argv)
    import torch

    from gpt2dist.engines.chunked_loss import DEFAULT_CHUNK

    cuda = torch.cuda.is_available()
    batch = args.batch or (16 if cuda else 4)
    dtype = args.dtype or ("bf16" if cuda else "fp32")
    chunk = args.chunk or DEFAULT_CHUNK
    shape = (batch, args.seq, args.vocab, args.embd, dtype, chunk, args.repeats)
    if args.variant:  # a child: one variant, its figures as JSON on stdout
        print(json.dumps(one(args.variant, *shape)))
        return 0
    rows = []
    for variant in VARIANTS:
        if cuda:
            rows.append(one(variant, *shape))
            torch.cuda.empty_cache()
        else:  # a fresh process per variant: max RSS only ever grows
            cmd = [sys.executable, __file__, "--variant", variant, "--batch", str(batch), "--seq", str(args.seq),
                   "--vocab", str(args.vocab), "--embd", str(args.embd), "--dtype", dtype, "--chunk", str(chunk),
                   "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ}).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    full, chunked = rows
    summary = (f"B={batch} T={args.seq} V={args.vocab} E={args.embd} {dtype} chunk {chunk} on {full['device']}: "
               f"peak {chunked['peak_mib']:,.0f} / {full['peak_mib']:,.0f} MiB = "
               f"{chunked['peak_mib'] / full['peak_mib']:.2f}x"
               f" ({full['peak_of']}), time {chunked['ms']:.0f} / {full['ms']:.0f} ms = "
               f"{chunked['ms'] / full['ms']:.2f}x")
    for row in rows:
        print(f"{row['variant']:<8} peak {row['peak_mib']:9,.0f} MiB  {row['ms']:8.1f} ms per forward + backward")
    print(summary)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary, "batch": batch, "seq": args.seq,
                                         "vocab": args.vocab, "dtype": dtype, "chunk": chunk}, indent=1))
    return 0


if __name__ == "__main__":
    _root = str(Path(__file__).resolve().parent.parent)
    if _root not in sys.path:
        sys.path.append(_root)
    sys.exit(main())
