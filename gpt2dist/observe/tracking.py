"""Weights & Biases for `logging.wandb: true`: every metrics.jsonl record (tags grouped as TensorBoard's:
train/loss, eval/loss, perf/tokens_per_s, ...) and the resolved config, from rank 0 only.

A restarted run (a resume, a Slurm requeue) continues the same W&B run: its id is kept in RUN_DIR/wandb_id,
and `wandb.init(id=..., resume="allow")` reopens it. A resumed run re-logs the steps after its checkpoint;
the x axis is our `step` (HF's WandbCallback does the same with define_metric), not wandb's own monotonic
counter, so those records are kept rather than dropped. wandb is imported here only, and only when the key is on
(`pip install "gpt2dist[wandb]"`); WANDB_MODE=offline / WANDB_PROJECT / WANDB_ENTITY work as wandb documents.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gpt2dist import atomic
from gpt2dist.config import RunConfig, to_dict
from gpt2dist.errors import UserError
from gpt2dist.observe.metrics import metric_tag
from gpt2dist.run.layout import WANDB_ID_FILE


class WandbSink:
    """A `MetricsLogger` sink: one wandb.log per record, numbers only, under grouped tags."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, record: dict[str, Any]) -> None:
        data = {metric_tag(k): v for k, v in record.items()
                if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if data:
            self.run.log({"step": record["step"], **data})

    def close(self) -> None:
        self.run.finish()


def open_wandb(cfg: RunConfig, run_dir: Path) -> WandbSink:
    """Start (or, with RUN_DIR/wandb_id, resume) the run's W&B run; files go under RUN_DIR/wandb/."""
    try:
        import wandb
    except ImportError:
        raise UserError('logging.wandb=true needs wandb: pip install "gpt2dist[wandb]" (or pip install wandb), or '
                        "set logging.wandb=false") from None
    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else None
    if not run_id:
        from wandb.sdk.lib.runid import generate_id

        run_id = generate_id()
        atomic.write_text(id_file, run_id + "\n")  # before init: a crash inside it still resumes the same id
    try:
        run = wandb.init(id=run_id, resume="allow", dir=str(run_dir), name=Path(cfg.run_dir).name,
                         project=cfg.logging.wandb_project or os.environ.get("WANDB_PROJECT") or "gpt2dist",
                         config=to_dict(cfg))
    except Exception as exc:  # no API key, no network: one line, before the first step
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"logging.wandb: wandb.init failed ({first}): run `wandb login`, set WANDB_MODE=offline "
                        "(sync later with `wandb sync`), or set logging.wandb=false") from None
    run.define_metric("step")
    run.define_metric("*", step_metric="step")
    return WandbSink(run)
