"""End-to-end runs of the real CLI on CPU: learning, every tokenizer kind through train/resume/export/generate,
fine-tuning a local pretrained folder, export round trip, and the README demo command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import read_metrics, run_cli, tiny_config, write_yaml
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from gpt2dist.config import load_config
from gpt2dist.data.stream import TextStream
from gpt2dist.data.text import resolve_files
from gpt2dist.engines.loss import lm_loss
from gpt2dist.engines.torch_engine import TorchEngine
from gpt2dist.model import build_model
from gpt2dist.tokenizer import encode_documents, load_tokenizer

pytestmark = pytest.mark.slow


def test_tiny_run_lowers_val_loss(tmp_path, story_corpus, warm_cli):
    cli = warm_cli
    cfg = tiny_config(tmp_path / "run", [str(story_corpus[0])], [str(story_corpus[1])],
                      train={"max_steps": 150, "micro_batch_size": 16, "log_every": 10, "eval_every": 75},
                      data={"block_size": 64}, checkpoint={"every": 0})
    cli("train", str(write_yaml(tmp_path / "run.yaml", cfg)))
    metrics = read_metrics(tmp_path / "run")
    start, end = metrics[0]["val_loss"], metrics[150]["val_loss"]
    assert end < start - 1.0, f"val loss went {start:.3f} -> {end:.3f}"
    assert metrics[150]["tokens"] == 150 * 16 * 64
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000150"


def make_gpt2_style_tokenizer(folder: Path, texts: list[str]) -> Path:
    """A folder like a downloaded `gpt2` tokenizer (vocab.json + merges.txt + tokenizer_config.json)."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    eos = "<|endoftext|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024, "bos_token": eos, "eos_token": eos,
         "unk_token": eos}))
    return folder


@pytest.mark.parametrize("kind", ["char", "bpe", "pretrained"])
def test_tokenizer_kind_trains_resumes_exports_generates(tmp_path, story_corpus, kind, warm_cli):
    cli = warm_cli
    tokenizer = {"kind": kind, "vocab_size": 300}
    if kind == "pretrained":
        texts = story_corpus[0].read_text().split("\n\n")[:300]
        tokenizer["path"] = str(make_gpt2_style_tokenizer(tmp_path / "gpt2-tok", texts))
    run = tmp_path / "run"
    cfg = tiny_config(run, [str(story_corpus[0])], [str(story_corpus[1])], tokenizer=tokenizer,
                      train={"max_steps": 6, "eval_every": 3}, checkpoint={"every": 3})
    config = write_yaml(tmp_path / "run.yaml", cfg)
    cli("train", str(config))
    saved_vocab = (run / "tokenizer" / "tokenizer.json").read_text()
    resumed = cli("train", str(config), "train.max_steps=9")
    assert "resuming from step-00000006" in resumed.stdout
    assert (run / "tokenizer" / "tokenizer.json").read_text() == saved_vocab, "resume must reuse the tokenizer"
    assert max(read_metrics(run)) == 9

    cli("export", str(run), str(tmp_path / "export"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "export"))
    assert tok.eos_token == "<|endoftext|>"
    text = "Once upon a time"
    assert tok.decode(tok(text)["input_ids"]) == text
    out = cli("generate", "--model", str(tmp_path / "export"), "--prompt", text, "--max-new-tokens", "20",
                  "--top-k", "10", "--top-p", "0.9", "--temperature", "0.8", "--num-samples", "2", "--seed", "3")
    assert out.stdout.count("--- sample") == 2 and out.stdout.count(text) == 2
    if kind != "char":  # seeding and eval do not depend on the tokenizer kind: one kind checks them (CI time)
        return
    again = cli("generate", "--model", str(tmp_path / "export"), "--prompt", text, "--max-new-tokens", "20",
                    "--top-k", "10", "--top-p", "0.9", "--temperature", "0.8", "--num-samples", "2", "--seed", "3")
    assert again.stdout == out.stdout, "the same seed must give the same samples"
    check_eval_and_greedy_against_transformers(cli, tmp_path / "export", story_corpus[1], text)


def reference_windows(tok, val: Path, block: int) -> torch.Tensor:
    """The val file packed as training packs it, built from datasets and the tokenizer alone: paragraphs (datasets'
    text builder), each one's ids + EOS, concatenated, cut into back-to-back windows of block + 1 (rest dropped)."""
    from datasets import load_dataset

    docs = [row["text"] for row in load_dataset("text", data_files=[str(val)], sample_by="paragraph",
                                                split="train", streaming=True)]
    ids = [t for doc in docs for t in [*tok(doc, add_special_tokens=False)["input_ids"], tok.eos_token_id]]
    n = len(ids) // (block + 1)
    return torch.tensor(ids[: n * (block + 1)]).view(n, block + 1)


