"""`distributed.deepspeed`: your own DeepSpeed keys merged over the generated config; keys gpt2dist owns are
refused in one line when they differ. The real 2-rank ZeRO run that shows a passed-through key taking effect is
test_tracking.py::test_two_ranks_log_once_and_pass_deepspeed_keys_through (it shares the run with wandb)."""

from __future__ import annotations

import json

import pytest
from gpt2dist.launcher.ds_config import build_ds_config, ds_config_command
from helpers import run_cli, tiny_config, write_yaml

from gpt2dist.config import load_config
from gpt2dist.errors import UserError

# The HF Trainer's documented ZeRO-2 config (transformers docs, "DeepSpeed" -> ZeRO-2 example), minus its
# `scheduler` block: "auto" values are filled by gpt2dist's own, as the Trainer fills them from its arguments.
HF_ZERO2 = {
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
             "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "zero_optimization": {"stage": 2, "allgather_partitions": True, "allgather_bucket_size": 5e8, "overlap_comm": True,
                          "reduce_scatter": True, "reduce_bucket_size": "auto", "contiguous_gradients": True},
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": False,
}


def cfg_with(*overrides: str):
    return load_config(None, ["data.train=[train.txt]", "train.micro_batch_size=4", *overrides])


def test_passed_through_keys_are_merged_key_by_key():
    cfg = cfg_with("distributed.zero_stage=3", "distributed.deepspeed={zero_optimization: {"
                   "stage3_gather_16bit_weights_on_model_save: true, sub_group_size: 1000}, "
                   "wall_clock_breakdown: true}")
    ds = build_ds_config(cfg, 2)
    plain = build_ds_config(cfg_with("distributed.zero_stage=3"), 2)
    zero = ds["zero_optimization"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True and zero["sub_group_size"] == 1000
    assert ds["wall_clock_breakdown"] is True
    assert {k: v for k, v in zero.items() if k != "sub_group_size"} == {
        **plain["zero_optimization"], "stage3_gather_16bit_weights_on_model_save": True}
    assert ds["train_batch_size"] == plain["train_batch_size"] == 8


def test_a_dotted_override_reaches_into_the_mapping():
    cfg = cfg_with("distributed.deepspeed.zero_optimization.round_robin_gradients=true",
                   "distributed.deepspeed.steps_per_print=5")
    assert cfg.distributed.deepspeed == {"zero_optimization": {"round_robin_gradients": True}, "steps_per_print": 5}
    ds = build_ds_config(cfg, 1)
    assert ds["steps_per_print"] == 5 and ds["zero_optimization"]["round_robin_gradients"] is True


def test_an_hf_trainer_config_file_is_accepted(tmp_path, ds_config_class):
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(HF_ZERO2))
    cfg = cfg_with("distributed.zero_stage=2", f"distributed.deepspeed={path}")
    ds = build_ds_config(cfg, 2)
    plain = build_ds_config(cfg_with("distributed.zero_stage=2"), 2)
    assert ds == {**plain, "steps_per_print": 2000}  # the one key it changes; "auto" keeps gpt2dist's values
    parsed = ds_config_class(ds)  # and DeepSpeed's own parser takes the merge
    assert parsed.zero_optimization_stage == 2 and parsed.steps_per_print == 2000


