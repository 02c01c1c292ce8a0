"""What `pip install .` gives a user, outside the clone: the wheel is built, installed without -e into a fresh
environment, and `gpt2dist slurm` and `gpt2dist ds-config` run from a directory that is not the repository.

The fresh environment borrows this one's third-party packages through a .pth file of plain paths, which
Python does not scan for further .pth files -- so the editable install of the clone (a .pth hook) is not
there, and only the wheel can answer `import gpt2dist`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import tiny_config, write_yaml

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel of this checkout (not editable); returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a copy: a build in the clone would leave build/ and *.egg-info behind
    top = {".git", "runs", "data", "build", "dist", ".venv", ".whl", "tests", "bench"}  # what a build never reads
    shutil.copytree(REPO, src, ignore=lambda folder, names: [n for n in names if (Path(folder) == REPO and n in top)
                                                             or n.endswith(".egg-info") or n == "__pycache__"])
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
         str(src)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("gpt2dist-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"gpt2dist/launcher/slurm.py", "gpt2dist/slurm/header.sbatch", "gpt2dist/slurm/srun.sbatch",
            "gpt2dist/data/stream.py", "gpt2dist/engines/deepspeed_engine.py"} <= set(names)
    assert not [n for n in names if n.split("/")[0] in ("launcher", "slurm", "tests")], "a stray top-level package"
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    vpy = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp)
    site = Path(run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
                .stdout.strip())
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in outer))
    return venv / "bin"


def test_the_wheel_not_the_clone_answers_imports(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = run([str(installed / "python"), "-c", "import importlib.util, gpt2dist.launcher.slurm as s; "
               "print(s.__file__); print(importlib.util.find_spec('launcher'))"], cwd=tmp_path, env=env).stdout
    where, launcher = out.splitlines()
    assert where.startswith(str(installed.parent)) and "site-packages/gpt2dist/launcher/slurm.py" in where
    assert launcher == "None", "the wheel must not install a top-level 'launcher' package"


def test_slurm_and_ds_config_run_from_outside_the_clone(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (tmp_path / "train.txt").write_text("Once upon a time there was a tiny model.\n\n" * 200, encoding="utf-8")
    config = write_yaml(tmp_path / "run.yaml", tiny_config(Path("runs/tiny"), ["train.txt"],
                                                          train={"micro_batch_size": 2}))
    script = run([str(installed / "gpt2dist"), "slurm", config.name, "--gpus-per-node", "0", "--nproc-per-node",
                  "2"], cwd=tmp_path, env=env).stdout
    assert script.startswith("#!/bin/bash") and "#SBATCH --nodes=1" in script and "-m gpt2dist.train" in script
    assert str(installed.parent) in script  # the interpreter that rendered it: the installed environment's
    ds = run([str(installed / "gpt2dist"), "ds-config", config.name, "--world-size", "2"], cwd=tmp_path, env=env)
    assert '"train_batch_size": 4' in ds.stdout and "data-parallel 2" in ds.stderr


def test_sources_claim_python_3_10_and_need_nothing_newer():
    """pyproject says requires-python >= 3.10; vermin finds the oldest Python each construct needs."""
    vermin = shutil.which("vermin", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert vermin, "vermin (a dev dependency) is not installed"
    proc = subprocess.run([vermin, "-t=3.10-", "--no-tips", "--violations", "gpt2dist", "launcher", "slurm"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
