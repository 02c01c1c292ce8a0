"""Tests for gpt2dist.observe.plot: resumed runs log steps twice and killed runs leave half lines; both must plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2dist.errors import UserError
from gpt2dist.observe.plot import plot_run, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(step: int, loss: float) -> dict:
    return {
        "step": step,
        "loss": loss,
        "lr": 6e-4 * min(1.0, step / 20),
        "tokens": step * 4096,
        "tokens_per_s": 12000.0 + step,
        "epoch": 0,
        "mfu": None,
        "time": 1732000000.0 + step,
    }


def _eval(step: int, val_loss: float) -> dict:
    return {"step": step, "val_loss": val_loss, "val_ppl": 2.718281828**val_loss, "time": 1732000000.5 + step}


def _write_run(run_dir: Path) -> Path:
    """First run: steps 10..60 with evals at 30 and 60, then killed; resume from step 40 re-logs 50..80."""
    lines = [json.dumps(_train(s, 4.0 - s / 100)) for s in range(10, 70, 10)]
    lines.insert(3, json.dumps(_eval(30, 3.9)))
    lines.append(json.dumps(_eval(60, 3.5)))
    # resumed run: re-logs steps 50 and 60 with new values, eval at 60 is NOT re-logged before the next kill
    lines += [json.dumps(_train(s, 9.0 + s / 1000)) for s in range(50, 90, 10)]
    lines.append(json.dumps(_eval(80, 3.1)))
    lines.append("")  # blank line: ignored, not counted as bad
    text = "\n".join(lines) + "\n" + '{"step": 90, "loss": 3.0, "lr"'  # half-written last line
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "metrics.jsonl"
    path.write_text(text)
    return path


def test_read_metrics_dedups_by_step_last_wins_per_key(tmp_path: Path) -> None:
    records, n_bad = read_metrics(_write_run(tmp_path / "run"))
    assert n_bad == 1
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) == [10, 20, 30, 40, 50, 60, 70, 80]
    by_step = {r["step"]: r for r in records}
    # resumed values win for re-logged steps, untouched steps keep the first run's values
    assert by_step[50]["loss"] == pytest.approx(9.05)
    assert by_step[40]["loss"] == pytest.approx(3.6)
    # train and eval lines for one step merge; a key the resume did not re-log survives (per-key last wins)
    assert by_step[60]["loss"] == pytest.approx(9.06)
    assert by_step[60]["val_loss"] == pytest.approx(3.5)
    assert by_step[30]["val_loss"] == pytest.approx(3.9) and "loss" in by_step[30]
    assert by_step[80]["val_ppl"] == pytest.approx(2.718281828**3.1)


def test_read_metrics_counts_lines_without_step_as_bad(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"loss": 1.0}\n[1, 2]\n{"step": "x"}\n\xff\xfe\n{"step": 1, "loss": 2.0}\n')
    records, n_bad = read_metrics(path)
    assert n_bad == 4
    assert records == [{"step": 1, "loss": 2.0}]


def test_plot_run_writes_png(tmp_path: Path) -> None:
    run_dir = tmp_path / "my-run"
    _write_run(run_dir)
    out = tmp_path / "deep" / "er" / "plot.png"
    result = plot_run(str(run_dir), str(out))
    assert result == out
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000


def test_plot_run_train_only_without_evals(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(_train(s, 4.0)) + "\n" for s in (1, 2, 3)))
    out = plot_run(run_dir, tmp_path / "p.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_plot_run_missing_metrics_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no metrics.jsonl in .*gpt2dist run dir"):
        plot_run(tmp_path, tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()


def test_plot_run_no_usable_records_is_user_error(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss"\n\n')
    with pytest.raises(UserError, match="no usable records"):
        plot_run(tmp_path, tmp_path / "p.png")


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, gpt2dist.observe.plot; sys.exit('matplotlib' in sys.modules)"
    src_root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=src_root, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
