"""The prepared data's manifest (data.packed_dir/manifest.json): what was tokenized, how, and from which bytes.

It pins the token dtype, the tokenizer (settings and a fingerprint of its whole pipeline) and the text
settings, and per source file its size, mtime, sha256, documents and, per part (train, heldout), where its tokens
are: {"path": shard, "offset": first token, "tokens": count}. Format 2 lets many files share a shard, and records
each shard once under "shards" ({"tokens", "mtime_ns"}); format 1 (one shard per file, before issue 25's
many-small-files work) is read as format 2 with every part at offset 0. `prepare.py` writes it whenever it seals
a shard; `packed.py` and the doctor refuse shards that do not match the config or the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from stat import S_ISREG
from typing import Any

import numpy as np

from gpt2dist import atomic
from gpt2dist.config import RunConfig
from gpt2dist.errors import UserError

MANIFEST = "manifest.json"
VERSION = 2  # 2: shared shards, parts at offsets; 1: one shard per source file (still read)
READABLE = (1, 2)
SHARD_PATH = re.compile(r"shards/[^/]+\.bin")  # what prepare names a shard (format 1: HASH.PART.bin)
TOKENIZER_DIR = "tokenizer"
PREPARE_LOCK = ".prepare.lock"  # held while a prepare writes (prepare.prepare_lock)


def packed_root(cfg: RunConfig) -> Path:
    return Path(cfg.data.packed_dir) if cfg.data.packed_dir else Path(cfg.run_dir) / "data"


def heldout_fraction(cfg: RunConfig) -> float:
    """data.val_fraction applies to the training files only when there are no data.val files (as in training)."""
    return cfg.data.val_fraction if not cfg.data.val else 0.0


def text_settings(cfg: RunConfig) -> dict[str, Any]:
    """Every setting that changes which tokens a file gives: a prepared dir is only valid for these values."""
    d = cfg.data
    return {"sample_by": d.sample_by, "text_field": d.text_field, "encoding_errors": d.encoding_errors,
            "strip_control": d.strip_control, "collapse_whitespace": d.collapse_whitespace,
            "min_line_chars": d.min_line_chars, "ascii_only": d.ascii_only, "val_fraction": heldout_fraction(cfg),
            **new_text_settings(d)}


def new_text_settings(d: Any) -> dict[str, Any]:
    """Text keys added later, recorded only when not at their default, so what older versions wrote still matches."""
    return {key: getattr(d, key) for key, default in (("encoding", "utf-8"), ("halfwidth", False))
            if getattr(d, key) != default}


def tokenizer_record(cfg: RunConfig) -> dict[str, Any]:
    """The tokenizer settings a prepared dir was made with (the fingerprint pins the exact vocabulary)."""
    t = cfg.tokenizer
    record: dict[str, Any] = {"kind": t.kind}
    if t.kind == "bpe":
        record["vocab_size"] = t.vocab_size
    if t.kind == "pretrained":
        record["path"] = t.path or cfg.model.pretrained
    return record


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of the tokenizer's full serialized pipeline (vocab, merges, normalizer, pre-tokenizer) and EOS."""
    body = tokenizer.backend_tokenizer.to_str() + f"|eos={tokenizer.eos_token_id}"
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def refuse_planted_links(root: Path) -> None:
    """Every name prepare writes under data.packed_dir is ours: a link there would have shards written, read and
    deleted in a folder the user never named (the packed dir itself may be a link: the user chose it)."""
    for name in (MANIFEST, TOKENIZER_DIR, "shards", PREPARE_LOCK):
        if (root / name).is_symlink():
            raise UserError(f"{root / name} is a symbolic link: gpt2dist never writes or reads through one; remove "
                            "it (to keep the data elsewhere, point data.packed_dir there)")


