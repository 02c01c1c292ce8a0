"""`gpt2dist doctor` plans from anywhere (data or model folder elsewhere), gives one recommendation, warns about
many epochs, and writes the same figures as JSON (--json)."""

from __future__ import annotations

import json
import math

import pytest

from gpt2dist.planning import costmodel, doctor, hardware, memory

ELSEWHERE = "/nonexistent-gpt2dist"


def write(tmp_path, body: str):
    path = tmp_path / "run.yaml"
    path.write_text(body)
    return path


def planned(tmp_path, capsys, *args):
    config = write(tmp_path, f"run_dir: {tmp_path / 'run'}\nmodel: {{pretrained: {ELSEWHERE}/gpt2-medium}}\n"
                             f"tokenizer: {{kind: pretrained}}\n"
                             f"data: {{train: [{ELSEWHERE}/data/*.txt], block_size: 1024}}\n"
                             "train: {micro_batch_size: 8, precision: bf16, max_steps: 1000}\n")
    code = doctor.main([str(config), "--nodes", "2", "--gpus-per-node", "8", "--gpu", "H100", *args])
    return code, capsys.readouterr().out


def test_plans_when_the_model_and_data_are_not_on_this_machine(tmp_path, capsys):
    code, out = planned(tmp_path, capsys, "model.preset=gpt2-medium")
    lines = out.splitlines()
    assert code == 0, out
    assert any(line.startswith("assumed: model.pretrained") and "L24 x E1024" in line for line in lines)
    assert any(line.startswith("assumed: data.train is not on this machine") for line in lines)
    assert any(line.startswith("* ZeRO-0") for line in lines) and "time to train: 1,000 steps" in out
    assert sum("not on this machine" in line and line.lstrip().startswith("warn") for line in lines) == 2
    # one recommendation, the same in the table's line, the scaling verdict and the last line
    recommend = next(line for line in lines if line.startswith("recommend: ")).split()[1]
    fastest = next(line for line in lines if "fastest ZeRO stage" in line)
    assert f": {recommend} (" in fastest and f"recommend: {recommend}" in lines[-1]


def test_model_shape_from_a_config_json_and_the_json_report(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"n_layer": 6, "n_embd": 512, "n_head": 8, "n_positions": 1024,
                                                      "vocab_size": 32000}))
    code, out = planned(tmp_path, capsys, "--model-config", str(tmp_path / "config.json"), "--json")
    report = json.loads(out)  # nothing but the JSON on stdout
    assert code == report["exit_code"] == 0
    model = report["model"]
    assert (model["n_layer"], model["n_embd"], model["vocab_size"]) == (6, 512, 32000)
    assert model["n_params"] == memory.gpt2_param_count(6, 512, 32000, 1024)
    rows = report["scaling"]["nodes"]
    assert [(r["nodes"], r["gpus"]) for r in rows] == [(1, 8), (2, 16)]
    for row in rows:  # the figures agree with each other
        assert row["tokens_per_s"] == pytest.approx(row["global_batch"] * 1024 / row["step_s"])
        assert row["gpu_hours"] == pytest.approx(row["time_s"] * row["gpus"] / 3600)
        # a whole run's time: the steady steps' x the whole-run overhead, none on one node, the published median across
        overhead = {1: 1.0, 2: costmodel.WHOLE_RUN_NODES[1]}[row["nodes"]]
        assert row["steady_time_s"] == pytest.approx(1000 * row["step_s"])
        assert row["time_s"] == pytest.approx(1000 * row["step_s"] * overhead) and row["whole_run_overhead"] == overhead
        assert row["steady_gpu_hours"] == pytest.approx(row["gpu_hours"] / overhead)
        low, typical, high = row["whole_run_overhead_range"]
        assert low <= typical == overhead <= high
        assert 0 < row["mfu"] < 1 and 0 < row["scaling_efficiency"] <= 1
    usable = report["usable_bytes"]
    assert usable == int(80e9 * memory.HEADROOM)  # --gpu H100 implies its 80 GB
    assert [m["label"] for m in report["memory"]][:4] == ["ZeRO-0", "ZeRO-1", "ZeRO-2", "ZeRO-3"]
    assert all(m["fits"] == (m["total_per_gpu"] <= usable) for m in report["memory"])
    assert report["recommend"] == report["scaling"]["fastest"]
    assert {s["label"] for s in report["scaling"]["stages"]} >= {"ZeRO-0", "ZeRO-3"}


