"""bench/: the window arithmetic, the argument checks, the GPU kit's commands (bench/gpu/run.sh with DRY_RUN=1, no GPU
needed), and one minuscule run of train_throughput.py with both trainers end to end (no timing is asserted: the
machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import train_throughput as bench  # noqa: E402


def test_windows_skip_the_warmup_and_partial_windows():
    ends = [float(i) for i in range(1, 12)]  # step i ends at second i: 1 step/s
    assert bench.windows_from_steps(ends, tokens_per_step=100, window=3, warmup=2) == [100.0, 100.0, 100.0]
    assert bench.windows_from_steps(ends, 100, window=5, warmup=0) == [100.0]  # no start mark for step 1


def test_overhead_is_the_share_outside_the_engine():
    marks = [(1.0 * i, 0.8 * i) for i in range(1, 11)]  # 0.8 s of every 1 s step inside the engine
    assert bench.overhead_windows(marks, window=3, warmup=1) == pytest.approx([0.2, 0.2, 0.2])


def test_too_few_steps_is_an_argument_error():
    with pytest.raises(SystemExit):
        bench.parse_args(["--preset", "tiny", "--steps", "30", "--warmup", "25", "--window", "10"])


STAGES = ["env", "wheels", "upgrades", "project", "imports", "check", "matmul", "bench-torch-compile", "tests",
          "bench-torch-eager", "bench-torch-eager-micro8", "bench-torch-eager-micro32", "chunked-ce", "bench-zero1",
          "bench-zero2", "bench-torch-eager-stream", "summary"]


def gpu_kit_dry_run(out: Path) -> dict[str, list[str]]:
    """stage -> its command line, as `DRY_RUN=1 bash bench/gpu/run.sh OUT` prints them."""
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "run.sh"), str(out)], capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}, check=True, timeout=60)
    lines = proc.stdout.strip().splitlines()[1:]  # the first is the timestamped header
    return {line.split(": ", 1)[0]: line.split(": ", 1)[1].split() for line in lines}


def test_gpu_kit_dry_run_prints_every_stage_and_runs_nothing(tmp_path):
    stages = gpu_kit_dry_run(tmp_path / "out")
    assert list(stages) == STAGES
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"
    wheels, project, tests = stages["wheels"], stages["project"], stages["tests"]
    assert wheels[:3] == [sys.executable, "-m", "pip"] and {"--no-index", "--no-deps", "--target"} <= set(wheels)
    # the project is installed too (no network there: no index, no build isolation), not imported from the checkout
    assert {"--no-index", "--no-deps", "--no-build-isolation", "--target"} <= set(project)
    assert project[-1] == str(ROOT)
    files = [arg for arg in tests if arg.endswith(".py")]
    at = tests.index("pytest")
    assert tests[at - 2:at] == [sys.executable, "-m"] and tests[at + 1:at + 3] == ["-m", "gpu"]
    assert files and all(Path(f).is_file() and Path(f).name.startswith("test_gpu_") for f in files)
    assert "--junitxml" in tests and "-v" in tests  # a killed test stage still names each outcome so far
    assert list(stages).index("bench-torch-compile") < list(stages).index("tests"), "the headline first"
    assert stages["upgrades"][1].endswith("install_if_older.py")


def test_gpu_kit_benchmarks_gpt2_124m_in_every_variant(tmp_path):
    stages = gpu_kit_dry_run(tmp_path / "out")
    specs = {}
    for name in [s for s in STAGES if s.startswith("bench-")]:
        args = stages[name]
        assert args[1].endswith("bench/train_throughput.py")
        spec, ns = bench.parse_args(args[2:])  # every command parses
        assert (spec.n_layer, spec.n_embd, spec.n_head, spec.block_size, spec.vocab) == (12, 768, 12, 1024, 50257)
        assert spec.precision == "bf16" and spec.tokenizer == "bpe" and spec.pad_vocab
        assert spec.steps - spec.warmup >= 2 * spec.window, "at least two measured windows"
        assert ns.json and ns.json.name == f"{name}.json"
        specs[name] = (spec, ns)
    compiled, _ = specs["bench-torch-compile"]
    assert compiled.compile == "true" and specs["bench-torch-compile"][1].only is None  # + the HF Trainer, same call
    assert {s.zero for s, _ in specs.values()} == {None, 1, 2}
    assert {s.micro for s, _ in specs.values()} == {8, 16, 32}
    assert {s.compile for s, _ in specs.values()} == {"true", "false"}
    assert "data.format=packed" not in specs["bench-torch-eager-stream"][0].overrides
    assert all("data.format=packed" in s.overrides for n, (s, _) in specs.items() if not n.endswith("stream"))


@pytest.mark.slow
def test_bench_runs_both_trainers(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--n-layer", "1",
                           "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--micro", "2", "--steps", "12",
                           "--warmup", "4", "--window", "4", "--stories", "200", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ratio gpt2dist / hf_trainer:" in proc.stdout
    results = json.loads(out.read_text())["results"]
    for name in ("gpt2dist", "hf_trainer"):
        assert len(results[name]["windows"]) == 2 and results[name]["median"] > 0
        assert results[name]["mfu"] is None  # CPU: no peak, no MFU
    assert len(results["gpt2dist"]["overhead"]) == 2
    # eager on CPU (train.compile=auto): dynamo compiled nothing; the HF baseline is not ours to count
    assert results["gpt2dist"]["compiled_graphs"] == 0 and results["hf_trainer"]["compiled_graphs"] is None
    assert results["gpt2dist"]["predicted"] is None  # no GPU: no peak, no prediction
    metrics = [json.loads(line) for line in (tmp_path / "result-gpt2dist-metrics.jsonl").read_text().splitlines()]
    assert metrics and metrics[-1]["step"] == 12  # the run's own log, kept beside the bench JSON


def test_corpora_and_nanogpt_data_are_the_tokens_gpt2dist_trains_on(tmp_path):
    """The long corpus is the short one's stories as a few one-document files; nanoGPT's train.bin is exactly
    the token stream of a one-rank gpt2dist pass (same tokenizer, documents, EOS, order)."""
    import numpy as np

    from bench.nanogpt_baseline import ITER_LINE, nanogpt_command, write_corpus, write_nanogpt_data
    from gpt2dist.config import load_config

    short = write_corpus("short", tmp_path / "c", stories=60, seed=2)
    long = write_corpus("long", tmp_path / "c", stories=60, seed=2, long_docs=3)
    parts = sorted((tmp_path / "c" / "long").glob("*.txt"))
    assert len(parts) == 3 and long.sample_by == "document" and short.sample_by == "paragraph"
    stories = short.text_file.read_text().strip().split("\n\n")
    assert "\n".join(p.read_text().strip() for p in parts) == "\n".join(stories)

    spec, _ = bench.parse_args(["--preset", "tiny", "--block-size", "16", "--tokenizer", "bpe", "--vocab", "300"])
    cfg_file = tmp_path / "run.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(bench.gpt2dist_config(spec, long, tmp_path / "run")))
    cfg = load_config(cfg_file)
    vocab, n = write_nanogpt_data(cfg, tmp_path / "nano")
    ids = np.fromfile(tmp_path / "nano" / "train.bin", dtype=np.uint16)
    from gpt2dist.data.pieces import DocumentEncoder
    from gpt2dist.run.rundir import build_run_tokenizer

    tok = build_run_tokenizer(cfg, parts)
    expected = [t for text in (p.read_text() for p in parts) for t in tok(text)["input_ids"] + [tok.eos_token_id]]
    assert ids.tolist() == expected and n == len(expected) and vocab == len(tok)
    assert DocumentEncoder(tok).piece_chars is not None
    command = nanogpt_command(Path("/nano"), spec, tmp_path / "nano", tmp_path / "out", "cpu", False)
    assert "--batch_size=8" in command and "--block_size=16" in command and "--compile=False" in command
    assert ITER_LINE.match("iter 12: loss 3.2777, time 1234.56ms, mfu -100.00%").groups() == ("12", "3.2777",
                                                                                            "1234.56")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NANOGPT_DIR"), reason="set NANOGPT_DIR to a nanoGPT checkout")
def test_bench_runs_nanogpt_beside_gpt2dist(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--n-layer", "1",
                           "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--micro", "2", "--steps", "12",
                           "--warmup", "4", "--window", "4", "--stories", "200", "--threads", "1", "--corpus", "long",
                           "--nanogpt", os.environ["NANOGPT_DIR"]], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for ratio in ("gpt2dist / packed", "gpt2dist / nanogpt", "packed / nanogpt"):
        assert f"ratio {ratio}:" in proc.stdout


def test_shared_bpe_is_padded_and_every_trainer_gets_it(tmp_path):
    """--tokenizer bpe --pad-vocab: one BPE for all trainers, padded to --vocab with entries no text produces (the
    ids match the unpadded BPE's); gpt2dist and nanoGPT's data load it, so every trainer sees the same tokens."""
    import numpy as np
    import yaml

    from bench.nanogpt_baseline import write_corpus, write_nanogpt_data
    from gpt2dist.config import load_config
    from gpt2dist.tokenizer import load_tokenizer

    with pytest.raises(SystemExit):
        bench.parse_args(["--pad-vocab"])  # char has nothing to pad
    corpus = write_corpus("short", tmp_path / "c", stories=60, seed=2)
    text = corpus.text_file.read_text()
    spec, _ = bench.parse_args(["--block-size", "16", "--tokenizer", "bpe", "--vocab", "3000", "--pad-vocab"])
    plain = load_tokenizer(bench.bench_tokenizer(bench.Spec(**{**vars(spec), "pad_vocab": False}), corpus.text_file,
                                                 tmp_path / "plain"))
    shared = bench.bench_tokenizer(spec, corpus.text_file, tmp_path / "tok")
    padded = bench.hf_tokenizer(spec, text, shared)
    assert len(plain) < len(padded) == 3000
    assert padded(text)["input_ids"] == plain(text)["input_ids"]
    cfg = bench.gpt2dist_config(spec, corpus, tmp_path / "run", shared)
    assert cfg["tokenizer"] == {"kind": "pretrained", "path": str(shared)}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    vocab, _ = write_nanogpt_data(load_config(tmp_path / "run.yaml"), tmp_path / "nano")
    ids = np.fromfile(tmp_path / "nano" / "train.bin", dtype=np.uint16)
    assert vocab == 3000 and ids[:50].tolist() == padded(text)["input_ids"][:50]


def test_the_hf_baseline_does_not_see_gpt2dists_launcher_variables(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with bench.without_dist_env():
        assert "RANK" not in os.environ and "WORLD_SIZE" not in os.environ
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "1") and "MASTER_PORT" not in os.environ


def test_the_doctors_prediction_beside_a_gpu_measurement():
    """bench JSON's `predicted`: GPT-2 124M on an H100 at the calibrated MFU range, the optimizer step included."""
    from gpt2dist.planning import costmodel

    spec, _ = bench.parse_args(["--preset", "gpt2", "--precision", "bf16"])
    fpt = 1e9
    got = bench.prediction("NVIDIA H100 80GB HBM3", spec, fpt, 50257)
    low, typical, high = costmodel.default_mfu("H100", 124e6, 1024)
    assert (got["mfu_low"], got["mfu_typical"], got["mfu_high"]) == (low, typical, high)
    tokens = 16 * 1024
    adam = 124_439_808 * costmodel.ADAM_BYTES / 3350e9  # GPT-2 124M's parameters at the H100's 3.35 TB/s
    assert got["tokens_per_s_typical"] == pytest.approx(tokens / (fpt * tokens / (989e12 * typical) + adam))
    assert got["tokens_per_s_low"] < got["tokens_per_s_typical"] < got["tokens_per_s_high"]
    assert bench.prediction("a GPU nobody knows", spec, fpt, 50257) is None


@pytest.mark.slow
def test_gpu_kit_skips_what_no_longer_fits_and_still_summarizes(tmp_path):
    """A real (not dry) run with no time left: every stage is skipped by its typical time, named in run.log and
    stages.tsv, and the summary is written all the same."""
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "run.sh"), str(out)], capture_output=True, text=True,
                          env={**os.environ, "LIMIT_S": "20", "RESERVE_S": "20", "WORK": str(work),
                               "PYTHON": sys.executable}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    log = (out / "run.log").read_text()
    assert "budget 0 s (limit 20 s)" in log
    assert "bench-torch-compile: skipped (it typically takes 150 s; 0 s of the 0 s budget are left)" in log
    rows = [line.split("\t") for line in (work / "logs" / "stages.tsv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == STAGES[:-1] and {r[1] for r in rows} == {"skipped"}
    assert "| bench-zero1 | skipped | 0 |" in (out / "summary.md").read_text()


def test_calibration_held_out_rows_are_never_in_the_fitted_set():
    """bench/calibration.py: no held-out run is one of the in-sample (fitted) rows, by name or by configuration,
    and each gets a low < typical < high prediction from the same doctor arithmetic."""
    from bench import calibration

    def config(run):
        return (run.gpu, run.n_gpus, run.n_layer, run.n_embd, run.seq, run.micro, run.tokens_per_s_per_gpu)

    assert {r.name for r in calibration.RUNS}.isdisjoint(r.name for r in calibration.HELD_OUT)
    assert {config(r) for r in calibration.RUNS}.isdisjoint(config(r) for r in calibration.HELD_OUT)
    assert len(calibration.HELD_OUT) >= 10
    for run in calibration.HELD_OUT:
        implied, typical, (low, high) = calibration.predict(run)
        assert 0 < low < typical < high and 0 < implied < 1, run.name


def test_v100_mfu_is_read_off_dlperf_and_the_fresh_rows_stay_out_of_every_fit():
    """costmodel.MFU_BY_GPU["V100"] is the quartiles of the MFU each DLPerf row needs through the whole model;
    the fresh rows (bench/published/, transcribed blind) are in no fitted set, and each gets a prediction."""
    from bench import calibration
    from gpt2dist.planning import costmodel

    fitted = [calibration.fitted_mfu(r) for r in calibration.V100_FIT]
    assert costmodel.MFU_BY_GPU["V100"] == tuple(round(x, 2) for x in calibration.quartiles(fitted))
    assert all(r.gpu == "V100" and r.name.startswith("dlperf-") for r in calibration.V100_FIT)
    fitted_names = {r.name for r in calibration.RUNS + calibration.V100_FIT}
    assert len(calibration.FRESH) >= 40 and fitted_names.isdisjoint(r.name for r in calibration.FRESH)
    for run in calibration.FRESH:
        implied, typical, (low, high) = calibration.predict(run)
        assert 0 < low < typical < high and 0 < implied < 1, run.name
        assert run.source, run.name


def test_the_whole_run_overhead_is_read_off_the_in_sample_whole_runs():
    """costmodel.WHOLE_RUN_* are the (low, median, high) of the published whole runs' time over their own source's
    steady rate (none held out), recomputed here from the published figures; a whole-run row's prediction pays it."""
    from bench import calibration
    from gpt2dist.planning import costmodel

    held_out = {r.name for r in calibration.HELD_OUT}
    assert all(o.name not in held_out for o in calibration.OVERHEADS)
    published = {  # (steady s, whole s) per run, as each source states them
        "llm.c GPT-2 124M (whole run)": (18_865 * 0.300, 90 * 60),  # '~300ms/iter' x 18,865 steps; '90 minutes'
        "llm.c GPT-2 1558M (whole run)": (32_000 * 2.80, 24 * 3600),  # 2.80 s/iter x 32,000; '24 hours'
        "MPT-7B (whole run)": (1e12 / (440 * 3_623), 9.5 * 86400),  # 1T tokens at 3,623 tok/s/GPU; '9.5 days'
        "OPT-175B (whole run)": (33 * 86400, 56 * 86400),  # '~33 days of continuous training'; Nov 11 -> Jan 6
    }
    for o in calibration.OVERHEADS:
        if o.name in published:
            steady_s, whole_s = published[o.name]
            assert o.ratio == pytest.approx(whole_s / steady_s, rel=1e-3), o.name
    assert {o.name for o in calibration.OVERHEADS} >= set(published)
    for nodes in (1, 4):
        fitted = calibration.fitted_overhead(nodes)
        assert costmodel.whole_run_overhead(nodes) == tuple(round(x, 2) for x in fitted)
    run = next(r for r in calibration.RUNS if r.name == "MPT-7B (whole run)")
    steady = calibration.Run(**{**run.__dict__, "name": "MPT-7B"})  # the same config, not a whole run
    assert calibration.predict(run)[1] == pytest.approx(calibration.predict(steady)[1] / costmodel.WHOLE_RUN_NODES[1])
