"""The streaming path's token buffer: tokens waiting to be cut into windows, and what each stretch of them came from.

One contiguous int64 array with a read offset: cutting a window is a view of `window` tokens (O(window)),
and a refill -- which happens only when fewer than a window of tokens are left -- copies that remainder and
the new tokens once. A Python list cut as `buf[:w], buf[w:]` copied the whole remainder for every window
instead: O(n^2) to consume a document of n tokens. `copied` counts the tokens refills copy, so tests can show
the work per window is flat in the document length without timing anything.

Each appended stretch is a Segment (one document, or one piece of a long one) with absolute token offsets,
so the stream's cursor can name the units whose tokens wait in the buffer instead of storing the tokens.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

OWN, PARTIAL, LITERAL = "own", "partial", "literal"


@dataclass
class Segment:
    """Tokens [start, end) of the stream (absolute offsets) and where they came from.

    kind OWN: unit (row, piece) of the file at `index` in this rank's visit order of `epoch`, read by this rank;
    PARTIAL: the rest of a unit another rank (or this one, before a world-size change) began -- re-derived from a
    cursor; LITERAL: tokens a version-2 cursor held as a list. `skip` tokens of the unit were dropped before
    `start` (trained on before a resume)."""

    start: int
    end: int
    kind: str
    epoch: int = 0
    index: int = 0
    file: int = 0
    row: int = 0
    piece: int = 0
    skip: int = 0
    eos_each_piece: bool = False  # pieces of this unit's document end with EOS (shared over ranks)


class TokenBuffer:
    """A FIFO of token ids with O(window) cuts; absolute offsets count every token ever appended."""

    def __init__(self) -> None:
        self._data = np.empty(0, dtype=np.int64)
        self._read = 0  # offset in _data of the next token
        self._base = 0  # absolute offset of _data[0]
        self.copied = 0  # tokens copied by refills (the array work besides the windows themselves)
        self.segments: deque[Segment] = deque()

    def __len__(self) -> int:
        return len(self._data) - self._read

    @property
    def read_at(self) -> int:
        """Absolute offset of the next token to cut."""
        return self._base + self._read

    @property
    def end(self) -> int:
        return self._base + len(self._data)

    def append(self, ids: np.ndarray, segments: list[Segment]) -> None:
        """Append tokens (and the segments describing them, in order, covering them exactly)."""
        rest = self._data[self._read:]
        self._base += self._read
        self._data = np.concatenate((rest, ids)) if len(rest) else np.asarray(ids, dtype=np.int64)
        self._read = 0
        self.copied += len(rest) + len(ids)
        self.segments.extend(segments)

    def take(self, n: int) -> np.ndarray:
        """The next n tokens (a view: valid until the array is replaced, which never changes its values)."""
        out = self._data[self._read:self._read + n]
        self._read += n
        return out

    def tokens(self, start: int, end: int) -> np.ndarray:
        """Tokens at absolute offsets [start, end), which must still be in the buffer."""
        return self._data[start - self._base:end - self._base]

    def remaining(self) -> np.ndarray:
        return self._data[self._read:]

    def drop_cut(self) -> None:
        """Forget the segments whose tokens are all cut."""
        while self.segments and self.segments[0].end <= self.read_at:
            self.segments.popleft()

    def clear(self) -> None:
        self._base, self._data, self._read = self.read_at, np.empty(0, dtype=np.int64), 0
        self.segments.clear()
