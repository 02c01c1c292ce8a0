"""Tests for the DeepSpeed-config builder: goldens, batch-triple math, precision/offload blocks, DeepSpeed's parser.

The builder is a pure function, so all of this runs in-process in a few seconds; only the parser check imports
deepspeed (and needs no process group: rank and world size are patched in).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gpt2dist.launcher import gen_golden
from gpt2dist.launcher.ds_config import build_ds_config, describe_batch, ds_config_command

from gpt2dist.config import RunConfig, TrainConfig, batch_plan, load_config
from gpt2dist.errors import UserError

GOLDENS = gen_golden.golden_configs()
FIX = "python -m gpt2dist.launcher.gen_golden"


def cfg_with(*overrides: str) -> RunConfig:
    return load_config(None, ["data.train=[train.txt]", *overrides])


def walk(node: Any, path: str = ""):
    """Yield (dotted path, leaf-or-key) for every key and leaf value of a nested JSON-like object."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    else:
        yield path, node


# ---- goldens ----

def test_fourteen_goldens():
    assert len(GOLDENS) == 14
    assert {f"zero{s}-{p}.json" for s in range(4) for p in ("fp32", "bf16", "fp16")} < set(GOLDENS)


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_golden_file_matches_builder(name):
    path = gen_golden.GOLDEN_DIR / name
    assert path.is_file(), f"{path} is missing: run {FIX}"
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == GOLDENS[name], f"{path} differs from build_ds_config's output: run {FIX} and review the diff"


def test_golden_folder_is_up_to_date_byte_for_byte():
    stale = gen_golden.stale_files(gen_golden.GOLDEN_DIR)
    assert not stale, f"out of date in ds_configs/: {', '.join(stale)}; run {FIX}"


def test_check_mode_lists_differing_files(tmp_path, capsys):
    gen_golden.write_all(tmp_path)
    assert gen_golden.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "zero1-bf16.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "zero3-fp16.json").unlink()
    assert gen_golden.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "zero1-bf16.json" in err and "zero3-fp16.json" in err and FIX in err
    assert "zero2-bf16.json" not in err


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_no_auto_anywhere(name):
    bad = [where for where, item in walk(GOLDENS[name]) if isinstance(item, str) and item.lower() == "auto"]
    assert not bad, f"{name} has 'auto' at {bad}"


def test_no_scheduler_and_torch_adamw():
    for ds in GOLDENS.values():
        assert "scheduler" not in ds
        assert ds["optimizer"]["type"] == "AdamW"
        assert ds["optimizer"]["params"]["torch_adam"] is True and ds["optimizer"]["params"]["adam_w_mode"] is True


# ---- batch triple ----

# (global, micro, accum) -> {world size: (micro, accum) or None for an error}
BATCH_TABLE = [
    ((None, None, None), {1: (8, 1), 2: (8, 1), 8: (8, 1)}),
    ((None, 4, None), {1: (4, 1), 2: (4, 1), 8: (4, 1)}),
    ((None, None, 4), {1: (8, 4), 2: (8, 4), 8: (8, 4)}),
    ((None, 4, 2), {1: (4, 2), 2: (4, 2), 8: (4, 2)}),
    ((64, None, None), {1: (64, 1), 2: (32, 1), 8: (8, 1)}),
    ((100, None, None), {1: (100, 1), 2: (50, 1), 8: None}),
    ((64, 4, None), {1: (4, 16), 2: (4, 8), 8: (4, 2)}),
    ((64, 16, None), {1: (16, 4), 2: (16, 2), 8: None}),
    ((64, None, 2), {1: (32, 2), 2: (16, 2), 8: (4, 2)}),
    ((64, None, 16), {1: (4, 16), 2: (2, 16), 8: None}),
    ((64, 4, 2), {1: None, 2: None, 8: (4, 2)}),
    ((100, 4, None), {1: (4, 25), 2: None, 8: None}),
]
BATCH_CASES = [(triple, ws, want) for triple, by_ws in BATCH_TABLE for ws, want in by_ws.items()]


