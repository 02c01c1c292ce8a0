"""Issue 23, writes and deletes: nothing we write follows a link a stranger planted, temporary names are ours
(mkstemp/mkdtemp), we delete only what we created, and what we publish follows the umask. All in-process, on
trees the tests build; the end-to-end export and checkpoint modes are in test_trust_tree.py (they need a run)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2dist import atomic
from gpt2dist.errors import UserError
from gpt2dist.run.lock import RunLock, held_elsewhere
from gpt2dist.run.rundir import refuse_planted_links


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the run dir that a planted link points at; it must come out unchanged."""
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_write_never_writes_through_a_planted_temporary_name(tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".status.json.tmp").symlink_to(victim)  # the fixed name the old writer used
    atomic.write_json(run / "status.json", {"state": "running"})
    assert victim.read_text() == "precious\n"
    assert (run / "status.json").read_text() == '{"state": "running"}'
    assert sorted(p.name for p in run.iterdir()) == [".status.json.tmp", "status.json"]  # no temporary left


def test_atomic_write_replaces_a_link_at_the_target_not_its_target(tmp_path, victim):
    (tmp_path / "latest").symlink_to(victim)
    atomic.write_text(tmp_path / "latest", "step-00000002\n")
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "latest").is_symlink() and (tmp_path / "latest").read_text() == "step-00000002\n"


def test_append_refuses_a_linked_log(tmp_path, victim):
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(UserError, match="metrics.jsonl is a symbolic link"):
        atomic.open_append(tmp_path / "metrics.jsonl")
    assert victim.read_text() == "precious\n"


def test_lock_refuses_a_linked_lock_file(tmp_path, victim):
    (tmp_path / ".lock").symlink_to(victim)
    for take in (RunLock.acquire_existing, RunLock.acquire):
        with pytest.raises(UserError, match=r"\.lock is a symbolic link"):
            take(RunLock(tmp_path))
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize("name", [".lock", "status.json", "metrics.jsonl", "config.yaml", "tokenizer", "checkpoints"])
def test_run_dir_with_a_planted_link_is_refused_before_anything_is_written(tmp_path, victim, name):
    (tmp_path / name).symlink_to(victim)
    with pytest.raises(UserError, match=f"{name} is a symbolic link"):
        refuse_planted_links(tmp_path)


def test_held_elsewhere_probes_without_writing(tmp_path):
    assert held_elsewhere(tmp_path) is None  # no lock file: nothing held, nothing created
    assert not (tmp_path / ".lock").exists()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom gpt2dist.run.lock import RunLock\n"
                               "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
                               str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (tmp_path / ".lock").read_bytes()
        assert held_elsewhere(tmp_path) == f" (pid {holder.pid} on {os.uname().nodename})"
        assert (tmp_path / ".lock").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert held_elsewhere(tmp_path) is None


def test_published_files_follow_the_umask(tmp_path, umask_022):
    """safetensors (and mkstemp) write 0600; what we publish reads like any file the user makes (0644 here)."""
    import torch
    from safetensors.torch import save_file

    tmp = atomic.make_temp_dir(tmp_path, ".out-")
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o755  # mkdtemp alone gives 0700
    save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
    (tmp / "run.sh").write_text("#!/bin/sh\n")
    (tmp / "run.sh").chmod(0o700)
    final = atomic.publish_dir(tmp, tmp_path / "out")
    assert stat.S_IMODE((final / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((final / "run.sh").stat().st_mode) == 0o744  # its execute bit kept, the umask applied
    atomic.write_text(tmp_path / "plain.txt", "x")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644
    os.umask(0o007)
    atomic.write_text(tmp_path / "plain.txt", "y")
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o660


def test_publish_dir_replaces_only_its_own_parking_folder(tmp_path, victim):
    """The old fixed parking name `.old-NAME` may be a stranger's: it is left alone."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("old")
    (tmp_path / ".old-out").symlink_to(victim.parent, target_is_directory=True)
    new = atomic.make_temp_dir(tmp_path, ".new-")
    (new / "a.txt").write_text("new")
    atomic.publish_dir(new, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "new" and victim.read_text() == "precious\n"
    assert (tmp_path / ".old-out").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".old-out", "out", "victim.txt"]
