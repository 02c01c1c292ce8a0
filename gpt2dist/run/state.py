"""train_state.json as a type: the loop's counters a checkpoint carries besides weights, optimizer and data cursors.

One reader (`TrainState.from_json`) and one writer (`TrainState.to_json`); everything else uses attributes. The
JSON stays what earlier versions wrote, key for key and in the same order -- `step`, `tokens`, `epoch`,
`world_size`, then `data_files` and `budget` when present -- so old run dirs resume and new ones load in old code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2dist.run.layout import TRAIN_STATE_FILE


@dataclass(frozen=True)
class TrainState:
    step: int  # optimizer steps done
    tokens: int  # tokens trained (steps x tokens per step: the same on every rank)
    epoch: int = 0  # passes the data stream completed at this step
    world_size: int = 1  # ranks that saved it (a file without it is from one rank)
    data_files: list[list[Any]] | None = None  # [[path, size, mtime_ns], ...] (data/stamps.py), rank 0 only
    budget: dict[str, Any] | None = None  # train.num_epochs: {num_epochs, windows_per_epoch, max_steps} (epochs.py)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainState:
        """The reader: a train_state.json object (`engines/trust.py` checks its sense first where a resume reads)."""
        return cls(step=obj["step"], tokens=obj["tokens"], epoch=obj.get("epoch", 0),
                   world_size=obj.get("world_size", 1), data_files=obj.get("data_files"), budget=obj.get("budget"))

    def to_json(self) -> dict[str, Any]:
        """The writer: the object train_state.json holds (optional keys only when set, as before)."""
        obj: dict[str, Any] = {"step": self.step, "tokens": self.tokens, "epoch": self.epoch,
                               "world_size": self.world_size}
        if self.data_files is not None:
            obj["data_files"] = self.data_files
        if self.budget is not None:
            obj["budget"] = self.budget
        return obj

    @classmethod
    def read(cls, step_dir: Path) -> TrainState:
        return cls.from_json(json.loads((step_dir / TRAIN_STATE_FILE).read_text(encoding="utf-8")))
