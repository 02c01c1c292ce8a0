"""Hugging Face hub ids for `model.pretrained` and `tokenizer.path`, resolved through the HF cache as
`from_pretrained` resolves them.

A value naming an existing local folder stays that folder. A value shaped like a repo id (`gpt2`,
`openai-community/gpt2`) is read from the cache (`HF_HOME` / `HF_HUB_CACHE`, huggingface_hub's layout:
models--ORG--NAME/refs/main -> snapshots/<commit>/) with no network at all; only `fetch` downloads, and
`gpt2dist train` calls it on rank 0 alone while the other ranks wait (`fetch_on_writer`), so N ranks never hit
the hub at once. With `HF_HUB_OFFLINE=1` nothing is downloaded and a missing id is a one-line error that says
so; without it, a failed download is a one-line error that names the endpoint that was tried.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from gpt2dist.errors import UserError

# huggingface_hub's validate_repo_id, loosely: NAME or ORG/NAME; a leading "." or "/" is always a path.
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
# What a GPT-2 fine-tune reads: config.json, weights, tokenizer files (vocab.json, merges.txt, tokenizer.json,
# ...). Hub repos often also hold TF, Flax, ONNX and Rust copies of the weights, gigabytes nobody here reads.
PATTERNS = ["*.json", "*.safetensors", "*.txt"]


def is_hub_id(value: str) -> bool:
    """Not an existing path, and shaped like a hub repo id."""
    return not Path(value).exists() and REPO_ID.fullmatch(value) is not None


def offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, as huggingface_hub read them at import."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def local_folder(value: str, key: str) -> str:
    """The folder to read for `value`: itself when it is a folder (or not a hub id: the caller says what is
    wrong with the path), else the cached snapshot of the hub id. Never touches the network."""
    if not is_hub_id(value):
        return value
    folder = cached(value)
    if folder is None:
        raise UserError(missing_message(key, value))
    return folder


def cached(repo_id: str) -> str | None:
    """The snapshot folder of `repo_id` at `main` in the HF cache, or None when the cache lacks it (or a file)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, allow_patterns=PATTERNS, local_files_only=True)
    except LocalEntryNotFoundError:  # IncompleteSnapshotError (a partial download) is one of these
        return None


def missing_message(key: str, repo_id: str) -> str:
    """One line: what was tried (the cache; the network or why not) and the fix."""
    where = f"{key}={repo_id!r} is not a local folder and not in the Hugging Face cache ({cache_dir()})"
    if offline():
        return (f"{where}; HF_HUB_OFFLINE=1, so the network was not tried: download it where there is network "
                f"(hf download {repo_id}, with the same HF_HOME), or point {key} at a local folder")
    return (f"{where}: gpt2dist train downloads it on rank 0, or download it first (hf download {repo_id}); "
            "with HF_HOME on a file system every node sees")


def hub_ids(cfg) -> list[tuple[str, str]]:
    """(key, id) for the hub ids the config names: model.pretrained, and tokenizer.path for kind=pretrained."""
    pairs = [("model.pretrained", cfg.model.pretrained)]
    if cfg.tokenizer.kind == "pretrained":
        pairs.append(("tokenizer.path", cfg.tokenizer.path))
    seen: set[str] = set()
    out = []
    for key, value in pairs:
        if value and value not in seen and is_hub_id(value):
            seen.add(value)
            out.append((key, value))
    return out


def to_download(cfg) -> list[tuple[str, str]]:
    """The hub ids the cache lacks. Offline, a missing one is the one-line error here (on every rank: no rank
    needs to wait for another to learn that)."""
    missing = [(key, repo) for key, repo in hub_ids(cfg) if cached(repo) is None]
    if missing and offline():
        raise UserError(missing_message(*missing[0]))
    return missing


def fetch(missing: list[tuple[str, str]]) -> None:
    """Download each id's config, weights and tokenizer files into the HF cache (rank 0 only)."""
    from huggingface_hub import constants, snapshot_download

    for key, repo in missing:
        try:
            snapshot_download(repo, allow_patterns=PATTERNS)
        except Exception as exc:  # 404, 401 (gated/private), no route, a full disk: one line, not a traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{key}={repo!r} is not a local folder and not in the Hugging Face cache "
                            f"({cache_dir()}); downloading it from {constants.ENDPOINT} failed "
                            f"({type(exc).__name__}: {first}): check the id, HF_TOKEN for a gated or private "
                            "model, and the network") from None


def fetch_on_writer(cfg, rank, join_group: Callable[[], None]) -> None:
    """`gpt2dist train`: when the config names hub ids the cache lacks, rank 0 downloads them and the other ranks
    wait for it (joining the process group early for that) and then read the same cache."""
    from gpt2dist import dist

    missing = to_download(cfg)
    if not missing:
        return
    if rank.world_size > 1:
        join_group()
    dist.on_writer(rank, lambda: fetch(missing))


def check_push_target(repo_id: str) -> None:
    """`export --push-to-hub`: a usable repo id and a hub we may talk to, checked before the export runs."""
    if REPO_ID.fullmatch(repo_id) is None or "/" not in repo_id:
        raise UserError(f"--push-to-hub {repo_id!r} is not a hub model id: give ORG/NAME (or USER/NAME)")
    if offline():
        raise UserError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE=1 forbids talking to the hub: unset it to push")


def push(folder: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload an export folder as model repo `repo_id` (created if missing, kept if there); the commit URL.

    Thin on purpose: huggingface_hub's create_repo(exist_ok=True) + upload_folder, which handle auth (HF_TOKEN or
    `hf auth login`), large files and retries; gpt2dist only turns their failure into one line."""
    from huggingface_hub import HfApi, constants

    check_push_target(repo_id)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   commit_message=f"gpt2dist export of {folder.name}")
    except Exception as exc:  # 401/403 (token), no route, ...: one line, the export folder stays as it is
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"--push-to-hub {repo_id}: uploading {folder} to {constants.ENDPOINT} failed "
                        f"({type(exc).__name__}: {first}): check HF_TOKEN (a write token) and the network; "
                        "the export folder is complete, push it again with the same command") from None
    return getattr(commit, "commit_url", None) or str(commit)
