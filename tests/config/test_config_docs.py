"""`gpt2dist config`: every key's type, default, allowed values and doc come from config.py itself; the README
table is checked against the same source; `--print-config` and `--a.b v` overrides everywhere."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml
from helpers import run_cli, tiny_config, write_yaml

from gpt2dist.cli import parse
from gpt2dist.config import CHOICES, MODEL_PRESETS, RANGES, Range, load_config
from gpt2dist.config import docs as config_docs
from gpt2dist.config.overrides import normalize_argv
from gpt2dist.errors import UserError
from gpt2dist.train import parse_args as train_parse_args

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_key_has_a_doc_declared_with_it():
    docs = config_docs.field_docs()
    assert list(docs) == config_docs.dotted_keys()
    assert not [k for k, doc in docs.items() if not doc], "schema.py fields without key(..., doc)"
    assert docs["train.lr"] == "peak learning rate (the schedule divides by it)"
    assert docs["train.compile"].endswith("a compilation failure falls back to eager with a warning")
    assert docs["train.global_batch_size"] == "sequences per optimizer step, all ranks together"
    # the docs the comment parser cut to their last line are whole again
    assert docs["train.num_epochs"].startswith("passes over the training data")
    assert docs["model.resize_embeddings"].startswith("with `pretrained`: allow tokenizer.kind bpe/char")


def test_choices_come_from_the_literal_annotations():
    """CHOICES is derived from the `Literal` annotations: the hand-kept table is gone, so the two cannot differ."""
    hints = config_docs.section_classes()
    literals = {k: typing.get_args(h) for k, h in hints.items() if typing.get_origin(h) is typing.Literal}
    literals["tokenizer.kind"] = ("pretrained", "bpe", "char")  # the one `Literal[...] | None`
    assert literals == CHOICES
    assert CHOICES["model.preset"] == tuple(MODEL_PRESETS), "schema.Preset must name every MODEL_PRESETS entry"
    assert CHOICES["distributed.zero_stage"] == (0, 1, 2, 3) and CHOICES["data.num_workers"] == (0, 1)


@pytest.mark.parametrize(("override", "expected"), [
    ("train.compile=true", "true"), ("train.chunked_loss=off", "false"), ("train.compile=auto", "auto"),
    ("distributed.zero_stage=2.0", 2), ("distributed.zero_stage='3'", 3), ("data.num_workers=0", 0),
    ("tokenizer.kind=null", "char"), ("tokenizer.kind=bpe", "bpe"), ("model.preset=gpt2-xl", "gpt2-xl"),
])
def test_literal_keys_take_what_they_took_before(override, expected):
    """YAML booleans for auto|true|false keys, whole floats and digit strings for int choices, null for
    `| None` (tokenizer.kind unset resolves to char without model.pretrained)."""
    cfg = load_config(None, ["data.train=[t.txt]", override])
    value = cfg
    for part in override.split("=")[0].split("."):
        value = getattr(value, part)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("override", "expected"), [
    ("train.compile=maybe", "config key train.compile='maybe' is not one of auto, true, false"),
    ("train.precision=1", "config key train.precision='1' is not one of fp32, bf16, fp16"),
    ("data.num_workers=2", "config key data.num_workers=2 is not one of 0, 1"),
    ("distributed.zero_stage=two", "config key distributed.zero_stage expects an integer, got 'two'"),
    ("train.device=true", "config key train.device expects a string, got True"),
])
def test_literal_keys_refuse_in_one_line(override, expected):
    with pytest.raises(UserError) as err:
        load_config(None, ["data.train=[t.txt]", override])
    assert str(err.value) == expected


def test_types_defaults_and_allowed_values():
    rows = {r.key: r for r in config_docs.describe()}
    assert rows["train.lr"].type == "float" and rows["train.lr"].default == 6e-4
    assert rows["model.pretrained"].type == "str | null"
    assert rows["data.train"].type == "list[str]" and rows["data.train"].default == []
    assert rows["distributed.deepspeed"].type == "mapping | str | null"
    assert rows["distributed.zero_stage"].allowed == "0 | 1 | 2 | 3"
    assert rows["train.max_steps"].allowed == "> 0"
    assert rows["train.global_batch_size"].allowed == "> 0 or null"
    assert rows["train.warmup_steps"].allowed == ">= 0"


def outside(allowed: Range) -> float:
    """A value just outside a range: its lower bound (or one below it), else one above its upper bound."""
    if allowed.lo is not None:
        return allowed.lo if allowed.lo_open else allowed.lo - 1
    return allowed.hi if allowed.hi_open else allowed.hi + 1


@pytest.mark.parametrize("key", [k for k in config_docs.dotted_keys() if config_docs.key_constraint(k)])
def test_the_range_shown_is_the_range_enforced(tmp_path, key):
    """key_constraint must say what validate() does: the boundary value is refused, naming the key."""
    assert config_docs.key_constraint(key).startswith(str(RANGES[key]))
    train = tmp_path / "t.txt"
    train.write_text("x")
    with pytest.raises(UserError, match=re.escape(key)):
        load_config(None, [f"data.train=[{train}]", f"{key}={outside(RANGES[key])}"])


def test_choices_are_config_choices():
    rows = {r.key: r for r in config_docs.describe()}
    for key, allowed in CHOICES.items():
        assert rows[key].allowed.split(" | ") == [str(v) for v in allowed]


def readme_config_table() -> list[tuple[list[str], list[str]]]:
    """(keys, default cells) of each row of the README's config reference table (backticked items only)."""
    section = README.split("## Config reference", 1)[1]
    rows = []
    for line in section.split("| key | default | meaning |", 1)[1].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = line.split("|")
        rows.append((re.findall(r"`([^`]+)`", cells[1]), re.findall(r"`([^`]+)`", cells[2])))
    return rows