def check_eval_and_greedy_against_transformers(cli, export: Path, val: Path, prompt: str) -> None:
    """`gpt2dist eval` equals transformers' own loss (labels=...) on the same windows; greedy `generate` equals
    `model.generate(do_sample=False)`, and --max-new-tokens is what it generates."""
    evaluated = cli("eval", "--model", str(export), "--data", str(val), "--json")
    result = json.loads(evaluated.stdout.strip().splitlines()[-1])
    tok = AutoTokenizer.from_pretrained(str(export))
    model = GPT2LMHeadModel.from_pretrained(str(export)).eval()
    windows = reference_windows(tok, val, result["block_size"])
    with torch.no_grad():  # labels = the inputs: transformers shifts them itself (block tokens predicted a window)
        expected = sum(float(model(input_ids=b, labels=b).loss) * len(b) for b in windows.split(64)) / len(windows)
    assert result["block_size"] == 32 and result["tokens"] == windows.numel() - len(windows)
    assert result["loss"] == pytest.approx(expected, abs=1e-5)

    ids = torch.tensor([[tok.eos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]])
    texts = []
    for new_tokens in (5, 12):
        greedy = cli("generate", "--model", str(export), "--prompt", prompt, "--max-new-tokens",
                         str(new_tokens), "--temperature", "0").stdout.rstrip("\n")
        with torch.no_grad():
            seq = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                                 pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)[0]
        assert len(seq) == ids.shape[1] + new_tokens or seq[-1] == tok.eos_token_id  # EOS may end it sooner
        assert greedy == tok.decode(seq[1:], skip_special_tokens=True)
        texts.append(greedy)
    assert texts[0] != texts[1] and texts[1].startswith(texts[0]), "--max-new-tokens was not honoured"


def test_finetune_first_loss_equals_saved_models_loss(tmp_path, story_corpus, warm_cli):
    cli = warm_cli
    texts = story_corpus[0].read_text().split("\n\n")[:300]
    folder = make_gpt2_style_tokenizer(tmp_path / "pretrained", texts)
    tok = load_tokenizer(folder)
    torch.manual_seed(0)
    saved = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    saved.save_pretrained(str(folder))

    run = tmp_path / "run"
    cfg = tiny_config(run, [str(story_corpus[0])], model={"pretrained": str(folder)},
                      tokenizer={"kind": "pretrained", "path": str(folder)}, train={"max_steps": 3})
    config = write_yaml(tmp_path / "run.yaml", cfg)
    cli("train", str(config))
    first_loss = read_metrics(run)[1]["loss"]

    # The same first batch, scored by the saved model as plain transformers loads it.
    rc = load_config(config)
    stream = TextStream(resolve_files(rc.data.train, "data.train"), rc.data,
                          lambda docs: encode_documents(tok, docs))
    batch, _ = stream.next_batch(rc.train.micro_batch_size)
    model = GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        expected = float(lm_loss(model(input_ids=batch[:, :-1]).logits, batch[:, 1:]))
    assert first_loss == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_export_round_trip_logits_match_trainer(tmp_path, story_corpus, warm_cli):
    cli = warm_cli
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "run.yaml", tiny_config(run, [str(story_corpus[0])], train={"max_steps": 5}))
    cli("train", str(config))
    cli("export", str(run), str(tmp_path / "export"))
    exported = tmp_path / "export"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in exported.iterdir()}

    # The trainer's view: the engine restored from the checkpoint the export came from.
    rc = load_config(config)
    tokenizer = load_tokenizer(run / "tokenizer")
    engine = TorchEngine(build_model(rc, tokenizer), rc)
    engine.load(run / "checkpoints" / "step-00000005")
    engine.model.eval()
    plain = GPT2LMHeadModel.from_pretrained(str(exported)).eval()
    ids = torch.tensor([AutoTokenizer.from_pretrained(str(exported))("Once upon a time, a cat")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, engine.model(ids).logits, rtol=0, atol=0)


def test_readme_demo_command_runs(tmp_path):
    """`gpt2dist demo` as the README gives it, with fewer steps (GPT2DIST_DEMO_STEPS)."""
    out = run_cli("demo", cwd=tmp_path, env={"GPT2DIST_DEMO_STEPS": "20"})
    assert (tmp_path / "data" / "demo" / "train.txt").stat().st_size > 1_000_000
    assert (tmp_path / "runs" / "demo" / "export" / "model.safetensors").is_file()
    assert out.stdout.count("--- sample") == 3
    assert "trained to step 20" in out.stdout
    assert "gpt2dist generate --model runs/demo " in out.stdout.strip().splitlines()[-1]  # the demo's own paths
    again = run_cli("demo", cwd=tmp_path, env={"GPT2DIST_DEMO_STEPS": "20"})  # a rerun: complete, samples again
    assert "already complete" in again.stdout and again.stdout.count("--- sample") == 3
    assert "loss nan" not in again.stdout + again.stderr
