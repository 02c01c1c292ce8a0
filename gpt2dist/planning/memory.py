"""How much memory a GPT-2 training step needs on one rank: model states by ZeRO stage, activations, checkpoints.

Pure arithmetic (no torch import), so `gpt2dist doctor`, `gpt2dist train`'s pre-flight checks and the Slurm
renderer can answer "will this fit?" on a login node in milliseconds. Every number is in bytes.

Conventions, named so the numbers can be checked by hand:
- Model states follow the ZeRO paper's accounting (Rajbhandari et al. 2020, sec. 3.1): mixed precision
  (bf16/fp16) Adam holds 2 bytes/param of 16-bit weights, 2 of 16-bit gradients and K = 12 of optimizer
  state (fp32 master weights + Adam m and v); fp32 holds 4 + 4 + 8 (the weights are their own master).
  Stage 1 partitions the optimizer state over the data-parallel ranks, stage 2 also the gradients,
  stage 3 also the weights (plus the largest layer gathered for compute). Offload moves the optimizer
  partition (and at stage 3 the weight partition) to host memory, reported separately. (gpt2dist's torch
  engine runs bf16 as autocast over fp32 weights: 4 + 4 + 8 + a 2-byte weight cache, and a fp32 residual
  stream, +4 bytes per s*b*h per layer -- about 10% above the 16-bit row on one rank.)
- Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
  Models", sec. 4.1: s*b*h*(34 + 5*a*s/h) bytes per layer with 16-bit activations. `layer_activation_bytes`
  amends it term by term for Hugging Face's GPT-2 as gpt2dist runs it; each amendment was checked by counting
  the tensors autograd saves (torch 2.13, transformers 5.x; tests/planning/test_doctor.py repeats the fp32 count).
- DeepSpeed's own estimators (`estimate_zero2_model_states_mem_needs`, `estimate_zero3_model_states_mem_needs`
  in deepspeed.runtime.zero) are mirrored in `deepspeed_model_states`, formula for formula, so doctor can
  show both without importing deepspeed; a test pins the mirror to the real functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpt2dist.units import fmt_bytes

if TYPE_CHECKING:
    from gpt2dist.config import RunConfig
    from gpt2dist.planning.preflight import ModelFacts

HEADROOM = 0.9  # usable share of --gpu-mem: the CUDA context and allocator fragmentation take the rest
MIXED = ("bf16", "fp16")
OPTIMIZER_BYTES = {"mixed": 12, "fp32": 8}  # Adam: fp32 master + m + v (mixed) or m + v (fp32)


def weight_bytes(precision: str) -> int:
    """Bytes per weight (and per gradient, and per activation element) the GPU holds for `precision`."""
    return 2 if precision in MIXED else 4


def gpt2_param_count(n_layer: int, n_embd: int, vocab_size: int, n_positions: int) -> int:
    """Unique parameters of GPT2LMHeadModel, lm_head tied to wte (counted once, as count_parameters does).

    wte V*E + wpe P*E + per layer [ln_1, ln_2: 2*2E; c_attn E*3E + 3E; attn c_proj E*E + E;
    mlp c_fc E*4E + 4E; mlp c_proj 4E*E + E] + ln_f 2E.
    """
    e = n_embd
    per_layer = 2 * 2 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * 4 * e + 4 * e) + (4 * e * e + e)
    return vocab_size * e + n_positions * e + n_layer * per_layer + 2 * e


def largest_layer_params(n_embd: int, vocab_size: int, n_positions: int) -> int:
    """Parameters of the biggest single module (DeepSpeed's `largest_layer_params`): wte, wpe or mlp.c_fc."""
    return max(vocab_size * n_embd, n_positions * n_embd, 4 * n_embd * n_embd + 4 * n_embd)


def korthikanti_layer_bytes(seq: int, batch: int, n_embd: int, n_head: int) -> int:
    """The paper's per-layer activation bytes, unamended: s*b*h*(34 + 5*a*s/h), 16-bit, with dropout masks."""
    sbh = seq * batch * n_embd
    return sbh * 34 + 5 * n_head * seq * seq * batch


def layer_activation_bytes(seq: int, batch: int, n_embd: int, n_head: int, precision: str, *,
                           attention: str = "sdpa", dropout: float = 0.0) -> int:
    """Bytes autograd keeps for one transformer block between its forward and its backward.

    Korthikanti's 34 (16-bit bytes per s*b*h) = layer-norm inputs 4 + attention 11 (QKV input 2, Q and K 4,
    V 2, projection input 2, dropout mask 1) + MLP 19 (input 2, GeLU input 8, second linear input 8, mask 1).
    Amendments for GPT-2 as gpt2dist runs it: (1) dropout masks (1 byte each) only when dropout > 0 --
    gpt2dist defaults to 0; (2) GELU is `gelu_pytorch_tanh`, one fused kernel that saves only its input (HF's
    `gelu_new` would keep three more 4h-wide tensors: +12 elements); (3) the 5*a*s/h term is the s x s score
    matrix (softmax output 2, its dropout mask 1, dropped-out probabilities 2). transformers runs GPT-2 with
    SDPA, whose flash / memory-efficient kernels keep only a fp32 log-sum-exp per row (4*a*s*b bytes)
    instead; `attention="eager"` keeps the matrix. fp32 doubles every element (the paper's x2).
    Net: 16 elements per s*b*h = 32 bytes (16-bit) or 64 (fp32), vs the paper's 34 + 5*a*s/h.
    """
    e = weight_bytes(precision)
    sbh = seq * batch * n_embd
    scores = n_head * seq * seq * batch
    total = e * sbh * (2 + 5 + 9)  # ln inputs 2; attention 1 + 3 + 1; MLP input 1 + GELU input 4 + c_proj input 4
    if dropout > 0:
        total += 2 * sbh  # residual dropout masks after attention and after the MLP
    if attention == "eager":
        total += e * scores + ((1 + e) * scores if dropout > 0 else 0)
    else:
        total += 4 * n_head * seq * batch  # fp32 log-sum-exp
    return total


def logits_bytes(seq: int, batch: int, vocab_size: int, *, chunk: int | None = None, n_embd: int = 768) -> int:
    """Peak bytes of the output layer: three fp32 b*s*V tensors live at the head of the backward pass.

    Cross entropy runs in fp32 (`engine.lm_loss` upcasts). Its log-softmax output is saved; backward then
    holds that, its incoming gradient and the logits' gradient at once. With GPT-2's 50,257-token vocabulary
    this rivals all transformer blocks together (gpt2, b=8, s=1024, bf16: 4.9 GB vs 2.4 GB for the 12 blocks).

    With the chunked loss (`chunk` tokens at a time, engines/chunked_loss.py) two fp32 chunk x V tensors (the
    logits, turned into the softmax in place, and their 16/32-bit copy for the gradient matmuls, counted at
    4 bytes) and the fp32 gradient of the V x E output weight it accumulates.
    """
    if chunk:
        return 2 * 4 * min(chunk, seq * batch) * vocab_size + 4 * vocab_size * n_embd
    return 3 * 4 * seq * batch * vocab_size


def activation_bytes(n_layer: int, n_embd: int, n_head: int, block_size: int, micro_batch: int, vocab_size: int,
                     precision: str, *, checkpointing: bool = False, attention: str = "sdpa",
                     dropout: float = 0.0, loss_chunk: int | None = None) -> int:
    """Activation peak of one micro batch: all blocks + ln_f/lm_head inputs + the logits term (`loss_chunk`:
    tokens per chunk of the chunked loss, None for full logits).

    With activation checkpointing (HF gradient checkpointing per block) each block keeps only its input and
    one block's activations are alive at a time while it is recomputed.
    """
    e = weight_bytes(precision)
    sbh = block_size * micro_batch * n_embd
    layer = layer_activation_bytes(block_size, micro_batch, n_embd, n_head, precision, attention=attention,
                                   dropout=dropout)
    blocks = n_layer * e * sbh + layer if checkpointing else n_layer * layer
    return blocks + 2 * e * sbh + logits_bytes(block_size, micro_batch, vocab_size, chunk=loss_chunk,
                                               n_embd=n_embd)


def zero_bucket_bytes(zero_stage: int, precision: str, reduce_bucket_size: int, *, overlap_comm: bool = True,
                      contiguous_gradients: bool = True) -> int:
    """Gradient bucket buffers DeepSpeed allocates on each GPU, sized in elements by reduce_bucket_size.

    deepspeed/runtime/zero/stage_1_and_2.py `setup_buckets`: one buffer, two with overlap_comm; stage3.py:
    one. Only with contiguous_gradients. At the default 5e8 elements that is 2 GB at 16-bit -- often more
    than the model states of a small model, hence worth showing.
    """
    if zero_stage == 0 or not contiguous_gradients:
        return 0
    copies = 2 if (overlap_comm and zero_stage in (1, 2)) else 1
    return copies * reduce_bucket_size * weight_bytes(precision)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per rank for one configuration. `total` is what one GPU must hold; `host` is per rank, on the CPU."""

    zero_stage: int
    offload_optimizer: bool
    offload_param: bool
    params: int
    grads: int
    optimizer: int
    activations: int
    buffers: int = 0
    host: int = 0

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations + self.buffers

    @property
    def label(self) -> str:
        off = "+".join(n for n, on in (("opt", self.offload_optimizer), ("param", self.offload_param)) if on)
        return f"ZeRO-{self.zero_stage}" + (f" offload {off}" if off else "")

    def fits(self, gpu_mem_bytes: int) -> bool:
        return self.total <= gpu_mem_bytes


def estimate(n_params: int, n_layer: int, n_embd: int, n_head: int, block_size: int, micro_batch: int,
             precision: str, zero_stage: int, world_size: int, offload_optimizer: bool = False,
             offload_param: bool = False, *, vocab_size: int, largest_layer: int | None = None, buffers: int = 0,
             checkpointing: bool = False, attention: str = "sdpa", dropout: float = 0.0,
             loss_chunk: int | None = None) -> MemoryEstimate:
    """Per-rank bytes for ZeRO `zero_stage` on `world_size` data-parallel ranks (conventions: module docstring).

    Stage 3 adds the largest layer gathered in full, as weight + gradient (DeepSpeed's estimator counts
    4 bytes/param of it at 16-bit). `largest_layer` defaults to `largest_layer_params` with n_positions =
    block_size. `total` sums every term as if all were alive at once, which is slightly pessimistic: grads
    grow while activations are freed. Measured on CPU in fp32 (peak RSS, tests/planning/test_doctor.py): estimate /
    measured = 0.97 (tiny preset, b=8, s=256) and 1.17 after the first step, 1.04 in steady state (~11M).
    """
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0-3, got {zero_stage}")
    if offload_param and zero_stage != 3:
        raise ValueError("offload_param needs ZeRO stage 3")
    if offload_optimizer and zero_stage == 0:
        raise ValueError("offload_optimizer needs ZeRO stage >= 1")
    w = weight_bytes(precision)
    k = OPTIMIZER_BYTES["mixed" if precision in MIXED else "fp32"]
    n = world_size
    params, grads, optim = w * n_params, w * n_params, k * n_params
    if zero_stage >= 1:
        optim //= n
    if zero_stage >= 2:
        grads //= n
    host = 0
    if offload_optimizer:
        host, optim = optim, 0
    if zero_stage == 3:
        params //= n
        if offload_param:
            host, params = host + params, 0
        if largest_layer is None:
            largest_layer = largest_layer_params(n_embd, vocab_size, block_size)
        params += 2 * w * largest_layer
    acts = activation_bytes(n_layer, n_embd, n_head, block_size, micro_batch, vocab_size, precision,
                            checkpointing=checkpointing, attention=attention, dropout=dropout, loss_chunk=loss_chunk)
    return MemoryEstimate(zero_stage, offload_optimizer, offload_param, params, grads, optim, acts, buffers, host)


def deepspeed_model_states(n_params: int, largest_layer: int, zero_stage: int, gpus_per_node: int, nodes: int,
                           offload_optimizer: bool, offload_param: bool) -> tuple[int, int] | None:
    """(cpu_bytes, gpu_bytes) from DeepSpeed's estimators, or None where they do not apply (stages 0 and 1).

    Mirrors deepspeed 0.19 `estimate_zero2_model_states_mem_needs(total_params, num_gpus_per_node, num_nodes,
    cpu_offload, additional_buffer_factor=1.5)` and `estimate_zero3_model_states_mem_needs(total_params,
    largest_layer_params, ..., cpu_offload, cpu_offload_params, zero_init=True, ...)`: model states only
    (no activations), 16-bit weights, GPU 2 + 18/N bytes/param without offload, CPU with a 1.5 buffer factor.
    The CPU figure is DeepSpeed's per-node host memory (it includes loading the model on every local rank).
    """
    total_gpus = nodes * gpus_per_node
    factor = 1.5
    if zero_stage == 2:
        if offload_optimizer:
            return int(n_params * max(4 * total_gpus, 16) * factor), int(2 * n_params)
        return int(n_params * 4 * gpus_per_node * factor), int(2 * n_params + int(18 * n_params / total_gpus))
    if zero_stage != 3:
        return None
    largest = 4 * largest_layer
    per_node = 1 / nodes
    if offload_optimizer and offload_param:
        return int(n_params * 18 * per_node * factor), int(largest)
    if offload_optimizer:
        return int(n_params * 16 * per_node * factor), int(largest + int(2 * n_params / total_gpus))
    return int(largest_layer * 4 * gpus_per_node * factor), int(largest + int(18 * n_params / total_gpus))


def checkpoint_bytes(n_params: int, precision: str, *, deepspeed: bool, zero_stage: int = 0) -> int:
    """Disk bytes of one gpt2dist checkpoint (all ranks together).

    Torch engine: model.safetensors fp32 (4) + engine.pt Adam m, v (8) = 12 bytes/param. DeepSpeed: the
    full fp32 model.safetensors (4, rebuilt in fp32 by ds_engine.save) + DeepSpeed's module states (2 at
    16-bit, 4 at fp32) + optimizer shards (fp32 master 4 + m, v 8 at 16-bit or at ZeRO >= 1; m, v 8 at
    fp32 stage 0). So 18 (bf16/fp16), 20 (fp32 ZeRO >= 1) or 16 (fp32 stage 0). Metadata is ignored.
    """
    if not deepspeed:
        return 12 * n_params
    w = weight_bytes(precision)
    optim = 12 if (precision in MIXED or zero_stage >= 1) else 8
    return (4 + w + optim) * n_params


def format_table(rows: list[MemoryEstimate], ds_estimates: dict[str, tuple[int, int]],
                 configured: MemoryEstimate | None, gpu_mem: int | None, headroom: float,
                 ranks_per_node: int) -> list[str]:
    """Doctor's table: one line per configuration; `ds_estimates` maps a label to DeepSpeed's (cpu, gpu)."""
    fit = f"fits = total <= {headroom:.0%} of --gpu-mem {fmt_bytes(gpu_mem)}" if gpu_mem else "--gpu-mem checks fit"
    out = [f"memory per GPU (estimate; {fit})",
           f"  {'config':<26}{'params':>10}{'grads':>10}{'optim':>10}{'activ':>10}{'buffers':>10}{'total/GPU':>11}"
           f"{'host/node':>11}{'DeepSpeed GPU / CPU':>24}  fits"]
    for e in rows:
        ds = ds_estimates.get(e.label)
        fits = ("yes" if e.fits(int(gpu_mem * headroom)) else "no") if gpu_mem else ""
        out.append(f"{'*' if e == configured else ' '} {e.label:<26}{fmt_bytes(e.params):>10}{fmt_bytes(e.grads):>10}"
                   f"{fmt_bytes(e.optimizer):>10}{fmt_bytes(e.activations):>10}{fmt_bytes(e.buffers):>10}"
                   f"{fmt_bytes(e.total):>11}{fmt_bytes(e.host * ranks_per_node):>11}"
                   f"{f'{fmt_bytes(ds[1])} / {fmt_bytes(ds[0])}' if ds else '-':>24}  {fits}")
    out.append("  * = configured. DeepSpeed = estimate_zero2/3_model_states_mem_needs (model states only, 16-bit "
               "weights, CPU per node)")
    return out


def estimate_for(cfg: RunConfig, facts: ModelFacts, world_size: int, micro: int, stage: int,
                 offload_optimizer: bool, offload_param: bool, checkpointing: bool | None = None) -> MemoryEstimate:
    """One row of the doctor's table for this run config and model (the scaling table asks the same question)."""
    d, precision = cfg.distributed, cfg.train.precision
    return estimate(
        facts.n_params, facts.n_layer, facts.n_embd, facts.n_head, cfg.data.block_size, micro, precision, stage,
        world_size, offload_optimizer, offload_param, vocab_size=facts.vocab_size,
        largest_layer=largest_layer_params(facts.n_embd, facts.vocab_size, facts.n_positions),
        buffers=zero_bucket_bytes(stage, precision, d.reduce_bucket_size, overlap_comm=d.overlap_comm,
                                  contiguous_gradients=d.contiguous_gradients),
        checkpointing=cfg.model.activation_checkpointing if checkpointing is None else checkpointing,
        dropout=cfg.model.dropout or 0.0, loss_chunk=loss_chunk(cfg, stage))


def loss_chunk(cfg: RunConfig, stage: int) -> int | None:
    """Tokens per chunk of the loss the planned (GPU) run computes, None for full logits."""
    from gpt2dist.engines.loss_plan import planned_chunk

    return planned_chunk(cfg.train.chunked_loss, cfg.train.precision, stage)
