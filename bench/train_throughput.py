"""Training tokens/s: gpt2dist against the Hugging Face `Trainer` recipe, measured in the same invocation.

Users pick a trainer by tokens/s, so the figure that matters is a ratio against what they would otherwise
run, on the same machine and at the same moment (a shared 2-core box drifts by 10-20% between runs). The
baseline is the recipe most people start from: `Trainer` on `TextDataset`-style blocks (the whole file
tokenized, cut into `block_size` pieces) with `DataCollatorForLanguageModeling(mlm=False)`, default
`TrainingArguments` otherwise. Both train the same GPT-2 (same dims, vocabulary, dropout 0, seed) on the
same corpus with the same sequence length, micro batch, accumulation, optimizer settings and steps.

tokens/s is taken over windows of `--window` optimizer steps, timed from the end of one step to the end of
the step `--window` later (gpt2dist: its own metrics.jsonl `tokens_per_s`; Trainer: a callback at
`on_step_end`), so data loading, logging and the optimizer are inside the window. The first `--warmup` steps
(allocator warm-up, torch.compile) are excluded; the median of the remaining windows is reported.

`cpu tok/s` is the same windows divided by the CPU time the training process spent in them (all its threads;
a DataLoader worker's CPU time is reported apart, as `worker` = its share of the trainer's): on a machine
shared with other jobs, wall-clock windows swing with their load, CPU seconds much less, and with the
trainer's threads on cores of their own it is what wall tokens/s would be (a worker runs on another core).

    python bench/train_throughput.py --preset tiny
    python bench/train_throughput.py --preset 10m --repeats 2
    python bench/train_throughput.py --preset 10m --precision bf16 --compile true
    python bench/train_throughput.py --preset gpt2 --precision bf16 --tokenizer bpe --pad-vocab  # GPT-2 124M
    python bench/train_throughput.py --preset issue13 --nanogpt /path/to/nanoGPT --corpus long --repeats 2

With `--nanogpt DIR` (a nanoGPT checkout, never vendored; bench/nanogpt_baseline.py) the default trainers are
gpt2dist streaming ("gpt2dist"), gpt2dist on prepared data ("packed", data.format=packed) and nanoGPT's train.py
on the same tokens; `--trainers` picks any of gpt2dist, packed, nanogpt, hf_trainer. `--corpus long` trains on
the same stories as a few documents of hundreds of kB each (data.sample_by=document) instead of ~350-character
ones.

With `--tokenizer bpe` one byte-level BPE is trained per invocation and every trainer uses it (nanoGPT's tokens
included). The bundled story corpus has a small vocabulary (~1,060 merges for 20,000 stories, not 50,257):
`--pad-vocab` fills the vocabulary with never-produced entries up to `--vocab`, so the model has GPT-2's exact
shapes (50,257 x 768 embedding and output layer, 124.4M parameters) and FLOPs. On a GPU the peak memory each
in-process trainer allocated is reported too.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Model and batch shapes. "10m" is ~10.7M parameters: big enough that compute, not Python, dominates on CPU.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "block_size": 128, "micro": 8, "steps": 300, "window": 25,
             "warmup": 50},
    "10m": {"n_layer": 6, "n_embd": 384, "n_head": 6, "block_size": 256, "micro": 8, "steps": 70, "window": 10,
            "warmup": 20},
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12, "block_size": 1024, "micro": 16, "steps": 80, "window": 10,
             "warmup": 30},  # GPT-2 124M at T=1024: the GPU bench (bench/gpu/run.sh)
    "issue13": {"n_layer": 4, "n_embd": 256, "n_head": 4, "block_size": 256, "micro": 8, "steps": 60, "window": 10,
                "warmup": 10},  # the shape issue 13 compared against nanoGPT (with --tokenizer bpe --vocab 4096)
}
TRAINERS = ("gpt2dist", "packed", "nanogpt", "hf_trainer")


@dataclass
class Spec:
    """Everything both trainers share; one Spec is one comparison."""

    n_layer: int
    n_embd: int
    n_head: int
    block_size: int
    micro: int
    steps: int
    window: int
    warmup: int
    accum: int = 1
    precision: str = "fp32"
    compile: str = "auto"  # gpt2dist's train.compile; the baseline keeps Trainer's default (no compile)
    lr: float = 1e-3
    stories: int = 2000
    seed: int = 1
    zero: int | None = None  # None: gpt2dist's torch engine; 0-3: its DeepSpeed engine at that ZeRO stage
    tokenizer: str = "char"  # char | bpe (bpe: vocab_size below, as GPT-2's 50257 on a big enough corpus)
    vocab: int = 50257
    pad_vocab: bool = False  # bpe: fill the vocabulary up to `vocab` with unused entries (GPT-2's exact shapes)
    prepare_workers: int = 1  # data.format=packed: tokenizer processes for the prepare step
    overrides: list[str] = field(default_factory=list)  # extra gpt2dist config overrides (a.b=value)
    corpus: str = "short"  # short: ~350-character documents | long: `long_docs` documents (sample_by=document)
    long_docs: int = 2


@dataclass
class Result:
    name: str
    windows: list[float] = field(default_factory=list)  # tokens/s per measured window
    final_loss: float | None = None
    setup_s: float = 0.0  # wall clock from the start to the end of the first step (build, compile, data)
    overhead: list[float] = field(default_factory=list)  # per window: share of time outside fwd/bwd/step
    vocab: int = 0  # the trained model's vocabulary (for FLOPs per token)
    cpu_windows: list[float] = field(default_factory=list)  # tokens per CPU-second of the training process
    worker: list[float] = field(default_factory=list)  # per window: a data worker's CPU / the trainer's CPU
    peak_mem_gib: float | None = None  # torch.cuda.max_memory_allocated over the run (None on CPU, or nanoGPT)
    peak_reserved_gib: float | None = None  # the caching allocator's peak reservation (what nvidia-smi sees)
    compiled_graphs: int | None = None  # FX graphs dynamo compiled during the run: 0 = train.compile ran eager
    run_dir: str | None = None  # gpt2dist's run folder (its metrics.jsonl), until the bench's scratch is deleted

    @property
    def median(self) -> float:
        return statistics.median(self.windows) if self.windows else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_windows) if self.cpu_windows else float("nan")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc/PID/stat; 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's live children (gpt2dist's DataLoader worker)."""
    me, total = str(os.getpid()), 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                total += process_cpu(int(stat.parent.name))
        except OSError:
            continue
    return total


