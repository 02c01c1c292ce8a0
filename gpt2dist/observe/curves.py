"""RUN_DIR/curves.png during training: redrawn after evaluations and once at the end, on rank 0 only.

Cost, measured: one `plot_run` (2x2 panels, 1200x800 PNG) takes 0.5-2 s of CPU (more on a loaded 2-core box),
which is a large share of a tiny run's eval interval (100 steps can be 2 s on CPU) and nothing next to a GPU
run's. So the plot is drawn in the loop (no thread contending for the GIL with the step's Python), but only
while plotting stays within BUDGET of the wall clock since training started: every eval of a long run is
drawn, a seconds-long CPU run draws few. The final plot is always drawn. A broken matplotlib (missing, a
bad backend, a font cache it cannot write) costs a warning once and no more plots, never the run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from gpt2dist import atomic
from gpt2dist.run.layout import CURVES_FILE

log = logging.getLogger(__name__)

BUDGET = 0.02  # plotting may take at most this share of the training wall clock (between evals)
FIRST_GUESS_S = 1.0  # the cost assumed before the first plot is measured


class CurveWriter:
    def __init__(self, run_dir: Path, *, enabled: bool, budget: float = BUDGET) -> None:
        self.path = Path(run_dir) / CURVES_FILE
        self.enabled = enabled
        self.budget = budget
        self.started = time.perf_counter()
        self.spent = 0.0  # seconds spent plotting so far
        self.cost = FIRST_GUESS_S  # the last plot's duration: what the next one will likely cost
        self.drawn = 0

    def at_eval(self) -> Path | None:
        """Redraw if that keeps the plotting time within budget; the path when drawn."""
        elapsed = time.perf_counter() - self.started
        if not self.enabled or self.spent + self.cost > self.budget * elapsed:
            return None
        return self.draw()

    def final(self) -> Path | None:
        """Always redraw at the end of training (when enabled and matplotlib works)."""
        return self.draw() if self.enabled else None

    def draw(self) -> Path | None:
        from gpt2dist.observe.plot import plot_run

        t0 = time.perf_counter()
        fd, name = tempfile.mkstemp(prefix=".curves-", suffix=".png", dir=self.path.parent)  # ours, not planted
        os.close(fd)
        tmp = Path(name)
        try:
            plot_run(self.path.parent, tmp)
            atomic.write_bytes(self.path, tmp.read_bytes())  # a viewer never sees half a PNG
        except Exception as exc:  # a plot must never fail the run
            log.warning("could not draw %s (%s: %s); training goes on without curves (gpt2dist plot RUN_DIR "
                        "draws them later)", self.path, type(exc).__name__, exc)
            self.enabled = False
            return None
        finally:
            tmp.unlink(missing_ok=True)
        self.cost = time.perf_counter() - t0
        self.spent += self.cost
        self.drawn += 1
        return self.path
