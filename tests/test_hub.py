"""Hub model ids (`model.pretrained: ORG/NAME`, `tokenizer.path`) resolve through a Hugging Face cache laid out as
huggingface_hub lays it out; a missing id is one line saying what was tried. Nothing reaches the network: the
cache is offline, and the one online case points HF_ENDPOINT at a closed loopback port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from helpers import read_metrics, run_cli, tiny_config, write_yaml
from hf_cache import cache_model
from huggingface_hub import constants, scan_cache_dir, try_to_load_from_cache
from transformers import GPT2Config, GPT2LMHeadModel

from gpt2dist import hub
from gpt2dist.config import load_config
from gpt2dist.errors import UserError
from gpt2dist.model import pretrained_config
from gpt2dist.planning.preflight import model_facts
from gpt2dist.tokenizer import load_tokenizer

REPO = "tiny-org/tiny-gpt2"
EOS = "<|endoftext|>"


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory, story_corpus) -> Path:
    """A GPT-2 folder as save_pretrained writes it: config.json, model.safetensors, a byte-level BPE tokenizer."""
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(story_corpus[0].read_text().split("\n\n")[:300], vocab_size=400,
                            special_tokens=[EOS], show_progress=False)
    bpe.save_model(str(folder))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 64, "bos_token": EOS, "eos_token": EOS,
         "unk_token": EOS}))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=400, n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                               embd_pdrop=0.0, attn_pdrop=0.0)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def hf_cache(tmp_path_factory, tiny_pretrained) -> tuple[Path, Path]:
    """(HF_HUB_CACHE, snapshot folder) holding tiny_pretrained as revision main of tiny-org/tiny-gpt2."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    return cache, cache_model(cache, REPO, tiny_pretrained)


def test_the_cache_is_laid_out_as_huggingface_hub_reads_it(hf_cache):
    cache, snapshot = hf_cache
    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO and repo.repo_type == "model" and set(repo.refs) == {"main"}
    assert try_to_load_from_cache(REPO, "config.json", cache_dir=cache) == str(snapshot / "config.json")


def test_a_hub_id_resolves_from_the_cache_offline(hf_cache, story_corpus, monkeypatch):
    cache, snapshot = hf_cache
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # what HF_HUB_CACHE=... sets at import
    assert hub.offline(), "tests run with HF_HUB_OFFLINE=1 (conftest)"
    assert hub.local_folder(REPO, "model.pretrained") == str(snapshot)
    assert pretrained_config(REPO)["n_embd"] == 32
    assert len(load_tokenizer(REPO)) == 400
    cfg = load_config(None, [f"data.train=[{story_corpus[0]}]", f"model.pretrained={REPO}",
                             "tokenizer.kind=pretrained", "data.block_size=32"])
    facts, findings = model_facts(cfg)
    assert (facts.n_layer, facts.n_embd, facts.vocab_size) == (2, 32, 400)
    assert any("agree (400 tokens)" in f.message for f in findings)
    assert hub.to_download(cfg) == []
    # a local folder is still a folder, and a path that is no id is left for the caller to report
    assert hub.local_folder(str(snapshot), "model.pretrained") == str(snapshot)
    assert hub.local_folder("./no/such/dir", "model.pretrained") == "./no/such/dir"


def test_a_missing_id_offline_says_the_network_was_not_tried(tmp_path, story_corpus):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(
        tmp_path / "run", [str(story_corpus[0])], model={"pretrained": "nobody/nothing"},
        tokenizer={"kind": "pretrained"}))
    proc = run_cli("train", str(config), check=False,
                   env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "model.pretrained='nobody/nothing' is not a local folder and not in the Hugging Face cache" in line
    assert str(tmp_path / "empty") in line and "HF_HUB_OFFLINE=1, so the network was not tried" in line
    assert not (tmp_path / "run").exists()


def test_a_missing_id_online_names_the_endpoint_it_tried(tmp_path, story_corpus):
    with socket.socket() as sock:  # a loopback port with nothing listening: the request fails at once
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = write_yaml(tmp_path / "run.yaml", tiny_config(
        tmp_path / "run", [str(story_corpus[0])], model={"pretrained": "nobody/nothing"},
        tokenizer={"kind": "pretrained"}))
    proc = run_cli("train", str(config), check=False, timeout=120,
                   env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": endpoint})
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"downloading it from {endpoint} failed" in line and "nobody/nothing" in line


def test_missing_message_without_offline_mode(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(UserError, match="gpt2dist train downloads it on rank 0"):
        hub.local_folder("nobody/nothing", "model.pretrained")


@pytest.mark.slow
def test_fine_tuning_from_a_cached_id_trains_as_from_the_folder(tmp_path, story_corpus, hf_cache, tiny_pretrained):
    """The same model and tokenizer by hub id (offline, from the cache) and by folder: identical losses."""
    cache, _ = hf_cache
    losses = {}
    for name, source in (("id", REPO), ("folder", str(tiny_pretrained))):
        run = tmp_path / name
        cfg = tiny_config(run, [str(story_corpus[0])], [str(story_corpus[1])], model={"pretrained": source},
                          tokenizer={"kind": "pretrained"}, train={"max_steps": 4, "eval_every": 4})
        run_cli("train", str(write_yaml(tmp_path / f"{name}.yaml", cfg)),
                env={"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
        metrics = read_metrics(run)
        losses[name] = [metrics[s]["loss"] for s in range(1, 5)] + [metrics[4]["val_loss"]]
    assert losses["id"] == losses["folder"]
