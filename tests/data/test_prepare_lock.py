"""One prepare per packed dir: a second prepare, and a training run, are refused while one writes; a killed
prepare's temporary shards are removed by the next one, which ends with the shards an uninterrupted prepare makes;
a read-only prepared dir that is up to date still checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import mount_tmpfs
from test_packed import packed_cfg, shard_tokens, write_docs

from gpt2dist.data.manifest import PREPARE_LOCK, packed_root
from gpt2dist.data.packed import checked_manifest
from gpt2dist.data.prepare import prepare
from gpt2dist.data.shardwriter import TEMP_SHARD
from gpt2dist.errors import UserError

HOLD = """
import sys, time
from pathlib import Path
from gpt2dist.data.prepare import prepare_lock
lock = prepare_lock(Path(sys.argv[1])); print("held" if lock.held else "not held", flush=True); time.sleep(120)
"""


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mtime_ns, p.lstat().st_size)
            for p in sorted(folder.rglob("*")) if p.name != PREPARE_LOCK and not p.is_dir()}


def test_a_second_prepare_and_a_training_run_are_refused_while_a_prepare_writes(tmp_path):
    files = write_docs(tmp_path / "data", 2, 20)
    cfg, _ = packed_cfg(tmp_path, files)
    prepare(cfg, workers=1)
    root = packed_root(cfg)
    Path(files[1]).write_text("changed text\n\nto tokenize again\n", encoding="utf-8")  # work for the 2nd one
    before = snapshot(root)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        who = rf"\(pid {holder.pid} on {os.uname().nodename}\)"
        with pytest.raises(UserError, match=rf"data.packed_dir {root} is being prepared by another gpt2dist "
                                            rf"prepare {who}: wait for it to end"):
            prepare(cfg, workers=1)
        assert snapshot(root) == before, "a refused prepare wrote into the packed dir"
        with pytest.raises(UserError, match=rf"is being prepared by a running gpt2dist prepare {who}: train when"):
            checked_manifest(cfg)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert prepare(cfg, workers=1).tokenized == 1  # the kernel dropped the killed holder's lock
    checked_manifest(cfg)


@pytest.mark.slow
def test_a_killed_prepare_leaves_nothing_the_next_one_keeps(tmp_path, warm_cli):
    files = write_docs(tmp_path / "data", 250, 120)  # ~3 MB: tokenized in 1 MB chunks, killed after the first
    cfg, config = packed_cfg(tmp_path / "a", files)
    root = packed_root(cfg)
    shards = root / "shards"
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    proc = warm_cli.start("prepare", str(config), "--workers", "1")
    deadline = time.monotonic() + 120
    while not any(TEMP_SHARD.fullmatch(p.name) and p.lstat().st_size for p in
                  (shards.iterdir() if shards.is_dir() else [])):  # the group is sealed (renamed) only at the end
        assert proc.poll() is None, f"prepare ended before it was killed: make the corpus bigger\n{proc.stderr()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    left = [p.name for p in shards.iterdir() if TEMP_SHARD.fullmatch(p.name)]
    assert left, "the kill left no temporary shard: nothing was tested"
    (shards / ".pack-000099.train.bin.abcd1234.tmp").symlink_to(victim)  # our name, not our kind: kept
    (shards / "notes.tmp").write_text("the user's")  # not our name: kept

    report = prepare(cfg, workers=1)
    assert report.tokenized == len(files)
    assert sorted(p.name for p in shards.iterdir()) == [".pack-000099.train.bin.abcd1234.tmp", "notes.tmp",
                                                        "pack-000000.train.bin"]
    assert victim.read_bytes() == b"precious"
    clean, _ = packed_cfg(tmp_path / "b", files)
    prepare(clean, workers=1)
    assert shard_tokens(cfg) == shard_tokens(clean)


def test_an_up_to_date_read_only_prepared_dir_still_checks(tmp_path):
    mount = mount_tmpfs(tmp_path / "ro", "20m")
    try:
        files = write_docs(tmp_path / "data", 2, 20)
        cfg, _ = packed_cfg(tmp_path, files, packed_dir=str(mount / "packed"))
        prepare(cfg, workers=1)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        assert prepare(cfg, workers=1).tokenized == 0
        Path(files[0]).write_text("changed\n", encoding="utf-8")
        with pytest.raises(UserError, match="Read-only file system"):
            prepare(cfg, workers=1)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
