"""Rank discovery from each launcher's environment (pure: the multi-rank tests start real launchers)."""

from __future__ import annotations

import os

import pytest

from gpt2dist.dist import DistInfo, discover, export_env, job_port
from gpt2dist.errors import UserError


@pytest.mark.parametrize(("env", "expected"), [
    ({}, DistInfo(0, 1, 0, "single")),
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, DistInfo(3, 8, 3, "torchrun")),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1"},
     DistInfo(1, 2, 1, "mpi")),
    ({"PMI_RANK": "5", "PMI_SIZE": "6", "MPI_LOCALRANKID": "1"}, DistInfo(5, 6, 1, "mpi")),
    ({"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0"},
     DistInfo(9, 16, 1, "slurm")),
    # The batch script itself (no step) or a one-task step is not a rank of a multi-rank job.
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_LOCALID": "0"}, DistInfo(0, 1, 0, "single")),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0", "SLURM_STEP_ID": "0"},
     DistInfo(0, 1, 0, "single")),
    # torchrun inside a Slurm allocation: torchrun's variables win.
    ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "2",
      "SLURM_LOCALID": "0", "SLURM_STEP_ID": "0"}, DistInfo(1, 4, 1, "torchrun")),
])
def test_discover(env, expected):
    assert discover(env) == expected
    assert discover(env).is_writer == (expected.rank == 0)


@pytest.mark.parametrize("env", [{"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}])
def test_bad_launcher_environment_is_a_user_error(env):
    with pytest.raises(UserError):
        discover(env)


def test_slurm_jobs_get_distinct_ports_in_a_documented_range(monkeypatch):
    """Jobs sharing a node must not collide on MASTER_PORT: 29500 + id % 1000 gave jobs 1234 and 2234 one port."""
    ports = [job_port(job) for job in range(100_000, 110_000)]
    assert len(set(ports)) == 10_000 and min(ports) == 15000 and max(ports) == 24999  # below the ephemeral range
    assert job_port(1234) != job_port(2234)
    for var in ("MASTER_PORT", "MASTER_ADDR", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("SLURM_JOB_ID", "2234")
    export_env(DistInfo(0, 2, 0, "slurm"))
    assert os.environ["MASTER_PORT"] == str(job_port(2234)) == "17234"
    monkeypatch.setenv("MASTER_PORT", "23456")  # the environment overrides it
    export_env(DistInfo(0, 2, 0, "slurm"))
    assert os.environ["MASTER_PORT"] == "23456"
