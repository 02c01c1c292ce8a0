"""`distributed.deepspeed`: your own DeepSpeed keys (a mapping, or a JSON file as HF users bring) merged over
the generated config.

gpt2dist owns the keys it derives from its own config: the batch triple, `gradient_clipping`, `optimizer`,
`scheduler` (gpt2dist hands DeepSpeed its own LR schedule), the precision blocks `bf16`/`bfloat16`/`fp16`, and
the ZeRO knobs that have a `distributed.*` key (stage, offload device, overlap, buckets). For those a value that
differs from gpt2dist's is refused in one line naming the gpt2dist key to set instead; the same value, or the
HF Trainer's "auto" (= take it from the trainer), is fine, and a disabled precision block's other keys are
ignored (HF configs carry an fp16 block with `enabled: auto`). Every other key is passed through, nested
mappings merged key by key (e.g. `zero_optimization.stage3_gather_16bit_weights_on_model_save`,
`wall_clock_breakdown`, `comms_logger`, `flops_profiler`). Pure: no deepspeed import.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from gpt2dist.config import RunConfig
from gpt2dist.errors import UserError, read_json_object

KEY = "distributed.deepspeed"
PRECISION_BLOCKS = ("bf16", "bfloat16", "fp16")  # bfloat16: DeepSpeed's alias of bf16


def owned(cfg: RunConfig, ds: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """DeepSpeed key path -> (gpt2dist's value, the gpt2dist key that sets it). A missing value is None."""
    d = cfg.distributed
    zero = {
        "stage": (d.zero_stage, "distributed.zero_stage"),
        "offload_optimizer.device": (d.offload_optimizer, "distributed.offload_optimizer"),
        "offload_param.device": (d.offload_param, "distributed.offload_param"),
        "overlap_comm": (d.overlap_comm, "distributed.overlap_comm"),
        "contiguous_gradients": (d.contiguous_gradients, "distributed.contiguous_gradients"),
        "reduce_bucket_size": (d.reduce_bucket_size, "distributed.reduce_bucket_size"),
        "allgather_bucket_size": (d.allgather_bucket_size, "distributed.allgather_bucket_size"),
        "stage3_prefetch_bucket_size": (d.stage3_prefetch_bucket_size, "distributed.stage3_prefetch_bucket_size"),
        "stage3_param_persistence_threshold": (d.stage3_param_persistence_threshold,
                                               "distributed.stage3_param_persistence_threshold"),
        "stage3_max_live_parameters": (d.stage3_max_live_parameters, "distributed.stage3_max_live_parameters"),
        "stage3_max_reuse_distance": (d.stage3_max_reuse_distance, "distributed.stage3_max_reuse_distance"),
    }
    return {
        "train_batch_size": (ds["train_batch_size"], "train.global_batch_size (global = micro x accum x ranks)"),
        "train_micro_batch_size_per_gpu": (ds["train_micro_batch_size_per_gpu"], "train.micro_batch_size"),
        "gradient_accumulation_steps": (ds["gradient_accumulation_steps"], "train.grad_accum_steps"),
        "gradient_clipping": (ds["gradient_clipping"], "train.grad_clip"),
        "optimizer": (ds["optimizer"], "train.lr, train.beta1, train.beta2, train.weight_decay"),
        "scheduler": (None, "train.schedule, train.warmup_steps, train.min_lr (gpt2dist runs its own LR schedule)"),
        "bf16": (ds["bf16"], "train.precision"),
        "bfloat16": (ds["bf16"], "train.precision"),
        "fp16": (ds["fp16"], "train.precision and train.fp16_*"),
        **{f"zero_optimization.{k}": v for k, v in zero.items()},
    }


def load_user_config(value: dict | str | None) -> dict[str, Any]:
    """The mapping itself, or the JSON object in the file it names; one line naming the key when it is not."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    path = Path(value)
    if not path.is_file():
        raise UserError(f"config key {KEY}={value!r}: no such file; give a DeepSpeed JSON file or a mapping")
    return read_json_object(path, f"config key {KEY}: ", f"config key {KEY}: {path} must hold a JSON object of "
                            "DeepSpeed keys")


def merge_user_keys(cfg: RunConfig, ds: dict[str, Any]) -> dict[str, Any]:
    """`ds` (generated) with the user's keys merged over it, or a one-line UserError listing every conflict."""
    user = load_user_config(cfg.distributed.deepspeed)
    if not user:
        return ds
    mine = owned(cfg, ds)
    merged = copy.deepcopy(ds)
    conflicts: list[str] = []
    for path, value in _leaves(user):
        owner = next((o for o in mine if path == o or path.startswith(o + ".")), None)
        if owner is None:
            if any(o.startswith(path + ".") for o in mine):  # e.g. zero_optimization: 2
                conflicts.append(f"{path}={value!r} must be a mapping")
            elif value == "auto":
                conflicts.append(f"{path}=\"auto\" is only filled in by the HF Trainer: give a value or drop it")
            else:
                _set(merged, path, value)
            continue
        expected, setter = mine[owner]
        block = owner if owner in PRECISION_BLOCKS else None
        if block and not expected.get("enabled") and path != f"{block}.enabled":
            continue  # a disabled precision block's knobs do nothing
        if value == "auto" or value == {}:
            continue
        have = _get(expected, path[len(owner) + 1:]) if path != owner else expected
        if owner.endswith(".device") and have is None:
            have = "none"
        if not _same(value, have):
            said = "sets none" if have is _MISSING or have is None else f"has {have!r}"
            conflicts.append(f"{path}={value!r} (gpt2dist {said}; set {setter} instead)")
    if conflicts:
        raise UserError(f"config key {KEY} conflicts with keys gpt2dist owns: {'; '.join(conflicts)}")
    return merged


_MISSING = object()


def _leaves(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _get(tree: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[parts[-1]] = copy.deepcopy(value)


def _same(a: Any, b: Any) -> bool:
    """Equal as DeepSpeed reads them: 5e8 == 500000000, [0.9, 0.95] == (0.9, 0.95); a bool is not a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b
