"""The run config: one declaration per key (schema.py), loading with strict YAML and overrides, and the key docs.

Everything a caller needs is importable from `gpt2dist.config`; the modules say where each part lives:
    schema.py       the dataclasses, each key declared once (type/Literal, default, range, doc); validation
    load.py         YAML file + overrides -> RunConfig (unknown keys, types)
    strict_yaml.py  YAML that refuses duplicate keys and odd values
    overrides.py    `--a.b v` / `a.b=v` spellings normalised
    trainer_names.py  the HF TrainingArguments names (and their JSON) mapped onto ours
    docs.py         what `gpt2dist config` prints, read from the declarations in schema.py
"""

from gpt2dist.config.load import apply_override, build_dataclass, coerce, load_config
from gpt2dist.config.schema import (
    CHOICES,
    FRACTION,
    GE0,
    GT0,
    MODEL_PRESETS,
    RANGES,
    BatchPlan,
    CheckpointConfig,
    DataConfig,
    DistributedConfig,
    LoggingConfig,
    ModelConfig,
    Range,
    RunConfig,
    TokenizerConfig,
    TrainConfig,
    batch_plan,
    check_weights,
    get_key,
    key,
    save_config,
    to_dict,
    uses_deepspeed,
    validate,
)

__all__ = [
    "CHOICES", "FRACTION", "GE0", "GT0", "MODEL_PRESETS", "RANGES", "BatchPlan", "CheckpointConfig", "DataConfig",
    "DistributedConfig", "LoggingConfig", "ModelConfig", "Range", "RunConfig", "TokenizerConfig", "TrainConfig",
    "apply_override", "batch_plan", "build_dataclass", "check_weights", "coerce", "get_key", "key", "load_config",
    "save_config", "to_dict", "uses_deepspeed", "validate",
]
