"""The pickle gate: no file DeepSpeed will unpickle is read until it loads with `weights_only=True`.

DeepSpeed's loaders -- `load_checkpoint`, the universal loader and the `ds_to_universal` converter -- call
`torch.load(..., weights_only=False)`, which runs any code a crafted file carries. So every `*.pt` file below
the folder DeepSpeed is about to read (STEP/deepspeed before loading or converting it, STEP/universal before
loading it) must first load with the safe unpickler, which accepts tensors, containers and plain values, plus
exactly the DeepSpeed classes below -- never a function, never any other class.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpt2dist.engines.trust import refuse_odd_entries
from gpt2dist.errors import UserError

# The DeepSpeed classes its ZeRO checkpoints hold (deepspeed 0.19.8). Found by saving real 2-rank checkpoints at
# ZeRO 0-3 in fp32 and bf16, with and without CPU offload, converting stages 1-3 to the universal format and
# listing torch.serialization.get_unsafe_globals_in_checkpoint for every .pt file:
#   *_optim_states.pt (ZeRO 1-2)        ZeroStageEnum, LossScaler, fragment_address (param_slice_mappings)
#   *_optim_states.pt (ZeRO 3)          ZeroStageEnum, LossScaler
#   universal/.../zero/optimizer_state.pt  ZeroStageEnum, LossScaler
#   model states, universal per-parameter files, ZeRO-0 files   none
# DynamicLossScaler is what ZeRO 1-3 save instead of LossScaler under fp16 (runtime/fp16/loss_scaler.py,
# CreateLossScaler: torch.half with dynamic scaling); fp16 runs only on CUDA, so that entry is by reading.
# All four are plain records (an int enum, two dataclass-like scalers, a dataclass of two ints): building one
# opens nothing. Classes such as process groups or comm backends are deliberately absent.
ALLOWED_DEEPSPEED_CLASSES = (
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def allowed_classes() -> dict[str, type]:
    """name -> class for the allow-list (imports deepspeed: only the DeepSpeed engine's path calls this)."""
    import importlib

    classes = {}
    for name in ALLOWED_DEEPSPEED_CLASSES:
        module, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), attr, None)
        except ImportError:  # another DeepSpeed version moved it: a checkpoint naming it is refused
            continue
        if isinstance(obj, type):
            classes[name] = obj
    return classes


def pickled_files(folder: Path) -> list[Path]:
    """Every file DeepSpeed may unpickle below `folder`: all of its loaders read `*.pt` names only (fixed names
    such as mp_rank_00_model_states.pt, globs of *_optim_states.pt, and the universal format's
    zero/<param>/<state>.pt, picked by universal_checkpoint.load_hp_checkpoint_state). Walked without following
    links; `check_pickles` refuses a tree holding any, so the gate and DeepSpeed's loaders see the same files."""
    return sorted(Path(root, name) for root, _, files in os.walk(folder, followlinks=False)
                  for name in files if name.endswith(".pt") and os.path.isfile(os.path.join(root, name)))


def check_file(path: Path, classes: dict[str, type]) -> str | None:
    """Why `path` is refused, or None when it loads as plain data plus allowed classes."""
    import torch
    import torch.serialization

    try:
        refused = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) if n not in classes]
        if refused:
            return f"it pickles {', '.join(refused[:3])}"
        with torch.serialization.safe_globals(list(classes.values())):
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything the safe unpickler will not read is refused
        return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return None


def check_pickles(folder: Path) -> str | None:
    """The error line for the first unsafe file below `folder`, or None when all are safe. Costs one extra
    read of the files on the rank that calls it (rank 0). A link (or FIFO, device) anywhere below is refused."""
    try:
        refuse_odd_entries(folder)
    except UserError as exc:
        return str(exc)
    classes = allowed_classes()
    for path in pickled_files(folder):
        reason = check_file(path, classes)
        if reason:
            return (f"refusing to load {path}: {reason}, beyond tensors and DeepSpeed's own checkpoint records; "
                    "only resume checkpoints you trust")
    return None
