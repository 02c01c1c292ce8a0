"""The doctor's default efficiency against published GPT-shaped training runs: implied MFU, predicted vs published.

Each row is a run someone published (source quoted), expressed in this repo's terms: a GPT-2-shaped model of the
same layers and width (vocabulary 50,257, tied output layer; MPT's ALiBi and vocabulary of 50,368 are within 1%),
the same GPUs, sequence length, micro batch and sharding. "implied" is the MFU, in this repo's 6N + 12LHQT
convention (N without the position embeddings -- the token embedding is the output layer's matmul -- as
`model.flops_per_token`), that the published tokens/s per GPU means. "predicted" is what
`gpt2dist doctor` says with its default efficiency for that GPU kind (`costmodel.default_mfu`, typical) and its
communication model at that GPU count; "ratio" = predicted / published tokens/s.

    python bench/calibration.py            # every table, and how many rows of each are within 25%

The lists: RUNS, the in-sample rows `costmodel.MFU_BY_GPU` (A100, H100) and `SMALL_MODEL_FACTOR` were read off
(issue 26); HELD_OUT, published runs found afterwards and never used to set a figure; V100_FIT, DLPerf's V100 runs
`MFU_BY_GPU["V100"]` was read off; FRESH, 71 runs transcribed blind later still (bench/published/), the check run
once the model was frozen; BEYOND_128, MosaicML's per-GPU throughput from 128 to 512 H100s (the collectives'
latency). `cross_validate` asks how well any per-GPU-kind default does on a source it has not seen.
A Llama-shaped run (SwiGLU, grouped-query attention) is expressed as the GPT-2 of the same depth whose blocks hold
the same parameters (width = sqrt(block params / 12)) with its own vocabulary: same FLOPs per token to ~1%.
Whole-run figures (GPU-hours for a token count) include evaluation, checkpointing and restarts: their prediction
is the steady one divided by `costmodel.whole_run_overhead` (low MFU with the high overhead), whose figures are
read off OVERHEADS: in-sample whole runs whose source also gives the steady rate (issue 26c).
"""

from __future__ import annotations

import json
import math
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
    vocab: int = 50257
    checkpointing: bool = False  # activation checkpointing (recomputes the forward)
    zero: tuple[tuple[str, object], ...] = ()  # costmodel.Zero settings beyond the stage (another trainer)
    steady: float = 0.0  # a whole run's source's own steady-state tokens/s per GPU, where it gives one
    precision: str = "bf16"  # the peak MFU is measured against (V100: fp16)

    @property
    def whole_run(self) -> bool:
        """A whole training run's GPU-hours (evaluation, checkpoints, restarts, data included), not a benchmark."""
        return "(whole run)" in self.name


FOUNDRY = "mosaicml/llm-foundry scripts/train/benchmarking/README.md (061f2c7)"
LLMC = "karpathy/llm.c scripts/run_gpt2_{}.sh"
RUNS = [
    Run("MPT-125m T=2048", "A100", 8, 12, 768, 2048, 32, 2, 3, 141_737, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-125m T=1024", "A100", 8, 12, 768, 1024, 64, 2, 3, 156_468, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-350m T=2048", "A100", 8, 24, 1024, 2048, 32, 2, 3, 58_782, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-350m T=1024", "A100", 8, 24, 1024, 1024, 64, 2, 3, 64_813, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-760m T=2048", "A100", 8, 24, 1536, 2048, 24, 2, 3, 32_434, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-1b T=2048", "A100", 8, 24, 2048, 2048, 14, 4, 3, 20_513, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-1b T=2048 x64", "A100", 64, 24, 2048, 2048, 10, 1, 3, 19_001, f"{FOUNDRY}, A100 40GB table"),
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
    # whole runs (issue 26c): the rows costmodel.WHOLE_RUN_* were read off, each with its source's steady rate
    Run("llm.c GPT-2 124M (whole run)", "A100", 8, 12, 768, 1024, 64, 1, 1, 18_865 * 524_288 / (90 * 60) / 8,
        "karpathy/llm.c discussion #481: 'reproducing this model on one 8X A100 80GB SXM node takes ~90 minutes' "
        "(10B tokens); 18,865 steps at ~300ms/iter: " + LLMC.format("124M") + " (f1e2ace)",
        steady=524_288 / 0.300 / 8),
    Run("llm.c GPT-2 1558M (whole run)", "H100", 8, 48, 1600, 1024, 16, 8, 1, 32_000 * 1_048_576 / (24 * 3600) / 8,
        "karpathy/llm.c discussion #677: 'we can reproduce this model on a single 8XH100 node in 24 hours, and for "
        "$672'; 32,000 steps at 2.80s/iter: " + LLMC.format("1558M") + " (f1e2ace)", steady=1_048_576 / 2.80 / 8),
    Run("MPT-7B (whole run)", "A100", 440, 32, 4096, 2048, 18, 1, 3, 1e12 / (440 * 9.5 * 86400),
        "databricks.com/blog/mpt-7b + huggingface.co/mosaicml/mpt-7b model card: 1T tokens, 'trained on 440 "
        f"A100-40GBs for about 9.5 days', FSDP; steady: {FOUNDRY}, A100 40GB table, 7b T=2048 on 128 GPUs, micro 18: "
        "3,623 tokens/s per GPU", vocab=50432, steady=3_623),
]



