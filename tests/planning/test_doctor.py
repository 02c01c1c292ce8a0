"""Tests for `gpt2dist doctor` and its memory model (gpt2dist/planning/memory.py).

The memory model is checked three ways: against hand-computed bytes for the gpt2 and gpt2-xl presets (the
arithmetic is written out below), against DeepSpeed's own estimator functions, and against real memory use on
CPU -- peak RSS of a subprocess that trains one GPT2LMHeadModel step, for the tiny preset and a ~11M model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import cfg_with

from gpt2dist.config import MODEL_PRESETS
from gpt2dist.errors import UserError
from gpt2dist.planning import doctor, memory
from gpt2dist.units import parse_size

GPT2_N = 124_439_808
GPT2_XL_N = 1_557_611_200


# ---- the memory model, by hand ----

def test_parameter_counts_match_the_published_sizes():
    # gpt2: E=768, L=12, V=50257, P=1024
    #   wte 50257*768 = 38,597,376; wpe 1024*768 = 786,432; ln_f 2*768 = 1,536
    #   per layer: ln 4*768 = 3,072; c_attn 768*2304 + 2304 = 1,771,776; attn c_proj 768*768 + 768 = 590,592;
    #   c_fc 768*3072 + 3072 = 2,362,368; mlp c_proj 3072*768 + 768 = 2,360,064 -> 7,087,872; x12 = 85,054,464
    assert GPT2_N == 38_597_376 + 786_432 + 1_536 + 12 * 7_087_872
    assert memory.gpt2_param_count(12, 768, 50257, 1024) == GPT2_N
    # gpt2-xl: E=1600, L=48: wte 80,411,200; wpe 1,638,400; ln_f 3,200; per layer 12*1600^2 + 13*1600 = 30,740,800
    assert GPT2_XL_N == 80_411_200 + 1_638_400 + 3_200 + 48 * 30_740_800
    xl = MODEL_PRESETS["gpt2-xl"]
    assert memory.gpt2_param_count(xl["n_layer"], xl["n_embd"], 50257, xl["n_positions"]) == GPT2_XL_N
    assert memory.largest_layer_params(1600, 50257, 1024) == 80_411_200  # wte is GPT-2's largest module


def test_gpt2_model_states_by_hand():
    # bf16, one rank: 2 bytes weights + 2 grads + 12 optimizer (fp32 master + Adam m, v) per parameter
    e = memory.estimate(GPT2_N, 12, 768, 12, 1024, 8, "bf16", 0, 1, vocab_size=50257)
    assert (e.params, e.grads, e.optimizer) == (248_879_616, 248_879_616, 1_493_277_696)
    # fp32: 4 + 4 + 8 (Adam m, v; the weights are their own master)
    e = memory.estimate(GPT2_N, 12, 768, 12, 1024, 8, "fp32", 0, 1, vocab_size=50257)
    assert (e.params, e.grads, e.optimizer) == (497_759_232, 497_759_232, 995_518_464)
    # activations, bf16, s=1024, b=8, h=768, a=12: per layer 32*s*b*h + 4*a*s*b (fp32 log-sum-exp)
    sbh = 1024 * 8 * 768  # 6,291,456
    layer = 32 * sbh + 4 * 12 * 1024 * 8  # 201,326,592 + 393,216 = 201,719,808
    logits = 12 * 8 * 1024 * 50257  # three fp32 b*s*V tensors = 4,940,464,128
    e = memory.estimate(GPT2_N, 12, 768, 12, 1024, 8, "bf16", 0, 1, vocab_size=50257)
    assert e.activations == 12 * layer + 2 * 2 * sbh + logits == 7_386_267_648
    # Korthikanti's unamended 34 + 5as/h at s=1024 is 8.6 GB for the 12 blocks: SDPA does not store s x s scores
    assert 12 * memory.korthikanti_layer_bytes(1024, 8, 768, 12) == 12 * (34 * sbh + 5 * 12 * 1024 * 1024 * 8)


def test_gpt2_xl_zero_stages_by_hand():
    n, w = GPT2_XL_N, 8
    largest = 80_411_200  # wte, gathered in full at stage 3 as 16-bit weight + gradient: 4 bytes/param
    rows = {s: memory.estimate(n, 48, 1600, 25, 1024, 1, "bf16", s, w, vocab_size=50257) for s in range(4)}
    assert (rows[0].params, rows[0].grads, rows[0].optimizer) == (3_115_222_400, 3_115_222_400, 18_691_334_400)
    assert (rows[1].params, rows[1].grads, rows[1].optimizer) == (3_115_222_400, 3_115_222_400, 2_336_416_800)
    assert (rows[2].params, rows[2].grads, rows[2].optimizer) == (3_115_222_400, 389_402_800, 2_336_416_800)
    assert (rows[3].params, rows[3].grads, rows[3].optimizer) == (389_402_800 + 4 * largest, 389_402_800,
                                                                  2_336_416_800)
    states = [r.params + r.grads + r.optimizer for r in rows.values()]
    assert states == sorted(states, reverse=True) and len(set(states)) == 4  # every stage saves memory
    assert len({r.activations for r in rows.values()}) == 1  # data parallelism does not split activations
    off = memory.estimate(n, 48, 1600, 25, 1024, 1, "bf16", 3, w, True, True, vocab_size=50257)
    assert (off.params, off.optimizer, off.host) == (4 * largest, 0, 2_336_416_800 + 389_402_800)
    off2 = memory.estimate(n, 48, 1600, 25, 1024, 1, "bf16", 2, w, True, vocab_size=50257)
    assert (off2.optimizer, off2.host) == (0, 2_336_416_800)
    with pytest.raises(ValueError):
        memory.estimate(n, 48, 1600, 25, 1024, 1, "bf16", 2, w, False, True, vocab_size=50257)


def test_buckets_checkpoints_and_sizes():
    assert memory.zero_bucket_bytes(2, "bf16", 500_000_000) == 2 * 500_000_000 * 2  # double-buffered at 1-2
    assert memory.zero_bucket_bytes(3, "bf16", 500_000_000) == 500_000_000 * 2
    assert memory.zero_bucket_bytes(2, "bf16", 500_000_000, contiguous_gradients=False) == 0
    assert memory.zero_bucket_bytes(0, "fp32", 500_000_000) == 0
    assert memory.checkpoint_bytes(GPT2_N, "fp32", deepspeed=False) == 12 * GPT2_N
    assert memory.checkpoint_bytes(GPT2_N, "bf16", deepspeed=True, zero_stage=2) == 18 * GPT2_N
    assert parse_size("80GiB") == 80 * 2**30
    assert parse_size("80GB") == 80 * 10**9
    assert parse_size("40000MiB") == 40000 * 2**20
    assert parse_size("1.5 TiB") == int(1.5 * 2**40)
    for bad in ("", "GiB", "80 parsecs", "-1GB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_deepspeed_estimator_mirror_matches_deepspeed():
    zero2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    largest = 80_411_200
    for gpus, nodes in ((1, 1), (8, 1), (8, 4)):
        for off in (False, True):
            assert memory.deepspeed_model_states(GPT2_XL_N, largest, 2, gpus, nodes, off, False) == \
                zero2.estimate_zero2_model_states_mem_needs(GPT2_XL_N, gpus, nodes, cpu_offload=off)
            for off_param in ((False, True) if off else (False,)):
                real = estimate_zero3_model_states_mem_needs(GPT2_XL_N, largest, gpus, nodes, cpu_offload=off,
                                                             cpu_offload_params=off_param)
                assert memory.deepspeed_model_states(GPT2_XL_N, largest, 3, gpus, nodes, off, off_param) == real[:2]
    assert memory.deepspeed_model_states(GPT2_N, 1, 1, 8, 1, False, False) is None


# ---- recommendations ----

def test_recommends_the_lowest_stage_that_fits(tmp_path):
    cfg = cfg_with(tmp_path, "model.preset=gpt2-xl", "train.precision=bf16", "data.block_size=1024",
                   "train.micro_batch_size=1", "distributed.zero_stage=3", "distributed.reduce_bucket_size=50000000")
    table = doctor.run_doctor(cfg, 8).table
    # stage 2 fits with 1 byte to spare, stage 1 does not: the recommendation is ZeRO-2, without offload
    gpu_mem = int((table[2].total + 1) / memory.HEADROOM) + 1
    assert table[1].total > table[2].total
    report = doctor.run_doctor(cfg, 8, gpu_mem)
    assert (report.recommended.zero_stage, report.recommended.offload_optimizer) == (2, False)
    assert report.exit_code == 0 and report.verdict().startswith("doctor: OK (ZeRO-3")
    # nothing fits without offload -> the lowest offload row that fits
    report = doctor.run_doctor(cfg, 8, int(table[-1].total / memory.HEADROOM) + 2)
    assert report.recommended.label == "ZeRO-3 offload opt+param"
    assert "configured ZeRO-3 needs" in report.problems[0].message and report.exit_code == 1
    # nothing fits at all
    report = doctor.run_doctor(cfg, 8, 2**30)
    assert report.recommended is None and "nothing fits" in report.problems[0].message


# ---- findings ----

def test_command_prints_table_and_verdict(tmp_path, capsys):
    cfg_with(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{train: [{tmp_path / 'train.txt'}]}}\nrun_dir: {tmp_path / 'run'}\n")
    assert doctor.main([str(config), "--world-size", "2", "--gpu-mem", "80GiB", "train.precision=bf16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("doctor: OK (ZeRO-0") and any(line.startswith("* ZeRO-0") for line in out)
    assert any(line.startswith("batch: micro 8 x accum 1 x data-parallel 2 = global 16") for line in out)
    assert doctor.main([str(config), "--world-size", "64"]) == 1  # 40 rows for 64 ranks
    assert capsys.readouterr().out.splitlines()[-1].startswith("doctor: 1 problem (data.train: 1 file")
    assert doctor.main([str(tmp_path / "missing.yaml")]) == 1
    with pytest.raises(UserError, match="--gpu-mem"):
        doctor.main([str(config), "--gpu-mem", "lots"])


# ---- the estimate against real memory use on CPU ----

CHILD = r"""
import json, resource, sys
import torch, torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

