"""Throughput, MFU and where numbers go: metrics.jsonl (appended across resumes), TensorBoard, a progress bar.

Only the writer rank (rank 0) creates a `MetricsLogger` that writes; other ranks get a silent one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from gpt2dist import atomic
from gpt2dist.planning.hardware import GPUS, gpu_kind
from gpt2dist.run.layout import METRICS_FILE

# How TensorBoard and W&B group the metrics.jsonl keys (the file keeps its keys): train/, eval/ and perf/ panels.
TAGS: dict[str, str] = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
                        "tokens": "train/tokens", "epoch": "train/epoch", "skipped": "train/skipped",
                        "val_loss": "eval/loss", "val_ppl": "eval/ppl",
                        "tokens_per_s": "perf/tokens_per_s", "mfu": "perf/mfu", "eta_s": "perf/eta_s"}


def metric_tag(key: str) -> str:
    """The grouped tag of a metrics.jsonl key: `loss` -> train/loss, `val_loss` -> eval/loss, new keys by prefix."""
    return TAGS.get(key) or (f"eval/{key[4:]}" if key.startswith("val_") else f"train/{key}")


def peak_flops(device_name: str | None, precision: str, *, tf32: bool | None = None) -> float | None:
    """Peak FLOP/s of one device for a run in `precision` (fp32 | bf16 | fp16 | tf32), or None when unknown.

    precision="fp32" means the TF32 peak when `tf32` is true; tf32=None asks torch whether fp32 matmuls may use
    TF32 right now (torch.get_float32_matmul_precision() != "highest").
    """
    if not device_name:
        return None
    if precision == "fp32":
        if tf32 is None:
            import torch

            tf32 = torch.get_float32_matmul_precision() != "highest" or torch.backends.cuda.matmul.allow_tf32
        precision = "tf32" if tf32 else "fp32"
    kind = gpu_kind(device_name)
    return GPUS[kind].peak.get(precision) if kind else None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None, n_devices: int = 1) -> float | None:
    """Model FLOPs utilization: achieved model FLOP/s (tokens/s x `model.flops_per_token`, PaLM's 6N + 12LHQT,
    recomputation not counted) over the peak of all devices; None when the peak is unknown (CPU)."""
    if not peak:
        return None
    return tokens_per_s * flops_per_token / (peak * n_devices)


class Throughput:
    """Tokens/s over the window since the last report (so a slow start does not skew every later figure)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.tokens = 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def report(self) -> float:
        now = time.perf_counter()
        rate = self.tokens / max(now - self.start, 1e-9)
        self.start, self.tokens = now, 0
        return rate


class MetricsLogger:
    """JSONL + TensorBoard + progress for the writer rank; a no-op for the others."""

    def __init__(self, run_dir: Path, *, enabled: bool, total_steps: int, start_step: int,
                 tensorboard: bool, progress: str, sinks: list | tuple = ()) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.sinks = list(sinks)  # more receivers of every record, e.g. tracking.WandbSink
        self._jsonl = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self._jsonl = atomic.open_append(run_dir / METRICS_FILE)  # closed in close(); never through a link
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional; the JSONL has every number
                self._tb = None
        use_bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (JSON-safe: NaN/inf become null, and the record says `"nonfinite": true`) and mirror
        its numbers to TensorBoard."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        if any(clean[k] is None and record[k] is not None for k in record):
            clean["nonfinite"] = True
        clean["time"] = round(time.time(), 3)
        self._jsonl.write(json.dumps(clean) + "\n")
        self._jsonl.flush()
        step = record["step"]
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and value is not None:
                    self._tb.add_scalar(metric_tag(key), value, step)
        for sink in self.sinks:
            sink.log(clean)
        self.print(format_record(record), step=step, record=record)

    def print(self, line: str, *, step: int | None = None, record: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            if step is not None:
                self._bar.update(step - self._bar.n)
            if record is not None and "loss" in record:
                self._bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record.get('tokens_per_s', 0):.0f}")
            if record is None or "val_loss" in record:
                self._bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def format_record(record: dict[str, Any]) -> str:
    """One human line per record, e.g. `step 120/400 | loss 2.3456 | lr 5.1e-04 | 41k tok/s | eta 1m20s`."""
    parts = [f"step {record['step']}"]
    for key, fmt in (("loss", "loss {:.4f}"), ("val_loss", "val_loss {:.4f}"), ("val_ppl", "val_ppl {:.2f}"),
                     ("lr", "lr {:.2e}"), ("grad_norm", "gnorm {:.2f}"), ("tokens_per_s", "{:,.0f} tok/s"),
                     ("mfu", "mfu {:.1%}"), ("epoch", "epoch {}"), ("eta_s", "eta {}")):
        value = record.get(key)
        if value is None:
            continue
        parts.append(fmt.format(_duration(value) if key == "eta_s" else value))
    if record.get("nonfinite") and record.get("skipped"):
        parts.append("non-finite: step skipped")
    return " | ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
