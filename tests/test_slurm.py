"""Slurm: golden rendered scripts for every launcher, and real jobs on a real (loopback) Slurm cluster:
1 node x 2 tasks, 2 nodes (srun and torchrun), and a preemption that checkpoints, requeues and resumes."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from gpt2dist.launcher.slurm import SlurmOptions, render
from helpers import read_metrics, tiny_config, write_yaml
from ranks import run_ranks

from gpt2dist.errors import UserError

GOLDEN = Path(__file__).parent / "golden" / "slurm"
REPO = Path(__file__).parent.parent
VARIANTS = {  # name -> options; rendered with a fixed interpreter and work dir so the text is stable
    "srun-4x8gpu": SlurmOptions(nodes=4, gpus_per_node=8, time="24:00:00", partition="gpu", account="proj"),
    "torchrun-2x8gpu": SlurmOptions(nodes=2, gpus_per_node=8, launcher="torchrun", time="12:00:00"),
    "deepspeed-1x8gpu": SlurmOptions(nodes=1, gpus_per_node=8, launcher="deepspeed", job_name="ds-node"),
    "srun-cpu-2x2": SlurmOptions(nodes=2, gpus_per_node=0, nproc_per_node=2, time="00:30:00",
                                 overrides=["train.max_steps=100", "data.train=[data/my corpus/*.txt]"]),
}


def render_variant(name: str, config: Path) -> str:
    # /work/my project/data does not exist here: the doctor's data checks are off for these renders.
    return render(config.name, dataclasses.replace(VARIANTS[name], check=False), python="/opt/venv/bin/python",
                  workdir="/work/my project")


@pytest.fixture
def golden_config(tmp_path, monkeypatch) -> Path:
    """run.yaml in the current directory, rendered as if that directory were /work/my project."""
    cfg = tiny_config(Path("runs/tiny"), ["data/demo/train.txt"], train={"global_batch_size": 256,
                                                                         "micro_batch_size": 4})
    cfg.pop("logging")
    monkeypatch.chdir(tmp_path)
    return write_yaml(tmp_path / "run.yaml", cfg)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rendered_script_matches_golden(golden_config, name):
    text = render_variant(name, golden_config)
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get("GPT2DIST_REGEN_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"missing {golden}: run GPT2DIST_REGEN_GOLDEN=1 pytest tests/test_slurm.py"
    assert text == golden.read_text(), f"{name} changed: review the diff, then GPT2DIST_REGEN_GOLDEN=1 pytest"
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # the script at least parses


def test_rendering_quotes_paths_and_checks_batch_math(golden_config):
    text = render_variant("srun-cpu-2x2", golden_config)
    assert '--chdir="/work/my project"' in text and "'data.train=[data/my corpus/*.txt]'" in text
    assert "CONFIG='/work/my project/run.yaml'" in text
    assert "--gres" not in text and "--ntasks-per-node=2" in text
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@120" in text
    with pytest.raises(UserError, match="does not fit 12 ranks"):  # 256 sequences on 12 ranks x micro 4
        render(str(golden_config), SlurmOptions(nodes=3, gpus_per_node=4))
    with pytest.raises(UserError, match="--nproc-per-node"):
        render(str(golden_config), SlurmOptions(gpus_per_node=0))
    with pytest.raises(UserError, match="--time"):
        render(str(golden_config), SlurmOptions(time="forever"))


# ---------------------------------------------------------------- a real cluster
def slurm_env() -> dict[str, str] | None:
    """Start (or reuse) the loopback cluster from slurm/ci; None when Slurm cannot be installed here."""
    script = REPO / "slurm" / "ci" / "start_slurm.sh"
    if os.geteuid() != 0 and not shutil.which("sbatch"):
        return None
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError(f"CI must run the Slurm tests but the cluster did not start:\n{proc.stdout[-3000:]}"
                                 f"\n{proc.stderr[-3000:]}")
        return None
    return {**os.environ, "SLURM_CONF": "/tmp/slurm-ci/etc/slurm.conf"}


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    env = slurm_env()
    if env is None:
        pytest.skip("Slurm cannot be installed here (needs root and apt-get: slurmctld slurmd slurm-client munge)")
    return env


def submit(cluster, script: Path) -> str:
    out = subprocess.run(["sbatch", "--parsable", str(script)], env=cluster, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().split(";")[0]


def job_field(cluster, job_id: str, key: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=cluster, capture_output=True, text=True,
                         check=False).stdout
    match = re.search(rf"\b{key}=(\S+)", out)
    return match.group(1) if match else ""


def wait_for(cluster, job_id: str, states: set[str], timeout: float = 400) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_field(cluster, job_id, "JobState")
        if state in states:
            return state
        time.sleep(1)
    subprocess.run(["scancel", job_id], env=cluster, check=False)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout} s (last {state})")


def job_script(tmp_path: Path, story_corpus, name: str, opts: SlurmOptions, **train) -> tuple[Path, Path, Path]:
    run_dir = tmp_path / name / "run dir"  # a space in the path, on purpose
    cfg = tiny_config(run_dir, [str(story_corpus[0])], data={"block_size": 32},
                      train={"max_steps": 8, "global_batch_size": 8, "micro_batch_size": 4, **train},
                      checkpoint={"every": 4, "keep_last": 3})
    config = write_yaml(tmp_path / f"{name}.yaml", cfg)
    opts.output = str(tmp_path / name / "slurm-%j.out")
    (tmp_path / name).mkdir(exist_ok=True)
    script = tmp_path / name / "job.sbatch"
    script.write_text(render(str(config), opts, workdir=str(tmp_path)))
    return script, run_dir, tmp_path / name


@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "nproc", "launcher"),
                         [(1, 2, "srun"), (2, 1, "srun"), (2, 1, "torchrun"), (1, 2, "deepspeed")])
def test_rendered_script_trains_on_slurm(cluster, tmp_path, story_corpus, nodes, nproc, launcher):
    opts = SlurmOptions(nodes=nodes, gpus_per_node=0, nproc_per_node=nproc, launcher=launcher, time="00:10:00")
    script, run_dir, log_dir = job_script(tmp_path, story_corpus, "job", opts)
    job_id = submit(cluster, script)
    state = wait_for(cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"})
    log = (log_dir / f"slurm-{job_id}.out").read_text()
    assert state == "COMPLETED", log[-5000:]
    assert "x data-parallel 2 =" in log and "run state: finished" in log
    assert (run_dir / "checkpoints" / "step-00000008" / "cursor-rank00001.json").is_file()
    if nodes == 2:
        assert job_field(cluster, job_id, "NodeList") in ("node[1-2]", "node1,node2")


@pytest.mark.slow
def test_preempted_job_checkpoints_requeues_and_resumes(cluster, tmp_path, story_corpus):
    widen = ["model.n_embd=128", "model.n_layer=4", "model.n_head=4", "model.dropout=0.1"]
    steps = {"max_steps": 60, "log_every": 1}
    opts = SlurmOptions(nodes=1, gpus_per_node=0, nproc_per_node=2, time="00:10:00", overrides=widen)
    script, run_dir, log_dir = job_script(tmp_path, story_corpus, "job", opts, **steps)
    job_id = submit(cluster, script)
    wait_for(cluster, job_id, {"RUNNING"})
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 5):
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.2)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=cluster, check=True)
    state = wait_for(cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=500)
    log = (log_dir / f"slurm-{job_id}.out").read_text()
    assert state == "COMPLETED", log[-5000:]
    assert job_field(cluster, job_id, "Restarts") == "1"
    assert "restart 0" in log and "restart 1" in log and "requeueing job" in log
    stopped = re.search(r"stopped by \S+ at step (\d+)", log)
    assert stopped, log[-5000:]
    assert f"resuming from step-{int(stopped.group(1)):08d}" in log
    assert "run state: finished" in log

    # The same run, never interrupted, on 2 ranks outside Slurm: the per-step losses are the same.
    ref_dir = tmp_path / "ref"
    ref_cfg = tiny_config(ref_dir, [str(story_corpus[0])], data={"block_size": 32},
                          train={"global_batch_size": 8, "micro_batch_size": 4, **steps},
                          checkpoint={"every": 4, "keep_last": 3})
    run_ranks("torchrun", write_yaml(tmp_path / "ref.yaml", ref_cfg), widen)
    got, ref = read_metrics(run_dir), read_metrics(ref_dir)
    assert [got[s]["loss"] for s in range(1, 61)] == [ref[s]["loss"] for s in range(1, 61)]


def test_submit_without_slurm_is_one_line_error(tmp_path, golden_config):
    from helpers import run_cli

    env = {"PATH": str(tmp_path)}  # no sbatch anywhere on PATH
    proc = run_cli("slurm", str(golden_config), "--nodes", "1", "--gpus-per-node", "0", "--nproc-per-node", "2",
                   "--submit", "--no-check", cwd=golden_config.parent, env=env, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: sbatch not found"), proc.stderr


@pytest.mark.slow
def test_cli_submit_prints_the_job_id_and_the_job_runs(cluster, tmp_path, story_corpus):
    from helpers import run_cli

    run_dir = tmp_path / "run"
    cfg = tiny_config(run_dir, [str(story_corpus[0])], data={"block_size": 32},
                      train={"max_steps": 4, "global_batch_size": 8, "micro_batch_size": 4})
    config = write_yaml(tmp_path / "run.yaml", cfg)
    out = run_cli("slurm", str(config), "--nodes", "1", "--gpus-per-node", "0", "--nproc-per-node", "2",
                  "--time", "00:05:00", "--log", str(tmp_path / "logs" / "%j.out"), "--submit", cwd=tmp_path,
                  env=cluster)
    job_id = out.stdout.strip().splitlines()[-1]
    assert job_id.isdigit(), out.stdout
    assert wait_for(cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}) == "COMPLETED"
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-00000004"