@pytest.mark.parametrize(("triple", "world_size", "want"), BATCH_CASES)
def test_batch_plan_table(triple, world_size, want):
    g, m, a = triple
    train = TrainConfig(global_batch_size=g, micro_batch_size=m, grad_accum_steps=a)
    if want is None:
        with pytest.raises(UserError) as info:
            batch_plan(train, world_size)
        msg = str(info.value)
        assert f"train.global_batch_size={g}" in msg and f"{world_size} ranks" in msg
        for key, given in (("train.micro_batch_size", m), ("train.grad_accum_steps", a)):
            assert (f"{key}={given}" if given else f"{key}=") in msg  # given values verbatim; derived ones vary
        return
    plan = batch_plan(train, world_size)
    assert (plan.micro, plan.accum, plan.world_size) == (*want, world_size)
    if g is not None:
        assert plan.global_batch == g
    cfg = RunConfig(train=train)
    ds = build_ds_config(cfg, world_size)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == want
    assert ds["train_batch_size"] == want[0] * want[1] * world_size


def test_batch_error_names_the_three_numbers():
    with pytest.raises(UserError) as info:
        build_ds_config(cfg_with("train.global_batch_size=100", "train.micro_batch_size=4"), 8)
    msg = str(info.value)
    assert "train.global_batch_size=100" in msg and "train.micro_batch_size=4" in msg
    assert "train.grad_accum_steps=" in msg and "8 ranks" in msg and "\n" not in msg


def test_world_size_below_one_is_a_user_error():
    with pytest.raises(UserError, match="world size"):
        build_ds_config(cfg_with(), 0)


# ---- ZeRO / offload / precision ----

def test_offload_combinations_rejected_by_load_config():
    with pytest.raises(UserError, match="offload_param=cpu needs distributed.zero_stage=3"):
        cfg_with("distributed.zero_stage=2", "distributed.offload_param=cpu")
    with pytest.raises(UserError, match="offload_optimizer=cpu needs distributed.zero_stage >= 1"):
        cfg_with("distributed.zero_stage=0", "distributed.offload_optimizer=cpu")


def test_offload_combinations_rechecked_by_builder():
    cfg = cfg_with("distributed.zero_stage=1")
    cfg.distributed.offload_param = "cpu"  # bypasses validation, as code building a RunConfig by hand could
    with pytest.raises(UserError, match="offload_param"):
        build_ds_config(cfg, 1)
    cfg = cfg_with()
    cfg.distributed.offload_optimizer = "cpu"
    with pytest.raises(UserError, match="offload_optimizer"):
        build_ds_config(cfg, 1)


