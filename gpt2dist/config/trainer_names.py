"""The Hugging Face Trainer's names for our keys: `TrainingArguments` (and run_clm's script arguments) spelled as
Trainer users write them -- top-level in a run YAML, as `name=value` / `--name value` overrides, or a whole
`TrainingArguments.to_json_string()` file as the config -- mapped onto our dotted keys before the config is built.

One setting spelled both ways with different values is refused in one line naming both spellings.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt2dist.errors import UserError, read_json_object


def _same(value: Any) -> Any:
    return value


def _positive_or_skip(value: Any) -> Any:
    """Trainer's "unset" spellings (max_steps=-1, eval_steps=None, save_total_limit=None) mean: leave ours alone."""
    return SKIP if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0) \
        else value


def _not(value: Any) -> Any:
    return (not value) if isinstance(value, bool) else value


def _precision(name: str) -> Callable[[Any], Any]:
    return lambda value: name if value is True else SKIP if value in (False, None) else value


def _schedule(value: Any) -> Any:
    """lr_scheduler_type: linear and cosine are ours too; constant_with_warmup is our constant (we always warm up)."""
    return {"constant_with_warmup": "constant"}.get(value, value)


def _device(value: Any) -> Any:
    return "cpu" if value is True else SKIP if value in (False, None) else value


SKIP = object()  # a Trainer value that means "not set"

# Trainer name -> (our dotted key, value conversion)
TRAINER_NAMES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "output_dir": ("run_dir", _same),
    "overwrite_output_dir": ("train.resume", _not),
    "num_train_epochs": ("train.num_epochs", _positive_or_skip),
    "max_steps": ("train.max_steps", _positive_or_skip),
    "per_device_train_batch_size": ("train.micro_batch_size", _same),
    "gradient_accumulation_steps": ("train.grad_accum_steps", _same),
    "learning_rate": ("train.lr", _same),
    "weight_decay": ("train.weight_decay", _same),
    "adam_beta1": ("train.beta1", _same),
    "adam_beta2": ("train.beta2", _same),
    "max_grad_norm": ("train.grad_clip", _same),
    "warmup_ratio": ("train.warmup_ratio", _positive_or_skip),
    "warmup_steps": ("train.warmup_steps", _same),
    "lr_scheduler_type": ("train.schedule", _schedule),
    "save_steps": ("checkpoint.every", _same),
    "save_total_limit": ("checkpoint.keep_last", _positive_or_skip),
    "logging_steps": ("train.log_every", _same),
    "eval_steps": ("train.eval_every", _positive_or_skip),
    "seed": ("seed", _same),
    "bf16": ("train.precision", _precision("bf16")),
    "fp16": ("train.precision", _precision("fp16")),
    "use_cpu": ("train.device", _device),
    "gradient_checkpointing": ("model.activation_checkpointing", _same),
    "resume_from_checkpoint": ("train.resume_from", _same),
    "model_name_or_path": ("model.pretrained", _same),
    "tokenizer_name": ("tokenizer.path", _same),
    "train_file": ("data.train", _same),
    "validation_file": ("data.val", _same),
    "block_size": ("data.block_size", _same),
}

# our key -> its Trainer name(s), for `gpt2dist config` and the README table
OUR_TO_TRAINER: dict[str, list[str]] = {}
for _name, (_key, _) in TRAINER_NAMES.items():
    OUR_TO_TRAINER.setdefault(_key, []).append(_name)


def trainer_name(key: str) -> str:
    """The Trainer's name(s) of one of our dotted keys ("" when it has none)."""
    return ", ".join(OUR_TO_TRAINER.get(key, []))