L, E, H, S, B, V = (int(x) for x in sys.argv[1:7])
torch.set_num_threads(1)
torch.manual_seed(0)

def gpt2(L, E, H, S, V):
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=S, n_embd=E, n_layer=L, n_head=H, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=0, bos_token_id=0,
                                      activation_function="gelu_pytorch_tanh"))  # as gpt2dist builds it

def step(model, opt, batch):  # what TorchEngine does in fp32: forward, fp32 cross entropy, backward, AdamW
    logits = model(input_ids=batch[:, :-1], use_cache=False).logits
    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
    del logits
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

batch = torch.randint(0, V, (B, S + 1))
warm = gpt2(1, 8, 1, 8, 16)  # page in kernels and thread pools before the baseline
step(warm, torch.optim.AdamW(warm.parameters()), torch.zeros(1, 5, dtype=torch.long))
del warm
def status(key):  # /proc/self/status, in bytes
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))

# Reset the kernel's peak-RSS counter (VmHWM, which ru_maxrss reports) so the baseline is the RSS now, not a
# high-water mark left by the imports -- or by library pages the kernel has dropped from memory since.
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base, peak = status("VmRSS"), lambda: status("VmHWM")
except OSError:  # no clear_refs: ru_maxrss before vs after
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
file_pages = status("RssFile")
model = gpt2(L, E, H, S, V)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
step(model, opt, batch)
first = peak() - base
step(model, opt, batch)
second = peak() - base
saved, params = {}, {p.untyped_storage().data_ptr() for p in model.parameters()}
def pack(t):
    saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return t
