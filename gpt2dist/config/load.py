"""Loading a run config: strict YAML (or the defaults) + `a.b=value` overrides -> typed, validated `RunConfig`.

Nothing else reads YAML or the command line, so a mistake is caught here, named by its dotted key, before any
expensive work starts. Unknown keys get a "did you mean"; values are coerced to the field's annotation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from gpt2dist.config import strict_yaml, trainer_names
from gpt2dist.config.schema import RunConfig, choice_error, validate
from gpt2dist.errors import UserError


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """YAML file (or the defaults when None) + `a.b=value` overrides -> a validated RunConfig."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found: pass the path of a YAML run config")
        raw = _read_config_file(path)
    for item in overrides:
        apply_override(raw, item)
    cfg = build_dataclass(RunConfig, raw, prefix="")
    validate(cfg)
    return cfg


def _read_config_file(path: Path) -> dict[str, Any]:
    """A YAML run config, or a JSON one (TrainingArguments.to_json_string() included); Trainer names translated."""
    if path.suffix.lower() == ".json":
        return trainer_names.read_training_arguments(path)
    try:
        raw = strict_yaml.safe_load(path.read_text(encoding="utf-8"), f"config file {path}") or {}
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except RecursionError:
        raise UserError(f"config file {path} nests too deeply to be a run config: a run config is a few "
                        "levels of keys (model:, data:, train: ...)") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())[:200]  # one line, whatever YAML says
        raise UserError(f"config file {path}{line} is not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold a mapping of keys (model:, data:, train: ...)")
    return trainer_names.translate(raw, f"config file {path}")


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (ints, floats, bools, [lists])."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {item!r} must look like key.sub=value (e.g. train.max_steps=400)")
    try:
        value = strict_yaml.safe_load(text, f"override {item!r}", f"{key}.") if text.strip() else ""
    except yaml.YAMLError:
        value = text
    trainer = trainer_names.override_key(key)
    if trainer is not None:  # `learning_rate=5e-5`: the Trainer's name of train.lr
        key, value = trainer[0], trainer[1](value)
        if value is trainer_names.SKIP:
            return
    trainer_names.set_dotted(raw, key, value, f"override {item!r}")


def build_dataclass(cls: type, raw: Any, prefix: str) -> Any:
    """Recursively build `cls` from a dict, rejecting unknown keys (with a "did you mean") and wrong types."""
    section = prefix.rstrip(".") or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"config key {section} must be a section (a mapping), got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise UserError(f"unknown config key {prefix}{key}{trainer_names.hint(prefix, key, names)}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, raw[name], f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(raw[name], hint, f"{prefix}{name}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert one value against its annotation (int, float, bool, str, Literal[...], list[str], dict,
    X | Y | None)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
        mapping = isinstance(value, dict) and any(a is dict or typing.get_origin(a) is dict for a in args)
        hint = dict if mapping else next(a for a in args if a is not type(None) and a is not dict)
        args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:  # the choices' own type (str or int), then one of them
        if isinstance(value, bool) and "true" in args:  # auto|true|false keys take YAML booleans
            value = str(value).lower()
        value = coerce(value, type(args[0]), key)
        if value not in args:
            raise choice_error(key, value, args)
        return value
    if typing.get_origin(hint) is list:
        items = value if isinstance(value, list) else [value]
        return [coerce(v, args[0], key) for v in items]
    if hint is dict:  # a free-form mapping passed on as it is (distributed.deepspeed)
        if isinstance(value, dict):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
    elif hint is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 6e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None and not math.isfinite(number):  # .nan/.inf would poison every later comparison
            raise UserError(f"config key {key} must be a finite number, got {value!r}")
        if number is not None:
            return number
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a new annotation kind needs a branch here
        raise TypeError(f"unsupported annotation {hint!r} for {key}")
    raise UserError(f"config key {key} expects {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping"}.get(hint, str(hint))