def worker_shares(marks: list[tuple[float, ...]], window: int, warmup: int) -> list[float]:
    """Per window after the warm-up: the data worker's CPU seconds over the trainer's (marks: (.., cpu, worker))."""
    shares = []
    for start in range(max(warmup, 1), len(marks) - window + 1, window):
        a, b = marks[start - 1], marks[start + window - 1]
        shares.append((b[3] - a[3]) / max(b[2] - a[2], 1e-9))
    return shares


def windows_from_steps(step_ends: list[float], tokens_per_step: int, window: int, warmup: int) -> list[float]:
    """tokens/s of each full window of `window` steps after step `warmup`, from per-step end times (index i =
    end of step i + 1)."""
    rates = []
    for start in range(warmup, len(step_ends) - window + 1, window):
        if start == 0:
            continue  # no timestamp before the first step: that window has no start
        seconds = step_ends[start + window - 1] - step_ends[start - 1]
        rates.append(window * tokens_per_step / max(seconds, 1e-9))
    return rates


# ------------------------------------------------------------------------------------------------- gpt2dist
def gpt2dist_config(spec: Spec, corpus, run_dir: Path, tokenizer_dir: Path | None = None) -> dict[str, Any]:
    """A gpt2dist run of `spec` on `corpus`; with `tokenizer_dir` (the bench's shared BPE) it loads that one."""
    tokenizer = ({"kind": "pretrained", "path": str(tokenizer_dir)} if tokenizer_dir is not None
                 else {"kind": spec.tokenizer, "vocab_size": spec.vocab})
    return {
        "run_dir": str(run_dir), "seed": spec.seed,
        "model": {"preset": "tiny", "n_layer": spec.n_layer, "n_embd": spec.n_embd, "n_head": spec.n_head,
                  "n_positions": max(spec.block_size, 256), "dropout": 0.0},
        "tokenizer": tokenizer,
        "data": {"train": corpus.patterns, "sample_by": corpus.sample_by, "block_size": spec.block_size},
        "train": {"max_steps": spec.steps, "micro_batch_size": spec.micro, "grad_accum_steps": spec.accum,
                  "lr": spec.lr, "min_lr": spec.lr / 10, "warmup_steps": 10, "precision": spec.precision,
                  "compile": spec.compile, "log_every": spec.window, "eval_every": 0, "device": "auto"},
        "checkpoint": {"every": 0, "keep_last": 1},
        "logging": {"tensorboard": False, "progress": "lines"},
        "distributed": {"backend": "torch"} if spec.zero is None else {"backend": "deepspeed", "zero_stage": spec.zero},
    }


