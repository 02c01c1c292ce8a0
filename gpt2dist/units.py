"""Sizes as people write them (`80GiB`, `40000MiB`) and as we print them: one home, used by every package."""

from __future__ import annotations


def parse_size(text: str) -> int:
    """'80GiB', '80GB', '40000MiB', '81920M', '1.5T', '123' (bytes) -> bytes; GB is 10^9, GiB and bare G 2^30."""
    units = {"": 1, "B": 1, "K": 2**10, "KB": 10**3, "KIB": 2**10, "M": 2**20, "MB": 10**6, "MIB": 2**20,
             "G": 2**30, "GB": 10**9, "GIB": 2**30, "T": 2**40, "TB": 10**12, "TIB": 2**40}
    s = text.strip().upper().replace(" ", "").replace("_", "")
    i = len(s)
    while i and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    number, unit = s[:i], s[i:]
    if not number or unit not in units:
        raise ValueError(f"{text!r} is not a size: use e.g. 80GiB, 80GB or 40000MiB")
    value = float(number) * units[unit]
    if value <= 0:
        raise ValueError(f"{text!r} must be a positive size")
    return int(value)


def fmt_bytes(n: float) -> str:
    """Binary units with one decimal (GiB for GPU memory, as nvidia-smi's MiB suggests)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
