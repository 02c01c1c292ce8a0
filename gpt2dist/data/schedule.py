"""The packed path's sample order: global sample index -> (source, epoch, window), a pure function.

Each epoch is a keyed pseudo-random bijection of a source's windows (a Feistel network: no order array to build
or store), and sources interleave by a smooth round robin over their weights (`mixing_pattern`, which the
streaming path's mixer uses too). Every rank computes the same order from (seed, weights, window counts).
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

MIX_PERIOD = 10_000  # slots in one round of the source interleave: weights resolve to 1e-4
_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a fast, well-mixed 64-bit hash (Steele et al., 2014)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _mix64_int(x: int) -> int:
    """_mix64 on one Python int: for a micro batch's few indices, faster than numpy's per-call overhead."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def permute(index: np.ndarray, n: int, key: int, rounds: int = 4) -> np.ndarray:
    """A keyed pseudo-random bijection of [0, n), evaluated per index in O(1) time and memory.

    A balanced Feistel network on the smallest even bit width covering n, with cycle walking: values that
    land at n or above are permuted again until they fall inside (the domain is < 4n, so this is short).
    """
    index = np.asarray(index, dtype=np.int64)
    if n <= 1:
        return index.copy()
    bits = max(2, (n - 1).bit_length())
    bits += bits % 2
    half, mask = bits // 2, (1 << (bits // 2)) - 1
    round_keys = _round_keys(key, rounds)
    if len(index) <= 64:  # a micro batch: plain ints
        out = []
        for x in index.tolist():
            while True:
                left, right = x >> half, x & mask
                for rk in round_keys:
                    left, right = right, left ^ (_mix64_int(right ^ rk) & mask)
                x = (left << half) | right
                if x < n:
                    break
            out.append(x)
        return np.asarray(out, dtype=np.int64)
    np_half, np_mask, np_keys = np.uint64(half), np.uint64(mask), [np.uint64(k) for k in round_keys]

    def once(x: np.ndarray) -> np.ndarray:
        left, right = x >> np_half, x & np_mask
        for rk in np_keys:
            left, right = right, left ^ (_mix64(right ^ rk) & np_mask)
        return (left << np_half) | right

    with np.errstate(over="ignore"):
        out_np = once(index.astype(np.uint64))
        outside = out_np >= np.uint64(n)
        while outside.any():
            out_np[outside] = once(out_np[outside])
            outside = out_np >= np.uint64(n)
    return out_np.astype(np.int64)


@functools.lru_cache(maxsize=256)
def _round_keys(key: int, rounds: int) -> tuple[int, ...]:
    return tuple(_mix64_int((key + r * 0x9E3779B97F4A7C15) & _MASK64) for r in range(rounds))


@functools.lru_cache(maxsize=256)
def epoch_key(seed: int, source: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"gpt2dist/{seed}/{source}/{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def mixing_pattern(weights: list[float], period: int = MIX_PERIOD) -> np.ndarray:
    """The source of each slot in one round: counts by largest remainder, spread evenly (smooth round robin)."""
    if len(weights) == 1:
        return np.zeros(1, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64) / sum(weights)
    counts = np.floor(w * period).astype(np.int64)
    for i in np.argsort(-(w * period - counts), kind="stable")[: period - counts.sum()]:
        counts[i] += 1
    pattern, current = np.empty(period, dtype=np.int64), np.zeros(len(weights), dtype=np.int64)
    for slot in range(period):
        current += counts
        pick = int(np.argmax(current))
        current[pick] -= period
        pattern[slot] = pick
    return pattern


class PackedSchedule:
    """Global sample index -> (source, epoch, window): the deterministic order every rank agrees on."""

    def __init__(self, windows: list[int], weights: list[float], seed: int):
        self.windows, self.seed = windows, seed
        self.pattern = mixing_pattern(weights)
        period, n_sources = len(self.pattern), len(windows)
        self.counts = np.bincount(self.pattern, minlength=n_sources)
        self.prefix = np.zeros((n_sources, period + 1), dtype=np.int64)  # source s slots before slot k
        for s in range(n_sources):
            self.prefix[s, 1:] = np.cumsum(self.pattern == s)
        self.window_offset = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)  # ids unique across sources
        self.total = int(self.window_offset[-1])

    def locate(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source, epoch, window within source) of each global sample index."""
        period = len(self.pattern)
        rounds, slot = np.divmod(np.asarray(samples, dtype=np.int64), period)
        source = self.pattern[slot]
        j = rounds * self.counts[source] + self.prefix[source, slot]
        n = np.asarray(self.windows, dtype=np.int64)[source]
        epoch, position = np.divmod(j, n)
        window = np.empty_like(position)
        for key in {(int(s), int(e)) for s, e in zip(source, epoch, strict=True)}:
            sel = (source == key[0]) & (epoch == key[1])
            window[sel] = permute(position[sel], self.windows[key[0]], epoch_key(self.seed, *key))
        return source, epoch, window

    def epoch_of(self, samples: int) -> int:
        """Passes over the corpus so far (exact for one source; with several, samples / all windows)."""
        return samples // max(1, self.total)