def _get(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return SKIP
        node = node[part]
    return node


def set_dotted(raw: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    """raw[a][b][c] = value for "a.b.c", making sections on the way; a value in the way is the user's error."""
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{where}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def translate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Move the top-level Trainer names of a config mapping onto our keys. A setting given both ways with different
    values is refused, naming both spellings (the same value twice is fine). As in the Trainer, max_steps > 0 wins
    over num_train_epochs."""
    if _positive_or_skip(raw.get("max_steps")) is not SKIP:
        raw.pop("num_train_epochs", None)
    given: dict[str, tuple[str, Any]] = {}  # our key -> (Trainer name, value) set here
    for name in [k for k in raw if k in TRAINER_NAMES and k != "seed"]:  # top-level `seed` is ours as well
        key, convert = TRAINER_NAMES[name]
        value = convert(raw.pop(name))
        if value is not SKIP:
            _settle(raw, key, value, name, given, where)
    return raw


def _settle(raw: dict[str, Any], key: str, value: Any, name: str, given: dict[str, tuple[str, Any]],
            where: str) -> None:
    ours = _get(raw, key)
    if key in given and not _equal(given[key][1], value):
        raise UserError(f"{where}: {given[key][0]}={given[key][1]!r} and {name}={value!r} both set {key}: keep one")
    if ours is not SKIP and not _equal(ours, value) and key not in given:
        raise UserError(f"{where}: {name}={value!r} (the Trainer's name) and {key}={ours!r} set the same thing "
                        "differently: keep one")
    given[key] = (name, value)
    set_dotted(raw, key, value, where)


def _equal(a: Any, b: Any) -> bool:
    """Equal as config values: YAML 1.1 reads 5e-5 as a string and 5.0e-5 as a float."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def override_key(key: str) -> tuple[str, Callable[[Any], Any]] | None:
    """An override written with a Trainer name (`learning_rate=5e-5`): our key and the value conversion."""
    return TRAINER_NAMES.get(key) if key != "seed" else None


def option_names() -> set[str]:
    """Trainer names that `--name value` options may use: those with an underscore (ours use hyphens)."""
    return {name for name in TRAINER_NAMES if "_" in name}


def hint(prefix: str, key: str, names: list[str]) -> str:
    """The "did you mean" of an unknown key, from both vocabularies: ours in this section, and the Trainer's."""
    if prefix == "":
        candidates = {name: name for name in names}
        candidates.update({name: f"{name} (the Trainer's name of {TRAINER_NAMES[name][0]})" for name in TRAINER_NAMES})
        close = difflib.get_close_matches(str(key), list(candidates), n=1)
        if close:
            return f"; did you mean {candidates[close[0]]}?"
    elif key in TRAINER_NAMES:  # a Trainer name inside a section: say ours
        return f"; {key} is the Trainer's name of {TRAINER_NAMES[key][0]}: write that (or top-level {key})"
    else:
        close = difflib.get_close_matches(str(key), names, n=1)
        if close:
            return f"; did you mean {prefix}{close[0]}?"
        trainer = difflib.get_close_matches(str(key), list(TRAINER_NAMES), n=1)
        if trainer:
            return f"; did you mean {TRAINER_NAMES[trainer[0]][0]} (the Trainer's {trainer[0]})?"
    return f"; valid keys: {', '.join(names)}"


def is_training_arguments(data: Any) -> bool:
    """A mapping as `TrainingArguments.to_json_string()` writes it (flat, with its tell-tale keys)."""
    return isinstance(data, dict) and "output_dir" in data and "per_device_train_batch_size" in data


def read_training_arguments(path: Path) -> dict[str, Any]:
    """A TrainingArguments JSON -> our raw config mapping: the names that mean something here are taken, the
    rest (hub, reporting, dataloader knobs ...) are Trainer settings with no counterpart and are left out."""
    data = read_json_object(path, "config file ",
                            f"config file {path} must hold a JSON object (TrainingArguments.to_json_string())")
    if not is_training_arguments(data):
        return data  # our own keys, written as JSON
    if data.get("warmup_steps") and data.get("warmup_ratio"):  # the Trainer: warmup_steps > 0 wins over the ratio
        data = {**data, "warmup_ratio": 0}
    raw = {name: data[name] for name in TRAINER_NAMES if name in data and name not in ("seed",)}
    if "seed" in data:
        raw["seed"] = data["seed"]
    return translate(raw, f"config file {path}")
