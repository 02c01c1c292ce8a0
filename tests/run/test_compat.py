"""Checkpoints outlive code changes: run dirs written by older gpt2dist resume with today's code and reproduce
the old code's own continuation.

Two fixtures, each a tarball of two tiny runs stopped at their step-4 checkpoint -- torch engine and DeepSpeed
ZeRO-1 on one rank -- with, in expected.json, the losses of steps 5-8 that the old code printed when it continued
the very same run dirs (tests/run/fixtures/make_run_fixture.py made them):
- v1-run.tar.gz: commit 5d985cb, before the step-1 package refactor (data/ and engines/);
- v2-run.tar.gz: commit fb34bc0, the last commit before step 2 (packages by concern, issue 22).
Tarballs, not folders: the DeepSpeed checkpoint carries DeepSpeed's own zero_to_fp32.py, which is data here.
Paths in the configs and cursors are relative, so the test runs in an unpacked copy.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from helpers import read_metrics

FIXTURES = Path(__file__).parent / "fixtures"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("fixture", ["v1-run", "v2-run"])
@pytest.mark.parametrize("run", ["torch", "ds"])
def test_a_run_dir_from_older_code_resumes_with_the_old_codes_losses(tmp_path, fixture, run, warm_cli):
    with tarfile.open(FIXTURES / f"{fixture}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")  # no links out, no special files, no absolute paths
    work = tmp_path / fixture
    expected = json.loads((work / "expected.json").read_text())[run]
    proc = warm_cli("train", f"{run}.yaml", "train.max_steps=8", cwd=work)
    assert "resuming from step-00000004" in proc.stdout
    losses = read_metrics(work / run)
    for step, loss in expected.items():
        # the fixture was written on another machine of the same kind: allow float noise across CPU kernels
        assert losses[int(step)]["loss"] == pytest.approx(loss, rel=1e-4), f"step {step}"
