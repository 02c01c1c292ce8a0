"""Slurm: golden rendered scripts for every launcher, and real jobs on a real (loopback) Slurm cluster:
1 node x 2 tasks, 2 nodes (srun and torchrun), and a preemption that checkpoints, requeues and resumes."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from gpt2dist.launcher.slurm import SlurmOptions, render
from helpers import read_metrics, run_cli, tiny_config, write_yaml
from ranks import run_ranks

from gpt2dist.dist import job_port
from gpt2dist.errors import UserError

GOLDEN = Path(__file__).parent / "golden" / "slurm"
REPO = Path(__file__).resolve().parents[2]
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
    assert golden.is_file(), f"missing {golden}: run GPT2DIST_REGEN_GOLDEN=1 pytest tests/launcher/test_slurm.py"
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
        time.sleep(0.25)
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
    """Each case sbatches the script `render` wrote, but the first: `gpt2dist slurm --submit` submits it and prints
    the job id, as a user does."""
    opts = SlurmOptions(nodes=nodes, gpus_per_node=0, nproc_per_node=nproc, launcher=launcher, time="00:10:00")
    script, run_dir, log_dir = job_script(tmp_path, story_corpus, "job", opts)
    if (nodes, nproc, launcher) == (1, 2, "srun"):
        out = run_cli("slurm", str(tmp_path / "job.yaml"), "--nodes", "1", "--gpus-per-node", "0",
                      "--nproc-per-node", "2", "--time", "00:10:00", "--log", str(log_dir / "slurm-%j.out"),
                      "--submit", cwd=tmp_path, env=cluster)
        job_id = out.stdout.strip().splitlines()[-1]
        assert job_id.isdigit(), out.stdout
    else:
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
    steps = {"max_steps": 36, "log_every": 1}
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
    stopped = re.search(r"stopped by (?:\S+|STOP file) at step (\d+)", log)  # the signal, or the STOP file first
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
    assert [got[s]["loss"] for s in range(1, 37)] == [ref[s]["loss"] for s in range(1, 37)]


def test_submit_without_slurm_is_one_line_error(tmp_path, golden_config):
    env = {"PATH": str(tmp_path)}  # no sbatch anywhere on PATH
    proc = run_cli("slurm", str(golden_config), "--nodes", "1", "--gpus-per-node", "0", "--nproc-per-node", "2",
                   "--submit", "--no-check", cwd=golden_config.parent, env=env, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: sbatch not found"), proc.stderr


# ---------------------------------------------------------------- what goes into the script (issue 12, item 2)
CONTROL = {"newline": "\n", "carriage-return": "\r", "tab": "\t", "escape": "\x1b", "line-separator": "\u2028"}
RENDERED = ("config", "override", "job_name", "partition", "account", "log", "time", "run_dir", "workdir", "python")


@pytest.mark.parametrize("char", CONTROL.values(), ids=CONTROL.keys())
@pytest.mark.parametrize("where", RENDERED)
def test_control_characters_are_refused_in_every_rendered_value(golden_config, where, char):
    """A newline in any rendered value would end its line: in the #SBATCH block it starts a shell command, and
    sbatch ignores every #SBATCH line after it. Refused in one line naming the value, before anything is written."""
    bad = f"x{char}touch PWNED"
    config, opts, kwargs = str(golden_config), SlurmOptions(gpus_per_node=0, nproc_per_node=1, check=False), {}
    if where == "config":
        config = bad
    elif where == "override":
        opts.overrides = [f"data.text_field={bad}"]
    elif where in ("job_name", "partition", "account", "time"):
        setattr(opts, where, bad)
    elif where == "log":
        opts.output = bad
    elif where == "run_dir":
        config = str(write_yaml(golden_config.parent / "bad.yaml", {**yaml.safe_load(golden_config.read_text()),
                                                                     "run_dir": bad}))
    else:
        kwargs[where] = bad
    with pytest.raises(UserError) as info:
        render(config, opts, **{"python": "/opt/venv/bin/python", "workdir": "/work/my project", **kwargs})
    message = str(info.value)
    assert repr(bad)[1:-1] in message and "would break the batch script's lines" in message
    assert {"newline": "a newline", "tab": "a tab"}.get(next(k for k, v in CONTROL.items() if v == char), "") in message
    assert not (golden_config.parent / "PWNED").exists()


