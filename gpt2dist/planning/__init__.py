"""Knowing before you queue. Pure arithmetic at import (no torch), so it answers on a login node.

  hardware.py   one table of GPU kinds: peak FLOP/s, memory, links; one device-name matcher
  preflight.py  the cheap checks `train`/`slurm` run before any work (files, rows per rank, batch math, disk)
  memory.py     memory per GPU by ZeRO stage and offload (params, grads, optimizer, activations, buffers)
  costmodel.py  step time, tokens/s, MFU, scaling efficiency, time to train
  scaling.py    a run config -> the cost model's inputs; the scaling table by node count
  doctor.py     `gpt2dist doctor`: the report on top of the others; imported by nothing but the CLI
"""
