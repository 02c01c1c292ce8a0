"""Unit tests for gpt2dist.config: YAML loading, typed `a.b=value` overrides, validation messages, round trips."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from gpt2dist.config import MODEL_PRESETS, RANGES, RunConfig, get_key, load_config, save_config
from gpt2dist.demo import DEMO_YAML
from gpt2dist.errors import UserError

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))

# The smallest valid config: validation needs data.train to be non-empty (files are not checked here).
MINIMAL = ["data.train=[train.txt]"]


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cfg_with(*overrides: str) -> RunConfig:
    return load_config(None, [*MINIMAL, *overrides])


def user_error(*overrides: str, path: str | Path | None = None) -> str:
    """The message of the UserError that loading raises."""
    with pytest.raises(UserError) as info:
        load_config(path, [*MINIMAL, *overrides])
    return str(info.value)


# ---- YAML loading ----

def test_defaults_without_a_file():
    cfg = cfg_with()
    assert cfg == RunConfig(data=cfg.data, tokenizer=dataclasses.replace(RunConfig().tokenizer, kind="char"))
    assert cfg.data.train == ["train.txt"]
    assert cfg.model.preset == "tiny" and cfg.train.lr == 6e-4 and cfg.train.resume is True


def test_yaml_file_values_and_nested_sections(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", """\
run_dir: runs/x   # a comment
seed: 7
model:
  preset: gpt2
  n_layer: 3
  dropout: 0.1
tokenizer: {kind: bpe, vocab_size: 512}
data:
  train: [a.txt, b.txt]
  val: v.txt
  block_size: 64
train:
  lr: 6e-4        # YAML 1.1 reads this as a string
  min_lr: 1.0e-5
  max_steps: 1_000
  resume: no
  precision: bf16
