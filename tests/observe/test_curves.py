"""RUN_DIR/curves.png without asking: drawn within its time budget at evals, always at the end, never fatal."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from helpers import read_metrics, tiny_config, write_yaml

from gpt2dist.observe.curves import CurveWriter


def write_metrics(run_dir, steps=range(1, 11)):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as fh:
        for s in steps:
            fh.write(json.dumps({"step": s, "loss": 5.0 / s, "lr": 1e-3, "tokens_per_s": 100.0}) + "\n")
    return run_dir


def test_final_draws_and_eval_draws_only_within_budget(tmp_path):
    run = write_metrics(tmp_path / "run")
    curves = CurveWriter(run, enabled=True, budget=0.02)
    assert curves.at_eval() is None, "right after the start, a ~1 s plot is over 2% of the elapsed time"
    assert curves.final() == run / "curves.png" and (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert curves.drawn == 1 and curves.spent > 0
    generous = CurveWriter(run, enabled=True, budget=1e9)
    assert generous.at_eval() == run / "curves.png"
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "no temporary file left behind"
    assert CurveWriter(run, enabled=False).final() is None  # ranks other than 0


def test_a_failing_plot_is_a_warning_not_an_error(tmp_path, caplog):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')  # nothing plottable: plot_run raises
    curves = CurveWriter(run, enabled=True)
    with caplog.at_level(logging.WARNING):
        assert curves.final() is None
    assert "could not draw" in caplog.text and not curves.enabled
    assert curves.final() is None  # and it stops trying


@pytest.mark.slow
def test_training_without_matplotlib_still_finishes(tmp_path, story_corpus):
    """matplotlib unimportable (a headless node without it): the run finishes, warns once, names no curves."""
    run = tmp_path / "run"
    cfg = tiny_config(run, [str(story_corpus[0])], [str(story_corpus[1])], train={"max_steps": 4, "eval_every": 2},
                      logging={"curves": True})
    config = write_yaml(tmp_path / "run.yaml", cfg)
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['matplotlib.figure'] = None; "
            f"from gpt2dist.cli import main; main(['train', {str(config)!r}])")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("could not draw") == 1
    done = next(line for line in proc.stdout.splitlines() if line.startswith("done:"))
    assert done.startswith("done: step 4") and "curves" not in done
    assert not (run / "curves.png").exists() and max(read_metrics(run)) == 4


def test_logging_curves_false_draws_nothing(tmp_path, story_corpus, warm_cli):
    run = tmp_path / "run"
    cfg = tiny_config(run, [str(story_corpus[0])], train={"max_steps": 2}, logging={"curves": False})
    warm_cli("train", str(write_yaml(tmp_path / "run.yaml", cfg)))
    assert not (run / "curves.png").exists()