def run_packed(spec: Spec, corpus, workdir: Path, tokenizer_dir: Path | None = None) -> Result:
    """gpt2dist on prepared data (data.format=packed), the same run otherwise."""
    return run_gpt2dist(spec, corpus, workdir, tokenizer_dir, ["data.format=packed"], name="packed")


def run_gpt2dist(spec: Spec, corpus, workdir: Path, tokenizer_dir: Path | None = None, extra: list[str] = (),
                 name: str = "gpt2dist") -> Result:
    """Train in this process through gpt2dist's own entry point; tokens/s comes from its metrics.jsonl."""
    import yaml

    from gpt2dist.config import load_config
    from gpt2dist.tokenizer import load_tokenizer
    from gpt2dist.train import train

    run_dir = Path(tempfile.mkdtemp(prefix="gpt2dist-", dir=workdir))
    cfg_file = run_dir.with_suffix(".yaml")
    cfg_file.write_text(yaml.safe_dump(gpt2dist_config(spec, corpus, run_dir, tokenizer_dir)), encoding="utf-8")
    cfg = load_config(cfg_file, [*spec.overrides, *extra])
    if cfg.data.format == "packed":  # --set data.format=packed: tokenize up front, as TextDataset does
        from gpt2dist.data.prepare import prepare

        prepare(cfg, workers=spec.prepare_workers, progress=False)
    started = time.perf_counter()
    graphs_before = compiled_graphs()
    with engine_timers() as marks, contextlib.redirect_stdout(io.StringIO()):  # log lines: the JSONL has them
        out = train(cfg)
    result = Result(name, final_loss=out["loss"], setup_s=marks[0][0] - started if marks else 0.0,
                    compiled_graphs=compiled_graphs() - graphs_before, run_dir=str(run_dir))
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("tokens_per_s") is not None and record["step"] - spec.window >= spec.warmup:
            result.windows.append(record["tokens_per_s"])  # a window that started after the warm-up
    # On a GPU the engine calls return before their kernels finish (the loop syncs once per logged step), so the
    # time outside them is mostly waiting for the GPU, not loop overhead: measured on CPU only.
    result.overhead = [] if _cuda() else overhead_windows(marks, spec.window, spec.warmup)
    result.cpu_windows = windows_from_steps([m[2] for m in marks], tokens_per_step(spec), spec.window, spec.warmup)
    result.worker = worker_shares(marks, spec.window, spec.warmup)
    result.vocab = len(load_tokenizer(run_dir / "tokenizer"))
    return result


