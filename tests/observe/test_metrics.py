"""MFU: the FLOPs-per-token convention against hand counts, the peak table's device matching, and the
published anchors it reproduces; the engine's speed settings (compile auto, fused AdamW, lazy grad norm)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2dist.model import count_parameters, flops_per_token
from gpt2dist.observe.metrics import format_record, mfu, peak_flops


def gpt2_124m_on_meta() -> GPT2LMHeadModel:
    with torch.device("meta"):  # shapes only: no 500 MB of weights
        return GPT2LMHeadModel(GPT2Config())


def test_flops_per_token_is_6n_plus_attention():
    assert flops_per_token(1000, 2, 64, 128) == 6 * 1000 + 12 * 2 * 64 * 128


def test_gpt2_124m_flops_per_token():
    model = gpt2_124m_on_meta()
    n = count_parameters(model, non_embedding=True)
    # 124,439,808 unique parameters (wte tied with lm_head) minus the 1024 x 768 position table
    assert count_parameters(model) == 124_439_808
    assert n == 124_439_808 - 1024 * 768
    fpt = flops_per_token(n, 12, 768, 1024)
    assert fpt == pytest.approx(6 * 123_653_376 + 12 * 12 * 768 * 1024)
    assert fpt == pytest.approx(855.2e6, rel=1e-3)


def test_mfu_reproduces_the_llm_c_anchor():
    """llm.c's ~468k tokens/s on one H100 (bf16, GPT-2 124M, T=1024) is ~40% MFU in this convention."""
    fpt = flops_per_token(count_parameters(gpt2_124m_on_meta(), non_embedding=True), 12, 768, 1024)
    peak = peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert mfu(468e3, fpt, peak) == pytest.approx(468e3 * fpt / 989e12)
    assert 0.39 < mfu(468e3, fpt, peak) < 0.42
    assert mfu(8 * 468e3, fpt, peak, n_devices=8) == pytest.approx(mfu(468e3, fpt, peak))


@pytest.mark.parametrize(("name", "precision", "expected"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
    ("NVIDIA H100 PCIe", "bf16", 756e12),  # the variant, not the SXM part
    ("NVIDIA H100 NVL", "fp16", 835e12),
    ("NVIDIA H200", "bf16", 989e12),
    ("NVIDIA H200", "tf32", 494.7e12),
    ("NVIDIA H200 NVL", "bf16", 835e12),  # not the SXM part's 989
    ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
    ("NVIDIA A100-PCIE-40GB", "tf32", 156e12),
    ("NVIDIA A10", "bf16", 125e12),  # not A100
    ("NVIDIA L4", "bf16", 121e12),  # not L40S
    ("NVIDIA L40S", "bf16", 362e12),
    ("Tesla V100-SXM2-16GB", "fp16", 125e12),
    ("Tesla V100-SXM2-16GB", "bf16", None),  # no bf16 tensor cores: unknown, not zero
    ("NVIDIA GeForce GTX 1080", "fp16", None),
    (None, "bf16", None),  # the CPU
])
def test_peak_flops_by_device_name(name, precision, expected):
    assert peak_flops(name, precision) == expected


def test_fp32_peak_follows_tf32():
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32", tf32=True) == 156e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32", tf32=False) == 19.5e12


def test_mfu_is_none_without_a_peak():
    assert mfu(1e6, 1e9, None) is None
    assert "mfu" not in format_record({"step": 1, "mfu": None})
    assert "mfu 40.0%" in format_record({"step": 1, "mfu": 0.4})