HOSTILE = "a $(touch PWNED) `touch PWNED` 'single' \"double\" #hash %pct"
FAKE_PYTHON = """#!{python}
import json, os, sys
with open(os.environ["FAKE_PY_OUT"], "w") as out:
    json.dump({{"argv": sys.argv[1:], "cwd": os.getcwd(), "job_name": os.environ.get("SLURM_JOB_NAME")}}, out)
"""


def hostile_job(tmp_path: Path) -> tuple[Path, Path, Path, list[str], str]:
    """A job whose work dir, config path, run dir, interpreter path, job name and an override all hold spaces,
    $(...), backticks, both quotes, # and %: (script, workdir, run_dir, expected argv, job name)."""
    workdir = tmp_path / f"work {HOSTILE}"
    workdir.mkdir()
    (workdir / "slurm-logs").mkdir()
    cfg = tiny_config(Path(f"runs/run {HOSTILE}"), ["train.txt"])
    config = write_yaml(workdir / f"run {HOSTILE}.yaml", cfg)
    python = workdir / f"python {HOSTILE}"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    name = f"job {HOSTILE} \\back"
    overrides = ["data.text_field=it's a \"field\" $(touch PWNED) `touch PWNED`", "train.max_steps=7"]
    opts = SlurmOptions(gpus_per_node=0, nproc_per_node=1, time="00:05:00", job_name=name, overrides=overrides,
                        check=False)
    text = render(str(config), opts, python=str(python), workdir=str(workdir))
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    lines = text.splitlines()
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    sbatch_lines = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert len(sbatch_lines) == 10 and max(sbatch_lines) < first_command  # sbatch reads all of them
    escaped = "a $(touch PWNED) `touch PWNED` \\'single\\' \\\"double\\\" \\#hash %pct"  # \ before ' " # \
    assert f'#SBATCH --job-name="job {escaped} \\\\back"' in lines
    script = workdir / "job.sbatch"
    script.write_text(text)
    argv = ["-m", "gpt2dist.train", str(config), *overrides]
    return script, workdir, workdir / cfg["run_dir"], argv, name


