"""Who am I among the ranks: rank / world size / local rank from the launcher's environment.

The single-process path reads the standard torchrun/deepspeed variables and finds one rank; the
multi-rank launchers (DeepSpeed, Slurm, MPI) plug in here without touching the loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gpt2dist.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_writer(self) -> bool:
        """Only rank 0 logs and writes shared files."""
        return self.rank == 0


def discover() -> DistInfo:
    """Rank information from torchrun / deepspeed launcher variables (RANK, WORLD_SIZE, LOCAL_RANK)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if info.world_size > 1:
        raise UserError(f"WORLD_SIZE={world_size}: this build trains on one process; multi-rank training "
                        "needs the DeepSpeed engine (distributed.backend=deepspeed), which is not available yet")
    return info
