"""Issue 23, code execution: nothing a resume loads is reached through a link, the pickle gate and DeepSpeed's
loaders see the same files, a STEP/universal/ folder is ours or refused, and train_state.json makes sense.

The fast tests build the hostile trees themselves; the slow ones resume a real 1-rank run (made once per module)
with the tree planted, and check: exit 2, one line, the payload never ran, nothing written. The run uses the torch
engine: the refusal comes before any engine is chosen (resume_mode, rank 0), so DeepSpeed's 4 s start buys nothing."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import Payload, copy_run, tiny_config, write_yaml

from gpt2dist.engines.pickle_gate import check_pickles, pickled_files
from gpt2dist.engines.trust import check_train_state, check_universal, odd_entries, sign_universal
from gpt2dist.errors import UserError

STEPS = 2



def linked_payload_folder(tmp_path: Path, inside: Path) -> tuple[Path, Path]:
    """A folder outside the checkpoint holding a crafted `exp_avg.pt`, linked in as `inside`."""
    outside, marker = tmp_path / "elsewhere", tmp_path / "PWNED"
    outside.mkdir()
    torch.save({"x": Payload(marker)}, outside / "exp_avg.pt")
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.symlink_to(outside, target_is_directory=True)
    return outside / "exp_avg.pt", marker


def test_gate_refuses_a_linked_folder_that_rglob_would_not_enter(tmp_path):
    """The bug: Path.rglob skipped the linked folder while os.listdir (DeepSpeed's universal loader) lists it."""
    root = tmp_path / "universal" / "deepspeed"
    (root / "zero").mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, root / "zero" / "ok.pt")
    link = root / "zero" / "transformer.wte.weight"
    linked_payload_folder(tmp_path, link)
    assert "exp_avg.pt" in os.listdir(link)  # what DeepSpeed's loader reads
    assert [p.name for p in pickled_files(root)] == ["ok.pt"]  # what the gate reads: hence the link is refused
    error = check_pickles(root)
    assert error is not None and str(link) in error and "symbolic link" in error
    assert not (tmp_path / "PWNED").exists()


def test_odd_entries_are_links_and_fifos_not_files_or_folders(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "f.pt").write_bytes(b"x")
    assert odd_entries(tmp_path) == []
    (tmp_path / "a" / "b" / "l.pt").symlink_to(tmp_path / "a" / "f.pt")
    os.mkfifo(tmp_path / "a" / "fifo.pt")  # reading it would hang the loader
    assert odd_entries(tmp_path) == sorted([tmp_path / "a" / "b" / "l.pt", tmp_path / "a" / "fifo.pt"])
    link = tmp_path.parent / f"{tmp_path.name}-link"
    link.symlink_to(tmp_path, target_is_directory=True)
    assert odd_entries(link) == [link]  # a step dir that is itself a link


def test_universal_folder_is_ours_or_refused(tmp_path):
    folder = tmp_path / "universal"
    (folder / "deepspeed" / "zero").mkdir(parents=True)
    torch.save({"w": torch.zeros(2)}, folder / "deepspeed" / "zero" / "fp32.pt")
    with pytest.raises(UserError, match="gpt2dist did not build it"):
        check_universal(folder)  # planted whole: no manifest
    sign_universal(folder)
    check_universal(folder)  # what the conversion wrote
    extra = folder / "deepspeed" / "zero" / "extra.pt"
    torch.save({"w": torch.ones(2)}, extra)
    with pytest.raises(UserError, match=f"refusing to load {extra}"):
        check_universal(folder)
    extra.unlink()
    linked_payload_folder(tmp_path, folder / "deepspeed" / "zero" / "evil")
    with pytest.raises(UserError, match="symbolic link"):
        check_universal(folder)


def step_tree(tmp_path: Path, state: dict, ranks: int = 1) -> Path:
    step = tmp_path / "step-00000004"
    step.mkdir()
    (step / "train_state.json").write_text(json.dumps(state))
    for r in range(ranks):
        (step / f"cursor-rank{r:05d}.json").write_text("{}")
        (step / f"rng-rank{r:05d}.pt").write_bytes(b"")
    return step


