"""The matmul ceiling of this GPU: the best bf16 TFLOP/s torch reaches on large square matmuls and on GPT-2 124M's
own training shapes, beside the datasheet peak that MFU divides by (gpt2dist/observe/metrics.py).

MFU against the datasheet says how far a run is from the marketing number; against this ceiling it says how much
of what the chip really delivers under this torch/cuBLAS the run uses (an H100's dense bf16 matmuls typically
reach 65-80% of the datasheet figure).

    python bench/gpu/matmul_ceiling.py [--json OUT.json] [--seconds 1.0]

On CPU (no CUDA) it measures small fp32 shapes instead, so the script itself is checked anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def shapes(cuda: bool) -> list[tuple[str, int, int, int]]:
    """(label, m, k, n): squares, and GPT-2 124M at micro batch 16 x T 1024 (16,384 rows)."""
    if not cuda:
        return [("square 256", 256, 256, 256), ("square 512", 512, 512, 512)]
    rows = 16 * 1024
    return [("square 4096", 4096, 4096, 4096), ("square 8192", 8192, 8192, 8192),
            ("qkv 16384x768x2304", rows, 768, 2304), ("mlp up 16384x768x3072", rows, 768, 3072),
            ("mlp down 16384x3072x768", rows, 3072, 768), ("lm_head 16384x768x50257", rows, 768, 50257)]


def measure(m: int, k: int, n: int, dtype, device: str, seconds: float) -> float:
    """Best FLOP/s of a @ b over repeated timed batches of calls (after a warm-up) for about `seconds`."""
    import torch

    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    best, deadline, reps = 0.0, time.perf_counter() + seconds, 10
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t0))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=1.0, help="per shape")
    args = parser.parse_args(argv)
    import torch

    from gpt2dist.observe.metrics import peak_flops

    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_flops(name, "bf16") if cuda else None
    rows = []
    for label, m, k, n in shapes(cuda):
        flops = measure(m, k, n, dtype, device, args.seconds)
        rows.append({"shape": label, "m": m, "k": k, "n": n, "tflops": flops / 1e12,
                     "of_peak": flops / peak if peak else None})
        shown = f"{flops / peak:.0%} of the datasheet's {peak / 1e12:.0f}" if peak else "no datasheet peak"
        print(f"{label:<28} {flops / 1e12:8.1f} TFLOP/s  ({shown})", flush=True)
    ceiling = max(r["tflops"] for r in rows) * 1e12
    result = {"device": name, "dtype": str(dtype).removeprefix("torch."), "torch": torch.__version__,
              "peak_tflops": peak / 1e12 if peak else None, "ceiling_tflops": ceiling / 1e12,
              "ceiling_of_peak": ceiling / peak if peak else None, "shapes": rows}
    print(f"ceiling {ceiling / 1e12:.1f} TFLOP/s" + (f" = {ceiling / peak:.0%} of the datasheet peak" if peak else ""))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
