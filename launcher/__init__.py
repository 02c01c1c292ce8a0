"""Turns one run config into a launch: local, `deepspeed` on a node, or a Slurm batch script."""
