"""The cost model (gpt2dist/planning/costmodel.py) against numbers worked out by hand, and its DeepSpeed facts
against the installed DeepSpeed. The measured check (predicted vs real gloo ranks) is tests/planning/test_scaling.py."""

from __future__ import annotations

import math

import pytest

from gpt2dist.planning import costmodel as cm
from gpt2dist.planning import hardware, memory

GPT2_N = 124_439_808  # tests/planning/test_doctor.py works it out
MATRICES = 124_318_464  # wte 38,597,376 + wpe 786,432 + 12 x (1,769,472 + 589,824 + 2 x 2,359,296)
VECTORS = 121_344  # 12 x (ln 2 x 1,536 + biases 2,304 + 768 + 3,072 + 768) + ln_f 1,536
LINKS = cm.Links(intra_busbw=400e9, inter_busbw=100e9, nccl_latency=0.0)  # bandwidth only


def gpt2(accum: int = 1, weight_bytes: int = 2) -> cm.Workload:
    return cm.Workload(cm.gpt2_tensors(12, 768, 50257, 1024), 1e9, 16, 1024, accum, weight_bytes)


def test_tensors_add_up_to_the_parameter_count():
    tensors = cm.gpt2_tensors(12, 768, 50257, 1024)
    assert sum(n for _, n, _ in tensors) == memory.gpt2_param_count(12, 768, 50257, 1024) == GPT2_N
    assert sum(n for _, n, d in tensors if d >= 2) == MATRICES and MATRICES + VECTORS == GPT2_N
    assert max(n for _, n, d in tensors if d < 2) == 3072  # every vector is below the ZeRO-3 persistence threshold


def test_bus_factors_and_bandwidth():
    # bandwidth alone: t = S x 2(n-1)/n / busbw for an all-reduce (nccl-tests PERFORMANCE.md)
    assert cm.collective_time("all_reduce", 1e9, 8, 1, LINKS) == pytest.approx(1e9 * 1.75 / 400e9)
    # across 2 nodes the slower link sets the pace: 16 ranks, 2 x 15/16 at 100 GB/s = 18.75 ms
    assert cm.collective_time("all_reduce", 1e9, 16, 2, LINKS) == pytest.approx(18.75e-3)
    assert cm.collective_time("all_gather", 1e9, 8, 1, LINKS) == pytest.approx(1e9 * 0.875 / 400e9)
    assert cm.collective_time("reduce_scatter", 1e9, 8, 1, LINKS) == cm.collective_time("all_gather", 1e9, 8, 1,
                                                                                        LINKS)
    assert cm.collective_time("all_reduce", 1e9, 1, 1, LINKS) == 0.0  # one rank sends nothing


def test_latency_is_nccls_own_model():
    """Latencies worked out by hand from NCCL's tuning table (src/graph/tuning.cc): base + one hop per ring step."""
    links = cm.Links(400e9, 50e9)
    # 1 GB all-reduce on one 8-GPU NVLink node: a Simple ring, 8.4 us + 14 steps x 3.4 us, then the bytes
    assert cm.collective_time("all_reduce", 1e9, 8, 1, links) == pytest.approx(56e-6 + 1e9 * 1.75 / 400e9)
    # a tiny all-gather's latency grows with the GPU count (LL ring: 6.6 us + intra steps x max(0.6, 1.0 network
    # overhead) + node crossings x 2.7 us): 128 GPUs on 16 nodes 159.1 us, 512 on 64 nodes 624.7 us
    assert cm.collective_time("all_gather", 1024, 128, 16, links) == pytest.approx(159.1e-6, rel=1e-3)
    assert cm.collective_time("all_gather", 1024, 512, 64, links) == pytest.approx(624.7e-6, rel=1e-3)
    # a tiny all-reduce takes the tree instead: 6.8 + 2 x (7 x 0.6 + log2(64) x 5.0) = 75.2 us, not the ring's 1.2 ms
    assert cm.collective_time("all_reduce", 4, 512, 64, links) == pytest.approx(75.2e-6, rel=1e-3)
    # PCIe nodes pay PCIe's hops: Simple ring 8.4 + 14 x 5.7 us; nccl_latency scales every latency
    pcie = cm.Links(25e9, 12.5e9, intra_link="pcie")
    big = 1e9 * 1.75 / 25e9
    assert cm.collective_time("all_reduce", 1e9, 8, 1, pcie) == pytest.approx(88.2e-6 + big)
    assert cm.collective_time("all_reduce", 1e9, 8, 1, cm.Links(25e9, 12.5e9, "pcie", 2.0)) == pytest.approx(
        2 * 88.2e-6 + big)
    assert hardware.GPUS["A10"].intra_link == "pcie" and hardware.GPUS["H100"].intra_link == "nvlink"