def megatron_tokens_per_s(tflops: float, n_layer: int, n_embd: int, seq: int, vocab: int) -> float:
    """Tokens/s per GPU from Megatron's published teraFLOP/s, undoing its count (Narayanan et al. 2021, eq. 3:
    96·B·s·l·h²·(1 + s/6h + V/16lh) per step, recomputation and the vocabulary included)."""
    per_token = 96 * n_layer * n_embd**2 * (1 + seq / (6 * n_embd) + vocab / (16 * n_layer * n_embd))
    return tflops * 1e12 / per_token


@dataclass(frozen=True)
class Overhead:
    """A published whole run whose source also gives its steady rate: whole-run time over steady time, directly."""

    name: str
    nodes: int
    steady: float  # tokens/s per GPU in steady state, as the source gives it
    whole: float  # tokens/s per GPU over the whole run: tokens / GPU-seconds
    source: str

    @property
    def ratio(self) -> float:
        return self.steady / self.whole


# The whole-run overhead's evidence: RUNS' whole runs, and runs no gpt2dist config expresses (BLOOM, OPT: tensor
# and pipeline parallel). Not a row, a bound: Llama 3 405B (arXiv 2407.21783, sec. 3.3.4) kept '>90% effective training
# time' on 16k H100s over a 54-day snapshot, i.e. <= 1.11x.
OVERHEADS = [Overhead(r.name, math.ceil(r.n_gpus / 8), r.steady, r.tokens_per_s_per_gpu, r.source)
             for r in RUNS if r.whole_run] + [
    Overhead("BLOOM-176B (whole run)", 48, megatron_tokens_per_s(150, 70, 14336, 2048, 250880),
             366e9 / (1_082_990 * 3600),
             "bigscience.notion.site BigScience-176B-Model: 384 A100 80GB, 'training throughput: about 150 TFLOPs' "
             "(Megatron-DeepSpeed's count, eq. 3 of Narayanan et al.: 70 x 14336, T=2048, vocab 250,880); arXiv "
             "2211.05100 and genci.fr: 366B tokens, '1,082,990 compute hours' in 3.5 months (GENCI's 156 "
             "TFLOP/s: 1.16x)"),
    Overhead("OPT-175B (whole run)", 128, 300e9 / (33 * 86400 * 1024), 300e9 / (56 * 86400 * 1024),
             "facebookresearch/metaseq@f7ffa5f projects/OPT/chronicles: final_update.md '~33 days of continuous "
             "training on 1024 80GB A100s (assuming no hardware issues, no numerical instabilities, etc.)' for 300B "
             "tokens, completed January 6, 2022; 10_percent_update.md: the 12.xx lineage started November 11, 2021 "
             "(56 days; ~90 restarts)")]


def fitted_overhead(nodes: int) -> tuple[float, float, float]:
    """(low, median, high) whole-run overhead of the evidence on one node (nodes=1) or across nodes; never below
    1 (a whole run cannot beat its own steps: a ratio under 1 is a rounded quote)."""
    ratios = sorted(max(1.0, o.ratio) for o in OVERHEADS if (o.nodes > 1) == (nodes > 1))
    return ratios[0], statistics.median(ratios), ratios[-1]

