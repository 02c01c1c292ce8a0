"""The pickle gate: no file DeepSpeed will unpickle is read until it loads with `weights_only=True`.

DeepSpeed's loader calls `torch.load(..., weights_only=False)`, which runs any code a crafted file carries.
"""

from __future__ import annotations

from pathlib import Path


def deepspeed_class(name: str) -> type | None:
    """The class `name` ("deepspeed.x.y.Cls") when it is one of DeepSpeed's own classes, else None."""
    import importlib
    import inspect

    module, _, attr = name.rpartition(".")
    if not module.startswith("deepspeed."):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return obj if inspect.isclass(obj) else None


def check_pickles(folder: Path) -> str | None:
    """DeepSpeed's loader unpickles its shards with weights_only=False, which runs any code a crafted file
    carries. Each shard must first load with weights_only=True, allowing beyond tensors and containers only
    DeepSpeed's own classes (ZeroStageEnum, LossScaler, fragment_address, ...) -- never a function. The
    cost is one extra read of the checkpoint on rank 0. Returns an error line, or None when all are safe."""
    import torch.serialization

    for path in sorted(folder.glob("*.pt")):
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        classes = [deepspeed_class(name) for name in names]
        refused = [name for name, cls in zip(names, classes, strict=True) if cls is None]
        reason = f"it pickles {', '.join(refused[:3])}" if refused else ""
        if not refused:
            try:
                with torch.serialization.safe_globals(classes):
                    torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any refusal of the safe unpickler means "not plain data"
                reason = str(exc).strip().splitlines()[0][:200]
        if reason:
            return (f"refusing to load {path}: {reason}, beyond tensors and DeepSpeed's own classes; only resume "
                    "checkpoints you trust")
    return None
