"""Cross entropy over the vocabulary in chunks of tokens: full-vocabulary fp32 logits never exist at once.

The full loss holds, for a micro batch of B x T tokens and vocabulary V, the 16/32-bit logits, their fp32 copy, the
saved log-softmax and in backward its gradient: with GPT-2's 50,257 entries that is most of a small model's
activation memory (3 x 4 x B x T x V bytes: 9.9 GiB at B=16, T=1024), and what keeps other trainers' published
configs fitting where a full-logits model says they do not (they use fused / chunked cross-entropy too).

Here the engines ask the model for its final hidden states (the output layer made an identity, `detach_head`;
under ZeRO-3 the loss is computed inside the output layer's forward instead, `ChunkedHead`), and
`chunked_lm_loss` computes, chunk by chunk, the logits, the loss and -- in the same pass, as Liger-Kernel's
fused linear cross-entropy does -- both gradients, (softmax - onehot) @ W and its transpose with the hidden
states; backward only scales them by the incoming gradient. Peak: one chunk's logits (chunk x V x 4 bytes, twice)
plus an fp32 gradient of the output layer, and no second forward over the vocabulary.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from gpt2dist.engines.loss_plan import DEFAULT_CHUNK, planned_chunk, unsupported


def _identity(hidden: torch.Tensor) -> torch.Tensor:
    return hidden


def detach_head(model: nn.Module) -> nn.Parameter:
    """Make the model return its final hidden states in place of logits (its output layer an identity for this
    instance: parameters, state_dict keys and checkpoints are unchanged) and return the output layer's weight."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError("chunked loss needs a bias-free output layer (GPT2LMHeadModel's lm_head)")
    head.forward = _identity
    return head.weight


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross entropy of hidden [N, E] @ weight[V, E]^T against targets [N]; gradients formed in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):  # noqa: ANN001 - autograd's signature
        n = targets.numel()
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        for start in range(0, n, chunk):
            h, t = hidden[start:start + chunk], targets[start:start + chunk]
            logits = (h @ weight.t()).float()  # bf16 under autocast, as the model's lm_head would be
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if want_h or want_w:
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                grad[torch.arange(t.numel(), device=t.device), t] -= 1.0
                grad = grad.to(h.dtype if h.dtype != torch.float32 else weight.dtype)
                if want_h:
                    grad_h[start:start + chunk] = grad @ weight.to(grad.dtype)
                if want_w:
                    grad_w += (grad.t() @ h.to(grad.dtype)).float()
            del logits
        ctx.save_for_backward(grad_h, grad_w)
        ctx.n, ctx.weight_dtype = n, weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        gh = grad_h * scale.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * scale).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                    chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Mean next-token cross entropy (fp32) of final hidden states [B, T, E] through the output weight [V, E]:
    the value and gradients of `lm_loss(hidden @ weight.T, targets)` with at most `chunk` tokens' logits alive."""
    flat = hidden.reshape(-1, hidden.size(-1))
    if not torch.is_grad_enabled():  # evaluation: the loss alone, chunk by chunk
        total = sum(F.cross_entropy((flat[s:s + chunk] @ weight.t()).float(), targets.reshape(-1)[s:s + chunk],
                                    reduction="sum") for s in range(0, flat.size(0), chunk))
        return total / targets.numel()
    return _ChunkedCrossEntropy.apply(flat, weight, targets.reshape(-1), chunk)


class ChunkedHead:
    """The chunked loss wired into a model: `loss(forward, input_ids, targets)` replaces `lm_loss(forward(...))`.

    Outside ZeRO-3 the output layer becomes an identity (`detach_head`) and the loss is computed from the hidden
    states the model returns. Under ZeRO-3 the output weight is partitioned outside its module's forward, so the
    loss is computed inside it instead: the layer's forward returns the loss (the model's `.logits` is then that
    scalar), with DeepSpeed's hooks gathering the weight around it as for any layer."""

    def __init__(self, model: nn.Module, inside: bool):
        self.inside = inside
        self.module = model.get_output_embeddings()
        if self.module is None or getattr(self.module, "bias", None) is not None:
            raise ValueError("chunked loss needs a bias-free output layer (GPT2LMHeadModel's lm_head)")
        self._targets: torch.Tensor | None = None
        if inside:
            self.module.forward = self._loss_inside
        else:
            detach_head(model)

    @property
    def weight(self) -> nn.Parameter:
        """The output weight as the model holds it now (a re-tie on load may replace the Parameter)."""
        return self.module.weight

    def _loss_inside(self, hidden: torch.Tensor) -> torch.Tensor:
        return _eager_chunked_lm_loss()(hidden, self.module.weight, self._targets)

    def loss(self, forward, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        if self.inside:
            self._targets = targets
            try:
                return forward(input_ids=input_ids, use_cache=False).logits
            finally:
                self._targets = None
        return chunked_lm_loss(forward(input_ids=input_ids, use_cache=False).logits, self.weight, targets)


@functools.cache
def _eager_chunked_lm_loss():
    """chunked_lm_loss kept out of torch.compile (a Python loop and a custom autograd Function: a graph break
    around it) when it runs inside a compiled model's forward; built on first use, since torch.compiler.disable
    imports dynamo (seconds) and a CPU run never needs it."""
    return torch.compiler.disable(chunked_lm_loss)


def head_for(model: nn.Module, setting: str, device: torch.device | str, precision: str,
             zero_stage: int | None = None) -> ChunkedHead | None:
    """train.chunked_loss for an engine (`loss_plan.planned_chunk`): the chunked loss wired into the model, or
    None for the full-logits loss."""
    import logging

    if planned_chunk(setting, precision, zero_stage, cuda=torch.device(device).type == "cuda") is None:
        if setting == "true" and (why := unsupported(precision, zero_stage)):
            logging.getLogger(__name__).warning("train.chunked_loss=true: full logits instead under %s", why)
        return None
    return ChunkedHead(model, inside=zero_stage == 3)
