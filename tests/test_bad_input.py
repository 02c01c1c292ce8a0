"""Bad input through the real command line: every case must exit 2 with ONE line `error: ...` naming the key or
file, print no traceback, and write nothing -- in particular no run dir -- before the error.

Each case runs `python -m gpt2dist.cli ...` (or `python -m gpt2dist.train ...`) in its own copy of a tiny workspace.
Every subprocess imports torch and transformers (~4-5 s of CPU), so a module fixture starts the selected cases
concurrently and each parametrized test checks its own result.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUN_DIR = "run"
BASE_YAML = f"""\
run_dir: {RUN_DIR}
seed: 1
model:
  preset: tiny        # n_positions 256
tokenizer:
  kind: char
data:
  train: [train.txt]
  block_size: 32
train:
  max_steps: 2
  micro_batch_size: 2
  warmup_steps: 0
  eval_every: 0
  log_every: 1
  device: cpu
checkpoint:
  every: 0
logging:
  tensorboard: false
  progress: lines
"""
BAD_UTF8_PREFIX = b"hello world\n" * 50
BAD_UTF8_OFFSET = len(BAD_UTF8_PREFIX)  # 600: where the first invalid byte sits
CASE_TIMEOUT_S = 180  # a case that trains instead of failing still ends quickly (max_steps 2), this is a backstop


def write_workspace(root: Path) -> None:
    """The valid starting point every case varies: base.yaml + ~200 short paragraphs of training text."""
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "ran", "far", "away", "under", "a", "big",
             "red", "sky"]
    paragraphs = [" ".join(words[(i + j) % len(words)] for j in range(6 + i % 5)) + "." for i in range(200)]
    (root / "train.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    (root / "base.yaml").write_text(BASE_YAML, encoding="utf-8")


# ---- per-case extra files ----

def empty_file(root: Path) -> None:
    (root / "empty.txt").write_bytes(b"")


def bad_utf8(root: Path) -> None:
    (root / "bad.txt").write_bytes(BAD_UTF8_PREFIX + b"\xff\xfe bad bytes\n" + b"more text after them\n" * 20)


def bad_utf8_and_tokenizer_folder(root: Path) -> None:
    """bad.txt plus a loadable tokenizer folder: with tokenizer.kind=pretrained nothing scans the corpus early."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    bad_utf8(root)
    tok = Tokenizer(models.WordLevel(vocab={"<|endoftext|>": 0, "<unk>": 1, "hello": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (root / "tok").mkdir()
    tok.save(str(root / "tok" / "tokenizer.json"))
    (root / "tok" / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "unk_token": "<unk>"}),
        encoding="utf-8")


def model_folder_without_config(root: Path) -> None:
    folder = root / "hf_model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"not really weights")


def unrelated_run_dir(root: Path) -> None:
    (root / RUN_DIR).mkdir()
    (root / RUN_DIR / "notes.txt").write_text("someone else's file\n", encoding="utf-8")


def list_yaml(root: Path) -> None:
    (root / "list.yaml").write_text("- model\n- data\n", encoding="utf-8")


def csv_file(root: Path) -> None:
    (root / "data.csv").write_text("text\nhello\nworld\n", encoding="utf-8")


def jsonl_file(root: Path) -> None:
    lines = [f'{{"text": "document number {i} says hello to the world"}}' for i in range(100)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def not_a_run_dir(root: Path) -> None:
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "readme.txt").write_text("just a folder\n", encoding="utf-8")


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # after `python -m MODULE`
    expect: tuple[str, ...]  # substrings of the one error line
    setup: Callable[[Path], None] | None = None
    module: str = "gpt2dist.cli"
    bug: str | None = None  # a known bug (the error comes too late): the case is xfail(strict)


def train(*args: str) -> tuple[str, ...]:
    return ("train", "base.yaml", *args)


CASES = [
    # -- data files --
    Case("missing-data-file", train("data.train=[nope.txt]"), ("data.train", "'nope.txt' matches no file")),
    Case("glob-matches-nothing", train("data.train=[corpus/*.txt]"), ("data.train", "'corpus/*.txt'")),
    Case("empty-data-file", train("data.train=[empty.txt]"), ("data.train", "empty.txt", "empty"), empty_file),
    Case("non-utf8-text", train("data.train=[bad.txt]"), ("bad.txt", f"at byte {BAD_UTF8_OFFSET}", "UTF-8"),
         bad_utf8),
    Case("non-utf8-text-pretrained-tokenizer",
         train("data.train=[bad.txt]", "tokenizer.kind=pretrained", "tokenizer.path=tok"),
         ("bad.txt", f"at byte {BAD_UTF8_OFFSET}", "UTF-8"), bad_utf8_and_tokenizer_folder),
    Case("unsupported-csv", train("data.train=[data.csv]"), ("data.train", "'.csv'"), csv_file),
    Case("mixed-txt-jsonl", train("data.train=[train.txt,docs.jsonl]"), ("data.train", "mixes file types"),
         jsonl_file),
    Case("jsonl-wrong-text-field", train("data.train=[docs.jsonl]", "data.text_field=body"),
         ("data.text_field='body'", "docs.jsonl"), jsonl_file),
    # -- config keys and values --
    Case("unknown-key-did-you-mean", train("train.max_step=5"), ("train.max_step", "did you mean train.max_steps?")),
    Case("wrong-type-lr", train("train.lr=abc"), ("train.lr", "'abc'")),
    Case("block-size-over-n-positions", train("data.block_size=1000"), ("data.block_size=1000", "n_positions=256")),
    Case("val-fraction-1.5", train("data.val_fraction=1.5"), ("data.val_fraction", "1.5")),
    Case("micro-batch-size-0", train("train.micro_batch_size=0"), ("train.micro_batch_size", "> 0")),
    Case("bad-override-syntax", train("train.max_steps"), ("'train.max_steps'", "key.sub=value")),
    # -- config files --
    Case("config-file-missing", ("nope.yaml",), ("nope.yaml", "not found"), module="gpt2dist.train"),
    Case("config-not-a-mapping", ("train", "list.yaml"), ("list.yaml", "mapping"), list_yaml),
    # -- model and tokenizer --
    Case("pretrained-path-missing", train("model.pretrained=no_such_model"), ("model.pretrained", "no_such_model")),
    Case("pretrained-without-config-json", train("model.pretrained=hf_model"), ("hf_model", "config.json"),
         model_folder_without_config),
    Case("pretrained-tokenizer-without-path", train("tokenizer.kind=pretrained"), ("tokenizer.path",)),
    Case("tokenizer-path-missing", train("tokenizer.kind=pretrained", "tokenizer.path=no_such_tok"),
         ("no_such_tok",)),
    Case("fp16-on-cpu", train("train.precision=fp16"), ("train.precision=fp16", "CUDA")),
    # -- the run dir --
    Case("run-dir-not-empty-no-resume", train("--no-resume"), (f"run_dir {RUN_DIR}", "not empty"), unrelated_run_dir),
    Case("run-dir-unrelated-files-resume", train("train.resume=true"), (f"run_dir {RUN_DIR}", "not empty"),
         unrelated_run_dir),
    # -- batch math, world sizes and ZeRO options --
    Case("global-batch-not-multiple", train("train.global_batch_size=10", "train.micro_batch_size=4"),
         ("train.global_batch_size=10", "train.micro_batch_size=4")),
    Case("world-size-does-not-divide-batch",
         ("ds-config", "base.yaml", "--world-size", "3", "train.global_batch_size=8", "train.micro_batch_size=2"),
         ("train.global_batch_size=8", "3 ranks")),
    Case("offload-param-without-zero3", train("distributed.zero_stage=2", "distributed.offload_param=cpu"),
         ("distributed.offload_param=cpu", "zero_stage=3")),
    Case("offload-optimizer-at-zero0", train("distributed.offload_optimizer=cpu"),
         ("distributed.offload_optimizer=cpu", "zero_stage >= 1")),
    Case("torch-backend-with-zero", train("distributed.backend=torch", "distributed.zero_stage=2"),
         ("distributed.backend=torch", "deepspeed")),
    Case("zero-stage-5", train("distributed.zero_stage=5"), ("distributed.zero_stage=5",)),
    Case("tokenizer-dir-without-files", train("tokenizer.kind=pretrained", "tokenizer.path=empty_tok"),
         ("empty_tok", "could not be loaded"), lambda root: (root / "empty_tok").mkdir()),
    # -- launch and Slurm arguments --
    Case("launch-nproc-0", ("launch", "base.yaml", "--nproc", "0"), ("--nproc",)),
    Case("slurm-bad-time", ("slurm", "base.yaml", "--time", "forever"), ("--time", "forever")),
    Case("slurm-cpu-without-nproc", ("slurm", "base.yaml", "--gpus-per-node", "0"), ("--nproc-per-node",)),
    # -- doctor scaling flags and bench-comm (issue 16) --
    Case("doctor-mfu-without-gpu", ("doctor", "base.yaml", "--mfu", "0.4"), ("--mfu", "--gpu")),
    Case("doctor-unknown-gpu", ("doctor", "base.yaml", "--gpu", "TPU9"), ("--gpu", "TPU9", "H100")),
    Case("doctor-world-size-disagrees", ("doctor", "base.yaml", "--world-size", "4", "--nodes", "2",
                                         "--gpus-per-node", "8"), ("--world-size 4", "16")),
    Case("doctor-comm-json-missing", ("doctor", "base.yaml", "--gpu", "H100", "--comm-json", "nope.json"),
         ("--comm-json", "nope.json")),
    Case("doctor-tokens-not-a-count", ("doctor", "base.yaml", "--gpu", "H100", "--tokens", "lots"), ("--tokens",)),
    Case("bench-comm-one-rank", ("bench-comm", "base.yaml"), ("bench-comm", "--nproc 2")),
    Case("launch-commbench-no-resume", ("launch", "base.yaml", "--nproc", "2", "--module", "gpt2dist.commbench",
                                        "--no-resume"), ("--no-resume",)),
    # -- the other subcommands --
    Case("eval-model-missing", ("eval", "--model", "missing_dir", "--data", "train.txt"), ("missing_dir",)),
    Case("export-not-a-run-dir", ("export", "not_a_run", "exported"), ("not_a_run", "neither a run dir"),
         not_a_run_dir),
    Case("generate-top-p-1.5", ("generate", "--model", "M", "--top-p", "1.5"), ("--top-p",)),
]


class WorkspaceWritten(AssertionError):
    """The command wrote files (a run dir, an export) although it failed on its input."""


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root -> its bytes (None for a directory)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    before: dict[str, bytes | None]
    after: dict[str, bytes | None]
    cwd: Path


def run_case(case: Case, root: Path) -> Outcome:
    write_workspace(root)
    if case.setup is not None:
        case.setup(root)
    before = snapshot(root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    argv = [sys.executable, "-m", case.module, *case.args]
    try:
        proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=CASE_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:  # reported by this case's test, not as an error of every case
        out, err = (x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
        proc = subprocess.CompletedProcess(argv, -9, out, f"{err}\n[killed after {CASE_TIMEOUT_S} s]")
    return Outcome(proc, before, snapshot(root), root)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """Run the selected cases concurrently, one per CPU core (more only adds contention: each is CPU-bound)."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params}
    cases = [case for case in CASES if case.id in selected]
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {case.id: pool.submit(run_case, case, tmp_path_factory.mktemp(case.id)) for case in cases}
        return {case_id: future.result() for case_id, future in futures.items()}


def test_case_ids_unique():
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.id, marks=[pytest.mark.xfail(reason=case.bug, raises=AssertionError, strict=True)]
                  if case.bug else []) for case in CASES],
)
def test_bad_input(case: Case, outcomes: dict[str, Outcome]):
    outcome = outcomes[case.id]
    proc = outcome.proc
    shown = f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    assert proc.returncode == 2, shown
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, shown
    assert lines[0].startswith("error: "), shown
    for part in case.expect:
        assert part in lines[0], f"{part!r} not in the error line\n{shown}"

    if outcome.after != outcome.before:
        changed = sorted(k for k in outcome.before.keys() | outcome.after.keys()
                         if outcome.before.get(k, b"") != outcome.after.get(k, b""))
        run_dir_note = (f"run dir {RUN_DIR!r} created although it did not exist"
                        if RUN_DIR not in outcome.before and RUN_DIR in outcome.after else "")
        raise WorkspaceWritten(f"the failed command changed {changed} in {outcome.cwd} {run_dir_note}\n{shown}")
