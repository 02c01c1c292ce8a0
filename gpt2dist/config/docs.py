"""Every config key's type, default, allowed values and one-line doc, read from its one declaration in
`gpt2dist/config/schema.py` (the annotation, `Literal` choices included, and the `key()` metadata: doc, range).

`gpt2dist config` prints them, and a test checks the README table against the same defaults and key list.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from gpt2dist.config import CHOICES, RunConfig
from gpt2dist.config import schema as config_module


@dataclass(frozen=True)
class KeyDoc:
    key: str  # dotted, e.g. train.lr
    type: str  # e.g. "int | null"
    default: Any
    allowed: str  # choices or a range; "" when any value of the type is accepted
    doc: str


def section_classes() -> dict[str, Any]:
    """Dotted key -> annotation, for every leaf key (sections recurse)."""
    return {k: hint for k, (hint, _) in config_module.leaves().items()}


def dotted_keys() -> list[str]:
    """Every dotted config key, in declaration order."""
    return list(section_classes())


def default(key: str) -> Any:
    """The dataclass default of a dotted key (default factories called)."""
    value: Any = RunConfig()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def key_constraint(key: str) -> str:
    """The numeric range config.validate enforces for `key`, as text ("" when none): read from config.RANGES,
    the ranges written beside the fields, so the docs cannot drift from the check."""
    allowed = config_module.RANGES.get(key)
    if allowed is None:
        return ""
    return f"{allowed} or null" if default(key) is None else str(allowed)


def allowed(key: str) -> str:
    """Choices (config.CHOICES) or the numeric range of a key."""
    if key in CHOICES:
        return " | ".join(_yaml_scalar(v) for v in CHOICES[key])
    return key_constraint(key)


def type_name(hint: Any) -> str:
    """An annotation as users write YAML: `int | null`, `list[str]`, `mapping | str | null`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:  # the choices' type; the choices themselves show under "allowed"
        return type_name(type(args[0]))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if hint is dict or origin is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def field_docs() -> dict[str, str]:
    """Dotted key -> its doc, as declared with `key()` in schema.py ("" when the field has none)."""
    return dict(config_module.DOCS)


def describe() -> list[KeyDoc]:
    """Every key's row; the doc ends with the HF Trainer's name of the key, when it has one (trainer_names.py)."""
    from gpt2dist.config.trainer_names import trainer_name

    docs = field_docs()
    return [KeyDoc(key, type_name(hint), default(key), allowed(key),
                   docs[key] + (f" [Trainer: {trainer_name(key)}]" if trainer_name(key) else ""))
            for key, hint in section_classes().items()]


def _yaml_scalar(value: Any) -> str:
    """A value as YAML spells it (null, true, [], 6e-4), for tables people read."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int) and abs(value) >= 10**6 and value % 10**6 == 0:
        return f"{value:_}"
    return str(value)


def reference_text(prefix: str = "") -> str:
    """`gpt2dist config`: every key (or those under `prefix`) with type, default, allowed values and doc."""
    rows = [d for d in describe() if d.key.startswith(prefix)]
    if not rows:
        raise_unknown(prefix)
    width = {col: max(len(col), *(len(_cell(r, col)) for r in rows)) for col in ("key", "type", "default",
                                                                                  "allowed")}
    header = "  ".join(col.ljust(width[col]) for col in width) + "  doc"
    out = [header, "-" * len(header)]
    section = None
    for r in rows:
        top = r.key.split(".")[0] if "." in r.key else ""
        if top != section and section is not None:
            out.append("")
        section = top
        out.append("  ".join(_cell(r, col).ljust(width[col]) for col in width) + "  " + r.doc)
    return "\n".join(out)


def _cell(row: KeyDoc, col: str) -> str:
    return _yaml_scalar(row.default) if col == "default" else getattr(row, col)


def raise_unknown(prefix: str) -> None:
    import difflib

    from gpt2dist.errors import UserError

    close = difflib.get_close_matches(prefix, dotted_keys(), n=1)
    hint = f"; did you mean {close[0]}?" if close else "; run gpt2dist config for every key"
    raise UserError(f"no config key starts with {prefix!r}{hint}")


def resolved_text(cfg: RunConfig, world_size: int) -> str:
    """`--print-config`: the config as RUN_DIR/config.yaml will hold it (valid YAML, loadable as a run config),
    then what it derives for `world_size` ranks as comments: backend, the batch triple, tokens per step."""
    import yaml

    from gpt2dist.config import batch_plan, to_dict, uses_deepspeed

    plan = batch_plan(cfg.train, world_size)
    block = cfg.data.block_size
    d = cfg.distributed
    if uses_deepspeed(cfg, world_size):
        offload = [f"{what} offload to cpu" for what, where in (("optimizer", d.offload_optimizer),
                                                                 ("param", d.offload_param)) if where == "cpu"]
        backend = ", ".join([f"deepspeed ZeRO-{d.zero_stage}", *offload])
    else:
        backend = "torch (one process)"
    if cfg.model.pretrained is None:
        dims = cfg.resolved_model_dims()
        model = (f"preset {cfg.model.preset}: {dims['n_layer']} layers, {dims['n_embd']} wide, {dims['n_head']} "
                 f"heads, {dims['n_positions']} positions")
    else:
        model = f"pretrained {cfg.model.pretrained} (dims from its config.json)"
    tokens = plan.global_batch * block
    derived = [
        f"world size: {world_size}",
        f"backend: {backend}, {cfg.train.precision}",
        plan.describe(block),
        f"train.micro_batch_size={plan.micro} train.grad_accum_steps={plan.accum} "
        f"train.global_batch_size={plan.global_batch}",
        f"tokens per step: {tokens:,}; {cfg.train.max_steps:,} steps = {tokens * cfg.train.max_steps:,} tokens"
        if cfg.train.num_epochs is None else f"tokens per step: {tokens:,}; steps: train.num_epochs="
        f"{cfg.train.num_epochs:g} passes, counted from the data when training starts (train.max_steps is ignored)",
        f"model: {model}",
    ]
    return (yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip() + "\n\n# derived (not config keys):\n"
            + "\n".join(f"#   {line}" for line in derived))


def config_command(path: str | None, overrides: list[str], world_size: int, prefix: str = "") -> str:
    """`gpt2dist config`: the key reference, or with a config file and/or overrides, that config resolved."""
    from pathlib import Path

    from gpt2dist.config import load_config
    from gpt2dist.errors import UserError

    if path is not None and "=" in path and not Path(path).is_file():  # `gpt2dist config a.b=1`: no file
        path, overrides = None, [path, *overrides]
    if path is None and not overrides:
        return reference_text(prefix)
    if world_size < 1:
        raise UserError(f"--world-size must be >= 1, got {world_size}")
    return resolved_text(load_config(path, overrides), world_size)
