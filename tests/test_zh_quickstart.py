"""README.zh-CN.md, run as written (issue 25): a BERT-vocabulary Chinese GPT-2 fine-tuned on a folder of Chinese
text files, exported, sampled and evaluated -- with the network made impossible and no HF_*_OFFLINE set.

Every CLI process runs with a `sitecustomize` socket guard that records and refuses any connection or name lookup
that is not loopback (a control run shows the guard catches `datasets.load_dataset` on a local file). One run
is shared by the assertions; the model is 2 layers x 32 wide.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_fork import WarmCli
from zh_text import TEXTS, bert_gpt2, write_zh_files

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
README_ZH = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
SHORT = ["train.max_steps=4", "train.eval_every=4", "checkpoint.every=4", "train.log_every=2"]  # a few steps

GUARD = '''
import os, socket

_log = os.environ["NET_GUARD_LOG"]
_local = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname()}
try:
    _local |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
except OSError:
    pass


def _refuse(what):
    with open(_log, "a", encoding="utf-8") as fh:
        fh.write(what + "\\n")
    raise OSError("network disabled by the test's socket guard: " + what)


def _host(address):
    return address[0] if isinstance(address, tuple) else address


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):
    if self.family != getattr(socket, "AF_UNIX", None) and _host(address) not in _local \\
            and not str(_host(address)).startswith("127."):
        _refuse(f"connect {address}")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family != getattr(socket, "AF_UNIX", None) and _host(address) not in _local \\
            and not str(_host(address)).startswith("127."):
        _refuse(f"connect_ex {address}")
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host not in _local and not str(host).startswith("127."):
        _refuse(f"getaddrinfo {host}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


def guarded_env(guard_dir: Path) -> dict[str, str]:
    """The session's environment without any HF_*OFFLINE switch, with the socket guard loaded at start-up."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith(("HF_", "TRANSFORMERS_")) and "OFFLINE" in k)}
    env.update(PYTHONPATH=os.pathsep.join([str(guard_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               NET_GUARD_LOG=str(guard_dir / "refused.log"), PYTHONUNBUFFERED="1")
    return env


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout, check=False)


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README_ZH, flags=re.S)


@pytest.fixture(scope="module")
def guard_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("guard")
    (folder / "sitecustomize.py").write_text(GUARD, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, guard_dir: Path) -> dict:
    """The README's set-up (a local Chinese GPT-2 folder, a corpus directory, zh-finetune.yaml), then every
    command of its bash blocks in order; the install line is the English README's (run by test_train_e2e)."""
    work = tmp_path_factory.mktemp("zh")
    bert_gpt2(work / "models" / "gpt2-chinese", n_positions=128)
    write_zh_files(work / "corpus", 300)
    (work / "zh-finetune.yaml").write_text(blocks("yaml")[0], encoding="utf-8")
    env = guarded_env(guard_dir)
    # each command its own process, forked from one that started with this environment (so with the socket guard)
    # and imported the trainer, export and generate once (tests/cli_fork.py): ~5 s of imports less per command
    warm = WarmCli(tmp_path_factory.mktemp("warm-cli"), ["gpt2dist.train", "gpt2dist.run.export", "gpt2dist.generate",
                                                         "gpt2dist.evaluate"], env=env)
    results = {}
    for block in blocks("bash"):
        for line in block.strip().splitlines():
            if line.startswith("pip install"):
                results[line] = None
                continue
            args = shlex.split(line)
            assert args[0] == "gpt2dist", line
            if args[1] == "demo":
                results[line] = None  # the same command as README.md's, which test_train_e2e runs
                continue
            extra = SHORT if args[1] == "train" else []
            start = time.perf_counter()
            results[line] = warm.run(*args[1:], *extra, cwd=work, check=False)
            print(f"{time.perf_counter() - start:.1f}s {line}")
    warm.close()
    return {"work": work, "env": env, "results": results}


def test_every_command_runs(quickstart: dict) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line, proc in quickstart["results"].items():
        if proc is None:
            assert line in readme, line
            continue
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, line
    assert len([p for p in quickstart["results"].values() if p is not None]) == 5


def test_no_network_was_touched(quickstart: dict, guard_dir: Path) -> None:
    log = guard_dir / "refused.log"
    assert not log.exists() or not log.read_text(encoding="utf-8").strip(), log.read_text(encoding="utf-8")
    assert "HF_DATASETS_OFFLINE" not in quickstart["env"] and "HF_HUB_OFFLINE" not in quickstart["env"]


def test_guard_catches_what_the_old_reader_did(quickstart: dict, guard_dir: Path, tmp_path: Path) -> None:
    """Control: `datasets.load_dataset` on one local .txt (gpt2dist's reader before issue 25) asks the hub."""
    env = {**quickstart["env"], "NET_GUARD_LOG": str(tmp_path / "control.log")}
    code = ("import datasets, sys; ds = datasets.load_dataset('text', data_files=[sys.argv[1]], split='train', "
            "streaming=True); print(sum(1 for _ in ds))")
    proc = run([sys.executable, "-c", code, str(quickstart["work"] / "corpus" / "part0" / "00000.txt")],
               tmp_path, env)
    assert "getaddrinfo" in (tmp_path / "control.log").read_text(encoding="utf-8"), proc.stderr[-2000:]


def test_the_vocabulary_is_untouched(quickstart: dict) -> None:
    work = quickstart["work"]
    original, export = work / "models" / "gpt2-chinese", work / "runs" / "zh" / "export"
    vocab = (original / "vocab.txt").read_text(encoding="utf-8").splitlines()
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(str(export), local_files_only=True)
    assert exported.convert_ids_to_tokens(list(range(len(exported)))) == vocab
    config = json.loads((export / "config.json").read_text(encoding="utf-8"))
    assert config["vocab_size"] == len(vocab)  # no token added, no resize
    sep = vocab.index("[SEP]")
    assert config["eos_token_id"] == config["bos_token_id"] == sep  # the tokenizer's ids, not 50256
    assert config["pad_token_id"] == vocab.index("[PAD]")
    from safetensors import safe_open

    with safe_open(str(export / "model.safetensors"), "pt") as fh:
        assert fh.get_slice("transformer.wte.weight").get_shape()[0] == len(vocab)
    log = (work / "runs" / "zh" / "train.log") if (work / "runs" / "zh" / "train.log").exists() else None
    train = next(p for line, p in quickstart["results"].items() if p is not None and " train " in f" {line} ")
    assert f"vocab {len(vocab)} " in train.stdout + train.stderr, log


CJK_PAIR = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef] [\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")


def test_generated_chinese_has_no_spaces_or_markers(quickstart: dict) -> None:
    proc = next(p for line, p in quickstart["results"].items() if p is not None and "generate" in line)
    text = proc.stdout
    assert "床前明月光" in text
    assert not CJK_PAIR.search(text), text
    assert not any(marker in text for marker in ("[CLS]", "[SEP]", "[PAD]", "[UNK]")), text


def test_generate_on_the_original_folder(quickstart: dict) -> None:
    """GPT2Config's default eos 50256 lies outside the 4xx-token vocabulary: ids must come from the tokenizer
    (in-process: the CLI path is the one the README's generate line ran)."""
    from gpt2dist.generate import generate

    [text] = generate(str(quickstart["work"] / "models" / "gpt2-chinese"), "床前", max_new_tokens=8, device="cpu")
    assert text.startswith("床前") and not CJK_PAIR.search(text), text


def test_latin_words_keep_their_spaces(quickstart: dict) -> None:
    from gpt2dist.tokenizer import decode, load_tokenizer

    tok = load_tokenizer(quickstart["work"] / "models" / "gpt2-chinese")
    ids = [tok.cls_token_id, *tok("床前明月光，hello world", add_special_tokens=False)["input_ids"], tok.sep_token_id,
           tok.pad_token_id]
    assert decode(tok, ids) == "床前明月光，hello world"
    assert len(tok) == len((quickstart["work"] / "models" / "gpt2-chinese" / "vocab.txt").read_text().split())


def test_two_ranks_over_a_directory_with_fewer_files_than_ranks(quickstart: dict) -> None:
    """One file in the directory, two ranks: example sharding deals its documents to both ranks."""
    work = quickstart["work"]
    (work / "one").mkdir()
    (work / "one" / "poems.txt").write_text("\n\n".join(TEXTS * 4), encoding="utf-8")
    cfg = yaml.safe_load((work / "zh-finetune.yaml").read_text(encoding="utf-8"))
    cfg.update(run_dir="runs/zh2")
    cfg["data"].update(train=["one/"], block_size=32, val_fraction=0.0)
    cfg["train"].update(micro_batch_size=2)
    (work / "two.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    proc = run([sys.executable, "-m", "gpt2dist.cli", "launch", "two.yaml", "--nproc", "2", *SHORT], work,
               quickstart["env"], timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    step = work / "runs" / "zh2" / "checkpoints" / "step-00000004"
    cursors = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(step.glob("cursor-rank*.json"))]
    assert len(cursors) == 2
    texts = [json.dumps(c) for c in cursors]
    assert all('"mode": "example"' in t and "poems.txt" in t for t in texts), texts[0][:500]


def test_eval_reads_a_gbk_file_with_its_encoding_flag(quickstart: dict, tmp_path: Path) -> None:
    """A GBK validation file: `eval` names its own flag (not the training config's key), and with
    `--encoding gb18030` scores exactly what the same text scores as UTF-8 (in-process; flags parsed as the CLI)."""
    from gpt2dist.cli import parse
    from gpt2dist.errors import UserError
    from gpt2dist.evaluate import evaluate_files

    export = quickstart["work"] / "runs" / "zh" / "export"
    text = "\n\n".join(TEXTS)
    (tmp_path / "gbk.txt").write_bytes(text.encode("gbk"))
    (tmp_path / "utf8.txt").write_text(text, encoding="utf-8")
    args = parse(["eval", "--model", str(export), "--data", str(tmp_path / "gbk.txt"), "--encoding", "gb18030"])
    flags = {"block_size": 16, "max_batches": 2, "device": "cpu"}
    with pytest.raises(UserError, match=r"gbk\.txt .*--encoding gb18030") as refused:
        evaluate_files(export, [str(tmp_path / "gbk.txt")], **flags)
    assert "data.encoding" not in str(refused.value)
    as_gbk = evaluate_files(export, args.data, encoding=args.encoding, **flags)
    assert as_gbk == evaluate_files(export, [str(tmp_path / "utf8.txt")], **flags)
