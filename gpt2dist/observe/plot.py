"""Turn a run's ``metrics.jsonl`` into one PNG, so a run can be judged at a glance without a notebook.

``metrics.jsonl`` is appended to across resumes, so after a kill and a resume the same step can be logged
twice (the resumed run re-logs the steps after its checkpoint), and the last line may be half-written.
:func:`read_metrics` therefore merges records by step, the last value of each key for a step winning, and
skips lines that do not parse, counting them instead of failing. matplotlib is imported only inside
:func:`plot_run`, so importing this module stays cheap and works on headless nodes without it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from gpt2dist.errors import UserError
from gpt2dist.run.layout import METRICS_FILE

log = logging.getLogger(__name__)


# Keys that make a record worth plotting; a record with only "step" and "time" draws nothing.
PLOTTED_KEYS = ("loss", "val_loss", "lr", "tokens_per_s", "val_ppl")


def _step_of(record: Any) -> int | None:
    """The record's step as an int, or None when the record has no usable step (so it cannot be placed)."""
    if not isinstance(record, dict):
        return None
    step = record.get("step")
    if isinstance(step, bool):
        return None
    if isinstance(step, int):
        return step
    if isinstance(step, float) and step.is_integer():
        return int(step)
    return None


def read_metrics(path: str | os.PathLike) -> tuple[list[dict], int]:
    """Return (records, n_bad_lines).

    Records are merged by step and sorted by step: for each key, the value from the LAST line holding that
    key for that step wins, because a resumed run re-logs steps after its checkpoint and its values are
    the ones that led to the current state. Train and eval lines for the same step end up in one dict.
    Lines that do not parse as a JSON object with an integer "step" (e.g. the half-written last line of a
    killed run) are skipped and counted in n_bad_lines; blank lines are ignored and not counted.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found: check the path") from None
    except OSError as exc:
        raise UserError(
            f"{path}: cannot read ({exc.strerror or exc}): check the path and permissions"
        ) from None

    by_step: dict[int, dict] = {}
    n_bad = 0
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)  # bytes in: bad UTF-8 raises UnicodeDecodeError, a ValueError
        except (ValueError, RecursionError):
            n_bad += 1
            continue
        step = _step_of(record)
        if step is None:
            n_bad += 1
            continue
        merged = by_step.setdefault(step, {})
        merged.update(record)
        merged["step"] = step
    return [by_step[s] for s in sorted(by_step)], n_bad


def _series(records: list[dict], key: str, positive: bool = False) -> tuple[list[int], list[float]]:
    """(steps, values) for records holding a finite number under key; positive=True also drops <= 0 (log y)."""
    xs: list[int] = []
    ys: list[float] = []
    for r in records:
        v = r.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        if positive and v <= 0:
            continue
        xs.append(r["step"])
        ys.append(float(v))
    return xs, ys


def _empty(ax: Any, what: str) -> None:
    """Say so in the panel, so a missing curve reads as 'not logged' rather than as a plotting bug."""
    ax.text(0.5, 0.5, f"no {what} logged", ha="center", va="center", transform=ax.transAxes, color="gray")


def _line_panel(ax: Any, records: list[dict], key: str, title: str, ylabel: str, what: str,
                sci: bool = False) -> None:
    """One logged series against the step, or the 'no `what` logged' note."""
    xs, ys = _series(records, key)
    if xs:
        ax.plot(xs, ys, lw=1)
        if sci:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    else:
        _empty(ax, what)
    ax.set(title=title, xlabel="step", ylabel=ylabel)


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Draw a 2x2 figure: training loss and val loss vs step (one panel, val as markers+line), learning
    rate vs step, tokens/s vs step, and val perplexity vs step (log y). Title = run dir name. Save PNG to
    out (create parent dirs), return path.

    Uses matplotlib's Figure with its Agg canvas directly rather than pyplot, so no GUI backend is ever
    selected and the caller's global pyplot state (e.g. in a notebook) is left untouched.
    """
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise UserError(f"no {METRICS_FILE} in {run_dir}: is this a gpt2dist run dir?")
    records, n_bad = read_metrics(metrics)
    if not any(k in r for r in records for k in PLOTTED_KEYS):
        raise UserError(
            f"{metrics}: no usable records (need lines with 'step' and 'loss' or 'val_loss'"
            + (f"; {n_bad} unparsable line(s)" if n_bad else "") + "): train for at least one log interval first"
        )
    if n_bad:
        log.warning(
            "%s: skipped %d unparsable line(s) (e.g. a half-written line from a killed run)", metrics, n_bad
        )

    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install matplotlib") from None

    # Fixed margins, not layout="constrained": that engine draws the figure twice to measure it, ~40% of the
    # time of a plot that training redraws at evals (gpt2dist/observe/curves.py).
    fig = Figure(figsize=(12, 8), dpi=100)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.92, wspace=0.2, hspace=0.3)
    (ax_loss, ax_lr), (ax_tps, ax_ppl) = fig.subplots(2, 2)
    fig.suptitle(run_dir.resolve().name or str(run_dir))

    xs, ys = _series(records, "loss")
    vxs, vys = _series(records, "val_loss")
    if xs:
        ax_loss.plot(xs, ys, lw=1, label="train loss")
    if vxs:
        ax_loss.plot(vxs, vys, "o-", ms=4, label="val loss")
    if xs or vxs:
        ax_loss.legend()
    else:
        _empty(ax_loss, "loss")
    ax_loss.set(title="loss", xlabel="step", ylabel="loss")

    _line_panel(ax_lr, records, "lr", "learning rate", "lr", "learning rate", sci=True)
    _line_panel(ax_tps, records, "tokens_per_s", "throughput", "tokens/s", "tokens/s")

    xs, ys = _series(records, "val_ppl", positive=True)
    if xs:
        ax_ppl.plot(xs, ys, "o-", ms=4)
        ax_ppl.set_yscale("log")
    else:
        _empty(ax_ppl, "val perplexity")
    ax_ppl.set(title="val perplexity", xlabel="step", ylabel="perplexity (log)")

    for ax in (ax_loss, ax_lr, ax_tps, ax_ppl):
        ax.grid(True, alpha=0.3)

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, format="png")
    except OSError as exc:
        raise UserError(
            f"{out}: cannot write plot ({exc.strerror or exc}): choose a writable output path"
        ) from None
    return out
