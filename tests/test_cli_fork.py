"""The forking harness that runs the bad-input table (tests/cli_fork.py) gives each job what a real `python -m MODULE
ARGS` process gives: held against real `python -m` runs of the same module in the same folder, not against itself."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fork import WarmCli
from helpers import run_cli

# What a user's module can do at the end of a process: fail, exit with a message, leave a non-daemon thread or an
# atexit hook behind (the interpreter waits for both), or hang. It prints how `-m` set it up.
PROBE = """\
import atexit, os, sys, threading
print("argv", sys.argv[1:], os.path.basename(sys.argv[0]), "path0", sys.path[0], sys.path[0] == os.getcwd(), __name__)
what = sys.argv[1]
if what == "raise":
    raise RuntimeError("boom")
if what == "exit-message":
    sys.exit("a message")
if what == "exit-3":
    raise SystemExit(3)
if what == "leftovers":
    atexit.register(lambda: open("atexit.txt", "w").write("ran"))
    threading.Thread(target=lambda: (threading.main_thread().join(), open("thread.txt", "w").write("ran"))).start()
if what == "hang":
    threading.Event().wait()
print("end", file=sys.stderr)
"""
KINDS = ["raise", "exit-message", "exit-3", "leftovers", "plain"]


def folder(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "probe.py").write_text(PROBE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def forked(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("forked")
    jobs = [{"id": kind, "module": "probe", "args": [kind], "cwd": str(folder(root, kind)),
             "stdout": str(root / f"{kind}.out"), "stderr": str(root / f"{kind}.err")} for kind in [*KINDS, "hang"]]
    spec = {"workers": 2, "timeout_s": 2, "preload": ["json"], "jobs": jobs, "results": str(root / "results.json"),
            "preload_output": str(root / "preload.txt")}
    (root / "jobs.json").write_text(json.dumps(spec), encoding="utf-8")
    harness = subprocess.run([sys.executable, str(Path(__file__).with_name("cli_fork.py")), str(root / "jobs.json")],
                             cwd=root, capture_output=True, text=True, timeout=60, check=False)
    assert harness.returncode == 0, harness.stderr
    return root, json.loads((root / "results.json").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_a_forked_job_ends_as_a_real_process_does(forked, tmp_path, kind):
    root, results = forked
    real_cwd = folder(tmp_path, kind)
    real = subprocess.run([sys.executable, "-m", "probe", kind], cwd=real_cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    job_cwd = root / kind
    out = (root / f"{kind}.out").read_text().replace(str(job_cwd), "CWD")
    err = (root / f"{kind}.err").read_text().replace(str(job_cwd), "CWD")
    assert results["exit"][kind] == real.returncode
    assert out == real.stdout.replace(str(real_cwd), "CWD")
    if kind == "raise":  # the harness's own frames sit above the module's in the traceback
        assert err.startswith("Traceback (most recent call last):") and err.endswith("RuntimeError: boom\n"), err
        assert real.stderr.endswith("RuntimeError: boom\n")
    else:
        assert err == real.stderr.replace(str(real_cwd), "CWD")
    assert sorted(p.name for p in job_cwd.iterdir()) == sorted(p.name for p in real_cwd.iterdir())


def test_a_job_past_its_time_is_killed_and_reported(forked):
    root, results = forked
    assert results["exit"]["hang"] == -signal.SIGALRM
    assert (root / "hang.out").read_text().startswith("argv ['hang']")


def test_the_warm_cli_answers_each_command_as_run_cli_does(tmp_path):
    """Serve mode (commands one after another, as test_train_e2e's tokenizer kinds use it) against helpers.run_cli."""
    (tmp_path / "warm").mkdir()
    warm = WarmCli(tmp_path / "warm", preload=["gpt2dist.config"])
    try:
        for args in (["--version"], ["train", "nope.yaml"], ["config", "--keys", "train.lr"]):
            got, real = warm.run(*args, cwd=tmp_path, check=False), run_cli(*args, cwd=tmp_path, check=False)
            assert (got.returncode, got.stdout, got.stderr) == (real.returncode, real.stdout, real.stderr), args
    finally:
        warm.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["warm"]
