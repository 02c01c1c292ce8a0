"""Resume policy: which engine wrote a checkpoint, and how it loads on this run's engine and world size."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import shutil
import tempfile
from enum import Enum
from pathlib import Path

from gpt2dist import atomic
from gpt2dist.engines.trust import check_train_state, check_universal, refuse_odd_entries, sign_universal
from gpt2dist.errors import UserError
from gpt2dist.run.layout import UNIVERSAL_DIR as UNIVERSAL

log = logging.getLogger(__name__)

TAG = "deepspeed"  # DeepSpeed's own sub-directory inside our step directory


class ResumeMode(Enum):
    """How this run loads a checkpoint: as saved, or through DeepSpeed's universal format (another world size)."""

    SAME = "same"
    UNIVERSAL = "universal"


def saved_engine(directory: Path) -> str:
    """'deepspeed' when the step directory holds DeepSpeed's shards, else 'torch'."""
    return "deepspeed" if (directory / TAG).is_dir() else "torch"


def saved_world_size(directory: Path) -> int:
    """World size a step directory was saved with (train_state.json, checked against the cursors saved)."""
    return check_train_state(directory).world_size


def ensure_universal(directory: Path) -> Path:
    """Convert STEP/deepspeed into STEP/universal once (rank 0; others wait at the caller's barrier).

    Runs DeepSpeed's own converter (`deepspeed.checkpoint.ds_to_universal`) in-process; written to a
    temporary name and renamed, so an interrupted conversion is redone, never half-used. The converter
    unpickles the shards with weights_only=False, so they pass the pickle gate first. An existing universal
    folder is reused only if it is the one we built (`trust.check_universal`), and the engine gates it again
    before loading. The temporary folder is a fresh `mkdtemp` name: a planted `universal.tmp` is never ours.
    """
    target = directory / UNIVERSAL
    if os.path.lexists(target):
        check_universal(target)
        return target
    from deepspeed.checkpoint.ds_to_universal import main as to_universal

    from gpt2dist.engines.pickle_gate import check_pickles

    error = check_pickles(directory / TAG)
    if error is not None:
        raise UserError(error)

    tmp = Path(tempfile.mkdtemp(prefix=f".{UNIVERSAL}-", dir=directory))
    args = argparse.Namespace(input_folder=str(directory / TAG), output_folder=str(tmp / TAG), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    chatter = io.StringIO()  # the converter prints progress and tqdm bars; keep them for errors only
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            to_universal(args)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # ours (mkdtemp): an interrupted conversion is redone
        raise RuntimeError(f"converting {directory} to a universal checkpoint failed: {exc}\n"
                           f"{chatter.getvalue()[-2000:]}") from exc
    log.info("converted %s to a universal checkpoint", directory.name)
    (tmp / "latest_universal").write_text(TAG)
    sign_universal(tmp)
    return atomic.publish_dir(tmp, target)


def resume_mode(directory: Path, *, use_deepspeed: bool, zero_stage: int, world_size: int) -> ResumeMode:
    """How this run loads `directory`: SAME (as saved), or UNIVERSAL (DeepSpeed ZeRO 1-3 saved on another
    world size: converted once to DeepSpeed's universal format). ZeRO-0 keeps the whole optimizer state in one
    file that loads on any world size, so it stays SAME. A checkpoint of the other engine is refused in one
    line before anything is built, and so is a step dir holding a link or a train_state.json that makes no sense
    (`trust.py`): its world size picks the load path."""
    refuse_odd_entries(directory)
    check_train_state(directory)
    engine = saved_engine(directory)
    if engine == "torch" and use_deepspeed:
        raise UserError(f"checkpoint {directory} was written by the torch engine: resume it with "
                        "distributed.backend=torch on one rank, or start a new run_dir")
    if engine == "deepspeed" and not use_deepspeed:
        raise UserError(f"checkpoint {directory} was written by the DeepSpeed engine: resume it with "
                        "distributed.backend=deepspeed, or start a new run_dir")
    if not use_deepspeed:
        return ResumeMode.SAME
    saved = saved_world_size(directory)
    return ResumeMode.UNIVERSAL if saved != world_size and zero_stage > 0 else ResumeMode.SAME