""")
    cfg = load_config(path)
    assert cfg.run_dir == "runs/x" and cfg.seed == 7
    assert cfg.model.preset == "gpt2" and cfg.model.n_layer == 3 and cfg.model.dropout == 0.1
    assert cfg.tokenizer.kind == "bpe" and cfg.tokenizer.vocab_size == 512
    assert cfg.data.train == ["a.txt", "b.txt"]
    assert cfg.data.val == ["v.txt"]  # a bare string for a list field is a one-item list
    assert cfg.train.lr == pytest.approx(6e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.min_lr == pytest.approx(1e-5)
    assert cfg.train.max_steps == 1000
    assert cfg.train.resume is False
    assert cfg.train.precision == "bf16"
    # untouched keys keep their defaults
    assert cfg.train.warmup_steps == 100 and cfg.checkpoint.keep_last == 3


def test_empty_yaml_file_means_defaults(tmp_path):
    path = write_yaml(tmp_path / "empty.yaml", "# nothing but a comment\n")
    assert load_config(path, MINIMAL) == cfg_with()


def test_overrides_win_over_the_file(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "train:\n  max_steps: 10\ndata:\n  train: [a.txt]\n")
    cfg = load_config(path, ["train.max_steps=20", "data.train=b.txt"])
    assert cfg.train.max_steps == 20
    assert cfg.data.train == ["b.txt"]


def test_missing_config_file(tmp_path):
    message = user_error(path=tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "not found" in message


def test_config_file_must_be_a_mapping(tmp_path):
    path = write_yaml(tmp_path / "list.yaml", "- a\n- b\n")
    message = user_error(path=path)
    assert "list.yaml" in message and "mapping" in message


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write_yaml(tmp_path / "broken.yaml", "seed: 1\nmodel: [tiny\n")
    message = user_error(path=path)
    assert "broken.yaml" in message and "not valid YAML" in message and "line" in message


def test_section_given_a_scalar(tmp_path):
    message = user_error("model=3")
    assert "model" in message and "section" in message


# ---- typed overrides ----

@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("train.max_steps=7", "train.max_steps", 7),
        ("train.max_steps=2_000", "train.max_steps", 2000),
        ("train.lr=6e-4", "train.lr", 6e-4),  # YAML 1.1: a string, converted to float
        ("train.lr=0.001", "train.lr", 0.001),
        ("train.lr=1", "train.lr", 1.0),  # an int for a float field
        ("train.min_lr=0", "train.min_lr", 0.0),
        ("train.resume=false", "train.resume", False),
        ("train.compile=true", "train.compile", "true"),  # auto|true|false: YAML bools become the words
        ("train.compile=yes", "train.compile", "true"),
        ("train.compile=off", "train.compile", "false"),
        ("train.compile=auto", "train.compile", "auto"),
        ("logging.tensorboard=off", "logging.tensorboard", False),
        ("data.train=[a.txt,b.txt]", "data.train", ["a.txt", "b.txt"]),
        ("data.train=[a.txt, 'b c.txt']", "data.train", ["a.txt", "b c.txt"]),
        ("data.train=a.txt", "data.train", ["a.txt"]),
        ("data.val=data/*.txt", "data.val", ["data/*.txt"]),
        ("model.n_layer=4", "model.n_layer", 4),
        ("model.n_layer=null", "model.n_layer", None),
        ("model.pretrained=null", "model.pretrained", None),
        ("model.pretrained=~", "model.pretrained", None),
        ("model.pretrained=models/gpt2", "model.pretrained", "models/gpt2"),
        ("tokenizer.path=none", "tokenizer.path", None),
        ("model.dropout=0", "model.dropout", 0.0),
        ("run_dir=runs/a=b", "run_dir", "runs/a=b"),  # only the first '=' separates key and value
        ("run_dir=123", "run_dir", "123"),  # a number for a string field is its text
        ("distributed.zero_stage=2", "distributed.zero_stage", 2),
    ],
)
def test_override_types(override, key, expected):
    cfg = cfg_with(override)
    section, name = key.split(".") if "." in key else (None, key)
    value = getattr(getattr(cfg, section), name) if section else getattr(cfg, name)
    assert value == expected
    assert type(value) is type(expected)


def test_null_for_optional_field_overrides_the_file(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "model:\n  n_layer: 6\n  pretrained: somewhere\n")
    cfg = load_config(path, [*MINIMAL, "model.n_layer=null", "model.pretrained=null"])
    assert cfg.model.n_layer is None and cfg.model.pretrained is None


def test_override_creates_missing_sections():
    cfg = load_config(None, ["data.train=[x.txt]", "checkpoint.every=5"])
    assert cfg.checkpoint.every == 5


@pytest.mark.parametrize("override", ["train.max_steps", "=5", "train..lr=1", ".lr=1", "train.=1"])
def test_bad_override_syntax(override):
    message = user_error(override)
    assert repr(override) in message and "key.sub=value" in message


def test_override_below_a_value():
    message = user_error("seed=1", "seed.x=1")
    assert "'seed.x=1'" in message and "seed is a value, not a section" in message
    assert "config key seed expects an integer" in user_error("seed.x=1")


# ---- unknown keys ----

@pytest.mark.parametrize(
    ("override", "dotted", "suggestion"),
    [
        ("train.max_step=5", "train.max_step", "train.max_steps"),
        ("train.learning_rat=1", "train.learning_rat", "train.lr (the Trainer's learning_rate)"),  # both vocabularies
        ("modle.preset=tiny", "modle", "model"),
        ("data.blocksize=64", "data.blocksize", "data.block_size"),
        ("tokenizer.vocab=100", "tokenizer.vocab", "tokenizer.vocab_size"),
    ],
)
def test_unknown_key_names_dotted_key_and_suggests(override, dotted, suggestion):
    message = user_error(override)
    assert f"unknown config key {dotted}" in message
    if suggestion:
        assert f"did you mean {suggestion}?" in message
    else:
        assert "valid keys" in message


def test_unknown_key_in_yaml_file(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "data:\n  train: [a.txt]\ntrain:\n  max_step: 5\n")
    message = user_error(path=path)
    assert "train.max_step" in message and "did you mean train.max_steps?" in message


def test_unknown_key_far_from_everything_lists_valid_keys():
    message = user_error("train.zzzzzz=1")
    assert "train.zzzzzz" in message and "valid keys" in message and "max_steps" in message


# ---- wrong types ----

@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lr=abc", "train.lr"),
        ("train.max_steps=1.5", "train.max_steps"),
        ("train.max_steps=ten", "train.max_steps"),
        ("train.resume=maybe", "train.resume"),
        ("train.resume=1", "train.resume"),
        ("train.lr=true", "train.lr"),
        ("model.n_layer=[1,2]", "model.n_layer"),
        ("data.text_field=[a]", "data.text_field"),
        ("data.train=[a.txt, null]", "data.train"),
        ("data.text_field=null", "data.text_field"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    message = user_error(override)
    assert f"config key {key} expects" in message


# ---- choices and ranges ----

@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.precision=fp8", "train.precision"),
        ("model.preset=gpt3", "model.preset"),
        ("tokenizer.kind=wordpiece", "tokenizer.kind"),
        ("data.sample_by=sentence", "data.sample_by"),
        ("train.device=tpu", "train.device"),
        ("distributed.zero_stage=4", "distributed.zero_stage"),
    ],
)
def test_choices(override, key):
    message = user_error(override)
    value = override.split("=", 1)[1]
    assert f"config key {key}=" in message and value in message and "is not one of" in message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.micro_batch_size=0", "train.micro_batch_size"),
        ("train.max_steps=-1", "train.max_steps"),
        ("data.block_size=0", "data.block_size"),
        ("train.warmup_steps=-5", "train.warmup_steps"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.dropout=1.0", "model.dropout"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("data.val_fraction=1", "data.val_fraction"),
        ("data.val_fraction=-0.1", "data.val_fraction"),
        ("train.min_lr=1e-2", "train.min_lr"),  # above the default lr 6e-4
    ],
)
def test_ranges(override, key):
    assert key in user_error(override)


# ---- one range per numeric key (issue 12, item 9) ----

def numeric_keys(cls=RunConfig, prefix: str = "") -> dict[str, type]:
    """Every int/float key of the config (X | None and list[X] included) -> int or float, from the dataclasses."""
    out = {}
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(numeric_keys(hint, f"{prefix}{f.name}."))
            continue
        inner = {a for a in typing.get_args(hint) if a is not type(None)} or {hint}
        inner = {typing.get_args(a)[0] if typing.get_origin(a) is list else a for a in inner}
        if inner & {int, float}:
            out[prefix + f.name] = float if float in inner else int
    return out


def test_every_numeric_key_has_a_range():
    keys = numeric_keys()
    assert len(keys) >= 40 and "train.lr" in keys and "data.weights" in keys and "seed" in keys
    missing = sorted(set(keys) - set(RANGES))
    assert not missing, f"numeric config keys without a range (add metadata beside the field): {missing}"
    for key in keys:  # the defaults are inside their own ranges
        value = get_key(RunConfig(), key)
        assert all(v in RANGES[key] for v in (value if isinstance(value, list) else [value]) if v is not None), key


@pytest.mark.parametrize("key", sorted(k for k, t in numeric_keys().items() if t is float))
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "inf"])
def test_every_float_key_refuses_nan_and_inf(key, value):
    override = f"{key}=[{value}]" if key == "data.weights" else f"{key}={value}"
    message = user_error(override, *(["data.train=[a.txt]"] if key == "data.weights" else []))
    assert f"config key {key} must be a finite number" in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [  # the values issue 12 found accepted (or crashing: n_head=0 divided by zero, lr=0 in the schedule)
        ("train.lr=.nan", "config key train.lr must be a finite number, got nan"),
        ("train.beta1=1.5", "config key train.beta1 must be in [0, 1), got 1.5"),
        ("train.beta2=-3", "config key train.beta2 must be in [0, 1), got -3.0"),
        ("model.n_layer=0", "config key model.n_layer must be > 0, got 0"),
        ("model.n_head=0", "config key model.n_head must be > 0, got 0"),
        ("train.lr=0", "config key train.lr must be > 0, got 0.0"),
        ("seed=-1", "config key seed must be in [0, 18446744073709551615], got -1"),
        ("train.fp16_initial_scale_power=200", "config key train.fp16_initial_scale_power must be in [0, 64]"),
        ("distributed.timeout_minutes=0", "config key distributed.timeout_minutes must be > 0"),
        ("distributed.stage3_max_reuse_distance=-1", "config key distributed.stage3_max_reuse_distance must be >= 0"),
        ("train.weight_decay=-0.1", "config key train.weight_decay must be >= 0"),
        ("data.weights=[1, -1]", "config key data.weights must be >= 0, got [1.0, -1.0]"),
    ],
)
def test_issue_values_are_refused(override, expected):
    extra = ["data.train=[a.txt,b.txt]"] if override.startswith("data.weights") else []
    assert expected in user_error(override, *extra)


@pytest.mark.parametrize("override", ["train.beta1=0", "train.beta2=0.999999", "model.dropout=0", "train.grad_clip=0",
                                      "train.min_lr=0", "train.fp16_initial_scale_power=0", "seed=0",
                                      "checkpoint.every=0", "distributed.zero_stage=3", "data.num_workers=0"])
def test_range_edges_that_are_allowed(override):
    key, value = override.split("=")
    assert get_key(cfg_with(override), key) == float(value)


# ---- a key given twice in one YAML mapping (issue 12, item 10) ----

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("train:\n  lr: 1e-3\ndata:\n  train: [a.txt]\ntrain:\n  max_steps: 5\n",
         "key train appears twice (lines 1 and 5)"),
        ("data:\n  train: [a.txt]\ntrain:\n  lr: 1e-3\n  max_steps: 4\n  lr: 2e-3\n",
         "key train.lr appears twice (lines 4 and 6)"),
        ("data: {train: [a.txt], block_size: 64, block_size: 32}\n", "key data.block_size appears twice"),
        ("seed: 1\nseed: 2\ndata: {train: [a.txt]}\n", "key seed appears twice (lines 1 and 2)"),
    ],
    ids=["two-sections", "nested-key", "flow-mapping", "top-level-value"],
)
def test_duplicate_yaml_keys_are_refused(tmp_path, text, expected):
    path = write_yaml(tmp_path / "run.yaml", text)
    with pytest.raises(UserError) as info:
        load_config(path)
    assert f"config file {path}: {expected}" in str(info.value) and "keep one" in str(info.value)


def test_duplicate_key_in_an_override_value():
    message = user_error("model={n_layer: 1, n_layer: 2}")
    assert message.startswith("override 'model={n_layer: 1, n_layer: 2}': key model.n_layer appears twice")


def test_merge_keys_may_still_be_overridden(tmp_path):
    """YAML's merge key (`<<`) exists to be overridden: that is not a duplicate."""
    path = write_yaml(tmp_path / "run.yaml", "data: {train: [a.txt]}\n"
                      "train:\n  <<: {lr: 1.0e-3, max_steps: 7}\n  lr: 2.0e-3\n")
    cfg = load_config(path)
    assert cfg.train.lr == 2e-3 and cfg.train.max_steps == 7


