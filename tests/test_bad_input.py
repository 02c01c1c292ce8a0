"""Bad input through the real command line: every case must exit 2 with ONE line `error: ...` naming the key or
file, print no traceback, and write nothing -- in particular no run dir -- before the error.

Each case is its own `python -m gpt2dist.cli ...` (or `python -m gpt2dist.train ...`) process in its own copy of a
tiny workspace, with its own exit code, stdout and stderr. They are forked by one harness (tests/cli_fork.py) that
imported torch, transformers and the trainer once, so the cases that reach the trainer's, eval's or export's own
checks no longer pay ~5 s of imports each: the table runs in about a minute on 2 busy cores, and it is part of
the fast loop (`-m "not slow"`). A module fixture sets up and runs the selected cases; each test checks its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

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
    Case("pretrained-without-config-json", train("model.pretrained=hf_model", "tokenizer.kind=pretrained"),
         ("hf_model", "config.json"), model_folder_without_config),
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


# ---- issue 23: hostile or broken files and nonsense values. Siblings were found by taking each reported input
# and varying it along every axis the same reader or check has (each config section's numeric keys at 0, -1,
# NaN and 1e300; every file format a command reads: empty, truncated, garbage, valid-but-wrong-schema; every
# subcommand's numeric flags) ----

def write(root: Path, name: str, data: bytes | str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def yaml_deep(root: Path) -> None:
    write(root, "deep.yaml", "a: " + "[" * 20000 + "]" * 20000 + "\n")


def yaml_deep_mapping(root: Path) -> None:
    write(root, "deepmap.yaml", "".join(f"{'  ' * i}k{i}:\n" for i in range(3000)) + "  " * 3000 + "x: 1\n")


def yaml_non_utf8(root: Path) -> None:
    write(root, "latin.yaml", BASE_YAML.encode() + b"# caf\xe9\n")


def yaml_python_tag(root: Path) -> None:
    write(root, "tag.yaml", BASE_YAML + "extra: !!python/object/apply:os.system ['touch PWNED']\n")


def yaml_bomb(root: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 9)]
    write(root, "bomb.yaml", "\n".join(lines) + "\n")


def yaml_empty(root: Path) -> None:
    write(root, "empty.yaml", "")


def yaml_scalar(root: Path) -> None:
    write(root, "scalar.yaml", "just a string\n")


def yaml_nul(root: Path) -> None:
    write(root, "nul.yaml", BASE_YAML.encode() + b"\x00\n")


def yaml_tabs(root: Path) -> None:
    write(root, "tabs.yaml", "train:\n\tmax_steps: 2\n")


def yaml_section_scalar(root: Path) -> None:
    write(root, "section.yaml", BASE_YAML.replace("checkpoint:\n  every: 0\n", "checkpoint: 5\n"))


def config_dir(root: Path) -> None:
    (root / "conf.yaml").mkdir()


def jsonl_malformed(root: Path) -> None:
    write(root, "bad.jsonl", '{"text": "fine line of text here"}\n{"text": "broken\n' + '{"text": "ok"}\n' * 50)


def jsonl_not_objects(root: Path) -> None:
    write(root, "list.jsonl", "[1, 2, 3]\n" * 50)


def jsonl_empty(root: Path) -> None:
    write(root, "empty.jsonl", "")


def parquet_corrupt(root: Path) -> None:
    write(root, "bad.parquet", b"PAR1" + b"\x00garbage" * 100 + b"PAR1")


def parquet_truncated(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"document {i} with some words" for i in range(200)]}), root / "full.parquet")
    data = (root / "full.parquet").read_bytes()
    (root / "full.parquet").unlink()
    write(root, "cut.parquet", data[: len(data) // 2])


def parquet_no_text_column(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": [f"document {i}" for i in range(50)]}), root / "body.parquet")


def tokenizer_folder(root: Path, files: dict[str, str | bytes]) -> None:
    for name, data in files.items():
        write(root, f"tok/{name}", data)


TOK_CONFIG = '{"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}'


def tokenizer_json_garbage(root: Path) -> None:
    tokenizer_folder(root, {"tokenizer.json": "this is not json {", "tokenizer_config.json": TOK_CONFIG})


def tokenizer_json_wrong_schema(root: Path) -> None:
    tokenizer_folder(root, {"tokenizer.json": '{"model": {"type": "Nonsense"}}', "tokenizer_config.json": TOK_CONFIG})


def tokenizer_json_binary(root: Path) -> None:
    tokenizer_folder(root, {"tokenizer.json": bytes(range(256)) * 4, "tokenizer_config.json": TOK_CONFIG})


def tokenizer_merges_garbage(root: Path) -> None:
    tokenizer_folder(root, {"vocab.json": '{"a": 0, "b": 1}', "merges.txt": "#version: 0.2\nzz qq rr\n\x00\x01\n",
                            "tokenizer_config.json": '{"tokenizer_class": "GPT2Tokenizer"}'})


def tokenizer_vocab_garbage(root: Path) -> None:
    tokenizer_folder(root, {"vocab.json": "[1, 2", "merges.txt": "#version: 0.2\n",
                            "tokenizer_config.json": '{"tokenizer_class": "GPT2Tokenizer"}'})


def tokenizer_config_garbage(root: Path) -> None:
    tokenizer_folder(root, {"tokenizer_config.json": "{not json"})


def tokenizer_class_remote(root: Path) -> None:
    tokenizer_folder(root, {"tokenizer_config.json": '{"tokenizer_class": "EvilTokenizer", "auto_map": '
                                                    '{"AutoTokenizer": ["evil.EvilTokenizer", null]}}'})


MODEL_CONFIG = ('{"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 8, "n_positions": 64, '
                '"vocab_size": 300, "architectures": ["GPT2LMHeadModel"]}')


def model_folder(root: Path, files: dict[str, str | bytes], name: str = "hf") -> None:
    for file, data in files.items():
        write(root, f"{name}/{file}", data)


def safetensors_bytes(shapes: dict[str, tuple[int, ...]]) -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save({k: np.zeros(v, dtype=np.float32) for k, v in shapes.items()}, metadata={"format": "pt"})


def gpt2_shapes(vocab: int, n_embd: int = 8, n_positions: int = 64) -> dict[str, tuple[int, ...]]:
    """Every tensor of a 1-layer GPT2LMHeadModel (lm_head tied), by name and shape (transformers' Conv1D)."""
    e = n_embd
    return {"transformer.wte.weight": (vocab, e), "transformer.wpe.weight": (n_positions, e),
            "transformer.h.0.ln_1.weight": (e,), "transformer.h.0.ln_1.bias": (e,),
            "transformer.h.0.attn.c_attn.weight": (e, 3 * e), "transformer.h.0.attn.c_attn.bias": (3 * e,),
            "transformer.h.0.attn.c_proj.weight": (e, e), "transformer.h.0.attn.c_proj.bias": (e,),
            "transformer.h.0.ln_2.weight": (e,), "transformer.h.0.ln_2.bias": (e,),
            "transformer.h.0.mlp.c_fc.weight": (e, 4 * e), "transformer.h.0.mlp.c_fc.bias": (4 * e,),
            "transformer.h.0.mlp.c_proj.weight": (4 * e, e), "transformer.h.0.mlp.c_proj.bias": (e,),
            "transformer.ln_f.weight": (e,), "transformer.ln_f.bias": (e,)}


def model_config_garbage(root: Path) -> None:
    model_folder(root, {"config.json": "{broken", "model.safetensors": b"x"})


def model_config_wrong_type(root: Path) -> None:
    model_folder(root, {"config.json": '{"model_type": "bert", "vocab_size": 10}', "model.safetensors": b"x"})


def model_config_not_object(root: Path) -> None:
    model_folder(root, {"config.json": "[1, 2, 3]", "model.safetensors": b"x"})


def safetensors_truncated(root: Path) -> None:
    data = safetensors_bytes({"transformer.wte.weight": (300, 8)})
    model_folder(root, {"config.json": MODEL_CONFIG, "model.safetensors": data[: len(data) // 2]})


def safetensors_huge_header(root: Path) -> None:
    import struct

    model_folder(root, {"config.json": MODEL_CONFIG, "model.safetensors": struct.pack("<Q", 1 << 62) + b"{}"})


def safetensors_garbage_header(root: Path) -> None:
    import struct

    model_folder(root, {"config.json": MODEL_CONFIG, "model.safetensors": struct.pack("<Q", 12) + b"not json!!!!"})


def safetensors_wrong_shape(root: Path) -> None:
    model_folder(root, {"config.json": MODEL_CONFIG,
                        "model.safetensors": safetensors_bytes({"transformer.wte.weight": (7, 3)})})


def safetensors_empty(root: Path) -> None:
    model_folder(root, {"config.json": MODEL_CONFIG, "model.safetensors": b""})


def export_folder_hostile_provenance(root: Path, provenance: str) -> None:
    valid_export(root)
    write(root, "hf/gpt2dist_export.json", provenance)


def provenance_not_json(root: Path) -> None:
    export_folder_hostile_provenance(root, "{nope")


def provenance_block_size_string(root: Path) -> None:
    export_folder_hostile_provenance(root, '{"block_size": "lots"}')


def provenance_block_size_huge(root: Path) -> None:
    export_folder_hostile_provenance(root, '{"block_size": 1e300}')


def provenance_not_object(root: Path) -> None:
    export_folder_hostile_provenance(root, "[32]")


def fake_step_dir(root: Path) -> None:
    """What a user passes by mistake: a checkpoint step dir, not an export (its files as gpt2dist writes them)."""
    step = root / "run" / "checkpoints" / "step-00000002"
    model_folder(root, {"config.json": MODEL_CONFIG, "train_state.json": '{"step": 2, "tokens": 64}',
                        "manifest.json": '{"step": 2, "files": {}}', "model.safetensors": b"x",
                        "cursor-rank00000.json": "{}"}, name=str(step.relative_to(root)))


def run_dir_with_config(root: Path) -> None:
    """Another run's dir: what `prepare` must not write its tokenizer into."""
    (root / "other").mkdir()
    (root / "other" / "config.yaml").write_text(BASE_YAML, encoding="utf-8")
    (root / "other" / "tokenizer").mkdir()
    (root / "other" / "tokenizer" / "tokenizer.json").write_text("{}", encoding="utf-8")


def planted_link(name: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        (root / RUN_DIR).mkdir()
        (root / "victim.txt").write_text("precious\n", encoding="utf-8")
        (root / RUN_DIR / name).symlink_to(root / "victim.txt")
    return setup


def packed_prepared(root: Path, damage: str) -> None:
    """A real `gpt2dist prepare` output (in process: tokenizing 200 lines is instant), then damaged."""
    import json

    from gpt2dist.config import load_config
    from gpt2dist.data.prepare import prepare

    # absolute paths, no chdir: the cases are set up in threads sharing one working directory
    prepare(load_config(root / "base.yaml", ["data.format=packed", f"data.packed_dir={root / 'packed'}",
                                             f"data.train=[{root / 'train.txt'}]", f"run_dir={root / RUN_DIR}"]),
            workers=1, progress=False)
    shard = sorted((root / "packed" / "shards").glob("*.train.bin"))[0]
    manifest = root / "packed" / "manifest.json"
    if damage == "truncated-shard":
        shard.write_bytes(shard.read_bytes()[:-6])
    elif damage == "rewritten-shard":
        data = bytearray(shard.read_bytes())
        data[10:20] = bytes(10)
        shard.write_bytes(bytes(data))
    elif damage == "manifest-garbage":
        manifest.write_text("{nope", encoding="utf-8")
    elif damage == "manifest-tokens-lie":
        meta = json.loads(manifest.read_text())
        for entry in meta["files"].values():
            for part in entry["parts"].values():
                part["tokens"] += 1000
        manifest.write_text(json.dumps(meta), encoding="utf-8")


def packed(damage: str) -> Callable[[Path], None]:
    return lambda root: packed_prepared(root, damage)


PACKED = ("data.format=packed", "data.packed_dir=packed")


def gen(*args: str) -> tuple[str, ...]:
    return ("generate", "--model", "hf", *args)


def evl(*args: str) -> tuple[str, ...]:
    return ("eval", "--model", "hf", "--data", "train.txt", *args)


def valid_export(root: Path) -> None:
    """A loadable tiny HF folder (zero weights), written without transformers (its lazy imports are not
    thread-safe, and the cases are set up in threads): a word-level tokenizer, config.json, safetensors."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(["the", "cat", "sat", "on", "a"])}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (root / "hf").mkdir(exist_ok=True)
    tok.save(str(root / "hf" / "tokenizer.json"))
    config = MODEL_CONFIG.replace('"vocab_size": 300', f'"vocab_size": {len(vocab)}').replace(
        "}", ', "bos_token_id": 0, "eos_token_id": 0}')
    model_folder(root, {"config.json": config, "tokenizer_config.json": TOK_CONFIG,
                        "model.safetensors": safetensors_bytes(gpt2_shapes(len(vocab)))})


ISSUE23_CASES = [
    # -- YAML --
    Case("yaml-deeply-nested", ("train", "deep.yaml"), ("deep.yaml",), yaml_deep),
    Case("yaml-deeply-nested-mapping", ("train", "deepmap.yaml"), ("deepmap.yaml",), yaml_deep_mapping),
    Case("yaml-non-utf8", ("train", "latin.yaml"), ("latin.yaml", "UTF-8"), yaml_non_utf8),
    Case("yaml-python-tag", ("train", "tag.yaml"), ("tag.yaml",), yaml_python_tag),
    Case("yaml-alias-bomb", ("train", "bomb.yaml"), ("unknown config key a0",), yaml_bomb),
    Case("yaml-empty", ("train", "empty.yaml"), ("data.train is empty",), yaml_empty),
    Case("yaml-scalar", ("train", "scalar.yaml"), ("scalar.yaml", "mapping"), yaml_scalar),
    Case("yaml-nul-byte", ("train", "nul.yaml"), ("nul.yaml",), yaml_nul),
    Case("yaml-tabs", ("train", "tabs.yaml"), ("tabs.yaml",), yaml_tabs),
    Case("yaml-section-not-mapping", ("train", "section.yaml"), ("checkpoint",), yaml_section_scalar),
    Case("config-is-a-directory", ("train", "conf.yaml"), ("conf.yaml",), config_dir),
    Case("slurm-yaml-non-utf8", slurm(config="latin.yaml"), ("latin.yaml",), yaml_non_utf8),
    Case("config-command-yaml-deep", ("config", "deep.yaml"), ("deep.yaml",), yaml_deep),
    Case("ds-config-yaml-tag", ("ds-config", "tag.yaml"), ("tag.yaml",), yaml_python_tag),
    # -- data files --
    Case("jsonl-malformed-line", train("data.train=[bad.jsonl]"), ("bad.jsonl",), jsonl_malformed),
    Case("jsonl-not-objects", train("data.train=[list.jsonl]"), ("list.jsonl",), jsonl_not_objects),
    Case("jsonl-empty", train("data.train=[empty.jsonl]"), ("empty.jsonl",), jsonl_empty),
    Case("parquet-corrupt", train("data.train=[bad.parquet]"), ("bad.parquet",), parquet_corrupt),
    Case("parquet-truncated", train("data.train=[cut.parquet]"), ("cut.parquet",), parquet_truncated),
    Case("parquet-no-text-column", train("data.train=[body.parquet]"), ("body.parquet", "text"),
         parquet_no_text_column),
    Case("data-train-is-a-directory", train("data.train=[corpusdir]"), ("corpusdir",),
         lambda root: (root / "corpusdir").mkdir()),
    Case("eval-jsonl-malformed", ("eval", "--model", "hf", "--data", "bad.jsonl"), ("bad.jsonl",),
         lambda root: (valid_export(root), jsonl_malformed(root))[-1]),
    Case("eval-parquet-corrupt", ("eval", "--model", "hf", "--data", "bad.parquet"), ("bad.parquet",),
         lambda root: (valid_export(root), parquet_corrupt(root))[-1]),
    Case("prepare-jsonl-malformed", ("prepare", "base.yaml", "data.train=[bad.jsonl]", *PACKED[1:]), ("bad.jsonl",),
         jsonl_malformed),
    # -- tokenizer files --
    Case("tokenizer-json-garbage", train("tokenizer.kind=pretrained", "tokenizer.path=tok"), ("tok",),
         tokenizer_json_garbage),
    Case("tokenizer-json-wrong-schema", train("tokenizer.kind=pretrained", "tokenizer.path=tok"), ("tok",),
         tokenizer_json_wrong_schema),
    Case("tokenizer-json-binary", train("tokenizer.kind=pretrained", "tokenizer.path=tok"), ("tok",),
         tokenizer_json_binary),
    Case("tokenizer-merges-garbage", train("tokenizer.kind=pretrained", "tokenizer.path=tok"), ("tok",),
         tokenizer_merges_garbage),
    Case("tokenizer-vocab-garbage", train("tokenizer.kind=pretrained", "tokenizer.path=tok"), ("tok",),
         tokenizer_vocab_garbage),
    Case("tokenizer-config-garbage", train("tokenizer.kind=pretrained", "tokenizer.path=tok"), ("tok",),
         tokenizer_config_garbage),
    Case("tokenizer-remote-code-class", train("tokenizer.kind=pretrained", "tokenizer.path=tok"), ("tok",),
         tokenizer_class_remote),
    Case("prepare-tokenizer-json-garbage", ("prepare", "base.yaml", "tokenizer.kind=pretrained", "tokenizer.path=tok",
                                            *PACKED[1:]), ("tok",), tokenizer_json_garbage),
    # -- model folders and safetensors --
    Case("model-config-garbage", train("model.pretrained=hf"), ("hf",), model_config_garbage),
    Case("model-config-not-gpt2", train("model.pretrained=hf"), ("hf",), model_config_wrong_type),
    Case("model-config-not-object", train("model.pretrained=hf"), ("hf",), model_config_not_object),
    Case("generate-safetensors-truncated", gen(), ("hf",), safetensors_truncated),
    Case("generate-safetensors-huge-header", gen(), ("hf",), safetensors_huge_header),
    Case("generate-safetensors-garbage-header", gen(), ("hf",), safetensors_garbage_header),
    Case("generate-safetensors-wrong-shape", gen(), ("hf",), safetensors_wrong_shape),
    Case("generate-safetensors-empty", gen(), ("hf",), safetensors_empty),
    Case("eval-safetensors-truncated", evl(), ("hf",), safetensors_truncated),
    Case("eval-safetensors-huge-header", evl(), ("hf",), safetensors_huge_header),
    Case("eval-safetensors-wrong-shape", evl(), ("hf",), safetensors_wrong_shape),
    Case("eval-model-config-garbage", evl(), ("hf",), model_config_garbage),
    Case("generate-model-config-not-gpt2", gen(), ("hf",), model_config_wrong_type),
    # -- export provenance (gpt2dist_export.json) --
    Case("eval-provenance-not-json", evl(), ("gpt2dist_export.json",), provenance_not_json),
    Case("eval-provenance-block-size-string", evl(), ("gpt2dist_export.json", "block_size"),
         provenance_block_size_string),
    Case("eval-provenance-block-size-huge", evl(), ("gpt2dist_export.json", "block_size"), provenance_block_size_huge),
    Case("eval-provenance-not-object", evl(), ("gpt2dist_export.json",), provenance_not_object),
    # -- a checkpoint step dir given where an export is expected --
    Case("generate-step-dir", ("generate", "--model", "run/checkpoints/step-00000002"),
         ("step-00000002", "gpt2dist export"), fake_step_dir),
    Case("eval-step-dir", ("eval", "--model", "run/checkpoints/step-00000002", "--data", "train.txt"),
         ("step-00000002", "gpt2dist export"), fake_step_dir),
    Case("generate-run-dir", ("generate", "--model", "run"), ("run", "gpt2dist export"), fake_step_dir),
    # -- packed shards --
    Case("packed-shard-truncated", train(*PACKED), ("packed", "prepare"), packed("truncated-shard")),
    Case("packed-shard-rewritten", train(*PACKED), ("packed", "prepare"), packed("rewritten-shard")),
    Case("packed-manifest-garbage", train(*PACKED), ("manifest.json",), packed("manifest-garbage")),
    Case("packed-manifest-token-count-lies", train(*PACKED), ("packed", "prepare"), packed("manifest-tokens-lie")),
    # -- planted links in the run dir --
    Case("run-dir-linked-lock", train(), (".lock", "symbolic link"), planted_link(".lock")),
    Case("run-dir-linked-status", train(), ("status.json", "symbolic link"), planted_link("status.json")),
    Case("run-dir-linked-metrics", train(), ("metrics.jsonl", "symbolic link"), planted_link("metrics.jsonl")),
    Case("run-dir-linked-checkpoints", train(), ("run/checkpoints",), planted_link("checkpoints")),
    Case("prepare-into-another-run-dir", ("prepare", "base.yaml", "data.packed_dir=other"),
         ("data.packed_dir other", "run's dir"), run_dir_with_config),
    Case("prepare-workers-0", ("prepare", "base.yaml", "--workers", "0"), ("--workers",)),
    Case("prepare-workers-negative", ("prepare", "base.yaml", "--workers", "-3"), ("--workers",)),
    # -- values that pass a type check but make no sense --
    Case("generate-temperature-nan", gen("--temperature", "nan"), ("--temperature",), valid_export),
    Case("generate-temperature-inf", gen("--temperature", "inf"), ("--temperature",), valid_export),
    Case("generate-top-p-nan", gen("--top-p", "nan"), ("--top-p",), valid_export),
    Case("generate-max-new-tokens-0", gen("--max-new-tokens", "0"), ("--max-new-tokens",), valid_export),
    Case("generate-num-samples-0", gen("--num-samples", "0"), ("--num-samples",), valid_export),
    Case("generate-top-k-negative", gen("--top-k", "-1"), ("--top-k",), valid_export),
    Case("generate-seed-negative", gen("--seed", "-1"), ("--seed",), valid_export),
    Case("eval-block-size-0", evl("--block-size", "0"), ("--block-size",), valid_export),
    Case("eval-block-size-negative", evl("--block-size", "-5"), ("--block-size",), valid_export),
    Case("eval-block-size-over-positions", evl("--block-size", "5000"), ("--block-size",), valid_export),
    Case("eval-batch-size-0", evl("--batch-size", "0"), ("--batch-size",), valid_export),
    Case("eval-max-batches-0", evl("--max-batches", "0"), ("--max-batches",), valid_export),
    Case("bpe-vocab-size-1", train("tokenizer.kind=bpe", "tokenizer.vocab_size=1"), ("tokenizer.vocab_size",)),
    Case("bpe-vocab-size-huge", train("tokenizer.kind=bpe", "tokenizer.vocab_size=10000000000"),
         ("tokenizer.vocab_size",)),
    Case("weight-decay-1e300", train("train.weight_decay=1e300"), ("train.weight_decay",)),
    Case("weight-decay-negative", train("train.weight_decay=-0.1"), ("train.weight_decay",)),
    Case("grad-clip-1e300", train("train.grad_clip=1e300"), ("train.grad_clip",)),
    Case("timeout-minutes-1e12", train("distributed.timeout_minutes=1e12"), ("distributed.timeout_minutes",)),
    Case("min-lr-over-lr", train("train.lr=1e-4", "train.min_lr=1"), ("train.min_lr",)),
    Case("min-lr-negative", train("train.min_lr=-1"), ("train.min_lr",)),
    Case("max-steps-0", train("train.max_steps=0"), ("train.max_steps",)),
    Case("max-steps-negative", train("train.max_steps=-5"), ("train.max_steps",)),
    Case("max-steps-bool", train("train.max_steps=true"), ("train.max_steps",)),
    Case("max-steps-float", train("train.max_steps=2.5"), ("train.max_steps",)),
    Case("warmup-negative", train("train.warmup_steps=-1"), ("train.warmup_steps",)),
    Case("log-every-0", train("train.log_every=0"), ("train.log_every",)),
    Case("eval-every-negative", train("train.eval_every=-1"), ("train.eval_every",)),
    Case("eval-batches-0", train("train.eval_batches=0"), ("train.eval_batches",)),
    Case("checkpoint-every-negative", train("checkpoint.every=-1"), ("checkpoint.every",)),
    Case("max-bad-steps-negative", train("train.max_bad_steps=-1"), ("train.max_bad_steps",)),
    Case("n-embd-0", train("model.n_embd=0"), ("model.n_embd",)),
    Case("n-embd-not-divisible-by-heads", train("model.n_embd=65", "model.n_head=2"), ("model.n_embd",)),
    Case("dropout-1.5", train("model.dropout=1.5"), ("model.dropout",)),
    Case("block-size-0", train("data.block_size=0"), ("data.block_size",)),
    Case("block-size-negative", train("data.block_size=-32"), ("data.block_size",)),
    Case("num-workers-5", train("data.num_workers=5"), ("data.num_workers",)),
    Case("val-fraction-negative", train("data.val_fraction=-0.1"), ("data.val_fraction",)),
    Case("global-batch-negative", train("train.global_batch_size=-4"), ("train.global_batch_size",)),
    Case("zero-stage-negative", train("distributed.zero_stage=-1"), ("distributed.zero_stage",)),
    Case("device-tpu", train("train.device=tpu"), ("train.device",)),
    Case("precision-fp8", train("train.precision=fp8"), ("train.precision",)),
    Case("backend-unknown", train("distributed.backend=mpi2"), ("distributed.backend",)),
    Case("preset-unknown", train("model.preset=huge"), ("model.preset",)),
    Case("tokenizer-kind-unknown", train("tokenizer.kind=wordpiece"), ("tokenizer.kind",)),
    Case("data-format-unknown", train("data.format=csv"), ("data.format",)),
    Case("progress-unknown", train("logging.progress=maybe"), ("logging.progress",)),
    Case("seed-string", train("seed=abc"), ("seed",)),
    Case("seed-float", train("seed=1.5"), ("seed",)),
    Case("resume-not-bool", train("train.resume=maybe"), ("train.resume",)),
    Case("unknown-section", train("foo.bar=1"), ("foo",)),
    Case("data-train-empty-list", train("data.train=[]"), ("data.train",)),
    Case("run-dir-empty-string", train("run_dir="), ("run_dir",)),
    Case("section-replaced-by-scalar", train("train=5"), ("train",)),
    # -- other subcommands' numbers --
    Case("launch-nproc-negative", ("launch", "base.yaml", "--nproc", "-1"), ("--nproc",)),
    Case("slurm-nodes-0", slurm("--nodes", "0"), ("--nodes",)),
    Case("slurm-signal-grace-negative", slurm("--signal-grace", "-5"), ("--signal-grace",)),
    Case("slurm-max-restarts-negative", slurm("--max-restarts", "-1"), ("--max-restarts",)),
    Case("slurm-cpus-per-task-0", slurm("--cpus-per-task", "0"), ("--cpus-per-task",)),
    Case("slurm-gpus-per-node-negative", ("slurm", "base.yaml", "--gpus-per-node", "-1"), ("--gpus-per-node",)),
    Case("ds-config-world-size-negative", ("ds-config", "base.yaml", "--world-size", "-2"), ("--world-size",)),
    Case("doctor-gpu-mem-negative", ("doctor", "base.yaml", "--gpu-mem", "-1"), ("--gpu-mem",)),
    Case("export-out-is-a-file", ("export", "run", "train.txt"), ("train.txt",), fake_step_dir),
    Case("plot-metrics-garbage", ("plot", "pr"), ("metrics.jsonl",),
         lambda root: write(root, "pr/metrics.jsonl", "\x00\x01 not json\n{]\n")),
]
CASES += ISSUE23_CASES

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


CASE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONUNBUFFERED": "1"}
# What the cases import between them (the trainer, eval/generate, export, prepare, doctor, Slurm): imported once in
# the harness instead of ~5 s in every case that reaches torch. gpt2dist.cli itself is run fresh as __main__.
PRELOAD = ["gpt2dist.train", "gpt2dist.evaluate", "gpt2dist.generate", "gpt2dist.run.export",
           "gpt2dist.data.prepare", "gpt2dist.planning.doctor", "gpt2dist.planning.scaling", "gpt2dist.config.docs",
           "gpt2dist.launcher.slurm", "gpt2dist.launcher.ds_config", "gpt2dist.launcher.local",
           "gpt2dist.observe.plot"]


def prepare_case(case: Case, root: Path) -> Callable[[], None] | None:
    write_workspace(root)
    return case.setup(root) if case.setup is not None else None


def run_cases(cases: list[Case], roots: dict[str, Path], work: Path) -> dict[str, subprocess.CompletedProcess]:
    """Each case as its own `python -m MODULE ARGS` process in its folder, forked by one harness that imported the
    heavy modules once (tests/cli_fork.py); one running case per CPU core (each is CPU-bound)."""
    jobs = [{"id": case.id, "module": case.module, "args": list(case.args), "cwd": str(roots[case.id]),
             "stdout": str(work / f"{case.id}.out"), "stderr": str(work / f"{case.id}.err")} for case in cases]
    spec = {"workers": max(1, min(8, os.cpu_count() or 1)), "timeout_s": CASE_TIMEOUT_S, "preload": PRELOAD,
            "jobs": jobs, "results": str(work / "results.json"), "preload_output": str(work / "preload.txt")}
    (work / "jobs.json").write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, **CASE_ENV}
    env.pop("WORLD_SIZE", None)
    harness = subprocess.run([sys.executable, str(Path(__file__).with_name("cli_fork.py")), str(work / "jobs.json")],
                             cwd=work, env=env, capture_output=True, text=True, check=False,
                             timeout=CASE_TIMEOUT_S * 2 + 5 * len(jobs))  # a backstop: each case has its own
    assert harness.returncode == 0, f"the harness failed:\n{harness.stdout}\n{harness.stderr}"
    printed = (work / "preload.txt").read_text(errors="replace")
    assert not printed, f"importing {PRELOAD} printed (every case that imports them would show it):\n{printed}"
    results = json.loads((work / "results.json").read_text())
    codes = results["exit"]
    slowest = sorted(results["seconds"].items(), key=lambda kv: -kv[1])[:10]
    print("slowest cases: " + ", ".join(f"{case_id} {s:.1f}s" for case_id, s in slowest))
    procs = {}
    for job in jobs:
        out, err = (Path(job[k]).read_text(encoding="utf-8", errors="replace") for k in ("stdout", "stderr"))
        code = codes[job["id"]]
        if code == -signal.SIGALRM:  # reported by this case's test, not as an error of every case
            err += f"\n[killed after {CASE_TIMEOUT_S} s]"
        procs[job["id"]] = subprocess.CompletedProcess(["python", "-m", job["module"], *job["args"]], code, out, err)
    return procs


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """Set up the selected cases' workspaces (concurrently: most is file writing), run them all, then snapshot."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params}
    cases = [case for case in CASES if case.id in selected]
    roots = {case.id: tmp_path_factory.mktemp(case.id) for case in cases}
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        cleanups = list(pool.map(lambda case: prepare_case(case, roots[case.id]), cases))
    try:
        before = {case.id: snapshot(roots[case.id]) for case in cases}
        procs = run_cases(cases, roots, tmp_path_factory.mktemp("harness"))
        return {case.id: Outcome(procs[case.id], before[case.id], snapshot(roots[case.id]), roots[case.id])
                for case in cases}
    finally:
        for cleanup in cleanups:
            if cleanup is not None:
                cleanup()


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
