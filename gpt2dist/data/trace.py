"""Optional audit trail of what each rank consumed (`logging.trace_windows`), used by the resume tests.

RUN_DIR/trace/windows-rankNNNNN.txt, appended across restarts:
  `# start N`                      a (re)start at step N: lines a killed run wrote after it are void
  `d STEP EPOCH FILE:ROW`          a document (row ROW of data.train file FILE) pulled into the token buffer
  `w STEP EPOCH INDEX DIGEST`      a window trained on at STEP
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from gpt2dist import atomic
from gpt2dist.data.contract import TrainStream, Window


def open_trace(run_dir: Path, rank: int, start_step: int) -> TextIO:
    folder = run_dir / "trace"
    folder.mkdir(parents=True, exist_ok=True)
    trace = atomic.open_append(folder / f"windows-rank{rank:05d}.txt")  # the caller closes it
    trace.write(f"# start {start_step}\n")
    return trace


def write_trace(trace: TextIO, step: int, windows: list[Window], stream: TrainStream) -> None:
    trace.writelines(f"d {step} {epoch} {row}\n" for epoch, row in stream.drain_pulled())
    trace.writelines(f"w {step} {w.epoch} {w.index} {w.digest()}\n" for w in windows)
    trace.flush()