def test_empty_train_list():
    message = user_error("data.train=[]")
    assert "data.train" in message and "empty" in message


def test_block_size_larger_than_n_positions():
    message = user_error("data.block_size=300")  # tiny preset: n_positions 256
    assert "data.block_size=300" in message and "n_positions=256" in message
    assert cfg_with("data.block_size=256").data.block_size == 256
    assert cfg_with("data.block_size=300", "model.n_positions=512").data.block_size == 300


def test_block_size_not_checked_against_preset_when_pretrained():
    cfg = cfg_with("data.block_size=1000", "model.pretrained=models/gpt2")  # checked later, from config.json
    assert cfg.data.block_size == 1000


def test_n_embd_must_be_divisible_by_n_head():
    message = user_error("model.n_embd=65")  # tiny preset: n_head 2
    assert "model.n_embd=65" in message and "model.n_head=2" in message
    message = user_error("model.preset=gpt2", "model.n_head=5")  # 768 % 5
    assert "model.n_embd=768" in message and "model.n_head=5" in message
    assert cfg_with("model.n_embd=66").resolved_model_dims()["n_embd"] == 66


def test_pretrained_tokenizer_needs_a_path():
    message = user_error("tokenizer.kind=pretrained")
    assert "tokenizer.path" in message
    assert cfg_with("tokenizer.kind=pretrained", "tokenizer.path=tok").tokenizer.path == "tok"
    assert cfg_with("tokenizer.kind=pretrained", "model.pretrained=m").model.pretrained == "m"


