"""`gpt2dist export --push-to-hub ORG/NAME`: the hub is not reachable here, so the test checks the folder the
command would upload and that the upload really is attempted (HF_ENDPOINT at a closed loopback port), in one
line, after a complete export; offline mode and a bad id fail before any work."""

from __future__ import annotations

import socket

import pytest
from helpers import run_cli, tiny_config, write_yaml
from transformers import AutoTokenizer, GPT2LMHeadModel


@pytest.mark.slow
def test_push_uploads_the_export_folder_or_says_why_not(tmp_path, story_corpus, warm_cli):
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "run.yaml", tiny_config(run, [str(story_corpus[0])], train={"max_steps": 2}))
    warm_cli("train", str(config))
    out = tmp_path / "export"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = run_cli("export", str(run), str(out), "--push-to-hub", "me/tiny-gpt2", check=False,
                   env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_not_a_real_token"})
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: --push-to-hub me/tiny-gpt2: uploading {out} to {endpoint} failed (")
    assert f"exported {out}" in proc.stdout
    # What would have been uploaded: the export folder, complete, loadable by plain transformers.
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "gpt2dist_export.json"} <= {p.name for p in out.iterdir()}
    GPT2LMHeadModel.from_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(out))

    for bad, message in (("not an id", "is not a hub model id"), ("me/tiny", "HF_HUB_OFFLINE=1 forbids")):
        proc = run_cli("export", str(run), str(tmp_path / "other"), "--push-to-hub", bad, check=False,
                       env={"HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "other").exists(), "refused before the export"
