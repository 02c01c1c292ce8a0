"""What NCCL itself expects one collective to cost: its own tuning model, ported (NVIDIA/nccl@5067397
src/graph/tuning.cc: ncclTopoTuneModel's latencies and bandwidth factors, ncclTopoGetAlgoTime), which NCCL uses to
pick an algorithm and a protocol for every call. Pure arithmetic, like the rest of `gpt2dist.planning`.

    time = latency + bytes x bus factor / (busbw x protocol factor), the least over what NCCL would choose from:

- ring (every collective): a base latency plus one hop per ring step -- 2(n-1) steps for an all-reduce, n-1 for an
  all-gather or reduce-scatter -- the 2(nodes-1) or nodes-1 steps that cross nodes paying the network's hop, the
  others NVLink's or PCIe's. A ring's latency therefore grows with the GPU count, not with log(nodes): ZeRO-3's
  per-layer all-gathers of 1/n shards get latency-bound at hundreds of GPUs, which is where per-GPU throughput
  falls from 128 to 512 GPUs (MosaicML's H100 tables: 3-10%; bench/RESULTS.md 'Scaling beyond 128 GPUs').
- tree (all-reduce only): base + 2 x ((GPUs per node - 1) x intra hop + log2(nodes) x network hop); it moves 2x
  the buffer (a ring 2(n-1)/n x) at 0.92 of the bandwidth, so rings win for large buffers.
- protocols: Simple (full bandwidth, the longest hops), LL128 (0.92 of it, shorter hops), LL (half, shortest).

Left out: NVLS and CollNet (switch reductions: NVLink or InfiniBand SHARP), PAT (one GPU per node), the
per-channel bandwidth caps, the tree's size-correction table and a topology's extra network latency (the graph's
latencyInter, 0 unless NCCL's topology search sets it). Latencies are NCCL's, in microseconds.
"""

from __future__ import annotations

import math

PROTOCOLS = ("LL", "LL128", "Simple")
BASE_US = {"tree": (6.8, 14.0, 8.4), "ring": (6.6, 14.0, 8.4)}  # baseLatencies
HOP_US = {  # hwLatencies: per link kind and algorithm, (LL, LL128, Simple)
    "nvlink": {"tree": (0.6, 1.25, 4.0), "ring": (0.6, 1.9, 3.4)},
    "pcie": {"tree": (1.0, 1.9, 4.0), "ring": (1.0, 2.5, 5.7)},
    "net": {"tree": (5.0, 8.5, 14.0), "ring": (2.7, 4.0, 14.0)},
}
RING_BW = (0.5, 0.92, 1.0)  # ring LL halves the bandwidth, LL128 keeps 120 of 128 bytes
NET_OVERHEAD_US = 1.0  # getNetOverhead on an Intel host (2.0 on AMD), x3 for Simple: the least intra-node hop
RING_PLATEAU = 1.4  # a multi-node Simple ring all-reduce's latency x 1.4 (Ampere and newer; 1.9 on Volta)
BUS_FACTORS = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
               "reduce_scatter": lambda n: (n - 1) / n}


def ring_latency_us(kind: str, protocol: int, n: int, nodes: int, intra: str) -> float:
    """A ring's latency in microseconds for `kind` over n ranks on `nodes` nodes (protocol: index in PROTOCOLS)."""
    steps = 2 * (n - 1) if kind == "all_reduce" else n - 1
    inter_steps = 0 if nodes <= 1 else (2 * (nodes - 1) if kind == "all_reduce" else nodes - 1)
    intra_hop = HOP_US[intra]["ring"][protocol]
    per_node = n / max(1, nodes)
    inter_hop = HOP_US["net"]["tree" if per_node == 1 else "ring"][protocol]  # one GPU per node: every hop exposed
    if nodes > 1:
        intra_hop = max(intra_hop, NET_OVERHEAD_US * (3 if PROTOCOLS[protocol] == "Simple" else 1))
    latency = BASE_US["ring"][protocol] + (steps - inter_steps) * intra_hop + inter_steps * inter_hop
    if kind == "all_reduce" and nodes > 1 and PROTOCOLS[protocol] == "Simple":
        latency *= RING_PLATEAU
    return latency


def tree_latency_us(protocol: int, n: int, nodes: int, intra: str) -> float:
    """A tree all-reduce's latency in microseconds: up and down the node's chain and the nodes' tree."""
    per_node = n / max(1, nodes)
    hops = (per_node - 1) * HOP_US[intra]["tree"][protocol] + math.log2(max(1, nodes)) * HOP_US["net"]["tree"][protocol]
    return BASE_US["tree"][protocol] + 2 * hops


def tree_bandwidth_factor(protocol: int, nodes: int) -> float:
    """A tree all-reduce's share of the bus bandwidth by protocol (x 0.92 for every tree all-reduce)."""
    return 0.92 * (1 / 3.8, 7 / 9 if nodes <= 1 else 120 / 128, 1.0)[protocol]


def collective_seconds(kind: str, nbytes: float, n: int, nodes: int, busbw: float, intra: str = "nvlink",
                       latency_scale: float = 1.0) -> float:
    """Seconds NCCL's model gives one collective of nccl-tests size `nbytes` over n ranks on `nodes` nodes at bus
    bandwidth `busbw` (bytes/s): the fastest of the rings (and, for an all-reduce, trees) of every protocol.
    intra: the link inside a node, "nvlink" or "pcie"; latency_scale multiplies every latency (0: bandwidth only)."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    bus_bytes = nbytes * BUS_FACTORS[kind](n)
    us = 1e-6 * latency_scale
    times = [ring_latency_us(kind, p, n, nodes, intra) * us + bus_bytes / (busbw * RING_BW[p])
             for p in range(len(PROTOCOLS))]
    if kind == "all_reduce":
        times += [tree_latency_us(p, n, nodes, intra) * us + 2 * nbytes / (busbw * tree_bandwidth_factor(p, nodes))
                  for p in range(len(PROTOCOLS))]
    return min(times)