# Not used for any figure in costmodel: the check. Independent sources first, then MosaicML rows the fit left out.
TINYLLAMA = "jzhang38/TinyLlama README.md (026587c)"
SMOL = "huggingface.co/HuggingFaceTB/SmolLM2-{}: model card (GPUs, tokens) + discussion #20 of SmolLM2-1.7B-Instruct " \
       "(eliebak: GPU hours '1.7B (train for 11T): 140k, 360M (4T): 20k, 135M (2T): 5k')"
DDP25 = (("implementation", "ddp"), ("reduce_bucket_size", 25 * 2**20 // 2))
HELD_OUT = [
    Run("TinyLlama 1.1B", "A100", 16, 22, 1916, 2048, 8, 1, 3, 24_000,
        f"{TINYLLAMA}: '24k tokens per second per A100-40G', 16 GPUs, FSDP, 16k tokens per GPU; Llama 22 x 2048, "
        "GQA 4 groups, SwiGLU 5632 (block = GPT-2 width 1916), vocab 32,000 untied", untied=True, vocab=32000),
    Run("Pythia-1B (whole run)", "A100", 64, 16, 2048, 2048, 16, 1, 1, 299_892_736_000 / (4830 * 3600),
        f"Pythia paper (arXiv 2304.01373) via {TINYLLAMA}: 4,830 A100 hours for 300B tokens; EleutherAI/pythia "
        "models/1B/pythia-1b.yml: 64 GPUs, micro 16, ZeRO-1, fp16, activation checkpointing, untied, vocab 50,304",
        untied=True, vocab=50304, checkpointing=True),
    Run("Megatron 1.7B", "A100", 32, 24, 2304, 2048, 4, 4, 0, megatron_tokens_per_s(137, 24, 2304, 2048, 51200),
        "NVIDIA/Megatron-LM README / Narayanan et al. 2021 Table 1: 1.7B (24 x 2304), 32 A100, batch 512, TP=PP=1, "
        "137 TFLOP/s per GPU with full recomputation; micro 4 assumed", vocab=51200, checkpointing=True),
    Run("MPT-1.3B (whole run)", "A100", 440, 24, 2048, 2048, 5, 1, 3, 200e9 / (440 * 12 * 3600),
        "huggingface.co/mosaicml/mpt-1b-redpajama-200b model card: 200B tokens, batch 2,200 x 2048 (5 per GPU), "
        "'trained on 440 A100-40GBs for about half a day', FSDP (quoted by TinyLlama's README as 7,920 A100 hours "
        "per 300B)", vocab=50432),
    Run("SmolLM2-135M (whole run)", "H100", 64, 30, 543, 2048, 8, 1, 1, 2e12 / (5000 * 3600),
        SMOL.format("135M") + "; 64 H100, 2T tokens; Llama 30 x 576, GQA 3 kv heads, SwiGLU 1536 (GPT-2 width "
        "543), vocab 49,152 tied; micro 8, ZeRO-1 assumed", vocab=49152),
    Run("SmolLM2-360M (whole run)", "H100", 64, 32, 905, 2048, 8, 1, 1, 4e12 / (20_000 * 3600),
        SMOL.format("360M") + "; 64 H100, 4T tokens; Llama 32 x 960, GQA 5 kv heads, SwiGLU 2560 (GPT-2 width 905); "
        "micro 8, ZeRO-1 assumed",
        vocab=49152),
    Run("SmolLM2-1.7B (whole run)", "H100", 256, 24, 2365, 2048, 8, 1, 1, 11e12 / (140_000 * 3600),
        SMOL.format("1.7B") + "; 256 H100, 11T tokens; Llama 24 x 2048, SwiGLU 8192 (GPT-2 width 2365); "
        "micro 8, ZeRO-1 assumed",
        vocab=49152),
    Run("nanoGPT GPT-2 124M (whole run)", "A100", 8, 12, 768, 1024, 12, 5, 0, 491_520 * 600_000 / (4 * 86400) / 8,
        "karpathy/nanoGPT README (3adf61e): 600k iters of 491,520 tokens 'in about 4 days' on 8X A100 40GB, DDP "
        "(also in bench/scaling.py --references, never fitted)", zero=DDP25),
    Run("rasbt GPT-2 124M 4x", "A100", 4, 12, 768, 1024, 32, 1, 0, 419_259 / 4,
        "rasbt/LLMs-from-scratch ch05/10_llm-training-speed/README.md: 419,259 tok/s on 4x A100, DDP, vocab 50,304 "
        "(also in bench/scaling.py --references, never fitted)", untied=True, vocab=50304, zero=DDP25),
    Run("llm.c GPT-2 124M H100", "H100", 8, 12, 768, 1024, 64, 1, 1, 524_288 / 0.139 / 8,
        "KellerJordan/modded-nanogpt records/101324_llmc/README.md: llm.c (Oct 2024) on 8x H100 HBM3 per "
        "karpathy/llm.c discussion #481 (-b 64 -t 1024, 524,288 tokens/step), 'median per-step time was 139ms'"),
    Run("MPT-125m T=4096 A100", "A100", 8, 12, 768, 4096, 16, 2, 3, 118_396, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-350m T=4096 A100", "A100", 8, 24, 1024, 4096, 16, 2, 3, 49_555, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-760m T=4096 A100", "A100", 8, 24, 1536, 4096, 12, 2, 3, 27_351, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-760m T=1024 A100", "A100", 8, 24, 1536, 1024, 48, 2, 3, 29_765, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-1b T=4096 A100", "A100", 8, 24, 2048, 4096, 7, 4, 3, 17_807, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-1b T=1024 A100", "A100", 8, 24, 2048, 1024, 18, 4, 3, 22_112, f"{FOUNDRY}, A100 80GB table"),
    Run("MPT-1b T=2048 A100 40GB", "A100", 8, 24, 2048, 2048, 8, 8, 3, 19_271, f"{FOUNDRY}, A100 40GB table"),
    Run("MPT-760m T=4096 H100", "H100", 8, 24, 1536, 4096, 12, 2, 3, 55_459, f"{FOUNDRY}, H100 80GB BF16 table"),
    Run("MPT-1b T=4096 H100", "H100", 8, 24, 2048, 4096, 7, 4, 3, 38_535, f"{FOUNDRY}, H100 80GB BF16 table"),
    Run("MPT-1b T=1024 H100", "H100", 8, 24, 2048, 1024, 18, 4, 3, 48_910, f"{FOUNDRY}, H100 80GB BF16 table"),
]


# Per-GPU throughput from 128 to 512 GPUs (issue 26 item 2): MosaicML's H100 "Large Scale, >= 128 GPUs" table,
# added to the same README after the commit RUNS cite. Never used to set a figure: the collectives' latency comes
# from NCCL's tuning model (gpt2dist/planning/nccl.py). SHARD_GRAD_OP keeps gathered weights for backward
# (max_reuse_distance unbounded), FULL_SHARD gathers them again (0). (model, layers, width, micro, checkpointing,
# sharding, tokens/s per GPU at 128 / 256 / 512 GPUs)
FOUNDRY_LARGE = "mosaicml/llm-foundry scripts/train/benchmarking/README.md (5e85bd6), H100 80GB BF16 (Large Scale)"
BEYOND_128 = [("1b", 24, 2048, 12, False, "SHARD_GRAD_OP", (44_123, 42_555, 39_837)),
              ("3b", 32, 2560, 8, False, "SHARD_GRAD_OP", (23_422, 22_772, 21_664)),
              ("7b", 32, 4096, 6, False, "FULL_SHARD", (10_475, 10_119, 9_670)),
              ("13b", 40, 5120, 16, True, "FULL_SHARD", (5_080, 4_989, 4_952)),
              ("30b", 48, 7168, 8, True, "FULL_SHARD", (2_199, 2_148, 2_115)),
              ("70b", 80, 8192, 8, True, "FULL_SHARD", (1_058, 1_035, 1_007))]


def beyond_128() -> None:
    """Print published and predicted per-GPU throughput at 256 and 512 GPUs relative to 128."""
    print(f"PER-GPU THROUGHPUT FROM 128 TO 512 H100s ({FOUNDRY_LARGE}; relative to 128 GPUs)\n"
          f"{'model':<6}{'sharding':<15}{'published 256':>14}{'512':>7}{'predicted 256':>15}{'512':>7}")
    errors = []
    for name, layers, width, micro, ckpt, sharding, published in BEYOND_128:
        reuse = 10**12 if sharding == "SHARD_GRAD_OP" else 0
        rates = [predict(Run(name, "H100", n, layers, width, 2048, micro, 1, 3, rate, FOUNDRY_LARGE, vocab=50368,
                             checkpointing=ckpt, zero=(("max_reuse_distance", reuse),)))[1]
                 for n, rate in zip((128, 256, 512), published, strict=True)]
        pub = [published[1] / published[0], published[2] / published[0]]
        pred = [rates[1] / rates[0], rates[2] / rates[0]]
        errors.append(pred[1] - pub[1])
        print(f"{name:<6}{sharding:<15}{pub[0]:>14.3f}{pub[1]:>7.3f}{pred[0]:>15.3f}{pred[1]:>7.3f}")
    print(f"512 vs 128: predicted minus published, mean {statistics.mean(errors):+.3f}, "
          f"mean absolute {statistics.mean(abs(e) for e in errors):.3f}")


def predict(run: Run, mfus: tuple[float, float, float] | None = None) -> tuple[float, float, tuple[float, float]]:
    """(implied MFU, predicted tokens/s per GPU at the typical default, (low, high) predicted); `mfus` replaces the
    default (low, typical, high) MFU."""
    from gpt2dist.model import flops_per_token
    from gpt2dist.observe.metrics import peak_flops
    from gpt2dist.planning import costmodel, hardware

    tensors = costmodel.gpt2_tensors(run.n_layer, run.n_embd, run.vocab, run.seq)
    if run.untied:
        tensors += (("lm_head", run.vocab * run.n_embd, 2),)
    non_embedding = sum(n for _, n, _ in tensors) - run.seq * run.n_embd  # as count_parameters: wte is lm_head
    fpt = flops_per_token(non_embedding, run.n_layer, run.n_embd, run.seq)
    peak = peak_flops(run.gpu, run.precision)
    implied = run.tokens_per_s_per_gpu * fpt / peak
    system = hardware.GPUS[run.gpu]
    links = costmodel.Links(system.intra_busbw, system.inter_busbw(8), system.intra_link, pcie_bw=system.pcie_bw,
                            source=system.source)
    w = costmodel.Workload(tensors, fpt, run.micro, run.seq, run.accum, 2, activation_checkpointing=run.checkpointing)
    settings = dict(run.zero) or {"implementation": "paper" if run.name.startswith("llm.c") else "deepspeed"}
    z = costmodel.Zero(stage=run.stage, **settings)
    rates = []
    # a whole run also pays its overhead: the low MFU with the high overhead, the high MFU with the low
    overheads = costmodel.whole_run_overhead(math.ceil(run.n_gpus / 8))[::-1] if run.whole_run else (1, 1, 1)
    for mfu, overhead in zip(mfus or costmodel.default_mfu(run.gpu, sum(n for _, n, _ in tensors), run.seq),
                             overheads, strict=True):
        compute = costmodel.compute_time(fpt, w.tokens_per_gpu, peak, mfu,
                                         activation_checkpointing=run.checkpointing)
        step = costmodel.estimate_step(w, z, run.n_gpus, min(run.n_gpus, 8), links, compute_s=compute, peak=peak,
                                       optimizer_s=costmodel.optimizer_time(w.n_params, system.hbm_bw))
        rates.append(step.tokens_per_s_per_gpu / overhead)
    return implied, rates[1], (rates[0], rates[2])


def fitted_mfu(run: Run, small_model: bool = True) -> float:
    """The MFU (the doctor's, before x 8/6 for recomputation and, with `small_model`, x SMALL_MODEL_FACTOR below
    200M parameters) at which the whole model -- communication included -- reproduces the published tokens/s."""
    from gpt2dist.planning import costmodel, memory

    params = memory.gpt2_param_count(run.n_layer, run.n_embd, run.vocab, run.seq)
    small = costmodel.SMALL_MODEL_FACTOR if small_model and params < costmodel.SMALL_MODEL else 1.0
    low, high = 0.01, 1.5
    for _ in range(40):
        mid = (low + high) / 2
        rate = predict(run, (mid * small,) * 3)[1]
        low, high = (mid, high) if rate < run.tokens_per_s_per_gpu else (low, mid)
    return (low + high) / 2


# Published runs transcribed blind (bench/published/*.json: each row's source, quoted words and assumptions; *.md:
# the table, the doubts, the candidates rejected and why, the transcription's notes), collected on 2026-12-05 by
# people who never saw the cost model's predictions.
# DLPerf's V100 rows are the fit of costmodel.MFU_BY_GPU["V100"] (chosen as the fit before any prediction was
# made: one systematic benchmark suite, as llm-foundry is for the A100/H100); every other row is the FRESH check.
PUBLISHED = Path(__file__).with_name("published")


def published_runs(name: str) -> list[Run]:
    """bench/published/<name>.json's rows as Runs (DDP for a stage-0 trainer that is not DeepSpeed)."""
    rows = json.loads((PUBLISHED / f"{name}.json").read_text(encoding="utf-8"))
    return [Run(d["name"] + (" (whole run)" if d["whole_run"] else ""), d["gpu"], d["n_gpus"], d["n_layer"],
                d["n_embd"], d["seq"], d["micro"], d["accum"], d["stage"], d["tokens_per_s_per_gpu"],
                f"{d['source']} [{d['trainer']}]", untied=d["untied"], vocab=d["vocab"],
                checkpointing=d["checkpointing"], precision=d["precision"],
                zero=DDP25 if d["stage"] == 0 and "deepspeed" not in d["trainer"].lower() else ())
            for d in rows]


def is_v100_fit(run: Run) -> bool:
    return run.name.startswith("dlperf-")


_V100_AND_OTHERS = published_runs("v100_and_others")
V100_FIT = [r for r in _V100_AND_OTHERS if is_v100_fit(r)]
FRESH = [r for r in _V100_AND_OTHERS if not is_v100_fit(r)] + published_runs("a100_h100_others")


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return q1, median, q3


def source_key(run: Run) -> str:
    """Which publication a row comes from (rows of one source share a trainer and a cluster)."""
    for prefix, key in (("MPT-", "llm-foundry"), ("dlperf-", "dlperf"), ("megatron2019", "megatron 2019"),
                        ("megatron-v1", "megatron 2019"), ("llm.c", "llm.c")):
        if run.name.startswith(prefix):
            return key
    return run.name.split()[0].split("-")[0].lower()


def cross_validate() -> None:
    """Leave one source out: each steady row is predicted from the other sources' rows of its GPU kind alone
    (their median MFU; DEFAULT_MFU where fewer than two other sources ran that kind), under three shapes of the
    default. How well any default of this kind can do on a source it has never seen."""
    from gpt2dist.planning import costmodel, memory

    runs = [r for r in RUNS + HELD_OUT + V100_FIT + FRESH if not r.whole_run]
    need = {r.name: fitted_mfu(r, small_model=False) for r in runs}
    params = {r.name: memory.gpt2_param_count(r.n_layer, r.n_embd, r.vocab, r.seq) for r in runs}
    shapes = {"one MFU per GPU kind": lambda r: 1.0,
              "x 0.88 below 200M params (the doctor's)":
                  lambda r: costmodel.SMALL_MODEL_FACTOR if params[r.name] < costmodel.SMALL_MODEL else 1.0,
              "x width / (width + 800)": lambda r: r.n_embd / (r.n_embd + 800)}
    print(f"LEAVE-ONE-SOURCE-OUT ({len(runs)} steady rows, {len({source_key(r) for r in runs})} sources)")
    for label, shape in shapes.items():
        ratios = []
        for run in runs:
            others = [r for r in runs if r.gpu == run.gpu and source_key(r) != source_key(run)]
            base = (statistics.median(need[r.name] / shape(r) for r in others)
                    if len({source_key(r) for r in others}) >= 2 else costmodel.DEFAULT_MFU)
            ratios.append(base * shape(run) / need[run.name])
        print(f"  {label:<42}{summary(ratios)}")


def costmodel_mfu(gpu: str) -> tuple[float, float, float]:
    from gpt2dist.planning import costmodel

    return costmodel.MFU_BY_GPU[gpu]


def costmodel_overhead(nodes: int) -> str:
    from gpt2dist.planning import costmodel

    return " / ".join(f"{x:.2f}" for x in costmodel.whole_run_overhead(nodes))


def table(title: str, runs: list[Run], sources: bool = True) -> list[float]:
    """Print one table and its share within 25%; the predicted/published ratios. sources=False leaves each row's
    source out (bench/published/ has them, with the quoted words)."""
    width = max(32, *(len(r.name) + 1 for r in runs))
    print(f"{title}\n{'run':<{width}}{'GPUs':>8}  {'T':>5} {'published':>10} {'predicted':>10} {'range':>17} "
          f"{'ratio':>6} {'implied MFU':>11}" + ("  source" if sources else ""))
    ratios, inside = [], 0
    for run in runs:
        implied, typical, (low, high) = predict(run)
        ratio = typical / run.tokens_per_s_per_gpu
        ratios.append(ratio)
        inside += low <= run.tokens_per_s_per_gpu <= high
        print(f"{run.name:<{width}}{run.n_gpus:>4}x{run.gpu:<4} {run.seq:>5} {run.tokens_per_s_per_gpu:>10,.0f} "
              f"{typical:>10,.0f} {f'{low:,.0f}-{high:,.0f}':>17} {ratio:>5.2f}x {implied:>10.0%}"
              + (f"  {run.source}" if sources else ""))
    print(f"{summary(ratios)}; inside the predicted range: {inside} of {len(runs)}")
    return ratios


def summary(ratios: list[float]) -> str:
    within = sum(0.75 <= r <= 1.25 for r in ratios)
    return (f"within 25%: {within} of {len(ratios)} ({within / len(ratios):.0%}); median predicted/published "
            f"{statistics.median(ratios):.2f}")


def main() -> int:
    table("IN-SAMPLE (the rows costmodel.MFU_BY_GPU and, whole runs, WHOLE_RUN_* were read off)", RUNS)
    print("\nWHOLE-RUN OVERHEAD (a whole run's time over its source's own steady rate: costmodel.WHOLE_RUN_*)")
    print(f"{'run':<32}{'nodes':>6}{'steady':>9}{'whole':>9}{'overhead':>9}")
    for o in OVERHEADS:
        print(f"{o.name:<32}{o.nodes:>6}{o.steady:>9,.0f}{o.whole:>9,.0f}{o.ratio:>8.2f}x")
    for nodes, where in ((1, "one node"), (2, "across nodes")):
        fit = " / ".join(f"{x:.2f}" for x in fitted_overhead(nodes))
        print(f"{where}: low / typical / high {fit}; costmodel {costmodel_overhead(nodes)}")
    print()
    beyond_128()
    print("\nV100 FIT (DLPerf: costmodel.MFU_BY_GPU['V100'] = the quartiles of the MFU each row needs, communication "
          "included)")
    fitted = [fitted_mfu(r) for r in V100_FIT]
    for run, mfu in zip(V100_FIT, fitted, strict=True):
        print(f"{run.name:<76}{run.n_gpus:>4}x{run.gpu:<4} {run.tokens_per_s_per_gpu:>10,.0f}  fitted MFU {mfu:.0%}")
    print("quartiles " + " / ".join(f"{x:.3f}" for x in quartiles(fitted)) + "; costmodel "
          + " / ".join(f"{x:.2f}" for x in costmodel_mfu("V100")))
    print()
    ratios = table("HELD-OUT (never used for a figure)", HELD_OUT)
    pairs = list(zip(HELD_OUT, ratios, strict=True))
    others = [r for run, r in pairs if not run.source.startswith(FOUNDRY)]
    print(f"held-out, not llm-foundry benchmarks:  {summary(others)}")
    print(f"held-out, benchmark throughput:        {summary([r for run, r in pairs if not run.whole_run])}")
    print(f"held-out, whole runs (GPU-hours):      {summary([r for run, r in pairs if run.whole_run])}")
    print()
    fresh = table("FRESH HELD-OUT (transcribed blind on 2026-12-05, after every figure above was set; sources: "
                  "bench/published/*.json)", FRESH, sources=False)
    for kind in sorted({r.gpu for r in FRESH}):
        print(f"fresh, {kind:<10}{summary([x for r, x in zip(FRESH, fresh, strict=True) if r.gpu == kind])}")
    print(f"fresh, whole runs  {summary([x for r, x in zip(FRESH, fresh, strict=True) if r.whole_run] or [0])}")
    print()
    cross_validate()
    return 0


if __name__ == "__main__":  # gpt2dist is installed (pip install -e .): no path set-up needed
    sys.exit(main())
