"""On one CUDA GPU, the torch engine: bf16 learns and logs MFU against the GPU's own peak; fp16's GradScaler skips
overflowing steps and halves its scale; the bf16 run exports to a folder plain transformers loads, and `generate`
and `eval` run on CUDA. Skipped without CUDA (tests/conftest.py); bench/gpu/run.sh runs them on a GPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from gpu_runs import assert_learns, assert_mfu_uses_the_peak, gpu_config, latest_step_dir, train, write_config
from helpers import read_metrics, run_cli

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, story_corpus) -> tuple[Path, str]:
    """One bf16 run on the GPU, shared by the tests of this group (xdist: one worker)."""
    tmp = tmp_path_factory.mktemp("bf16")
    config = write_config(tmp / "run.yaml", gpu_config(tmp / "run", story_corpus, train={"precision": "bf16"}))
    out = train(config)
    return tmp / "run", out.stdout


@pytest.mark.xdist_group("bf16")
def test_bf16_learns_on_cuda_and_logs_mfu_against_the_gpus_peak(bf16_run):
    run_dir, stdout = bf16_run
    assert "torch on cuda:0 bf16" in stdout
    metrics = assert_learns(run_dir, 20)
    assert metrics[20]["val_loss"] < metrics[0]["val_loss"] - 0.5
    assert_mfu_uses_the_peak(run_dir, "bf16")


@pytest.mark.xdist_group("bf16")
def test_export_of_a_gpu_run_loads_in_plain_transformers(bf16_run, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, GPT2LMHeadModel

    run_dir, _ = bf16_run
    run_cli("export", str(run_dir), str(tmp_path / "export"))
    model, info = GPT2LMHeadModel.from_pretrained(str(tmp_path / "export"), output_loading_info=True)
    assert not info["unexpected_keys"] and set(info["missing_keys"]) <= {"lm_head.weight"}, info
    trained = load_file(str(latest_step_dir(run_dir) / "model.safetensors"))
    state = model.state_dict()
    for key, tensor in trained.items():  # the GPU-trained fp32 weights, bit for bit
        assert torch.equal(state[key], tensor), key
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "export"))
    ids = torch.tensor([tokenizer("Once upon a time there was a fox.")["input_ids"]], device="cuda")
    with torch.no_grad():
        out = model.to("cuda").eval()(input_ids=ids, labels=ids)
    assert out.logits.shape[-1] == len(tokenizer) and math.isfinite(float(out.loss))


@pytest.mark.xdist_group("bf16")
def test_generate_and_eval_run_on_cuda(bf16_run, tmp_path, story_corpus):
    from transformers import AutoTokenizer

    run_dir, _ = bf16_run
    export = tmp_path / "export"
    run_cli("export", str(run_dir), str(export))
    prompt = "Once upon a time"
    out = run_cli("generate", "--model", str(export), "--device", "cuda", "--prompt", prompt, "--max-new-tokens",
                  "24", "--temperature", "0")
    assert out.stdout.startswith(prompt)  # greedy from a 20-step model: may well be spaces after it
    sampled = run_cli("generate", "--model", str(export), "--device", "cuda", "--prompt", prompt, "--max-new-tokens",
                      "24", "--top-k", "10", "--top-p", "0.9", "--num-samples", "2", "--seed", "3")
    assert sampled.stdout.count("--- sample") == 2
    results = {}
    for device in ("cuda", "cpu"):
        evaluated = run_cli("eval", "--model", str(export), "--data", str(story_corpus[1]), "--device", device,
                            "--max-batches", "4", "--json")
        results[device] = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert results["cuda"]["tokens"] == results["cpu"]["tokens"] > 0
    assert results["cuda"]["loss"] == pytest.approx(results["cpu"]["loss"], abs=1e-3)  # fp32 on both
    vocab = len(AutoTokenizer.from_pretrained(str(export)))
    assert results["cuda"]["loss"] < math.log(vocab) - 0.5, "the exported model has learned something"


def test_fp16_skips_overflowing_steps_and_halves_the_scale(tmp_path, story_corpus):
    """At an initial scale of 2**32 the first backward overflows fp16 for sure (logit gradients ~2**23): the
    GradScaler skips that step and halves the scale, again until the gradients fit; nothing grows it back within
    fp16_loss_scale_window steps. So the saved scale is exactly 2**32 / 2**(skipped steps)."""
    run = tmp_path / "run"
    cfg = gpu_config(run, story_corpus, train={"precision": "fp16", "fp16_initial_scale_power": 32, "max_steps": 30,
                                               "eval_every": 0},
                     checkpoint={"every": 0})
    out = train(write_config(tmp_path / "run.yaml", cfg))
    assert "torch on cuda:0 fp16" in out.stdout
    metrics = read_metrics(run)
    skipped = [s for s in range(1, 31) if metrics[s].get("skipped")]
    assert skipped and skipped[0] == 1, f"step 1 must overflow at scale 2**32, skipped: {skipped}"
    assert len(skipped) < 25, f"the scale never came down far enough: skipped {skipped}"
    state = torch.load(latest_step_dir(run) / "engine.pt", map_location="cpu", weights_only=True)
    assert state["scaler"]["scale"] == 2.0 ** (32 - len(skipped)), (state["scaler"], skipped)
    kept = [metrics[s]["loss"] for s in range(1, 31) if s not in skipped]
    assert all(math.isfinite(v) for v in kept) and kept[-1] < kept[0] - 0.3, kept
    assert_mfu_uses_the_peak(run, "fp16")
