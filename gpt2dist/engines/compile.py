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
            log.warning("torch.compile failed (%s); continuing without compilation", str(exc).splitlines()[0])
            if self.undo is not None:
                self.undo()
            self.fn, self.compiled = self.eager, False
            out = self.fn(*args, **kwargs)
        self._checked = True
        return out