def readme_value(text: str):
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads 5e8 and 6e-4 (no dot) as strings
        try:
            return float(value)
        except ValueError:
            pass
    return value


def test_readme_table_lists_every_key_once_with_its_default():
    rows = readme_config_table()
    listed = [key for keys, _ in rows for key in keys]
    assert sorted(listed) == sorted(config_docs.dotted_keys()), "README config table keys differ from config.py"
    assert len(listed) == len(set(listed)), "a key is listed twice"
    for keys, defaults in rows:
        assert len(keys) == len(defaults), f"README row {keys}: give one backticked default per key"
        for key, text in zip(keys, defaults, strict=True):
            assert readme_value(text) == config_docs.default(key), f"README default of {key} is {text}"


def test_config_command_lists_every_key():
    out = run_cli("config").stdout
    for row in config_docs.describe():
        assert re.search(rf"^{re.escape(row.key)}\s+{re.escape(row.type)}\s", out, re.M), row.key
    assert "peak learning rate" in out
    only = run_cli("config", "--keys", "distributed.deep").stdout
    assert "distributed.deepspeed" in only and "train.lr" not in only


@pytest.mark.parametrize("prefix", ["--print-config"])
def test_print_config_resolves_without_running(tmp_path, prefix):
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "run.yaml", tiny_config(run, [str(tmp_path / "missing.txt")],
                                                           train={"global_batch_size": 16}))
    out = run_cli("train", str(config), prefix, "--train.lr", "3e-4", "--distributed.zero_stage=1",
                  "train.max_steps=7").stdout
    resolved = yaml.safe_load(out)  # valid YAML: the derived lines are comments
    assert resolved["train"]["lr"] == 3e-4 and resolved["train"]["max_steps"] == 7
    assert resolved["distributed"]["zero_stage"] == 1
    assert "backend: deepspeed ZeRO-1" in out
    assert "micro 4 x accum 4 x data-parallel 1 = global 16 sequences = 512 tokens/step (block 32)" in out
    assert not run.exists(), "--print-config must not create the run dir"
    # `gpt2dist config CONFIG` says the same for another world size; the per-rank entry point too
    four = run_cli("config", str(config), "--world-size", "4", "--train.lr=3e-4").stdout
    assert "micro 4 x accum 1 x data-parallel 4 = global 16" in four
    entry = train_parse_args([str(config), "--train.lr", "1e-3", "--local_rank=0", "--print-config"])
    assert entry.print_config and entry.overrides == ["train.lr=1e-3"] and entry.local_rank == 0


def test_dotted_options_become_overrides():
    assert normalize_argv(["c.yaml", "--train.lr", "3e-4", "--world-size", "2", "--data.train=[a, b]",
                           "model.n_layer=3"]) == ["c.yaml", "--world-size", "2", "model.n_layer=3",
                                                   "train.lr=3e-4", "data.train=[a, b]"]
    assert normalize_argv(["--train.lr", "-1"]) == ["train.lr=-1"]  # a negative value is a value
    assert normalize_argv(["--local_rank=1", "--no-resume"]) == ["--local_rank=1", "--no-resume"]
    with pytest.raises(UserError, match="--train.resume needs a value"):
        normalize_argv(["c.yaml", "--train.resume"])
    with pytest.raises(UserError, match="needs a value"):
        normalize_argv(["--train.lr", "--no-resume"])


@pytest.mark.parametrize("argv", [
    ["train", "c.yaml", "--train.lr", "3e-4", "--no-resume"],
    ["train", "--train.lr=3e-4", "c.yaml"],  # before the config file: it stays the positional
    ["launch", "c.yaml", "--nproc", "2", "--train.lr", "3e-4"],
    ["slurm", "c.yaml", "--nodes", "2", "--train.lr=3e-4"],
    ["doctor", "c.yaml", "--world-size", "8", "--train.lr", "3e-4"],
    ["ds-config", "c.yaml", "--train.lr", "3e-4", "--world-size", "2"],
    ["prepare", "c.yaml", "--train.lr", "3e-4"],
    ["config", "c.yaml", "--train.lr", "3e-4"],
    ["demo", "--train.lr", "3e-4"],
])
def test_every_command_with_overrides_takes_the_option_form(argv):
    args = parse(argv)
    assert args.overrides == ["train.lr=3e-4"]
    if hasattr(args, "config") and args.command != "demo":
        assert args.config == "c.yaml"