def test_zero_blocks_per_stage():
    assert GOLDENS["zero0-fp32.json"]["zero_optimization"] == {"stage": 0}
    z2 = GOLDENS["zero2-fp32.json"]["zero_optimization"]
    assert z2["allgather_partitions"] is True and "stage3_prefetch_bucket_size" not in z2
    z3 = GOLDENS["zero3-fp32.json"]["zero_optimization"]
    assert z3["stage3_gather_16bit_weights_on_model_save"] is False and "allgather_bucket_size" not in z3
    assert "offload_optimizer" not in z3 and "zero_force_ds_cpu_optimizer" not in GOLDENS["zero3-fp32.json"]
    off = GOLDENS["zero3-bf16-offload-optimizer-param.json"]
    assert off["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert off["zero_force_ds_cpu_optimizer"] is False


def test_distributed_knobs_flow_through():
    ds = build_ds_config(cfg_with("distributed.zero_stage=3", "distributed.overlap_comm=false",
                                  "distributed.stage3_max_live_parameters=123", "train.grad_clip=0"), 2)
    assert ds["zero_optimization"]["overlap_comm"] is False
    assert ds["zero_optimization"]["stage3_max_live_parameters"] == 123
    assert ds["gradient_clipping"] == 0.0


def test_precision_blocks():
    assert GOLDENS["zero1-fp32.json"]["bf16"] == {"enabled": False}
    assert GOLDENS["zero1-fp32.json"]["fp16"] == {"enabled": False}
    assert GOLDENS["zero1-bf16.json"]["bf16"] == {"enabled": True}
    assert GOLDENS["zero1-bf16.json"]["fp16"] == {"enabled": False}


def test_fp16_block_carries_configured_loss_scaling():
    cfg = cfg_with("train.precision=fp16", "train.fp16_initial_scale_power=12", "train.fp16_loss_scale_window=500",
                   "train.fp16_hysteresis=3", "train.fp16_min_loss_scale=4")
    ds = build_ds_config(cfg, 1)
    assert ds["fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 12, "loss_scale_window": 500,
                          "hysteresis": 3, "min_loss_scale": 4}
    assert ds["bf16"] == {"enabled": False}


@pytest.mark.parametrize(("override", "key"), [("train.fp16_min_loss_scale=0.5", "fp16_min_loss_scale"),
                                               ("train.fp16_hysteresis=0", "fp16_hysteresis")])
def test_fp16_values_deepspeed_would_reject(override, key):
    with pytest.raises(UserError, match=key):
        build_ds_config(cfg_with("train.precision=fp16", override), 1)


# ---- DeepSpeed's own parser ----

@pytest.fixture
def ds_config_class(monkeypatch):
    """DeepSpeedConfig for 8 ranks without a process group: it asks deepspeed.comm for rank and world size
    (and falls back to world size 1 when there is no group), so those two are patched."""
    ds_config = pytest.importorskip("deepspeed.runtime.config")
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(ds_config.dist, "get_world_size", lambda group=None: gen_golden.WORLD_SIZE)
    return ds_config.DeepSpeedConfig


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_deepspeed_parses_golden(ds_config_class, name):
    ds = json.loads((gen_golden.GOLDEN_DIR / name).read_text(encoding="utf-8"))
    parsed = ds_config_class(ds)
    assert parsed.world_size == gen_golden.WORLD_SIZE
    assert (parsed.train_batch_size, parsed.train_micro_batch_size_per_gpu, parsed.gradient_accumulation_steps) == (
        ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"])
    assert parsed.zero_optimization_stage == ds["zero_optimization"]["stage"]
    assert parsed.optimizer_name == "adamw" and parsed.optimizer_params["torch_adam"] is True
    assert parsed.bfloat16_config.enabled == ds["bf16"]["enabled"]
    assert parsed.float16_config.enabled == ds["fp16"]["enabled"]
    assert parsed.zero_force_ds_cpu_optimizer == ("offload_optimizer" not in ds["zero_optimization"])
    if ds["fp16"]["enabled"]:
        assert parsed.float16_config.min_loss_scale == ds["fp16"]["min_loss_scale"]


# ---- the command ----

def write_run_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text("model: {preset: gpt2}\ndata: {train: [data/*.txt], block_size: 1024}\n"
                    "train: {global_batch_size: 256, micro_batch_size: 4}\n", encoding="utf-8")
    return path


def test_command_writes_file_and_prints_batch_math(tmp_path, capsys):
    out = tmp_path / "sub" / "ds.json"
    ds = ds_config_command(str(write_run_yaml(tmp_path)), ["distributed.zero_stage=2"], 8, str(out))
    text = out.read_text(encoding="utf-8")
    assert json.loads(text) == ds and text.endswith("}\n") and text == json.dumps(ds, indent=2, sort_keys=True) + "\n"
    printed = capsys.readouterr().out
    assert "micro 4 x accum 8 x data-parallel 8 = global 256 sequences = 262,144 tokens/step (block 1024)" in printed
    assert "ZeRO stage 2" in printed and str(out) in printed
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind


def test_command_without_out_prints_pure_json(tmp_path, capsys):
    ds = ds_config_command(str(write_run_yaml(tmp_path)), [], 2, None)
    captured = capsys.readouterr()
    assert json.loads(captured.out) == ds
    assert "global 256 sequences" in captured.err


def test_command_rejects_bad_world_size(tmp_path):
    with pytest.raises(UserError, match="world-size"):
        ds_config_command(str(write_run_yaml(tmp_path)), [], 0, None)


def test_describe_batch_two_lines():
    text = describe_batch(cfg_with("train.precision=bf16", "distributed.zero_stage=3",
                                   "distributed.offload_param=cpu"), 2)
    assert text.splitlines()[1] == "deepspeed: ZeRO stage 3, offload optimizer=none param=cpu, precision bf16"
