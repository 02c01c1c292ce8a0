"""torch.compile where it pays, and never a run lost to it: the first call falls back to eager on failure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


def wants_compile(setting: str, device: torch.device) -> bool:
    """train.compile: `auto` compiles on CUDA only, where fusing GPT-2's elementwise ops pays (nanoGPT, llm.c).
    On CPU, with GELU already one fused kernel, compiled steps measured no faster (0.9-1.0x, bench/RESULTS.md)
    after 4-20 s of compiling on two cores; `true` still compiles there."""
    return setting == "true" or (setting == "auto" and device.type == "cuda")


def compile_error(exc: BaseException) -> str:
    """One line naming why compilation failed: the root cause (dynamo's BackendCompilerFailed says in its first
    line only which backend raised; the reason is its inner_exception)."""
    root, seen = exc, {id(exc)}
    while (inner := root.__cause__ or getattr(root, "inner_exception", None)) is not None and id(inner) not in seen:
        root = inner
        seen.add(id(inner))
    lines = str(root).strip().splitlines()
    return f"{type(root).__name__}: {lines[0] if lines else ''}"


def compiled_or_eager(compile_fn: Callable[[], Callable[..., Any]], eager: Callable[..., Any],
                      undo: Callable[[], None] | None = None) -> Callable[..., Any]:
    """`compile_fn()` guarded at both points where compilation can fail: up front (torch 2.3 refuses Python 3.12,
    2.4-2.5 refuse 3.13: "Dynamo is not supported") and at the first call (FirstCallFallback). Either way the
    run goes on eager, with one warning naming the cause."""
    try:
        compiled = compile_fn()
    except Exception as exc:  # noqa: BLE001 - any compiler failure means "run eager"
        log.warning("torch.compile failed (%s); continuing without compilation", compile_error(exc))
        if undo is not None:
            undo()
        return eager
    return FirstCallFallback(compiled, eager, undo)


class FirstCallFallback:
    """Call `compiled` (compilation happens on its first call); if that first call raises, log one warning,
    run `undo` (e.g. drop an in-place compile) and use `eager` from then on. Later failures are real errors."""

    def __init__(self, compiled: Callable[..., Any], eager: Callable[..., Any], undo: Callable[[], None] | None = None):
        self.fn, self.eager, self.undo = compiled, eager, undo
        self.compiled = True
        self._checked = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._checked:
            return self.fn(*args, **kwargs)
        try:
            out = self.fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "run eager"
            log.warning("torch.compile failed (%s); continuing without compilation", compile_error(exc))
            if self.undo is not None:
                self.undo()
            self.fn, self.compiled = self.eager, False
            out = self.fn(*args, **kwargs)
        self._checked = True
        return out