def test_ring_latency_makes_zero3_lose_throughput_from_128_to_512_gpus():
    """ZeRO-3's all-gathers of 1/n shards get latency-bound at hundreds of GPUs: per-GPU throughput falls from 128
    to 512 H100s, as MosaicML's tables show (1b: -9.7%; bench/calibration.py's scaling table); the old log2(nodes)
    latency predicted -1% at most."""
    w = cm.Workload(cm.gpt2_tensors(24, 2048, 50257, 2048), 6 * 1.3e9, 12, 2048, 1, 2)
    h100 = hardware.GPUS["H100"]
    links = cm.Links(h100.intra_busbw, h100.inter_busbw(8))
    rate = {n: cm.estimate_step(w, cm.Zero(stage=3), n, 8, links, compute_s=0.5).tokens_per_s_per_gpu
            for n in (128, 256, 512)}
    assert rate[512] < rate[256] < rate[128]
    assert 0.03 < 1 - rate[512] / rate[128] < 0.25


def test_measured_curve_interpolates_busbw_in_log_size():
    # measured on 2 ranks (factor 1): 1 kB in 1 ms (busbw 1 MB/s), 100 kB in 10 ms (10 MB/s)
    links = cm.Links(1.0, 1.0, curves={"all_reduce": [(1000, 1e-3), (100_000, 1e-2)]}, curve_ranks=2)
    # 10 kB is half-way in log(size): busbw 5.5 MB/s -> 1.818 ms; on 4 ranks x 2(n-1)/n = 1.5
    assert cm.collective_time("all_reduce", 10_000, 2, 1, links) == pytest.approx(10_000 / 5.5e6)
    assert cm.collective_time("all_reduce", 10_000, 4, 1, links) == pytest.approx(10_000 * 1.5 / 5.5e6)
    assert cm.collective_time("all_reduce", 10, 2, 1, links) == pytest.approx(1e-3)  # latency floor
    assert cm.collective_time("all_reduce", 1e6, 2, 1, links) == pytest.approx(0.1)  # last busbw, 10 MB/s
    # a one-node curve says nothing about two nodes: the flags' inter-node busbw (1 B/s here) applies there
    assert cm.collective_time("all_reduce", 10_000, 4, 2, links) == pytest.approx(50e-6 + 10_000 * 1.5 / 1.0)


