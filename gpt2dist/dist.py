"""Who am I among the ranks, and the process group: torchrun / deepspeed launcher, Slurm (srun), or MPI.

Discovery only reads the environment (plus `scontrol` for a Slurm master, mpi4py when MPI gives no
master address); it then exports the torch.distributed variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) so DeepSpeed and torch both see one consistent answer. CPU runs use gloo,
CUDA runs nccl. Only rank 0 logs and writes shared files.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from gpt2dist.errors import UserError

DEFAULT_PORT = 29500
# A Slurm job's rendezvous port: JOB_PORT_BASE + job id % JOB_PORT_SPAN, i.e. 15000-24999 -- unprivileged, below
# Linux's ephemeral range (32768-60999, /proc/sys/net/ipv4/ip_local_port_range), so an outgoing connection never
# holds it, and clear of torch's 29500. Jobs sharing a node collide only when their ids differ by a multiple of
# 10000. slurm/header.sbatch computes the same number in bash; MASTER_PORT in the environment overrides both.
JOB_PORT_BASE, JOB_PORT_SPAN = 15000, 10000
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    source: str = "single"  # single | torchrun | slurm | mpi

    @property
    def is_writer(self) -> bool:
        """Only rank 0 logs and writes shared files."""
        return self.rank == 0


def _ints(env: Mapping[str, str], *keys: str) -> list[int]:
    try:
        return [int(env[k]) for k in keys]
    except ValueError as exc:
        raise UserError(f"launcher variable {keys} is not an integer ({exc}): check the launch command") from None


def discover(env: Mapping[str, str] | None = None) -> DistInfo:
    """Rank, world size and local rank from whichever launcher started this process."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, the deepspeed launcher, or already exported
        rank, world = _ints(env, "RANK", "WORLD_SIZE")
        local = int(env.get("LOCAL_RANK", "0"))
        info = DistInfo(rank, world, local, "torchrun")
    elif "OMPI_COMM_WORLD_RANK" in env:  # Open MPI's mpirun
        rank, world, local = _ints(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK")
        info = DistInfo(rank, world, local, "mpi")
    elif "PMI_RANK" in env and "PMI_SIZE" in env:  # MPICH / Intel MPI (Hydra)
        rank, world = _ints(env, "PMI_RANK", "PMI_SIZE")
        local = int(env.get("MPI_LOCALRANKID", env.get("PMI_LOCAL_RANK", "0")))
        info = DistInfo(rank, world, local, "mpi")
    elif "SLURM_PROCID" in env and "SLURM_STEP_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        rank, world, local = _ints(env, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")  # one task per rank
        info = DistInfo(rank, world, local, "slurm")
    else:
        info = DistInfo()
    if not 0 <= info.rank < info.world_size:
        raise UserError(f"rank {info.rank} is outside world size {info.world_size}: check the launch command")
    return info


def master_address(info: DistInfo, env: Mapping[str, str]) -> str:
    """The rendezvous host: given, else the first Slurm node, else rank 0's hostname over MPI, else localhost."""
    if env.get("MASTER_ADDR"):
        return env["MASTER_ADDR"]
    if info.source == "slurm" and env.get("SLURM_JOB_NODELIST"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], check=True,
                                 capture_output=True, text=True, timeout=30).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    if info.source == "mpi" and info.world_size > 1:
        try:
            from mpi4py import MPI

            return MPI.COMM_WORLD.bcast(socket.gethostname(), root=0)
        except ImportError:
            pass
    return "127.0.0.1"


def export_env(info: DistInfo) -> None:
    """Make RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT agree with `info` for torch and DeepSpeed."""
    env = os.environ
    env.update(RANK=str(info.rank), WORLD_SIZE=str(info.world_size), LOCAL_RANK=str(info.local_rank))
    if info.world_size == 1:  # a one-rank group (DeepSpeed on one process): any free local port will do
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(free_port()))
        return
    env["MASTER_ADDR"] = master_address(info, env)
    if not env.get("MASTER_PORT"):
        job = env.get("SLURM_JOB_ID")  # different jobs sharing a node should not collide on one port
        env["MASTER_PORT"] = str(job_port(int(job)) if job and job.isdigit() else DEFAULT_PORT)


def job_port(job_id: int) -> int:
    """The rendezvous port of Slurm job `job_id` (the same formula as slurm/header.sbatch)."""
    return JOB_PORT_BASE + job_id % JOB_PORT_SPAN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def init_process_group(info: DistInfo, device_type: str, timeout_minutes: int, *, deepspeed: bool) -> None:
    """Join the process group (a no-op for one rank on the torch engine)."""
    export_env(info)
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if deepspeed:
        import deepspeed as ds

        if device_type == "cpu":
            skip_cpu_shm_comm_op()
        ds.init_distributed(dist_backend=backend_for(device_type), auto_mpi_discovery=False, timeout=timeout)
        return
    if info.world_size > 1:
        import torch.distributed as dist

        dist.init_process_group(backend_for(device_type), rank=info.rank, world_size=info.world_size,
                                timeout=timeout)


def skip_cpu_shm_comm_op() -> None:
    """Keep DeepSpeed's CPU backend from JIT-building its shared-memory comm op at init.

    The op serves only `inference_all_reduce` (tensor-parallel inference); training collectives go through
    gloo either way. Building it needs a C++ compiler at run time, a build killed midway leaves a lock file
    that makes every later run wait forever, and each rank leaves a 66 MB /dev/shm buffer behind. Marking it
    incompatible in DeepSpeed's own gate makes `build_shm_op` return None.
    """
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_initialized():
        import torch.distributed as dist

        dist.barrier()


def mean_over_ranks(value) -> float:
    """Mean of a scalar tensor over all ranks (the value itself on one process); a host sync."""
    if is_initialized():
        import torch.distributed as dist

        value = value.detach().clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank (one small all-reduce; the flag itself on one process)."""
    if not is_initialized():
        return flag
    import torch
    import torch.distributed as dist

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_object(obj, src: int = 0):
    if not is_initialized():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_writer(rank: DistInfo, fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only; every rank gets its result -- or the same one-line UserError."""
    result, error, crash = None, None, None
    if rank.is_writer:
        try:
            result = fn()
        except UserError as exc:
            error = str(exc)
        except Exception as exc:  # other ranks would otherwise wait at the broadcast until the timeout
            if rank.world_size == 1:
                raise
            crash, error = exc, f"rank 0 failed: {exc!r}"
    result, error = broadcast_object((result, error))
    if crash is not None:
        raise crash
    if error is not None:
        raise UserError(error)
    return result


def shutdown(clean: bool = True) -> None:
    """Leave the process group: a barrier (clean exits only), then destroy it. DeepSpeed's gloo threads
    otherwise crash ~20% of multi-rank runs at interpreter exit ("terminate called without an active
    exception"). After an error the barrier is skipped: the other ranks may never reach it."""
    if is_initialized():
        import torch.distributed as dist

        if clean:
            dist.barrier()
        dist.destroy_process_group()
