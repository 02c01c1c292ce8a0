"""Issue 23: a run whose last steps are non-finite ends `diverged`, exit 3 -- never `done`, exit 0, `finished`
with no final checkpoint (Slurm would never requeue it, and the README promises a checkpoint at the end)."""

from __future__ import annotations

import json

import pytest
from test_divergence import diverging_config

from gpt2dist.run.divergence import EXIT_DIVERGED


@pytest.mark.slow
def test_a_run_ending_on_skipped_nonfinite_steps_is_diverged_not_done(tmp_path, warm_cli):
    """lr 1e30: step 1 is finite (its checkpoint is written), steps 2-3 are NaN and skipped; max_bad_steps=5 never
    trips, so before the fix the run printed `done ... loss nan`, exit 0, with step 1 as its last checkpoint."""
    config = diverging_config(tmp_path, max_steps=3, max_bad_steps=5)
    run_dir = tmp_path / "run"
    out = warm_cli("train", str(config), check=False)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == EXIT_DIVERGED, out.stdout[-2000:] + out.stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "training diverged at step 3" in errors[0] and "the last good checkpoint is step-00000001" in errors[0]
    assert "done:" not in out.stdout
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "diverged" and status["last_good"] == "step-00000001", status
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-00000001"