@pytest.mark.parametrize(("state", "ranks", "match"), [
    ({"step": 4, "tokens": 512, "world_size": 2}, 1, "world_size 2 but 1 data cursors"),  # claims a resize
    ({"step": 4, "tokens": 512, "world_size": 1}, 2, "world_size 1 but 2 data cursors"),
    ({"step": 9, "tokens": 512, "world_size": 1}, 1, "says step 9, the directory is step-00000004"),
    ({"step": True, "tokens": 512, "world_size": 1}, 1, "says step True"),
    ({"step": 4, "tokens": -1, "world_size": 1}, 1, "tokens -1"),
    ({"step": 4, "tokens": 512, "world_size": 0}, 1, "world_size 0"),
    ([4], 1, "not an object"),
])
def test_train_state_must_make_sense(tmp_path, state, ranks, match):
    with pytest.raises(UserError, match=match):
        check_train_state(step_tree(tmp_path, state, ranks))


def test_a_sane_train_state_passes(tmp_path):
    """The v1 fixture's shape (no world size written is one rank)."""
    assert check_train_state(step_tree(tmp_path, {"step": 4, "tokens": 512, "epoch": 0})).step == 4


# ---- end to end: a real DeepSpeed checkpoint, resumed with the hostile tree planted ----

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, story_corpus, warm_cli) -> Path:
    tmp = tmp_path_factory.mktemp("run1")
    cfg = tiny_config(tmp / "run", [str(story_corpus[0])], train={"max_steps": STEPS, "global_batch_size": 4,
                                                                  "micro_batch_size": 4, "warmup_steps": 1},
                      checkpoint={"every": STEPS, "keep_last": 1})
    warm_cli("train", str(write_yaml(tmp / "run.yaml", cfg)))
    return tmp / "run"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and link (not folder mtimes: the disk-room probe makes and removes a temporary file)."""
    return {str(p.relative_to(folder)): (p.lstat().st_mtime_ns, p.lstat().st_size)
            for p in sorted(folder.rglob("*")) if p.name != ".lock" and (p.is_symlink() or not p.is_dir())}


def refused(out: subprocess.CompletedProcess, *expect: str) -> None:
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    for part in expect:
        assert part in errors[0], errors[0]


@pytest.mark.slow
def test_linked_folder_in_universal_is_refused_on_resume(tmp_path, trained_run, warm_cli):
    run_dir, config = copy_run(trained_run, tmp_path)
    step = run_dir / "checkpoints" / f"step-{STEPS:08d}"
    link = step / "universal" / "deepspeed" / "zero" / "transformer.wte.weight"
    _, marker = linked_payload_folder(tmp_path, link)
    before = snapshot(run_dir)
    out = warm_cli("train", str(config), f"train.max_steps={STEPS + 1}", check=False)
    refused(out, str(link), "symbolic link")
    assert not marker.exists(), "the crafted pickle ran"
    assert snapshot(run_dir) == before, "a refused resume wrote to the run dir"


@pytest.mark.slow
def test_re_signed_train_state_claiming_another_world_size_is_refused(tmp_path, trained_run, warm_cli):
    """Same-size resume sent down the universal path by a train_state.json re-signed in the manifest."""
    run_dir, config = copy_run(trained_run, tmp_path)
    step = run_dir / "checkpoints" / f"step-{STEPS:08d}"
    state = json.loads((step / "train_state.json").read_text())
    (step / "train_state.json").write_text(json.dumps({**state, "world_size": 2}))
    manifest = json.loads((step / "manifest.json").read_text())
    data = (step / "train_state.json").read_bytes()
    manifest["files"]["train_state.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(run_dir)
    out = warm_cli("train", str(config), f"train.max_steps={STEPS + 1}", check=False)
    refused(out, "world_size 2 but 1 data cursors")
    assert snapshot(run_dir) == before and not (step / "universal").exists()


@pytest.mark.slow
def test_export_leaves_a_users_out_tmp_alone_and_files_follow_the_umask(tmp_path, trained_run):
    """`export RUN OUT` once deleted an existing OUT.tmp/; and safetensors wrote model.safetensors 0600."""
    from gpt2dist.atomic import umask
    from gpt2dist.run.export import export

    expected = 0o666 & ~umask()
    step = trained_run / "checkpoints" / f"step-{STEPS:08d}"
    recorded = json.loads((step / "train_state.json").read_text())["data_files"]  # test_data_changed.py's input
    assert [Path(entry[0]).name for entry in recorded] == ["train.txt"] and recorded[0][1] > 0
    assert oct(stat.S_IMODE((step / "model.safetensors").stat().st_mode)) == oct(expected)
    users = tmp_path / "hf.tmp"
    users.mkdir()
    (users / "notes.txt").write_text("mine\n")
    out = export(trained_run, tmp_path / "hf")
    assert (users / "notes.txt").read_text() == "mine\n"
    assert oct(stat.S_IMODE((out / "model.safetensors").stat().st_mode)) == oct(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "hf.tmp"]  # no temporary of ours left
