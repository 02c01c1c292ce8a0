"""Bad input through the real command line: every case must exit 2 with ONE line `error: ...` naming the key or
file, print no traceback, and write nothing -- in particular no run dir -- before the error.

Each case runs `python -m gpt2dist.cli ...` (or `python -m gpt2dist.train ...`) in its own copy of a tiny workspace.
Most cases fail in about a second, before torch is imported (`gpt2dist train` checks the config and the cheap
preflight first); the few that need the trainer's own checks import torch and transformers (~5 s of CPU). A
module fixture starts the selected cases concurrently and each parametrized test checks its own result.
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
    rows = [f"document number {i} says hello to the world" for i in range(100)]
    (root / "data.csv").write_text("text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    (root / "data.xlsx").write_bytes(b"PK\x03\x04")


def jsonl_file(root: Path) -> None:
    lines = [f'{{"text": "document number {i} says hello to the world"}}' for i in range(100)]
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def not_a_run_dir(root: Path) -> None:
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "readme.txt").write_text("just a folder\n", encoding="utf-8")


def duplicate_section_yaml(root: Path) -> None:
    (root / "dup.yaml").write_text(BASE_YAML + "train:\n  max_steps: 5\n", encoding="utf-8")


def duplicate_nested_key_yaml(root: Path) -> None:
    (root / "dupkey.yaml").write_text(BASE_YAML.replace("  max_steps: 2\n", "  max_steps: 2\n  lr: 1.0e-3\n"
                                                        "  max_steps: 3\n"), encoding="utf-8")


def invalid_yaml(root: Path) -> None:
    (root / "broken.yaml").write_text("train: [unclosed\n", encoding="utf-8")


NEWLINE_CONFIG = "run\ntouch PWNED\n#.yaml"  # a file name that would become a shell line in the script


def newline_named_config(root: Path) -> None:
    (root / NEWLINE_CONFIG).write_text(BASE_YAML, encoding="utf-8")


def newline_run_dir_yaml(root: Path) -> None:
    (root / "nl.yaml").write_text(BASE_YAML.replace(f"run_dir: {RUN_DIR}", 'run_dir: "run\\ntouch PWNED"'),
                                  encoding="utf-8")


HOLD_LOCK = """
import sys, time
from gpt2dist.run.lock import RunLock
lock = RunLock(sys.argv[1]); lock.acquire(); print("held", flush=True); time.sleep(600)
"""


def run_dir_in_use(root: Path) -> Callable[[], None]:
    """Another gpt2dist run's rank 0 holding the run dir (its config and tokenizer written, as a real run's are)."""
    (root / RUN_DIR).mkdir()
    (root / RUN_DIR / "config.yaml").write_text(BASE_YAML, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root / RUN_DIR)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"

    def release() -> None:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    return release


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # after `python -m MODULE`
    expect: tuple[str, ...]  # substrings of the one error line
    setup: Callable[[Path], Callable[[], None] | None] | None = None  # may return a cleanup, run after the case
    module: str = "gpt2dist.cli"
    bug: str | None = None  # a known bug (the error comes too late): the case is xfail(strict)


def train(*args: str) -> tuple[str, ...]:
    return ("train", "base.yaml", *args)


def slurm(*args: str, config: str = "base.yaml") -> tuple[str, ...]:
    """`gpt2dist slurm` for 1 CPU node x 1 rank; the cases add one bad value."""
    return ("slurm", config, "--gpus-per-node", "0", "--nproc-per-node", "1", *args)


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
    Case("unsupported-xlsx", train("data.train=[data.xlsx]"), ("data.train", "'.xlsx'"), csv_file),
    Case("csv-wrong-text-field", train("data.train=[data.csv]", "data.text_field=body"),
         ("data.text_field='body'", "data.csv"), csv_file),
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
    # ---- issue 12: one range per numeric key, finite floats (item 9) ----
    Case("lr-nan", train("train.lr=.nan"), ("config key train.lr", "finite number", "nan")),
    Case("lr-inf", train("train.lr=inf"), ("config key train.lr", "finite number")),
    Case("lr-0", train("train.lr=0"), ("config key train.lr must be > 0",)),
    Case("beta1-1.5", train("train.beta1=1.5"), ("config key train.beta1 must be in [0, 1)", "1.5")),
    Case("beta2-negative", train("train.beta2=-3"), ("config key train.beta2 must be in [0, 1)", "-3")),
    Case("n-layer-0", train("model.n_layer=0"), ("config key model.n_layer must be > 0",)),
    Case("n-head-0", train("model.n_head=0"), ("config key model.n_head must be > 0",)),
    Case("dropout-nan", train("model.dropout=.nan"), ("config key model.dropout", "finite number")),
    Case("weights-nan", train("data.weights=[.nan]"), ("config key data.weights", "finite number")),
    Case("seed-negative", train("seed=-1"), ("config key seed must be in [0, ",)),
    Case("fp16-scale-power-200", train("train.fp16_initial_scale_power=200"),
         ("config key train.fp16_initial_scale_power must be in [0, 64]",)),
    Case("grad-clip-negative", train("train.grad_clip=-1"), ("config key train.grad_clip must be >= 0",)),
    Case("keep-last-0", train("checkpoint.keep_last=0"), ("config key checkpoint.keep_last must be > 0",)),
    Case("vocab-size-0", train("tokenizer.vocab_size=0"), ("config key tokenizer.vocab_size must be > 0",)),
    Case("timeout-minutes-0", train("distributed.timeout_minutes=0"), ("distributed.timeout_minutes must be > 0",)),
    # ---- a key given twice in YAML (item 10), and other broken config files ----
    Case("yaml-duplicate-section", ("train", "dup.yaml"), ("dup.yaml", "key train appears twice (lines 10 and 22)"),
         duplicate_section_yaml),
    Case("yaml-duplicate-nested-key", ("train", "dupkey.yaml"),
         ("dupkey.yaml", "key train.max_steps appears twice (lines 11 and 13)"), duplicate_nested_key_yaml),
    Case("override-duplicate-key", train("model={n_layer: 1, n_layer: 2}"), ("key model.n_layer appears twice",)),
    Case("config-invalid-yaml", ("train", "broken.yaml"), ("broken.yaml", "not valid YAML"), invalid_yaml),
    Case("slurm-config-duplicate-section", ("slurm", "dup.yaml", "--gpus-per-node", "0", "--nproc-per-node", "1"),
         ("dup.yaml", "appears twice"), duplicate_section_yaml),
    # ---- values rendered into a Slurm script (item 2) and CPU nodes (item 13) ----
    Case("slurm-newline-in-config-path", slurm(config=NEWLINE_CONFIG), ("the config path", "contains a newline"),
         newline_named_config),
    Case("slurm-newline-in-override", slurm("data.text_field=a\ntouch PWNED"), ("override", "contains a newline")),
    Case("slurm-newline-in-job-name", slurm("--job-name", "x\ntouch PWNED"), ("--job-name", "contains a newline")),
    Case("slurm-cr-in-partition", slurm("--partition", "gpu\r"), ("--partition", "contains a carriage return")),
    Case("slurm-tab-in-account", slurm("--account", "a\tb"), ("--account", "contains a tab")),
    Case("slurm-escape-in-log", slurm("--log", "logs/\x1b[2J%j.out"), ("--log", "control character U+001B")),
    Case("slurm-newline-in-time", slurm("--time", "24:00:00\n"), ("--time", "contains a newline")),
    Case("slurm-newline-in-run-dir", slurm(config="nl.yaml"), ("config key run_dir", "contains a newline"),
         newline_run_dir_yaml),
    Case("slurm-newline-with-output-file", slurm("--job-name", "x\ny", "-o", "job.sbatch"), ("--job-name",)),
    Case("slurm-backslash-in-log", slurm("--log", "logs\\x-%j.out"), ("--log", "backslash")),
    Case("slurm-fp16-on-cpu-nodes", slurm("train.precision=fp16", "train.device=auto"),
         ("train.precision=fp16 needs CUDA GPUs", "--gpus-per-node 0")),
    Case("slurm-cuda-device-on-cpu-nodes", slurm("train.device=cuda"), ("train.device=cuda", "--gpus-per-node 0")),
    # ---- the run dir (item 6) and other entry points ----
    Case("run-dir-in-use", train(), (f"run_dir {RUN_DIR} is in use by another gpt2dist run", "pid "), run_dir_in_use),
    Case("launch-config-missing", ("launch", "nope.yaml", "--nproc", "1"), ("nope.yaml", "not found")),
    Case("ds-config-world-size-0", ("ds-config", "base.yaml", "--world-size", "0"), ("--world-size",)),
    Case("doctor-nodes-0", ("doctor", "base.yaml", "--nodes", "0"), ("--nodes",)),
    Case("plot-not-a-run-dir", ("plot", "not_a_run"), ("not_a_run", "metrics.jsonl"), not_a_run_dir),
]


class WorkspaceWritten(AssertionError):
    """The command wrote files (a run dir, an export) although it failed on its input."""


def snapshot(root: Path) -> dict[str, tuple | None]:
    """Every path under root -> (size, mtime_ns, bytes) of a file, None for a directory: a file created, removed,
    rewritten (even with the same bytes) or touched shows up."""
    return {str(p.relative_to(root)): (None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()))
            for p in sorted(root.rglob("*"))}


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess
    before: dict[str, tuple | None]
    after: dict[str, tuple | None]
    cwd: Path


def run_case(case: Case, root: Path) -> Outcome:
    write_workspace(root)
    cleanup = case.setup(root) if case.setup is not None else None
    try:
        return run_prepared(case, root)
    finally:
        if cleanup is not None:
            cleanup()


def run_prepared(case: Case, root: Path) -> Outcome:
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
                         if outcome.before.get(k, ()) != outcome.after.get(k, ()))
        run_dir_note = (f"run dir {RUN_DIR!r} created although it did not exist"
                        if RUN_DIR not in outcome.before and RUN_DIR in outcome.after else "")
        raise WorkspaceWritten(f"the failed command changed {changed} in {outcome.cwd} {run_dir_note}\n{shown}")


def test_a_config_mistake_fails_before_torch_is_imported(tmp_path):
    """`gpt2dist train` checks the config before importing torch and transformers (5-15 s): the parser and the
    checks import neither, so a typo costs well under a second (a module-level import in gpt2dist/data once made
    every command pay for transformers)."""
    code = ("import sys; from gpt2dist import cli; from gpt2dist.errors import UserError\n"
            "cli.build_parser()\n"
            "try:\n    cli.check_before_torch(sys.argv[1], ['train.lr=-1'])\n"
            "except UserError as exc:\n    refused = str(exc)\nelse:\n    refused = 'NOT REFUSED'\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'deepspeed') if m in sys.modules)\n"
            "print(refused); print(' '.join(heavy))")
    train = tmp_path / "train.txt"
    train.write_text("some text\n")
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  train: [{train}]\n")
    proc = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, check=False)
    refused, heavy = (proc.stdout.splitlines() + ["", ""])[:2]
    assert proc.returncode == 0 and "train.lr" in refused, f"the bad value was not refused: {proc.stdout} {proc.stderr}"
    assert heavy.strip() == "", f"imported before the check failed: {heavy}"
