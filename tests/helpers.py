"""Helpers the tests share: tiny run configs, YAML, the CLI as a user runs it, metrics, preflight findings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpt2dist.config import load_config


def tiny_config(run_dir: Path, train_files: list[str], val_files: list[str] | None = None, **sections) -> dict:
    """A tiny fp32 CPU run; keyword sections (model=..., train=...) update the defaults. No curves.png (1-2 s of
    matplotlib per run, most of a tiny run's training): the tests that draw it ask for it (tests/observe)."""
    cfg = {
        "run_dir": str(run_dir),
        "seed": 1,
        "model": {"preset": "tiny"},
        "tokenizer": {"kind": "char"},
        "data": {"train": train_files, "val": val_files or [], "block_size": 32},
        "train": {"max_steps": 10, "micro_batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
                  "log_every": 1, "eval_every": 0, "eval_batches": 4},
        "checkpoint": {"every": 5, "keep_last": 2},
        "logging": {"tensorboard": False, "progress": "lines", "curves": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def copy_run(run_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of a trained run dir (made beside its run.yaml) and a config pointing at the copy."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cfg = yaml.safe_load((run_dir.parent / "run.yaml").read_text())
    cfg["run_dir"] = str(copy)
    return copy, write_yaml(tmp_path / "run.yaml", cfg)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m gpt2dist.cli ARGS` the way a user would; fail with its output when it fails."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "gpt2dist.cli", *args], cwd=cwd, env=full_env, text=True,
                          capture_output=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"gpt2dist {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_metrics(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl merged per step, the last record of a step winning (resumed runs re-log steps)."""
    from gpt2dist.observe.plot import read_metrics as read

    records, _ = read(run_dir / "metrics.jsonl")
    return {r["step"]: r for r in records}


STORY = "\n\n".join(f"Paragraph {i} of a story that is long enough to fill windows." * 4 for i in range(40))


def cfg_with(tmp_path: Path, *overrides: str, data: str = STORY):
    """A validated config over one .txt file (40 paragraphs, ~10 kB unless `data` says otherwise)."""
    train = tmp_path / "train.txt"
    if not train.exists():
        train.write_text(data, encoding="utf-8")
    return load_config(None, [f"data.train=[{train}]", f"run_dir={tmp_path / 'run'}", *overrides])


def messages(findings, level: str) -> list[str]:
    """The messages of the findings at `level` (ok | warn | error)."""
    return [f.message for f in findings if f.level == level]


class Payload:
    """Unpickling this runs `touch MARKER` -- what a crafted checkpoint does to a weights_only=False loader."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def mount_tmpfs(mount: Path, size: str) -> Path:
    """A real small file system (unmounted by the caller); skipped where mounting is not allowed, never in CI."""
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=False,
                      capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError("CI must run the file-system fault tests: mounting a tmpfs failed")
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    return mount