# ---- model dims ----

def test_resolved_model_dims_preset_only():
    assert cfg_with().resolved_model_dims() == MODEL_PRESETS["tiny"]
    assert cfg_with("model.preset=gpt2-medium").resolved_model_dims() == MODEL_PRESETS["gpt2-medium"]


def test_resolved_model_dims_per_field_overrides():
    cfg = cfg_with("model.preset=gpt2", "model.n_layer=2", "model.n_positions=128", "data.block_size=64")
    assert cfg.resolved_model_dims() == {"n_layer": 2, "n_embd": 768, "n_head": 12, "n_positions": 128}
    assert MODEL_PRESETS["gpt2"]["n_layer"] == 12  # the preset table itself is not modified


# ---- save / reload ----

@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["train.lr=6e-4", "train.min_lr=1e-5", "model.dropout=0.1", "model.n_layer=3", "data.val=[v.txt]",
         "tokenizer.kind=bpe", "tokenizer.path=null", "train.resume=false", "run_dir=runs/round trip",
         "data.val_fraction=0.05", "data.text_field=body", "distributed.zero_stage=1", "train.precision=bf16"],
    ],
    ids=["defaults", "many-overrides"],
)
def test_save_config_round_trip(tmp_path, overrides):
    cfg = load_config(None, ["data.train=[a.txt,b.txt]", *overrides])
    out = tmp_path / "config.yaml"
    save_config(cfg, out)
    assert not (tmp_path / "config.yaml.tmp").exists()
    assert isinstance(yaml.safe_load(out.read_text(encoding="utf-8")), dict)
    assert load_config(out) == cfg


def test_save_config_replaces_an_old_file(tmp_path):
    out = tmp_path / "config.yaml"
    out.write_text("stale: true\n", encoding="utf-8")
    cfg = cfg_with("seed=99")
    save_config(cfg, out)
    assert load_config(out) == cfg


# ---- the shipped examples ----

def test_examples_exist():
    assert EXAMPLES, "examples/*.yaml is empty"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.data.train
    cfg.resolved_model_dims()


def test_tiny_cpu_example_matches_demo_yaml(tmp_path):
    example = REPO / "examples" / "tiny-cpu.yaml"
    text = example.read_text(encoding="utf-8")
    assert text.startswith("#")  # leading comments are the only allowed difference
    assert yaml.safe_load(text) == yaml.safe_load(DEMO_YAML)
    assert load_config(example) == load_config(write_yaml(tmp_path / "demo.yaml", DEMO_YAML))