def load_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest (format 1 read as 2), or None before the first prepare; refuses planted links first."""
    refuse_planted_links(root)
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is unreadable ({exc}): delete {root} and run `gpt2dist prepare` again") from None
    if manifest.get("version") not in READABLE:
        raise UserError(f"{path} has format version {manifest.get('version')}, this gpt2dist reads "
                        f"{' and '.join(map(str, READABLE))}: delete {root} and run `gpt2dist prepare` again")
    return upgrade(manifest)


def upgrade(manifest: dict[str, Any]) -> dict[str, Any]:
    """Format 1 (each part a whole shard of its own, recording the shard's mtime) as format 2, in memory: the
    folder is rewritten only when prepare next records something, and then in format 2."""
    if manifest["version"] == 1:
        shards = {}
        for entry in manifest["files"].values():
            for part in entry["parts"].values():
                shards[part["path"]] = {"tokens": part["tokens"], "mtime_ns": part.pop("mtime_ns", None)}
                part["offset"] = 0
        manifest.update(version=VERSION, shards=shards, next_shard=0)
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Without indentation: json's C encoder, ~10x faster on a manifest of thousands of files."""
    atomic.write_json(root / MANIFEST, manifest, sort_keys=True)


def check_manifest_matches(manifest: dict[str, Any], cfg: RunConfig, root: Path) -> None:
    """Refuse shards made with another tokenizer or other text settings: they would mean different tokens."""
    want = tokenizer_record(cfg)
    for key in sorted(set(want) | set(manifest["tokenizer"]["config"])):
        old, new = manifest["tokenizer"]["config"].get(key), want.get(key)
        if old != new:
            raise UserError(f"config key tokenizer.{key} is {new!r} but {root} was prepared with {old!r}: the shards "
                            "hold other tokens; restore the key, or use a new data.packed_dir and prepare again")
    for key, new in text_settings(cfg).items():
        old = manifest["text"].get(key)
        if old != new:
            raise UserError(f"config key data.{key} is {new!r} but {root} was prepared with {old!r}: restore the "
                            "key, or use a new data.packed_dir and prepare again")


def file_key(path: Path, folders: dict[str, str] | None = None) -> str:
    """The file's absolute path with every link resolved (Path.resolve). `folders` caches resolved parent
    folders across calls: resolving each of 5,000 files' paths component by component cost ~0.1 ms a file."""
    if folders is None or os.path.islink(path):
        return str(path.resolve())
    parent = str(path.parent)
    if parent not in folders:
        folders[parent] = os.path.realpath(parent)
    return os.path.join(folders[parent], path.name)


def shard_name(number: int, part: str) -> str:
    """Shard group `number`'s file for `part` (format 2; the manifest's next_shard says which number is next)."""
    return f"shards/pack-{number:06d}.{part}.bin"


def check_part(root: Path, shards: dict[str, Any], part: dict[str, Any], itemsize: int,
               checked: set[str] | None = None) -> None:
    """A part lies inside a shard the manifest records, and that shard is intact (check_shard; once per shard
    when `checked` collects the shards already seen). A part of no tokens reads nothing and needs no shard."""
    if part["tokens"] == 0:
        return
    name, start, end = part["path"], part.get("offset", 0), part.get("offset", 0) + part["tokens"]
    record = shards.get(name)
    if record is None or not 0 <= start <= end <= record["tokens"]:
        held = "no such shard" if record is None else f"the shard holds {record['tokens']}"
        raise UserError(f"{root / MANIFEST} names tokens [{start}, {end}) of {name} ({held}): the manifest is damaged;"
                        f" delete {root} and run `gpt2dist prepare` again")
    if checked is None or name not in checked:
        check_shard(root, name, record, itemsize)
        if checked is not None:
            checked.add(name)


def check_shard(root: Path, name: str, record: dict[str, Any], itemsize: int) -> None:
    """A shard holds exactly the tokens the manifest counted (a truncated file, or a manifest that lies, would
    read past its end or train on fewer windows) and, where the manifest recorded it, is unchanged since
    prepare wrote it (same mtime): refused in one line, never read."""
    path = root / name
    stat = None
    if SHARD_PATH.fullmatch(name):  # never a path out of shards/ (a hand-edited manifest)
        with contextlib.suppress(OSError):
            stat = os.lstat(path)
    why = None
    if stat is None or not S_ISREG(stat.st_mode):
        why = "is missing (or not a plain file in shards/)"
    elif stat.st_size != record["tokens"] * itemsize:
        why = f"holds {stat.st_size // itemsize} tokens, the manifest says {record['tokens']}"
    elif record.get("mtime_ns") not in (None, stat.st_mtime_ns):
        why = "was rewritten after prepare wrote it"
    if why:
        raise UserError(f"prepared shard {path} {why}: run `gpt2dist prepare` again (delete {root} first if it "
                        "was damaged)")