with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
    logits = model(input_ids=batch[:, :-1], use_cache=False).logits
    F.cross_entropy(logits.float().view(-1, V), batch[:, 1:].reshape(-1))
print(json.dumps({"n_params": sum(p.numel() for p in model.parameters()), "first": first, "second": second,
                  "saved": sum(v for k, v in saved.items() if k not in params),
                  "file_pages_dropped": file_pages - status("RssFile")}))
"""

MEASURED = {  # name: (n_layer, n_embd, n_head, block, micro batch, vocab)
    "tiny": (*(MODEL_PRESETS["tiny"][k] for k in ("n_layer", "n_embd", "n_head", "n_positions")), 8, 96),
    "small-11M": (8, 320, 5, 256, 8, 4096),
}


@pytest.fixture(scope="module")
def measured() -> dict[str, dict]:
    """Run both children at once. glibc's mmap threshold is pinned so that every tensor >= 64 KiB is mmapped
    and returned to the OS when freed: peak RSS then measures live tensors, not the heap glibc keeps after
    raising its threshold dynamically (unpinned, the tiny case reads ~20 MiB of retained heap on top)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("ru_maxrss units and MALLOC_MMAP_THRESHOLD_ are Linux/glibc specifics")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    procs = {name: subprocess.Popen([sys.executable, "-c", CHILD, *map(str, dims)], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, dims in MEASURED.items()}
    results = {}
    for name, proc in procs.items():
        for attempt in range(2):
            out, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
            results[name] = json.loads(out.strip().splitlines()[-1])
            if results[name]["file_pages_dropped"] < 4 * 2**20 or attempt:
                break  # else memory pressure evicted library pages mid-measurement: measure once more
            proc = subprocess.Popen(proc.args, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MEASURED))
def test_estimate_within_30_percent_of_measured_peak_rss(measured, name):
    n_layer, n_embd, n_head, block, micro, vocab = MEASURED[name]
    got = measured[name]
    assert got["n_params"] == memory.gpt2_param_count(n_layer, n_embd, vocab, block)
    est = memory.estimate(got["n_params"], n_layer, n_embd, n_head, block, micro, "fp32", 0, 1, vocab_size=vocab)
    # the activation model counts exactly what autograd saves: blocks + ln_f/lm_head inputs + the log-softmax
    # output (logits_bytes' other two b*s*V copies are transient gradients, not saved tensors)
    saved_model = est.activations - memory.logits_bytes(block, micro, vocab) + 4 * block * micro * vocab
    assert got["saved"] == pytest.approx(saved_model, rel=0.02)
    for step in ("first", "second"):  # after one step, and in steady state (Adam state alive in the forward)
        ratio = est.total / got[step]
        print(f"{name}: estimate {est.total / 2**20:.1f} MiB, measured {step} {got[step] / 2**20:.1f} MiB, "
              f"ratio {ratio:.2f}")
        assert 0.7 <= ratio <= 1.3
