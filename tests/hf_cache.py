"""A Hugging Face hub cache laid out as huggingface_hub lays it out, from a local folder, with no network.

huggingface_hub's rules (file_download.py: repo_folder_name, _create_symlink, _cache_commit_hash_for_specific_revision;
the hub's ETags): HF_HUB_CACHE/models--ORG--NAME/ holds blobs/<etag> (the sha256 of an LFS file such as
*.safetensors, the git blob sha1 of any other file), snapshots/<commit>/<path> as a relative symlink to its blob,
and refs/main holding the commit hash (no newline). huggingface_hub's own `scan_cache_dir` checks the result.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from huggingface_hub.file_download import repo_folder_name

LFS_SUFFIXES = {".safetensors", ".bin", ".h5", ".msgpack", ".onnx", ".ot"}  # the hub's default .gitattributes


def etag(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix in LFS_SUFFIXES:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def cache_model(cache_dir: Path, repo_id: str, folder: Path) -> Path:
    """Put every file of `folder` into the cache as revision `main` of `repo_id`; returns the snapshot folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    commit = hashlib.sha1("".join(f"{p.relative_to(folder)}:{etag(p)}" for p in files).encode()).hexdigest()
    storage = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = storage / "snapshots" / commit
    for path in files:
        blob = storage / "blobs" / etag(path)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(path.read_bytes())
        pointer = snapshot / path.relative_to(folder)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return snapshot