def test_hostile_values_keep_their_meaning_in_bash(tmp_path):
    """Run the rendered script with bash (srun and scontrol faked): every value reaches the interpreter as one
    intact argument and nothing in them runs."""
    script, workdir, run_dir, argv, _ = hostile_job(tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (fake_bin / "scontrol").write_text("#!/bin/bash\necho node1\n")
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    record = tmp_path / "argv.json"
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "node1", "SLURM_NNODES": "1", "FAKE_PY_OUT": str(record)}
    proc = subprocess.run(["bash", str(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(record.read_text())
    assert got["argv"] == argv
    assert json.loads((run_dir / "status.json").read_text())["state"] == "starting"  # RUN_DIR, quoted right
    assert not [p for p in tmp_path.rglob("*") if p.name == "PWNED"]


@pytest.mark.slow
def test_hostile_values_arrive_intact_on_slurm(cluster, tmp_path):
    """The same script submitted to the real Slurm: sbatch's own parser reads the #SBATCH values (job name,
    --chdir, --output) intact, and the interpreter gets the same arguments."""
    script, workdir, run_dir, argv, name = hostile_job(tmp_path)
    record = tmp_path / "argv.json"
    out = subprocess.run(["sbatch", "--parsable", str(script)], env={**cluster, "FAKE_PY_OUT": str(record)},
                         capture_output=True, text=True, check=True)
    job_id = out.stdout.strip().split(";")[0]
    state = wait_for(cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}, timeout=120)
    log = workdir / "slurm-logs" / f"{name}-{job_id}.out"  # %x-%j.out, and the literal % of the work dir kept
    assert log.is_file(), sorted(p.name for p in (workdir / "slurm-logs").iterdir())
    assert state == "COMPLETED", log.read_text()[-3000:]
    got = json.loads(record.read_text())
    assert got == {"argv": argv, "cwd": str(workdir), "job_name": name}
    assert json.loads((run_dir / "status.json").read_text())["state"] == "starting"
    assert not [p for p in tmp_path.rglob("*") if p.name == "PWNED"]


def test_backslash_in_an_output_path_is_refused(golden_config):
    """Slurm drops a backslash from an output path and stops expanding %j (seen on 22.05)."""
    opts = SlurmOptions(gpus_per_node=0, nproc_per_node=1, check=False)
    with pytest.raises(UserError, match=r"the working directory '/work/a\\\\b' contains a backslash.*give --log"):
        render(str(golden_config), opts, python="/p", workdir="/work/a\\b")
    with pytest.raises(UserError, match="--log"):
        render(str(golden_config), dataclasses.replace(opts, output="/logs/a\\b-%j.out"), python="/p", workdir="/w")


# ---------------------------------------------------------------- CPU nodes (issue 12, item 13)
@pytest.mark.parametrize(("override", "expected"), [("train.precision=fp16", "train.precision=fp16 needs CUDA GPUs"),
                                                    ("train.device=cuda", "train.device=cuda but --gpus-per-node 0")])
def test_cuda_only_settings_are_refused_on_cpu_nodes(golden_config, override, expected):
    opts = SlurmOptions(gpus_per_node=0, nproc_per_node=2, overrides=[override], check=False)
    with pytest.raises(UserError, match=expected):
        render(str(golden_config), opts)
    render(str(golden_config), dataclasses.replace(opts, gpus_per_node=2, nproc_per_node=None))  # fine on GPUs


# ---------------------------------------------------------------- the rendezvous port (issue 12, lower)
def test_the_scripts_master_port_is_dist_job_port(golden_config):
    text = render_variant("srun-cpu-2x2", golden_config)
    line = next(line for line in text.splitlines() if line.startswith("export MASTER_PORT="))
    for job in (1, 1234, 2234, 9999, 10000, 67043327):
        out = subprocess.run(["bash", "-c", f"unset MASTER_PORT; {line}; echo $MASTER_PORT"], text=True,
                             capture_output=True, check=True, env={"SLURM_JOB_ID": str(job), "PATH": "/usr/bin:/bin"})
        assert int(out.stdout) == job_port(job)
    out = subprocess.run(["bash", "-c", f"{line}; echo $MASTER_PORT"], text=True, capture_output=True, check=True,
                         env={"SLURM_JOB_ID": "7", "MASTER_PORT": "23456", "PATH": os.environ["PATH"]})
    assert out.stdout.strip() == "23456"  # the submitting environment overrides it


# ---------------------------------------------------------------- a failed requeue (issue 12, item 5)
@pytest.mark.slow
def test_a_requeued_attempt_that_fails_at_start_is_not_requeued_again(cluster, tmp_path, story_corpus):
    """Attempt 0 is preempted (status.json: preempted) and requeued; attempt 1 fails at start-up (its config
    became invalid). The footer must not read attempt 0's stale status: the job ends FAILED after attempt 1."""
    opts = SlurmOptions(nodes=1, gpus_per_node=0, nproc_per_node=1, time="00:10:00", max_restarts=3)
    script, run_dir, log_dir = job_script(tmp_path, story_corpus, "job", opts, max_steps=100000, log_every=1)
    config = tmp_path / "job.yaml"
    job_id = submit(cluster, script)
    wait_for(cluster, job_id, {"RUNNING"})
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "latest").is_file():
        assert time.monotonic() < deadline, "the job never wrote a checkpoint"
        time.sleep(0.2)
    config.write_text(config.read_text() + "\nnot_a_key: 1\n")  # the next start fails in one line (exit 2)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], env=cluster, check=True)
    state = wait_for(cluster, job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=300)
    log = (log_dir / f"slurm-{job_id}.out").read_text()
    assert state == "FAILED", log[-5000:]
    assert job_field(cluster, job_id, "Restarts") == "1", log[-5000:]
    assert log.count("requeueing job") == 1 and "restart 1" in log and "restart 2" not in log, log[-5000:]
    assert "run state: preempted" in log and "run state: starting" in log