def test_owned_keys_that_differ_are_refused_in_one_line():
    user = {"train_batch_size": 64, "optimizer": {"type": "Adam"}, "scheduler": {"type": "WarmupLR"},
            "bf16": {"enabled": True}, "zero_optimization": {"stage": 2, "reduce_bucket_size": 2e8},
            "gradient_clipping": 0.5}
    cfg = cfg_with(f"distributed.deepspeed={json.dumps(user)}")
    with pytest.raises(UserError) as err:
        build_ds_config(cfg, 1)
    (line,) = str(err.value).splitlines()
    assert line.startswith("config key distributed.deepspeed conflicts with keys gpt2dist owns: ")
    for expected in ("train_batch_size=64 (gpt2dist has 4; set train.global_batch_size",
                     "optimizer.type='Adam' (gpt2dist has 'AdamW'; set train.lr",
                     "scheduler.type='WarmupLR' (gpt2dist sets none; set train.schedule",
                     "bf16.enabled=True (gpt2dist has False; set train.precision instead)",
                     "zero_optimization.stage=2 (gpt2dist has 0; set distributed.zero_stage instead)",
                     "zero_optimization.reduce_bucket_size=200000000.0 (gpt2dist has 500000000; set "
                     "distributed.reduce_bucket_size instead)",
                     "gradient_clipping=0.5 (gpt2dist has 1.0; set train.grad_clip instead)"):
        assert expected in line


def test_the_same_value_or_auto_is_fine_and_auto_elsewhere_is_not():
    same = {"train_micro_batch_size_per_gpu": 4, "gradient_clipping": 1,
            "optimizer": {"params": {"betas": [0.9, 0.95]}},
            "zero_optimization": {"stage": 0, "offload_optimizer": {"device": "none"}, "reduce_bucket_size": 5e8},
            "fp16": {"enabled": False, "loss_scale_window": 500}}  # a disabled block's knobs do nothing
    assert build_ds_config(cfg_with(f"distributed.deepspeed={json.dumps(same)}"), 1) == build_ds_config(cfg_with(), 1)
    with pytest.raises(UserError, match=r'zero_optimization.sub_group_size="auto" is only filled in by the HF Trainer'):
        build_ds_config(cfg_with('distributed.deepspeed={zero_optimization: {sub_group_size: auto}}'), 1)


@pytest.mark.parametrize("value, message", [
    ("no/such.json", "config key distributed.deepspeed='no/such.json': no such file"),
    ("[1, 2]", "config key distributed.deepspeed expects a string"),
])
def test_bad_values_are_one_line(value, message):
    with pytest.raises(UserError, match=message):
        build_ds_config(cfg_with(f"distributed.deepspeed={value}"), 1)


def test_a_file_that_is_not_a_json_object(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text("[1]")
    with pytest.raises(UserError, match="must hold a JSON object"):
        build_ds_config(cfg_with(f"distributed.deepspeed={bad}"), 1)
    bad.write_text("{nope")
    with pytest.raises(UserError, match="is not readable JSON"):
        build_ds_config(cfg_with(f"distributed.deepspeed={bad}"), 1)


def test_ds_config_command_prints_the_merge(tmp_path, capsys):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", ["train.txt"]))
    ds = ds_config_command(str(config), ["distributed.deepspeed={wall_clock_breakdown: true}"], 2, None)
    assert json.loads(capsys.readouterr().out) == ds and ds["wall_clock_breakdown"] is True
    out = run_cli("ds-config", str(config), "--distributed.deepspeed", "{flops_profiler: {enabled: true}}").stdout
    assert json.loads(out)["flops_profiler"] == {"enabled": True}


def test_a_bad_file_fails_train_before_any_work(tmp_path, story_corpus, warm_cli):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", [str(story_corpus[0])], distributed={
        "zero_stage": 1, "deepspeed": {"train_batch_size": 3}}))
    proc = warm_cli("train", str(config), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: config key distributed.deepspeed conflicts with keys gpt2dist owns: train_batch_size=3 (gpt2dist has "
        "4; set train.global_batch_size (global = micro x accum x ranks) instead)"]
    assert not (tmp_path / "run").exists()


@pytest.fixture
def ds_config_class(monkeypatch):
    """DeepSpeedConfig without a process group (rank and world size patched, as in test_ds_config.py)."""
    ds_config = pytest.importorskip("deepspeed.runtime.config")
    monkeypatch.setattr(ds_config.dist, "get_rank", lambda group=None: 0)
    monkeypatch.setattr(ds_config.dist, "get_world_size", lambda group=None: 2)
    return ds_config.DeepSpeedConfig