def compiled_graphs() -> int:
    """Graphs torch.compile (dynamo) has compiled in this process so far: whether compilation really happened,
    not only whether it was asked for (a failed compile falls back to eager with a warning)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["stats"]["unique_graphs"])


@contextlib.contextmanager
def engine_timers():
    """Time TorchEngine.forward_loss/backward/step (CPU ops are synchronous, so wall clock is compute).

    Yields a list that fills with (end of step i, seconds spent inside the three calls so far, this process's CPU
    seconds, its children's) per step: everything else in the loop -- data, logging, the stop check -- is loop
    overhead."""
    from gpt2dist.engines.torch_engine import TorchEngine

    marks: list[tuple[float, float, float, float]] = []
    spent = [0.0]
    originals = {name: getattr(TorchEngine, name) for name in ("forward_loss", "backward", "step")}

    def timed(name, fn):
        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                t1 = time.perf_counter()
                spent[0] += t1 - t0
                if name == "step":
                    marks.append((t1, spent[0], time.process_time(), children_cpu()))
        return wrapper

    for name, fn in originals.items():
        setattr(TorchEngine, name, timed(name, fn))
    try:
        yield marks
    finally:
        for name, fn in originals.items():
            setattr(TorchEngine, name, fn)


def overhead_windows(marks: list[tuple[float, ...]], window: int, warmup: int) -> list[float]:
    """Per window after the warm-up: the share of wall clock spent outside forward/backward/step."""
    shares = []
    for start in range(max(warmup, 1), len(marks) - window + 1, window):
        (t0, c0, *_), (t1, c1, *_) = marks[start - 1], marks[start + window - 1]
        shares.append(1.0 - (c1 - c0) / max(t1 - t0, 1e-9))
    return shares


# ------------------------------------------------------------------------------------------ HF Trainer baseline
class BlockDataset:
    """TextDataset's recipe (transformers <= 4.x): tokenize the whole file once, cut into block_size pieces,
    drop the remainder."""

    def __init__(self, tokenizer, path: Path, block_size: int):
        import torch

        ids = tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        self.examples = [torch.tensor(ids[i:i + block_size], dtype=torch.long)
                         for i in range(0, len(ids) - block_size + 1, block_size)]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        return self.examples[i]


def hf_tokenizer(spec: Spec, text: str, tokenizer_dir: Path | None):
    """The bench's shared BPE when there is one (all trainers on the same tokens), else one built here."""
    from gpt2dist.tokenizer import load_tokenizer, train_bpe, train_char

    if tokenizer_dir is not None:
        return load_tokenizer(tokenizer_dir)
    return train_char([text]) if spec.tokenizer == "char" else train_bpe(text.split("\n\n"), spec.vocab)


DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def without_dist_env():
    """gpt2dist exports RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* for its one-rank group; a Trainer started after it in
    the same process would read them as a launcher's and set up distributed training: hide them meanwhile."""
    saved = {key: os.environ.pop(key) for key in DIST_ENV if key in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def run_hf_trainer(spec: Spec, corpus, workdir: Path, tokenizer_dir: Path | None = None) -> Result:
    """The baseline, as a fresh process would start it (no launcher variables): see `_run_hf_trainer`."""
    with without_dist_env():
        return _run_hf_trainer(spec, corpus, workdir, tokenizer_dir)


def _run_hf_trainer(spec: Spec, corpus, workdir: Path, tokenizer_dir: Path | None = None) -> Result:
    """The baseline: transformers.Trainer with default arguments except those that make the run comparable."""
    import torch
    from transformers import (
        DataCollatorForLanguageModeling,
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    train_file = corpus.text_file  # the whole text in one file, as TextDataset reads it
    text = train_file.read_text(encoding="utf-8")
    tokenizer = hf_tokenizer(spec, text, tokenizer_dir)
    tokenizer.pad_token = tokenizer.eos_token  # the usual GPT-2 recipe: the collator needs a pad token
    dataset = BlockDataset(tokenizer, train_file, spec.block_size)
    torch.manual_seed(spec.seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=max(spec.block_size, 256),
                                       n_embd=spec.n_embd, n_layer=spec.n_layer, n_head=spec.n_head,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    step_ends: list[float] = []
    step_cpu: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            step_ends.append(time.perf_counter())
            step_cpu.append(time.process_time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    args = TrainingArguments(
        output_dir=str(Path(tempfile.mkdtemp(prefix="hf-", dir=workdir))), max_steps=spec.steps,
        per_device_train_batch_size=spec.micro, gradient_accumulation_steps=spec.accum, learning_rate=spec.lr,
        weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, warmup_steps=10, lr_scheduler_type="cosine",
        max_grad_norm=1.0, logging_steps=spec.window, save_strategy="no", eval_strategy="no", report_to="none",
        seed=spec.seed, disable_tqdm=True, use_cpu=not _cuda(), bf16=spec.precision == "bf16",
        fp16=spec.precision == "fp16")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[Clock()],
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    result = Result("hf_trainer", windows_from_steps(step_ends, tokens_per_step(spec), spec.window, spec.warmup),
                    final_loss=losses[-1] if losses else None, setup_s=step_ends[0] - started,
                    vocab=len(tokenizer),
                    cpu_windows=windows_from_steps(step_cpu, tokens_per_step(spec), spec.window, spec.warmup))
    del trainer, model
    return result


# ------------------------------------------------------------------------------------------------- nanoGPT
def nanogpt_runner(nanogpt: Path, threads: int | None):
    """A runner for nanoGPT's train.py on the tokens the gpt2dist run trains on (written once per corpus)."""
    from bench.nanogpt_baseline import run_nanogpt, write_nanogpt_data

    data: dict[str, tuple[Path, int]] = {}

    def run(spec: Spec, corpus, workdir: Path, tokenizer_dir: Path | None = None) -> Result:
        import yaml

        from gpt2dist.config import load_config

        if corpus.name not in data:
            scratch = workdir / f"nanogpt-{corpus.name}"
            scratch.mkdir(exist_ok=True)
            raw = gpt2dist_config(spec, corpus, scratch / "run", tokenizer_dir)  # the shared BPE when there is one
            (scratch / "run.yaml").write_text(yaml.safe_dump(raw))
            cfg = load_config(scratch / "run.yaml", spec.overrides)
            vocab, _ = write_nanogpt_data(cfg, scratch / "data")
            data[corpus.name] = (scratch / "data", vocab)
        folder, vocab = data[corpus.name]
        cuda = _cuda()
        ends, cpu, loss, setup = run_nanogpt(nanogpt, spec, folder, workdir, threads, "cuda" if cuda else "cpu",
                                             spec.compile == "true" or (spec.compile == "auto" and cuda), process_cpu)
        return Result("nanogpt", windows_from_steps(ends, tokens_per_step(spec), spec.window, spec.warmup),
                      final_loss=loss, setup_s=setup, vocab=vocab,
                      cpu_windows=windows_from_steps(cpu, tokens_per_step(spec), spec.window, spec.warmup))

    return run


# ------------------------------------------------------------------------------------------ shared by trainers
def bench_tokenizer(spec: Spec, train_file: Path, folder: Path) -> Path:
    """One byte-level BPE for every trainer (trained once per invocation), padded to spec.vocab if asked.

    Padding adds plain vocabulary entries that no merge produces -- not "added tokens", which the tokenizer would
    search every text for -- so encoding is unchanged and only the embedding and output layer grow."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from gpt2dist.tokenizer import EOS, train_bpe

    tokenizer = train_bpe(train_file.read_text(encoding="utf-8").split("\n\n"), spec.vocab)
    if spec.pad_vocab and len(tokenizer) < spec.vocab:
        data = json.loads(tokenizer.backend_tokenizer.to_str())
        vocab = data["model"]["vocab"]
        next_id = max([*vocab.values(), *(t["id"] for t in data["added_tokens"])]) + 1
        for i in range(next_id, spec.vocab):
            vocab[f"<|unused{i}|>"] = i
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), eos_token=EOS,
                                            bos_token=EOS)
    tokenizer.save_pretrained(str(folder))
    return folder


@contextlib.contextmanager
def peak_memory():
    """Yields a dict that holds, after the block, the peak CUDA memory (GiB) this process allocated and reserved
    inside it: Result's peak_mem_gib / peak_reserved_gib. Empty on CPU."""
    import torch

    peak: dict[str, float] = {}
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    yield peak
    if cuda:
        peak.update(peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30,
                    peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30)


def accumulate(total: Result, res: Result) -> None:
    """Fold one repeat's result into the invocation's: windows add up, the last run's loss/setup/vocab stand, the
    peak memory is the highest of the repeats."""
    total.windows += res.windows
    total.overhead += res.overhead
    total.cpu_windows += res.cpu_windows
    total.worker += res.worker
    total.final_loss, total.setup_s, total.vocab = res.final_loss, res.setup_s, res.vocab
    total.compiled_graphs, total.run_dir = res.compiled_graphs, res.run_dir
    total.peak_mem_gib = max(filter(None, [total.peak_mem_gib, res.peak_mem_gib]), default=None)
    total.peak_reserved_gib = max(filter(None, [total.peak_reserved_gib, res.peak_reserved_gib]), default=None)


# ------------------------------------------------------------------------------------------------- reporting
def tokens_per_step(spec: Spec) -> int:
    return spec.micro * spec.accum * spec.block_size


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def model_flops(spec: Spec, vocab: int) -> float:
    """Training FLOPs per token of the bench model: gpt2dist.model.flops_per_token (PaLM's 6N + 12·L·H·Q·T) with
    N counted on a shapes-only (meta) copy, as the training log counts it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2dist.model import count_parameters, flops_per_token

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=max(spec.block_size, 256),
                                           n_embd=spec.n_embd, n_layer=spec.n_layer, n_head=spec.n_head))
    return flops_per_token(count_parameters(model, non_embedding=True), spec.n_layer, spec.n_embd, spec.block_size)


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()} ({torch.get_num_threads()} threads)"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def utilization(spec: Spec, res: Result) -> tuple[float, float | None]:
    """(training FLOPs per token, MFU or None on CPU / an unknown GPU) of one result's median."""
    import torch

    from gpt2dist.observe.metrics import mfu, peak_flops

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    fpt = model_flops(spec, res.vocab or 256)
    return fpt, mfu(res.median, fpt, peak_flops(name, spec.precision))


def report(spec: Spec, results: dict[str, Result]) -> str:
    import torch
    lines = [f"device: {device_label()} | torch {torch.__version__} | commit {git_commit()} | "
             f"{time.strftime('%Y-%m-%d %H:%M')} | load average {os.getloadavg()[0]:.1f}",
             f"model: {spec.n_layer} layers x {spec.n_embd} wide, T={spec.block_size}, micro {spec.micro} x accum "
             f"{spec.accum}, {spec.precision}, {spec.steps} steps, windows of {spec.window} after {spec.warmup} "
             f"warm-up steps; gpt2dist train.compile={spec.compile}, "
             f"{'torch engine' if spec.zero is None else f'DeepSpeed ZeRO-{spec.zero}'}, {spec.tokenizer} tokenizer, "
             f"{spec.corpus} documents" + (f" ({spec.long_docs} of them)" if spec.corpus == "long" else "")
             + (f", gpt2dist {' '.join(spec.overrides)}" if spec.overrides else ""),
             f"{'trainer':<12} {'median tok/s':>13} {'windows (tok/s)':<50} {'MFU':>6} {'TFLOP/s':>8} "
             f"{'setup s':>8} {'last loss':>9} {'overhead':>8} {'cpu tok/s':>10} {'worker':>7} {'peak GiB':>8}"]
    for res in results.values():
        fpt, util = utilization(spec, res)
        shown = ", ".join(f"{w:,.0f}" for w in res.windows[:6]) + (" ..." if len(res.windows) > 6 else "")
        lines.append(f"{res.name:<12} {res.median:>13,.0f} {shown:<50} "
                     f"{'n/a' if util is None else f'{util:.1%}':>6} {res.median * fpt / 1e12:>8.3f} "
                     f"{res.setup_s:>8.1f} {res.final_loss if res.final_loss is not None else float('nan'):>9.4f} "
                     f"{f'{statistics.median(res.overhead):.1%}' if res.overhead else 'n/a':>8} "
                     f"{res.cpu_median:>10,.0f} {f'{statistics.median(res.worker):.1%}' if res.worker else 'n/a':>7} "
                     f"{'n/a' if res.peak_mem_gib is None else f'{res.peak_mem_gib:.1f}':>8}")
    for a, b in (("gpt2dist", "hf_trainer"), ("gpt2dist", "packed"), ("gpt2dist", "nanogpt"), ("packed", "nanogpt")):
        if a in results and b in results:
            lines.append(f"ratio {a} / {b}: {results[a].median / results[b].median:.2f}x "
                         f"(per CPU-second: {results[a].cpu_median / results[b].cpu_median:.2f}x)")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[Spec, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    for key in ("n_layer", "n_embd", "n_head", "block_size", "micro", "steps", "window", "warmup", "accum",
                "stories"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"override the preset's {key}")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="both trainers")
    parser.add_argument("--compile", choices=["auto", "true", "false"], default="auto", help="gpt2dist only")
    parser.add_argument("--only", choices=TRAINERS, default=None, help="run one trainer")
    parser.add_argument("--trainers", default=None, help=f"comma-separated, of {', '.join(TRAINERS)} (default: "
                        "gpt2dist,hf_trainer; with --nanogpt: gpt2dist,packed,nanogpt)")
    parser.add_argument("--nanogpt", type=Path, default=None, metavar="DIR", help="a nanoGPT checkout (its train.py)")
    parser.add_argument("--corpus", choices=["short", "long"], default="short", help="document length (see above)")
    parser.add_argument("--long-docs", type=int, default=2, help="documents in the long corpus")
    parser.add_argument("--zero", type=int, choices=[0, 1, 2, 3], default=None,
                        help="gpt2dist on its DeepSpeed engine at this ZeRO stage (default: the torch engine)")
    parser.add_argument("--tokenizer", choices=["char", "bpe"], default="char",
                        help="every trainer (bpe: one trained per invocation, shared)")
    parser.add_argument("--vocab", type=int, default=50257, help="bpe vocabulary size")
    parser.add_argument("--pad-vocab", action="store_true",
                        help="bpe: pad the vocabulary to --vocab with unused entries (GPT-2's exact shapes)")
    parser.add_argument("--prepare-workers", type=int, default=1,
                        help="packed data: tokenizer processes of the prepare step (default 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a gpt2dist config override, e.g. --set data.num_workers=0 (repeatable)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two trainers this many times")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    values = dict(PRESETS[args.preset])
    values.update({k: v for k in ("n_layer", "n_embd", "n_head", "block_size", "micro", "steps", "window",
                                  "warmup", "accum", "stories") if (v := getattr(args, k)) is not None})
    spec = Spec(**values, precision=args.precision, compile=args.compile, zero=args.zero, tokenizer=args.tokenizer,
                vocab=args.vocab, pad_vocab=args.pad_vocab, prepare_workers=args.prepare_workers,
                overrides=args.overrides, corpus=args.corpus, long_docs=args.long_docs)
    if spec.pad_vocab and spec.tokenizer != "bpe":
        parser.error("--pad-vocab needs --tokenizer bpe")
    if spec.steps - spec.warmup < spec.window:
        parser.error(f"--steps {spec.steps} leaves no full window of {spec.window} after --warmup {spec.warmup}")
    default = "gpt2dist,packed,nanogpt" if args.nanogpt else "gpt2dist,hf_trainer"
    args.trainers = [args.only] if args.only else (args.trainers or default).split(",")
    if unknown := set(args.trainers) - set(TRAINERS):
        parser.error(f"--trainers: unknown {sorted(unknown)}; choose from {', '.join(TRAINERS)}")
    if "nanogpt" in args.trainers and not (args.nanogpt and (args.nanogpt / "train.py").is_file()):
        parser.error("the nanogpt trainer needs --nanogpt DIR, a nanoGPT checkout holding train.py")
    return spec, args


def main(argv: list[str] | None = None) -> dict[str, Result]:
    spec, args = parse_args(argv)
    import torch

    from bench.nanogpt_baseline import write_corpus
    from gpt2dist.train import setup_logging

    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.trainers
    runners = {"gpt2dist": run_gpt2dist, "packed": run_packed, "hf_trainer": run_hf_trainer}
    if args.nanogpt:
        runners["nanogpt"] = nanogpt_runner(args.nanogpt.resolve(), args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        corpus = write_corpus(spec.corpus, workdir / "corpus", spec.stories, spec.seed, spec.long_docs)
        tokenizer_dir = (bench_tokenizer(spec, corpus.text_file, workdir / "tokenizer") if spec.tokenizer == "bpe"
                         else None)
        results = {name: Result(name) for name in names}
        for repeat in range(args.repeats):
            order = names if repeat % 2 == 0 else names[::-1]  # alternate who runs first
            for name in order:
                gc.collect()
                with peak_memory() as peak:
                    res = runners[name](spec, corpus, workdir, tokenizer_dir)
                if name != "nanogpt":  # nanoGPT trains in a child process: this one's CUDA stats miss it
                    for key, gib in peak.items():
                        setattr(res, key, gib)
                accumulate(results[name], res)
                if args.json:  # after every trainer: a run killed later keeps what finished
                    keep_metrics(res, args.json)
                    write_json(args.json, spec, {k: v for k, v in results.items() if v.windows})
    print(report(spec, results), flush=True)
    if args.json:
        write_json(args.json, spec, results)
    return results


def keep_metrics(res: Result, json_path: Path) -> None:
    """Copy a gpt2dist run's metrics.jsonl beside the bench JSON (BENCH-TRAINER-metrics.jsonl): every step's
    figures outlive the scratch folder."""
    import shutil

    if res.run_dir and (Path(res.run_dir) / "metrics.jsonl").is_file():
        shutil.copyfile(Path(res.run_dir) / "metrics.jsonl", json_path.with_name(
            f"{json_path.stem}-{res.name}-metrics.jsonl"))


def predicted(spec: Spec, res: Result) -> dict[str, Any] | None:
    """The doctor's one-GPU prediction for this spec on this GPU, beside the measured figure. None on CPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return prediction(torch.cuda.get_device_name(0), spec, utilization(spec, res)[0], res.vocab or spec.vocab)


def prediction(gpu: str, spec: Spec, flops_per_token: float, vocab: int) -> dict[str, Any] | None:
    """tokens/s and MFU, low / typical / high, that gpt2dist.planning.costmodel predicts for one `gpu` (a device name)
    training `spec`: its default efficiency for the GPU kind and size, plus the optimizer step at the GPU's
    memory bandwidth. None for a GPU without a known peak."""
    from gpt2dist.observe.metrics import peak_flops
    from gpt2dist.planning import costmodel

    peak = peak_flops(gpu, spec.precision)
    if not peak:
        return None
    tokens = tokens_per_step(spec)
    n_params = sum(n for _, n, _ in costmodel.gpt2_tensors(spec.n_layer, spec.n_embd, vocab, spec.block_size))
    out: dict[str, Any] = {"gpu": gpu}
    for label, mfu in zip(("low", "typical", "high"), costmodel.default_mfu(gpu, n_params, spec.block_size),
                          strict=True):
        step = (costmodel.compute_time(flops_per_token, tokens, peak, mfu)
                + costmodel.optimizer_time(n_params, costmodel.system_for(gpu).hbm_bw))
        out[f"tokens_per_s_{label}"] = tokens / step
        out[f"mfu_{label}"] = mfu
    return out


def write_json(path: Path, spec: Spec, results: dict[str, Result]) -> None:
    import torch

    path.write_text(json.dumps({"spec": asdict(spec), "device": device_label(), "torch": torch.__version__,
                                "commit": git_commit(), "results": {
        k: {**asdict(v), "median": v.median, "flops_per_token": utilization(spec, v)[0],
            "mfu": utilization(spec, v)[1], "predicted": predicted(spec, v)} for k, v in results.items()}},
                               indent=1), encoding="utf-8")


if __name__ == "__main__":
    import importlib.util

    _root = str(Path(__file__).resolve().parent.parent)
    if importlib.util.find_spec("gpt2dist") is None:  # a checkout without `pip install -e .`: use its source tree
        sys.path.insert(0, _root)
    elif _root not in sys.path:  # bench.nanogpt_baseline from the checkout, but the installed gpt2dist (GPU kit)
        sys.path.append(_root)
    main()
