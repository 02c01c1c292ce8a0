"""The doctor's default efficiency against published GPT-shaped training runs: implied MFU, predicted vs published.

Each row is a run someone published (source quoted), expressed in this repo's terms: a GPT-2-shaped model of the
same layers and width (vocabulary 50,257, tied output layer; MPT's ALiBi and vocabulary of 50,368 are within 1%),
the same GPUs, sequence length, micro batch and sharding. "implied" is the MFU, in this repo's 6N + 12LHQT
convention (N without the position embeddings -- the token embedding is the output layer's matmul -- as
`model.flops_per_token`), that the published tokens/s per GPU means. "predicted" is what
`gpt2dist doctor` says with its default efficiency for that GPU kind (`costmodel.default_mfu`, typical) and its
communication model at that GPU count; "ratio" = predicted / published tokens/s.

    python bench/calibration.py            # the table, and how many rows are within 25%
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Run:
    name: str
    gpu: str
    n_gpus: int
    n_layer: int
    n_embd: int
    seq: int
    micro: int
    accum: int
    stage: int  # sharding as ZeRO: FSDP FULL_SHARD = 3, llm.c's -z 1 = 1, DDP = 0
    tokens_per_s_per_gpu: float
    source: str
    untied: bool = False  # an output layer of its own (rasbt's 163M)


FOUNDRY = "mosaicml/llm-foundry scripts/train/benchmarking/README.md (061f2c7)"
LLMC = "karpathy/llm.c scripts/run_gpt2_{}.sh"
RUNS = [
    Run("MPT-125m T=2048", "A100", 8, 12, 768, 2048, 32, 2, 3, 141_737, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-125m T=1024", "A100", 8, 12, 768, 1024, 64, 2, 3, 156_468, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-350m T=2048", "A100", 8, 24, 1024, 2048, 32, 2, 3, 58_782, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-350m T=1024", "A100", 8, 24, 1024, 1024, 64, 2, 3, 64_813, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-760m T=2048", "A100", 8, 24, 1536, 2048, 24, 2, 3, 32_434, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-1b T=2048", "A100", 8, 24, 2048, 2048, 14, 4, 3, 20_513, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-1b T=2048 x64", "A100", 64, 24, 2048, 2048, 10, 1, 3, 18_647, f"{FOUNDRY}, A100 40GB table"),
    Run("MPT-760m T=2048", "H100", 8, 24, 1536, 2048, 24, 2, 3, 63_147, f"{FOUNDRY}, H100 80GB BF16 table"),
    Run("MPT-760m T=1024", "H100", 8, 24, 1536, 1024, 48, 2, 3, 78_581, f"{FOUNDRY}, H100 80GB BF16 table"),
    Run("MPT-1b T=2048", "H100", 8, 24, 2048, 2048, 14, 1, 3, 45_455, f"{FOUNDRY}, H100 80GB BF16 table"),
    Run("MPT-1b T=2048 x64", "H100", 64, 24, 2048, 2048, 20, 1, 3, 44_402, f"{FOUNDRY}, H100 80GB BF16 table"),
    Run("llm.c GPT-2 124M", "A100", 8, 12, 768, 1024, 64, 1, 1, 524_288 / 0.300 / 8,
        LLMC.format("124M") + " (f1e2ace): '8X A100 80GB SXM ... ~300ms/iter', 524,288 tokens/step"),
    Run("llm.c GPT-2 350M", "A100", 8, 24, 1024, 1024, 64, 1, 1, 524_288 / 0.820 / 8,
        LLMC.format("350M") + ": '8X A100 80GB SXM ... ~820ms/iter'"),
    Run("llm.c GPT-2 774M", "A100", 8, 36, 1280, 1024, 32, 2, 1, 524_288 / 1.7 / 8,
        LLMC.format("774M") + ": '8X A100 80GB SXM ... ~1.7s/iter'"),
    Run("llm.c GPT-2 1558M", "H100", 8, 48, 1600, 1024, 16, 8, 1, 1_048_576 / 2.80 / 8,
        LLMC.format("1558M") + ": '8X H100 80GB SXM ... 2.80s/iter'"),
    Run("rasbt GPT-2 124M 1x", "A100", 1, 12, 768, 1024, 32, 1, 0, 142_156,
        "rasbt/LLMs-from-scratch ch05/10_llm-training-speed/README.md: 142,156 tok/s on one A100", untied=True),
]


def predict(run: Run) -> tuple[float, float, tuple[float, float]]:
    """(implied MFU, predicted tokens/s per GPU at the typical default, (low, high) predicted)."""
    from gpt2dist.model import flops_per_token
    from gpt2dist.observe.metrics import peak_flops
    from gpt2dist.planning import costmodel, hardware

    tensors = costmodel.gpt2_tensors(run.n_layer, run.n_embd, 50257, run.seq)
    if run.untied:
        tensors += (("lm_head", 50257 * run.n_embd, 2),)
    non_embedding = sum(n for _, n, _ in tensors) - run.seq * run.n_embd  # as count_parameters: wte is lm_head
    fpt = flops_per_token(non_embedding, run.n_layer, run.n_embd, run.seq)
    peak = peak_flops(run.gpu, "bf16")
    implied = run.tokens_per_s_per_gpu * fpt / peak
    system = hardware.GPUS[run.gpu]
    links = costmodel.Links(system.intra_busbw, system.inter_busbw(8), pcie_bw=system.pcie_bw, source=system.source)
    w = costmodel.Workload(tensors, fpt, run.micro, run.seq, run.accum, 2)
    z = costmodel.Zero(stage=run.stage, implementation="paper" if run.name.startswith("llm.c") else "deepspeed")
    rates = []
    for mfu in costmodel.default_mfu(run.gpu, sum(n for _, n, _ in tensors), run.seq):
        compute = costmodel.compute_time(fpt, w.tokens_per_gpu, peak, mfu)
        step = costmodel.estimate_step(w, z, run.n_gpus, min(run.n_gpus, 8), links, compute_s=compute, peak=peak,
                                       optimizer_s=costmodel.optimizer_time(w.n_params, system.hbm_bw))
        rates.append(step.tokens_per_s_per_gpu)
    return implied, rates[1], (rates[0], rates[2])


def main() -> int:
    print(f"{'run':<22}{'GPUs':>8}  {'T':>5} {'published':>10} {'predicted':>10} {'range':>17} {'ratio':>6} "
          f"{'implied MFU':>11}  source")
    ratios = []
    for run in RUNS:
        implied, typical, (low, high) = predict(run)
        ratio = typical / run.tokens_per_s_per_gpu
        ratios.append(ratio)
        print(f"{run.name:<22}{run.n_gpus:>4}x{run.gpu:<4} {run.seq:>5} {run.tokens_per_s_per_gpu:>10,.0f} "
              f"{typical:>10,.0f} {f'{low:,.0f}-{high:,.0f}':>17} {ratio:>5.2f}x {implied:>10.0%}  {run.source}")
    within = sum(0.75 <= r <= 1.25 for r in ratios)
    print(f"within 25%: {within} of {len(ratios)}; median predicted/published {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    _root = str(Path(__file__).resolve().parent.parent)
    if _root not in sys.path:
        sys.path.append(_root)
    sys.exit(main())