def test_a_bad_model_config_is_one_usage_line(tmp_path, capsys):
    from gpt2dist.errors import UserError

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="--model-config .*config.json: not a readable config.json"):
        planned(tmp_path, capsys, "--model-config", str(tmp_path / "config.json"))
    (tmp_path / "link.json").symlink_to(tmp_path / "config.json")
    with pytest.raises(UserError, match="symbolic link"):
        planned(tmp_path, capsys, "--model-config", str(tmp_path / "link.json"))


def test_a_run_that_does_not_fit_still_gets_its_tables(tmp_path, capsys):
    code, out = planned(tmp_path, capsys, "model.preset=gpt2-xl", "train.micro_batch_size=64", "--json")
    report = json.loads(out)
    assert code == 1 and report["exit_code"] == 1
    assert not any(m["fits"] for m in report["memory"])
    assert report["scaling"]["nodes"] and all("does not fit memory" in r["note"] for r in report["scaling"]["nodes"])


def test_many_epochs_is_a_warning(tmp_path, capsys):
    (tmp_path / "train.txt").write_text("a short story about a cat.\n\n" * 200)
    config = write(tmp_path, f"run_dir: {tmp_path / 'run'}\ndata: {{train: [{tmp_path / 'train.txt'}]}}\n"
                             "train: {max_steps: 5000}\n")
    assert doctor.main([str(config)]) == 0
    out = capsys.readouterr().out
    assert f"epochs of data.train (more than {doctor.EPOCHS_WARN})" in out


def test_an_epoch_budget_plans_its_epochs_not_max_steps(tmp_path, capsys):
    """train.num_epochs sets the budget (max_steps is ignored by training): the steps line, the time to train and
    the many-epochs warning follow it. The scaling table's tokens equal epochs x the steps line's tokens."""
    (tmp_path / "train.txt").write_text("a short story about a cat.\n\n" * 200)
    config = write(tmp_path, f"run_dir: {tmp_path / 'run'}\ndata: {{train: [{tmp_path / 'train.txt'}]}}\n"
                             "train: {max_steps: 5000, num_epochs: 30}\n")
    assert doctor.main([str(config), "--gpu", "H100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert doctor.main([str(config), "--gpu", "H100"]) == 0
    out = capsys.readouterr().out
    data = next(line for line in out.splitlines() if line.startswith("data: ~"))
    per_epoch = int(data.split("~")[1].split()[0].replace(",", ""))
    steps_per_epoch = float(data.split("-> ~")[1].split()[0].replace(",", ""))
    assert data.endswith(f"train.num_epochs 30 = ~{math.ceil(30 * steps_per_epoch):,} steps"), data
    target = next(line for line in out.splitlines() if "time to train:" in line and "assumed" not in line)
    assert target.split(":")[1].strip().endswith("tokens") and "5,000 steps" not in out, target
    assert int(target.split(":")[1].split()[0].replace(",", "")) == pytest.approx(30 * per_epoch, abs=30)
    assert f"train.num_epochs 30 (more than {doctor.EPOCHS_WARN})" in out
    assert any("train.num_epochs 30 x" in line for line in report["assumed"]), report["assumed"]


def test_default_mfu_ranges_are_ordered():
    for gpu in (*hardware.GPUS, "an unknown GPU"):
        low, typical, high = costmodel.default_mfu(gpu, 124e6, 1024)
        assert 0 < low <= typical <= high < 1, gpu