def test_what_each_zero_stage_sends_for_gpt2():
    w = gpt2(accum=2)
    total = GPT2_N * 2  # bf16 gradients: 248,879,616 bytes
    (ar,) = cm.collectives(w, cm.Zero(stage=0), 8)
    assert (ar.kind, ar.nbytes, ar.calls, ar.phase) == ("all_reduce", total, 1, "boundary")  # once per step
    ar, mat, vec = cm.collectives(w, cm.Zero(stage=1), 8)
    # once per step, from the last micro batch's backward hooks with overlap_comm (DeepSpeed's default), else after
    assert (ar.nbytes, ar.calls, ar.passes, ar.phase) == (total, 1, 1, "backward")
    assert cm.collectives(w, cm.Zero(stage=1, overlap_comm=False), 8)[0].phase == "boundary"
    assert (mat.kind, mat.nbytes, vec.nbytes) == ("all_gather", MATRICES * 2, VECTORS * 2)
    ar, _, _ = cm.collectives(w, cm.Zero(stage=2), 8)
    assert (ar.calls, ar.phase) == (2, "backward")  # every micro batch
    ar, _, _ = cm.collectives(w, cm.Zero(stage=2, reduce_bucket_size=50_000_000), 8)
    assert (ar.per_pass, ar.nbytes, ar.calls) == (3, total // 3, 6)  # ceil(124.4M / 50M) buckets per micro batch
    assert ar.hideable == pytest.approx(2 / 3)  # all but the last bucket of a backward
    fwd, rs, small = cm.collectives(w, cm.Zero(stage=3), 8)
    # every matrix is partitioned (> 100k elements), gathered in ceil(124.3M / 50M prefetch) = 3 calls per forward
    assert (fwd.kind, fwd.per_pass, fwd.nbytes, fwd.calls) == ("all_gather", 3, MATRICES * 2 // 3, 6)
    assert (rs.kind, rs.nbytes, rs.calls) == ("reduce_scatter", total, 2)
    assert (small.per_pass, small.nbytes, small.phase) == (98, VECTORS * 2 // 98, "boundary")  # 12 x 8 + ln_f 2
    # the backward gathers again what lies beyond stage3_max_reuse_distance / 2: 124.3M - 50M elements
    regather = cm.collectives(w, cm.Zero(stage=3, max_reuse_distance=100_000_000), 8)[1]
    assert (regather.phase, regather.per_pass, regather.nbytes) == ("backward", 2, (MATRICES - 50_000_000) * 2 // 2)
    assert cm.collectives(w, cm.Zero(stage=3), 1) == []


def test_step_time_by_hand():
    w = gpt2()
    est = cm.estimate_step(w, cm.Zero(stage=0), 8, 8, LINKS, compute_s=1.0)
    comm = GPT2_N * 2 * 1.75 / 400e9  # 1.089 ms
    assert est.comm_s == pytest.approx(comm) and est.exposed_comm_s == pytest.approx(comm)  # ZeRO-0: after backward
    assert est.step_s == pytest.approx(1.0 + comm) and est.efficiency == pytest.approx(1 / (1 + comm))
    assert est.tokens_per_s == pytest.approx(8 * 16 * 1024 / (1 + comm))
    assert est.mfu is None  # no peak given
    # ZeRO-2, 3 buckets per micro batch, 2 micro batches: 2/3 of the all-reduce may hide behind the backward
    w2 = gpt2(accum=2)
    z = cm.Zero(stage=2, reduce_bucket_size=50_000_000)
    est = cm.estimate_step(w2, z, 8, 8, LINKS, compute_s=1.0, overlap=0.5)
    reduce = 6 * (GPT2_N * 2 // 3) * 1.75 / 400e9
    gather = (MATRICES * 2 + VECTORS * 2) * 0.875 / 400e9
    assert est.comm_s == pytest.approx(reduce + gather)
    assert est.exposed_comm_s == pytest.approx(reduce + gather - 0.5 * reduce * 2 / 3)
    assert cm.estimate_step(w2, z, 8, 8, LINKS, compute_s=1.0, overlap=0.0).exposed_comm_s == pytest.approx(
        reduce + gather)
    # overlap_comm=false: nothing hides at ZeRO-2
    off = cm.Zero(stage=2, reduce_bucket_size=50_000_000, overlap_comm=False)
    assert cm.estimate_step(w2, off, 8, 8, LINKS, compute_s=1.0).exposed_comm_s == pytest.approx(reduce + gather)
    # two nodes: every collective runs at the 100 GB/s inter-node busbw, with 16 ranks' factors
    est = cm.estimate_step(w, cm.Zero(stage=0), 16, 8, LINKS, compute_s=1.0)
    assert est.nodes == 2 and est.comm_s == pytest.approx(GPT2_N * 2 * 2 * 15 / 16 / 100e9)


def test_optimizer_share_offload_and_scalars():
    w = gpt2()
    # fused AdamW streams 30 bytes per parameter: GPT-2 124M on an H100's 3.35 TB/s is 1.11 ms
    assert cm.optimizer_time(GPT2_N, hardware.GPUS["H100"].hbm_bw) == pytest.approx(GPT2_N * 30 / 3.35e12)
    # ZeRO >= 1 splits the optimizer step over the ranks; ZeRO-0 does not
    assert cm.estimate_step(w, cm.Zero(stage=1), 8, 8, LINKS, compute_s=1.0, optimizer_s=0.08).optimizer_s == 0.01
    assert cm.estimate_step(w, cm.Zero(stage=0), 8, 8, LINKS, compute_s=1.0, optimizer_s=0.08).optimizer_s == 0.08
    # offload: the fp32 gradient partition down, 16-bit weights up over 25 GB/s, Adam on 1e9 params/s on the host
    part = GPT2_N / 8
    est = cm.estimate_step(w, cm.Zero(stage=2, offload_optimizer=True), 8, 8, LINKS, compute_s=1.0)
    # with overlap_comm the download hides behind backward (half of it, at the default overlap); without, serial
    down, up, adam = part * 4 / 25e9, part * 2 / 25e9, part / 1e9
    assert est.offload_s == pytest.approx(down * (1 - cm.DEFAULT_OVERLAP) + up + adam)
    serial = cm.estimate_step(w, cm.Zero(stage=2, offload_optimizer=True, overlap_comm=False), 8, 8, LINKS,
                              compute_s=1.0)
    assert serial.offload_s == pytest.approx(down + up + adam)  # 19.3 ms
    # scalar all-reduces are latency: 3 per step, each an LL ring on one node, 6.6 us + 14 steps x 0.6 us = 15 us
    links = cm.Links(400e9, 100e9)
    base = cm.estimate_step(w, cm.Zero(stage=0), 8, 8, links, compute_s=1.0)
    more = cm.estimate_step(w, cm.Zero(stage=0), 8, 8, links, compute_s=1.0, control_allreduces=3)
    assert more.comm_s - base.comm_s == pytest.approx(3 * (15e-6 + 4 * 1.75 / (400e9 * 0.5)))


def test_compute_time_and_time_to_train():
    # 1e9 FLOPs/token x 1e6 tokens at 50% of 1 PFLOP/s = 2 s; recomputation adds a forward (x 8/6)
    assert cm.compute_time(1e9, 1e6, 1e15, 0.5) == pytest.approx(2.0)
    assert cm.compute_time(1e9, 1e6, 1e15, 0.5, activation_checkpointing=True) == pytest.approx(8 / 3)
    assert cm.compute_time(1e9, 1e6, 1e15, 0.5, activation_checkpointing=True, mfu_measured=True) == 2.0
    w = cm.Workload(cm.gpt2_tensors(12, 768, 50257, 1024), 1e9, 16, 1024, 1, 2)
    est = cm.estimate_step(w, cm.Zero(stage=0), 8, 8, LINKS, compute_s=2.0, peak=1e15)
    run = cm.time_to_train(est, tokens=8 * 16 * 1024 * 1000)  # exactly 1000 steps
    assert run.steps == pytest.approx(1000) and run.seconds == pytest.approx(1000 * est.step_s)
    assert run.gpu_hours == pytest.approx(run.seconds * 8 / 3600)
    assert cm.time_to_train(est, steps=10).tokens == 10 * 8 * 16 * 1024
    assert est.mfu == pytest.approx(16 * 1024 * 1e9 / est.step_s / 1e15)
    with pytest.raises(ValueError):
        cm.time_to_train(est)
    assert [cm.fmt_duration(s) for s in (45, 600, 7200, 3 * 86400)] == ["45s", "10m", "2.0h", "3.0d"]


def test_a_whole_run_pays_the_overhead_across_nodes_only():
    """Time to train is a whole run's: the steady steps' time on one node (llm.c's whole runs took what their
    steps give), x the published overhead across nodes; the steady figures stay beside it."""
    w = cm.Workload(cm.gpt2_tensors(12, 768, 50257, 1024), 1e9, 16, 1024, 1, 2)
    one = cm.estimate_step(w, cm.Zero(stage=0), 8, 8, LINKS, compute_s=2.0)
    four = cm.estimate_step(w, cm.Zero(stage=0), 32, 8, LINKS, compute_s=2.0)
    assert (one.nodes, four.nodes) == (1, 4)
    assert cm.time_to_train(one, steps=1000).seconds == pytest.approx(1000 * one.step_s)
    run = cm.time_to_train(four, steps=1000)
    assert run.overhead == cm.WHOLE_RUN_NODES[1] == cm.whole_run_overhead(4)[1] > 1
    assert run.steady_seconds == pytest.approx(1000 * four.step_s)
    assert run.seconds == pytest.approx(1000 * four.step_s * cm.WHOLE_RUN_NODES[1])
    assert run.steady_gpu_hours == pytest.approx(1000 * four.step_s * 32 / 3600)
    assert cm.time_to_train(four, steps=1000, overhead=1.0).seconds == pytest.approx(run.steady_seconds)
    low, typical, high = cm.whole_run_overhead(4)
    assert 1 <= low <= typical <= high and cm.whole_run_overhead(1) == (1.0, 1.0, 1.0)
    assert f"x {typical:.2f} ({low:.2f}-{high:.2f}) across nodes" in cm.ASSUMPTIONS


def test_default_links_per_system():
    h100 = hardware.GPUS["H100"]
    assert h100.intra_busbw == 450e9  # NVLink 4: 900 GB/s both ways
    assert h100.inter_busbw(8) == pytest.approx(8 * 50e9 * 0.9)  # 8 NDR 400 Gb/s NICs, one per GPU
    assert h100.inter_busbw(4) == pytest.approx(4 * 50e9 * 0.9)
    for kind in hardware.GPUS.values():  # one table: a peak, memory and links for every GPU the doctor names
        assert kind.peak["fp32"] > 0 and kind.memory_gb > 0 and kind.hbm_bw > 0 and kind.pcie_bw > 0
    assert hardware.gpu_kind("NVIDIA H100 PCIe") == "H100 PCIe" and hardware.gpu_kind("NVIDIA H100 80GB HBM3") == "H100"
    assert hardware.gpu_kind("cpu") is None


def test_deepspeed_facts_the_model_relies_on():
    """The installed DeepSpeed still all-reduces ZeRO-1/2 gradient buckets and buckets ZeRO-0 at 500M."""
    pytest.importorskip("deepspeed")
    from deepspeed.runtime import engine
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    assert engine.MEMORY_OPT_ALLREDUCE_SIZE == cm.DS_STAGE0_BUCKET
    assert DeepSpeedZeroConfig().use_multi_rank_bucket_allreduce is True
    defaults = DeepSpeedZeroConfig()
    assert math.isclose(defaults.max_reuse_distance, cm.Zero().max_reuse_distance)
    assert defaults.param_persistence_threshold == cm.Zero().persistence_threshold
